//! LeNet-5: parameter count, learning on real images, determinism, early stopping,
//! checkpoint round-trip, divergence detection.

use dfdx::prelude::*;
use fashion_mnist::data::prepare::{train_validation_split, Prepared};
use fashion_mnist::models::{ImageClassifier, LeNet5, LeNet5Config, ParamVisitor, Parameters};
use fashion_mnist::resume::RunKey;
use fashion_mnist::training::{self, checkpoint, EarlyStopping, SavedState, Silent, TrainConfig};
use fashion_mnist::TrainError;

mod common;
use common::real_train_and_heldout;

struct Count(usize, Vec<String>);
impl ParamVisitor for Count {
    type Error = ();
    fn visit<S: Shape>(&mut self, name: &str, t: &Tensor<S, f32, Cpu>) -> Result<(), ()> {
        self.0 += t.shape().num_elements();
        self.1.push(name.to_string());
        Ok(())
    }
}

#[test]
fn lenet5_has_the_walkthroughs_44426_parameters() {
    let model = LeNet5::new(&Cpu::default(), LeNet5Config::default(), 0);
    let mut count = Count(0, Vec::new());
    model.visit_params(&mut count).unwrap();
    assert_eq!(count.0, 44_426);
    assert_eq!(model.param_count(), 44_426);
    let summary = model.summary().to_string();
    for expected in [
        "(None, 24, 24, 6)",
        "(None, 4, 4, 16)",
        "(None, 256)",
        "30,840",
        "Total params: 44,426",
    ] {
        assert!(
            summary.contains(expected),
            "{expected} missing from\n{summary}"
        );
    }
    let modified = LeNet5::new(&Cpu::default(), LeNet5Config { dense1_units: 96 }, 0);
    let mut count = Count(0, Vec::new());
    modified.visit_params(&mut count).unwrap();
    assert_eq!(count.0, 44_426 - 24 * (256 + 1 + 84));
    assert_eq!(modified.param_count(), count.0);
}

#[test]
fn training_on_real_images_learns_well_above_chance() {
    let (train_set, heldout_set) = real_train_and_heldout();
    let train = Prepared::from_dataset(&train_set);
    let heldout = Prepared::from_dataset(&heldout_set);
    let mut model = LeNet5::new(&Cpu::default(), LeNet5Config::default(), 1);
    let before = training::evaluate(&model, &heldout, 500).unwrap().accuracy;
    let epochs = if train.len() >= 4000 { 3 } else { 15 };
    let config = TrainConfig {
        epochs,
        ..TrainConfig::default()
    };
    let history = training::fit(&mut model, &train, None, &config, &mut Silent).unwrap();
    let after = training::evaluate(&model, &heldout, 500).unwrap();
    eprintln!("held-out accuracy {before:.3} -> {:.3}", after.accuracy);
    assert!(after.accuracy > 0.7, "held-out accuracy {}", after.accuracy);
    assert!(history.epochs.last().unwrap().loss < history.epochs[0].loss);
    let confusion = after.confusion_matrix(&heldout.labels);
    assert_eq!(confusion.total() as usize, heldout.len());
    assert!((confusion.accuracy() - after.accuracy).abs() < 1e-12);
}

fn small_split() -> (Prepared, Prepared) {
    let (train_set, _) = real_train_and_heldout();
    let all = Prepared::from_dataset(&train_set.head(1200));
    let split = train_validation_split(&all.labels, 0.25, 42, false);
    (all.subset(&split.train), all.subset(&split.validation))
}

#[test]
fn same_seed_gives_the_same_history() {
    let (train, validation) = small_split();
    let run = |seed: u64| {
        let mut model = LeNet5::new(&Cpu::default(), LeNet5Config::default(), seed);
        let config = TrainConfig {
            epochs: 2,
            seed,
            ..TrainConfig::default()
        };
        let history =
            training::fit(&mut model, &train, Some(&validation), &config, &mut Silent).unwrap();
        history
            .epochs
            .iter()
            .map(|r| (r.loss, r.accuracy, r.val_loss, r.val_accuracy))
            .collect::<Vec<_>>()
    };
    let first = run(5);
    assert_eq!(first, run(5));
    assert_ne!(first, run(6));
}

#[test]
fn early_stopping_restores_the_best_weights() {
    let (train, validation) = small_split();
    let mut model = LeNet5::new(&Cpu::default(), LeNet5Config::default(), 3);
    let config = TrainConfig {
        epochs: 40,
        learning_rate: 3e-3,
        early_stopping: Some(EarlyStopping::new(2)),
        ..TrainConfig::default()
    };
    let history =
        training::fit(&mut model, &train, Some(&validation), &config, &mut Silent).unwrap();
    let best_epoch = history.best_epoch.unwrap();
    let best = &history.epochs[best_epoch - 1];
    let min_loss = history
        .epochs
        .iter()
        .map(|r| r.val_loss.unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(best.val_loss.unwrap(), min_loss);
    assert!(
        history.stopped_early,
        "40 epochs on 900 images must overfit"
    );
    assert_eq!(history.epochs.len(), best_epoch + 2);
    assert!(history.restored_best);
    let now = training::evaluate(&model, &validation, 1000).unwrap();
    assert!(
        (now.loss - best.val_loss.unwrap()).abs() < 1e-9,
        "weights of epoch {best_epoch}"
    );
}

#[test]
fn checkpoint_round_trip_is_bit_identical() {
    let (train, validation) = small_split();
    let mut model = LeNet5::new(&Cpu::default(), LeNet5Config { dense1_units: 80 }, 9);
    training::fit(
        &mut model,
        &train,
        None,
        &TrainConfig {
            epochs: 1,
            ..Default::default()
        },
        &mut Silent,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    checkpoint::save(&model, &path).unwrap();
    let loaded = checkpoint::load_lenet5(&Cpu::default(), &path).unwrap();
    assert_eq!(loaded.config, model.config);
    let pairs = [
        (&loaded.conv1_weight, &model.conv1_weight),
        (&loaded.conv2_weight, &model.conv2_weight),
    ];
    for (a, b) in pairs {
        assert_eq!(a.as_vec(), b.as_vec());
    }
    assert_eq!(loaded.dense1_weight.as_vec(), model.dense1_weight.as_vec());
    assert_eq!(loaded.dense3_bias.as_vec(), model.dense3_bias.as_vec());
    let p1 = training::predict_proba(&model, &validation.pixels, 100);
    let p2 = training::predict_proba(&loaded, &validation.pixels, 100);
    assert!(p1.iter().zip(&p2).all(|(a, b)| a.to_bits() == b.to_bits()));

    // A checkpoint of another shape is refused with the differences listed.
    let mut other = LeNet5::new(&Cpu::default(), LeNet5Config::default(), 0);
    let err = checkpoint::load_into(&mut other, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dense1.weight: shape [256, 80], expected [256, 120]"),
        "{err}"
    );
    assert!(err.contains("dense1.bias"), "{err}");
    // A file that is not a checkpoint.
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let err = checkpoint::load_lenet5(&Cpu::default(), &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a safetensors file"), "{err}");
    assert!(!err.contains("HeaderTooLarge"), "{err}");
}

#[test]
fn a_nan_loss_stops_training_with_a_message() {
    let (train, _) = small_split();
    let mut model = LeNet5::new(&Cpu::default(), LeNet5Config::default(), 0);
    // What a diverged update leaves behind: a non-finite weight.
    let mut bias = model.dense3_bias.as_vec();
    bias[4] = f32::INFINITY;
    model.dense3_bias.copy_from(&bias);
    let config = TrainConfig {
        epochs: 1,
        batch_size: 1000,
        ..TrainConfig::default()
    };
    match training::fit(&mut model, &train, None, &config, &mut Silent) {
        Err(
            e @ TrainError::Diverged {
                epoch: 1, step: 1, ..
            },
        ) => {
            assert!(e.to_string().contains("lower learning rate"), "{e}")
        }
        other => panic!("expected divergence, got {other:?}"),
    }
    // A NaN in a convolution kernel is hidden from the loss by the ReLU after it; the check
    // after each epoch still stops the run.
    let mut model = LeNet5::new(&Cpu::default(), LeNet5Config::default(), 0);
    let mut kernel = model.conv2_weight.as_vec();
    kernel[17] = f32::NAN;
    model.conv2_weight.copy_from(&kernel);
    let err = training::fit(&mut model, &train, None, &config, &mut Silent).unwrap_err();
    assert!(
        matches!(&err, TrainError::NonFiniteWeights { parameter, epoch: 1, .. } if parameter.starts_with("conv")),
        "{err}"
    );

    let err = training::fit(
        &mut model,
        &train,
        None,
        &TrainConfig {
            early_stopping: Some(EarlyStopping::new(1)),
            ..Default::default()
        },
        &mut Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("needs validation data"), "{err}");
}

#[test]
fn an_exploding_finite_loss_stops_training_like_nan() {
    let (train, validation) = small_split();
    let mut model = LeNet5::new(&Cpu::default(), LeNet5Config::default(), 0);
    let config = TrainConfig {
        epochs: 2,
        learning_rate: 10.0,
        ..TrainConfig::default()
    };
    match training::fit(&mut model, &train, Some(&validation), &config, &mut Silent) {
        Err(e @ TrainError::Diverged { value, .. }) => {
            assert!(value.is_finite(), "caught before it became NaN: {e}");
            assert!(e.to_string().contains("lower learning rate"), "{e}");
        }
        other => panic!("expected divergence, got {other:?}"),
    }
    // An empty validation set cannot score anything: refused, not scored as loss 0.
    let err = training::fit(
        &mut model,
        &train,
        Some(&Prepared::default()),
        &TrainConfig::default(),
        &mut Silent,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("validation set holds no images"),
        "{err}"
    );
}

/// A head without dropout trained by the generic `fit` (dfdx's autograd and Adam, the
/// composite ops) and by the CPU fast path (`fit_head`) from the same weights on the same
/// data order: the same run, up to float rounding. Small layers (one thread, panels with
/// padding, a last batch of 12 rows) and layers large enough to split over the threads.
#[test]
fn the_fast_head_path_trains_like_the_generic_one() {
    for (features, widths) in [(24, [40, 30]), (300, [200, 70])] {
        fast_and_generic_heads_agree(features, widths);
    }
}

fn fast_and_generic_heads_agree(features: usize, [first, second]: [usize; 2]) {
    use fashion_mnist::models::{DenseHead, HeadConfig, HeadLayer};
    let mut rng_values = 0u64;
    let mut next = || {
        rng_values = rng_values
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng_values >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let make = |n: usize, next: &mut dyn FnMut() -> f32| Prepared {
        pixels: (0..n * features).map(|_| next()).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    };
    let (train, validation) = (make(300, &mut next), make(60, &mut next));
    let config = HeadConfig {
        name: "test_head".into(),
        features,
        layers: vec![
            HeadLayer::Dense(first),
            HeadLayer::Dense(second),
            HeadLayer::Dense(10),
        ],
    };
    let train_config = TrainConfig {
        epochs: 3,
        batch_size: 32,
        ..TrainConfig::default()
    };
    let cpu = Cpu::default();
    let mut fast = DenseHead::new(&cpu, config.clone(), 5);
    let mut generic = fast.clone();
    let fast_history = training::fit_head(
        &mut fast,
        &train,
        Some(&validation),
        &train_config,
        &mut Silent,
    )
    .unwrap();
    let generic_history = training::fit(
        &mut generic,
        &train,
        Some(&validation),
        &train_config,
        &mut Silent,
    )
    .unwrap();
    for (a, b) in fast_history.epochs.iter().zip(&generic_history.epochs) {
        assert!(
            (a.loss - b.loss).abs() < 1e-4,
            "loss {} vs {}",
            a.loss,
            b.loss
        );
        assert!(
            (a.val_loss.unwrap() - b.val_loss.unwrap()).abs() < 1e-4,
            "{a:?} vs {b:?}"
        );
        assert_eq!(a.accuracy, b.accuracy, "{a:?} vs {b:?}");
    }
    let (fast_weights, generic_weights) = (values(&fast), values(&generic));
    let worst = fast_weights
        .iter()
        .zip(&generic_weights)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "weights differ by up to {worst}");
}

/// Every parameter value of a model, in visiting order.
fn values<M: Parameters<Device = Cpu>>(model: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ParamVisitor<Cpu> for Collect {
        type Error = std::convert::Infallible;
        fn visit<S: Shape>(&mut self, _: &str, t: &Tensor<S, f32, Cpu>) -> Result<(), Self::Error> {
            self.0.extend(t.as_vec());
            Ok(())
        }
    }
    let mut collect = Collect(Vec::new());
    let Ok(()) = model.visit_params(&mut collect);
    collect.0
}

/// A small CNN with trainable batch normalization: conv 3x3 -> BatchNorm -> ReLU -> max-pool ->
/// dense.
#[derive(Clone, Debug)]
struct BnNet {
    conv: fashion_mnist::models::layers::Conv,
    norm: fashion_mnist::models::layers::BatchNorm2d,
    dense_weight: Tensor<(usize, usize), f32, Cpu>,
    dense_bias: Tensor<(usize,), f32, Cpu>,
}

impl BnNet {
    fn new(seed: u64) -> Self {
        use rand::{Rng, SeedableRng};
        let cpu = Cpu::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let conv =
            fashion_mnist::models::layers::Conv::new(&cpu, &mut rng, "conv", (1, 8, 3), 1, 1);
        let inputs = 8 * 14 * 14;
        let limit = (6.0f32 / (inputs + 10) as f32).sqrt();
        let weights: Vec<f32> = (0..inputs * 10)
            .map(|_| rng.gen_range(-limit..limit))
            .collect();
        BnNet {
            conv,
            norm: fashion_mnist::models::layers::BatchNorm2d::new(&cpu, "norm", 8),
            dense_weight: cpu.tensor_from_vec(weights, (inputs, 10)),
            dense_bias: cpu.zeros_like(&(10,)),
        }
    }
}

impl Parameters for BnNet {
    type Device = Cpu;
    fn architecture(&self) -> &'static str {
        "bn_net"
    }
    fn config_json(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn visit_params<V: ParamVisitor<Cpu>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        self.conv.visit(visitor)?;
        self.norm.visit(visitor)?;
        visitor.visit("dense.weight", &self.dense_weight)?;
        visitor.visit("dense.bias", &self.dense_bias)
    }
    fn visit_params_mut<V: fashion_mnist::models::ParamVisitorMut<Cpu>>(
        &mut self,
        visitor: &mut V,
    ) -> Result<(), V::Error> {
        self.conv.visit_mut(visitor)?;
        self.norm.visit_mut(visitor)?;
        visitor.visit("dense.weight", &mut self.dense_weight)?;
        visitor.visit("dense.bias", &mut self.dense_bias)
    }
}

impl ImageClassifier for BnNet {
    fn input_shape(&self) -> (usize, usize, usize) {
        (1, 28, 28)
    }
    fn forward<T: Tape<f32, Cpu>>(
        &self,
        x: fashion_mnist::ops::Tensor4<T>,
    ) -> fashion_mnist::ops::Tensor2<T> {
        use fashion_mnist::ops::{flatten, max_pool2d, InputGrad};
        let x = self.conv.forward(x, InputGrad::Skip);
        let x = self.norm.forward(x).relu();
        let x = flatten(max_pool2d(x, 2, 2, 0));
        let batch = x.shape().0;
        x.matmul(self.dense_weight.retaped::<T>())
            + self
                .dense_bias
                .retaped::<T>()
                .broadcast_like::<_, Axis<0>>(&(batch, 10))
    }
    fn summary(&self) -> fashion_mnist::models::ModelSummary {
        fashion_mnist::models::ModelSummary {
            name: "bn_net".into(),
            layers: Vec::new(),
            non_trainable_params: 0,
        }
    }
    fn after_step(&mut self) {
        self.norm.apply_batch_statistics();
    }
}

/// Training with batch statistics learns (held-out accuracy well above chance, scored in
/// inference mode with the running averages), and the running averages move from Keras'
/// initial values towards the data's statistics.
#[test]
fn a_cnn_with_trainable_batch_norm_learns_and_keeps_running_averages() {
    let (train_set, heldout) = real_train_and_heldout();
    let (train, test) = (
        Prepared::from_dataset(&train_set.head(2000)),
        Prepared::from_dataset(&heldout.head(500)),
    );
    let mut model = BnNet::new(1);
    let config = TrainConfig {
        epochs: 3,
        ..TrainConfig::default()
    };
    training::fit(&mut model, &train, None, &config, &mut Silent).unwrap();
    let mean = model.norm.norm.moving_mean.as_vec();
    let variance = model.norm.norm.moving_variance.as_vec();
    assert!(
        mean.iter().any(|m| m.abs() > 1e-3),
        "running mean never updated: {mean:?}"
    );
    assert!(
        variance.iter().all(|v| *v > 0.0 && *v != 1.0),
        "{variance:?}"
    );
    let accuracy = training::evaluate(&model, &test, 250).unwrap().accuracy;
    eprintln!("BatchNorm CNN held-out accuracy {accuracy:.3} after 3 epochs on 2,000 images");
    assert!(accuracy > 0.6, "held-out accuracy {accuracy}");
}

/// Stops a run (as a killed process would) right after epoch `stop_after` was saved.
struct StopAfter(usize);
impl training::Progress for StopAfter {
    fn on_epoch_end(&mut self, record: &training::EpochRecord) {
        if record.epoch == self.0 {
            panic!("stopped after epoch {}", self.0);
        }
    }
}

fn resumable_config() -> TrainConfig {
    TrainConfig {
        epochs: 3,
        learning_rate: 2e-3,
        schedule: training::LearningRateSchedule::Cosine {
            warmup_fraction: 0.1,
        },
        augmentation: Some(fashion_mnist::data::augment::Augmentation {
            max_shift: 2,
            horizontal_flip: true,
        }),
        ..TrainConfig::default()
    }
}

fn state_for(dir: &std::path::Path, key: RunKey) -> SavedState {
    SavedState {
        path: dir.join("state.safetensors"),
        key,
    }
}

/// Trains `fresh()` 3 epochs in one go, and again stopped after epoch 2 and resumed in a new
/// model from the saved state: scores and weights (running averages included) are the same.
fn stopped_and_resumed_ends_as_uninterrupted<M: ImageClassifier<Device = Cpu>>(
    fresh: impl Fn() -> M,
) {
    let (train, validation) = small_split();
    let inverted = Prepared {
        pixels: train.pixels.iter().map(|v| 1.0 - v).collect(),
        labels: train.labels.clone(),
    };
    let variants = [&train, &inverted];
    let config = resumable_config();
    let scores = |h: &training::History| {
        h.epochs
            .iter()
            .map(|r| (r.epoch, r.loss, r.accuracy, r.val_loss, r.val_accuracy))
            .collect::<Vec<_>>()
    };

    let mut whole = fresh();
    let whole_history = training::fit_augmented(
        &mut whole,
        &variants,
        Some(&validation),
        &config,
        &mut Silent,
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let state = state_for(dir.path(), RunKey::new().with("run", "resume test"));
    let mut stopped = fresh();
    let crash = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        training::fit_resumable(
            &mut stopped,
            &variants,
            Some(&validation),
            &config,
            &mut StopAfter(2),
            &state,
        )
    }));
    match crash {
        Err(_) => {}
        Ok(result) => panic!("the run was to stop after epoch 2, it returned {result:?}"),
    }
    assert!(state.path.exists(), "the state of epoch 2 was saved");

    // A new process: a freshly initialized model goes on from the saved state.
    let mut resumed = fresh();
    let resumed_history = training::fit_resumable(
        &mut resumed,
        &variants,
        Some(&validation),
        &config,
        &mut Silent,
        &state,
    )
    .unwrap();
    assert_eq!(resumed_history.resumed_after_epochs, vec![2]);
    assert_eq!(scores(&resumed_history), scores(&whole_history));
    assert_eq!(values(&resumed), values(&whole), "weights bit for bit");
    assert!(
        resumed_history.epochs[2].val_accuracy.unwrap() > 0.35,
        "well above chance"
    );
}

#[test]
fn a_stopped_run_resumes_where_it_was_and_ends_as_an_uninterrupted_one() {
    stopped_and_resumed_ends_as_uninterrupted(|| {
        LeNet5::new(&Cpu::default(), LeNet5Config::default(), 7)
    });
}

#[test]
fn a_stopped_run_with_batch_norm_resumes_with_its_running_averages() {
    stopped_and_resumed_ends_as_uninterrupted(|| BnNet::new(7));
}

#[test]
fn a_saved_state_of_other_settings_is_refused_and_early_stopping_ignores_it() {
    let (train, validation) = small_split();
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        epochs: 1,
        ..resumable_config()
    };
    let state = state_for(dir.path(), RunKey::new().with("train.epochs", 1));
    let fresh = || LeNet5::new(&Cpu::default(), LeNet5Config::default(), 7);
    let mut model = fresh();
    training::fit_resumable(
        &mut model,
        &[&train],
        Some(&validation),
        &config,
        &mut Silent,
        &state,
    )
    .unwrap();
    let saved = std::fs::read(&state.path).unwrap();
    let refusal = |state: &SavedState, config: &TrainConfig| {
        let mut model = fresh();
        let untouched = values(&model);
        let error = training::fit_resumable(
            &mut model,
            &[&train],
            Some(&validation),
            config,
            &mut Silent,
            state,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(values(&model), untouched, "the model is left as it was");
        error
    };

    // Another key: refused, naming the setting.
    let other = state_for(dir.path(), RunKey::new().with("train.epochs", 2));
    let error = refusal(
        &other,
        &TrainConfig {
            epochs: 2,
            ..config.clone()
        },
    );
    assert!(
        error.contains("state.safetensors")
            && error.contains("train.epochs: 1 in the saved state, 2 now")
            && error.contains("Delete it"),
        "{error}"
    );
    // The same key but other training settings (a key that leaves them out): refused too.
    let error = refusal(
        &state,
        &TrainConfig {
            learning_rate: 1e-4,
            ..config.clone()
        },
    );
    assert!(
        error.contains("train.learning_rate: 0.002 in the saved state, 0.0001 now"),
        "{error}"
    );
    assert_eq!(std::fs::read(&state.path).unwrap(), saved, "left as it was");

    // Early stopping neither resumes from a state nor saves one.
    let with_stopping = TrainConfig {
        early_stopping: Some(EarlyStopping::new(1)),
        ..config
    };
    let mut model = fresh();
    let history = training::fit_resumable(
        &mut model,
        &[&train],
        Some(&validation),
        &with_stopping,
        &mut Silent,
        &state,
    )
    .unwrap();
    assert!(history.resumed_after_epochs.is_empty());
    assert_eq!(std::fs::read(&state.path).unwrap(), saved, "left as it was");
    let stopping_dir = tempfile::tempdir().unwrap();
    let stopping = state_for(stopping_dir.path(), RunKey::new());
    training::fit_resumable(
        &mut model,
        &[&train],
        Some(&validation),
        &with_stopping,
        &mut Silent,
        &stopping,
    )
    .unwrap();
    assert!(!stopping.path.exists());
}
