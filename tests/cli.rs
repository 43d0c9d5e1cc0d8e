//! The command-line tool end to end on the committed 200-image sample.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample")
}

fn run(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_fashion-mnist"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("binary runs");
    output
}

fn stdout_of(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "fashion-mnist {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn data_and_eda_describe_the_sample() {
    let s = sample();
    let out = stdout_of(&["data", "--data", s.to_str().unwrap()]);
    assert!(out.contains("the path given (KaggleCsv)"), "{out}");
    assert!(out.contains("verified: n/a"), "{out}");
    assert!(out.contains("total              200     100"), "{out}");

    let out = stdout_of(&["eda", "--data", s.to_str().unwrap(), "--rows", "3"]);
    assert!(out.contains("shape: (200, 785)"), "{out}");
    assert!(out.contains("duplicate rows: 0"), "{out}");
    assert!(out.contains("missing values: 0"), "{out}");
    assert!(out.contains("Ankle boot"), "{out}");
}

#[test]
fn train_evaluate_predict_on_the_sample() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let out = stdout_of(&[
        "train",
        "--data",
        s.to_str().unwrap(),
        "--epochs",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.contains("Total params: 44,426"), "{out}");
    assert!(out.contains("test:       accuracy"), "{out}");
    for file in [
        "config.json",
        "history.json",
        "history.csv",
        "metrics.json",
        "model.safetensors",
    ] {
        assert!(out_dir.join(file).is_file(), "{file} missing");
    }
    let history: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("history.json")).unwrap())
            .unwrap();
    assert_eq!(history["epochs"].as_array().unwrap().len(), 2);
    let csv = std::fs::read_to_string(out_dir.join("history.csv")).unwrap();
    assert!(
        csv.starts_with("epoch,loss,accuracy,val_loss,val_accuracy,seconds\n1,"),
        "{csv}"
    );

    let checkpoint = out_dir.join("model.safetensors");
    let out = stdout_of(&[
        "evaluate",
        "--data",
        s.to_str().unwrap(),
        "--checkpoint",
        checkpoint.to_str().unwrap(),
    ]);
    assert!(
        out.contains("test accuracy") && out.contains("(100 images)"),
        "{out}"
    );
    assert!(out.contains("macro avg"), "{out}");

    // A product-photo-like picture: light background, 3x larger, not square.
    let sample_set =
        fashion_mnist::data::csv::read_kaggle_csv(&s.join("fashion-mnist_test.csv")).unwrap();
    let picture = image::GrayImage::from_fn(28 * 3, 28 * 4, |x, y| {
        let (sx, sy) = (x / 3, (y / 4) as usize);
        image::Luma([255 - sample_set.image(0)[sy * 28 + sx as usize]])
    });
    let picture_path = dir.path().join("boot.png");
    picture.save(&picture_path).unwrap();
    let out = stdout_of(&[
        "predict",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        picture_path.to_str().unwrap(),
    ]);
    assert_eq!(out.matches('%').count(), 3, "top-3: {out}");
    assert!(out.starts_with(picture_path.to_str().unwrap()), "{out}");
}

#[test]
fn cnn_trains_the_modern_cnn_and_evaluate_reads_its_checkpoint() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("cnn");
    let args = [
        "cnn",
        "--data",
        s.to_str().unwrap(),
        "--epochs",
        "2",
        "--block-channels",
        "8,16",
        "--dense-units",
        "32",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = stdout_of(&args);
    assert!(out.contains("Model: \"modern_cnn\""), "{out}");
    assert!(out.contains("block2_bn2 (BatchNormalization)"), "{out}");
    assert!(out.contains("best validation epoch: "), "{out}");
    assert!(out.contains("test:       accuracy"), "{out}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("config.json")).unwrap())
            .unwrap();
    let train = &config["stage"]["train"];
    assert_eq!(train["augmentation"]["max_shift"], 1);
    assert_eq!(train["augmentation"]["horizontal_flip"], true);
    assert_eq!(train["schedule"]["kind"], "cosine");
    assert_eq!(train["early_stopping"]["monitor"], "val_accuracy");
    assert_eq!(
        config["stage"]["model"]["block_channels"],
        serde_json::json!([8, 16])
    );
    let checkpoint = out_dir.join("model.safetensors");
    let out = stdout_of(&[
        "evaluate",
        "--data",
        s.to_str().unwrap(),
        "--checkpoint",
        checkpoint.to_str().unwrap(),
    ]);
    assert!(out.contains("(100 images)"), "{out}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("metrics.json")).unwrap())
            .unwrap();
    let reported = metrics["test_accuracy"].as_f64().unwrap();
    assert!(
        out.contains(&format!("test accuracy {reported:.4}")),
        "evaluate scores the checkpoint as training did ({reported:.4}): {out}"
    );

    // Settings that cannot build or train are refused before anything is written.
    let fresh = dir.path().join("refused");
    for (flag, value, message) in [
        ("--block-channels", "8,0", "block_channels"),
        ("--validation-split", "1.5", "--validation-split"),
        ("--learning-rate", "-1", "learning_rate"),
    ] {
        let mut bad = vec!["cnn", "--data", s.to_str().unwrap(), "--out"];
        bad.push(fresh.to_str().unwrap());
        bad.extend([flag, value]);
        let output = run(&bad);
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(message), "{flag} {value}: {err}");
        assert!(!fresh.exists(), "{flag} {value} wrote {}", fresh.display());
    }
}

#[test]
fn export_csv_and_errors() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let out = stdout_of(&[
        "data",
        "export-csv",
        "--data",
        s.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.contains("(200 rows)"), "{out}");
    assert_eq!(
        std::fs::read(dir.path().join("fashion-mnist_train.csv")).unwrap(),
        std::fs::read(s.join("fashion-mnist_train.csv")).unwrap()
    );

    // A bad CSV: exit code 1, the file, row and column on stderr.
    let bad = dir.path().join("bad.csv");
    let mut text = std::fs::read_to_string(s.join("fashion-mnist_test.csv")).unwrap();
    text = text.replacen("\n9,0,0,0", "\n9,0,x,0", 1);
    std::fs::write(&bad, text).unwrap();
    let output = run(&["data", "--data", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("bad.csv: row 2, column pixel2"), "{err}");

    let output = run(&[
        "train",
        "--data",
        s.to_str().unwrap(),
        "--dense-units",
        "64",
    ]);
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("lenet5-modified"));

    let output = run(&[
        "evaluate",
        "--data",
        s.to_str().unwrap(),
        "--checkpoint",
        "/nonexistent.safetensors",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent.safetensors"));
}

#[test]
fn resnet50_without_imagenet_weights_runs_random_init_labelled_so() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let transfer = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fashion-mnist"))
            .args([
                "transfer",
                "--backbone",
                "resnet50",
                "--data",
                s.to_str().unwrap(),
            ])
            .args(extra)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // The one decision for every front end: no ImageNet weights -> a random initialization,
    // with a warning that says how to import weights, and labelled so in every result.
    let output = transfer(&[
        "--epochs",
        "1",
        "--preprocessing",
        "caffe",
        "--out",
        "default",
    ]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("NO ResNet-50 IMAGENET WEIGHTS"), "{err}");
    assert!(err.contains("weights import FILE --arch resnet50"), "{err}");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("ResNet-50 (RANDOM init, frozen: not transfer learning)"),
        "{out}"
    );
    // Insisting on a file that is not there is an error.
    let output = transfer(&["--weights", "missing.safetensors"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.safetensors"));

    let output = transfer(&["--random-init", "--epochs", "2", "--preprocessing", "caffe"]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("NOT transfer learning"), "{err}");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("ResNet-50 (RANDOM init, frozen: not transfer learning)"),
        "{out}"
    );
    let run = dir.path().join("runs/transfer-resnet50");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("resnet50-caffe.json")).unwrap())
            .unwrap();
    assert_eq!(result["weights"]["imagenet"], false);
    assert_eq!(
        result["head"]["history"]["epochs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(run.join("resnet50-caffe-head-curves.svg").is_file());

    // The same run directory with other settings: refused, naming the setting.
    let output = transfer(&["--random-init", "--epochs", "3", "--preprocessing", "caffe"]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("config.head.epochs: 2 in the stored results, 3 now"),
        "{err}"
    );

    // ResNet-50 is fine-tuned end to end (its batch normalizations training), never from a
    // block: asking for that is refused before anything runs.
    let output = transfer(&[
        "--random-init",
        "--fine-tune-epochs",
        "1",
        "--out",
        "block5",
    ]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("end to end only (add --fine-tune-all)"),
        "{err}"
    );
    assert!(!dir.path().join("block5").exists());
    // Both backbones halve the input five times: a side under 32 is refused up front.
    let output = transfer(&["--random-init", "--side", "31", "--out", "side31"]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("--side must be at least 32"), "{err}");
    assert!(!dir.path().join("side31").exists());
    let output = transfer(&[
        "--random-init",
        "--epochs",
        "1",
        "--fine-tune-all",
        "--fine-tune-epochs",
        "1",
        "--preprocessing",
        "caffe",
        "--out",
        "end-to-end",
    ]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains("fine-tuning ResNet-50 end to end + head"),
        "{err}"
    );
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            dir.path()
                .join("end-to-end/resnet50-caffe-fine-tuned-all.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let head_params = result["head"]["trainable_params"].as_u64().unwrap();
    let tuned = &result["fine_tune"];
    // The backbone's 23,587,712 parameters less its 53,120 running averages, and the head.
    assert_eq!(
        tuned["trainable_params"].as_u64().unwrap(),
        23_587_712 - 53_120 + head_params
    );
    assert_eq!(tuned["history"]["epochs"].as_array().unwrap().len(), 1);
    assert!(tuned["test"]["accuracy"].as_f64().is_some(), "{tuned}");

    let output = Command::new(env!("CARGO_BIN_EXE_fashion-mnist"))
        .args(["weights", "fetch", "resnet50"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no package registry carries ResNet-50")
    );
}

#[test]
fn report_runs_the_whole_study_and_reuses_finished_stages() {
    // The 2,000/1,000-image sample: the quick preset's own subset sizes.
    let s = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/idx");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/weights");
    let features = dir.path().join("features");
    let args = [
        "report",
        "--quick",
        "--data",
        s.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--weights-dir",
        weights.to_str().unwrap(),
        "--cache",
        features.to_str().unwrap(),
    ];
    let first = run(&args);
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    let table = String::from_utf8_lossy(&first.stdout);
    for expected in [
        "LeNet-5 (from scratch)",
        "0.8947",
        "VGG-16 (ImageNet, frozen), caffe input",
        "VGG-16 (ImageNet, frozen), unit input",
        "block 5 fine-tuned",
        "ResNet-50 (RANDOM init, frozen: not transfer learning)",
        "0.7875",
        "modern CNN (from scratch",
        "VGG-16 (ImageNet, frozen), caffe input, 64x64",
        "VGG-16 (ImageNet), caffe input + fine-tuned end to end",
        "VGG-16 (ImageNet), caffe input, 64x64 + fine-tuned end to end",
    ] {
        assert!(table.contains(expected), "{expected} missing from\n{table}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.matches("<svg").count() >= 9,
        "charts missing from the report"
    );
    assert!(html.contains("NOT transfer learning"));
    assert!(html.contains("VGG-16 by fine-tuning depth and input size"));
    assert!(html.contains("64x64: test (val), time"));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["preset"]["name"], "quick");
    assert_eq!(
        results["lenet5"]["device"],
        format!("cpu ({} threads)", num_threads())
    );
    // Every stage but the comparison (which only writes results.json) keeps a record.
    let stages = fashion_mnist::study::STAGES;
    assert_eq!(stages.last(), Some(&"comparison"));
    for stage in &stages[..stages.len() - 1] {
        assert!(out.join(stage).join("stage.json").is_file(), "{stage}");
    }

    // A second run reuses every stage.
    let second = run(&args);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert_eq!(err.matches("reusing earlier results").count(), 8, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&second.stdout).lines().next(),
        table.lines().next()
    );

    // A stage whose artifact is gone or changed runs again; the others are reused.
    let checkpoint = out.join("lenet5/model.safetensors");
    for damage in ["delete", "truncate"] {
        if damage == "delete" {
            std::fs::remove_file(&checkpoint).unwrap();
        } else {
            let bytes = std::fs::read(&checkpoint).unwrap();
            std::fs::write(&checkpoint, &bytes[..bytes.len() - 100]).unwrap();
        }
        let again = run(&args);
        let err = String::from_utf8_lossy(&again.stderr);
        assert!(again.status.success(), "{err}");
        assert!(err.contains("lenet5/model.safetensors"), "{damage}: {err}");
        assert!(err.contains("running the stage again"), "{damage}: {err}");
        assert_eq!(err.matches("reusing earlier results").count(), 7, "{err}");
        fashion_mnist::training::checkpoint::load_lenet5(
            &dfdx::prelude::Cpu::default(),
            &checkpoint,
        )
        .expect("the stage wrote its checkpoint again");
    }

    // A stage whose own settings changed (as when a default changes): refused, naming what
    // differs and the stage to redo; `--redo` runs that stage alone and keeps the old one aside.
    let record_path = out.join("modern_cnn/stage.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    let stored_epochs = record["run_key"]["config.train.epochs"].as_u64().unwrap();
    record["run_key"]["config.train.epochs"] = (stored_epochs + 1).into();
    std::fs::write(&record_path, record.to_string()).unwrap();
    let refused = run(&args);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "config.train.epochs: {} in the stored results, {stored_epochs} now",
            stored_epochs + 1
        )),
        "{err}"
    );
    assert!(err.contains("report --redo modern_cnn"), "{err}");
    let unknown = run(&[&args[..], &["--redo", "modern-cnn"]].concat());
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("modern_cnn"));
    assert!(record_path.is_file(), "a refused --redo moved nothing");
    let redone = run(&[&args[..], &["--redo", "modern_cnn"]].concat());
    let err = String::from_utf8_lossy(&redone.stderr);
    assert!(redone.status.success(), "{err}");
    assert_eq!(err.matches("reusing earlier results").count(), 7, "{err}");
    assert!(out.join("modern_cnn.old/stage.json").is_file());
    assert!(record_path.is_file());

    // Other data for the same run directory: refused, naming what differs, nothing rerun.
    let mut other = args.to_vec();
    other[3] = sample().to_str().unwrap().to_string().leak();
    let refused = run(&other);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("train_data: "), "{err}");
    assert!(err.contains("--fresh"), "{err}");

    // A build without the `cuda` feature refuses the GPU by name, before doing any work.
    if cfg!(not(feature = "cuda")) {
        for command in ["report", "train"] {
            let cuda = run(&[command, "--device", "cuda", "--data", s.to_str().unwrap()]);
            assert!(!cuda.status.success());
            let err = String::from_utf8_lossy(&cuda.stderr);
            assert!(
                err.contains("--device cuda: this build has no CUDA support"),
                "{err}"
            );
        }
    }
}

fn num_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `bench --model modern-cnn` times the modern CNN's epochs (one row per epoch, on stdout), and
/// refuses a peer comparison it has no script for before reading any data.
#[test]
fn bench_times_modern_cnn_epochs_and_refuses_peers_for_it() {
    let s = sample();
    let out = stdout_of(&[
        "bench",
        "--data",
        s.to_str().unwrap(),
        "--model",
        "modern-cnn",
        "--images",
        "128",
        "--batch-size",
        "64",
        "--epochs",
        "2",
    ]);
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("fashion-mnist modern CNN"))
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[1].split_whitespace().any(|v| v == "128"), "{out}");

    let refused = run(&[
        "bench",
        "--data",
        "/nonexistent",
        "--model",
        "modern-cnn",
        "--keras",
        "python3",
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("no peer script for the modern CNN"), "{err}");
}
