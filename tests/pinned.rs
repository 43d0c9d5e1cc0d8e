//! Pinned numbers: short runs on the committed sample (the first real images, the same on
//! every machine) must keep giving the numbers they gave when the pipeline was rebuilt around
//! stage functions. Tolerances allow float rounding (another machine's vector width), never a
//! changed seed, split, initialization or data order, which move these numbers by far more.
//! And the CLI and the library's stage function must agree exactly on this machine.

mod common;

use std::process::Command;

use fashion_mnist::data::prepare::Prepared;
use fashion_mnist::data::source;
use fashion_mnist::ops::DeviceChoice;
use fashion_mnist::pipeline::lenet5::{self, LeNet5Stage};
use fashion_mnist::pipeline::SplitConfig;
use fashion_mnist::progress::Silent;
use fashion_mnist::training::{History, TrainConfig};

/// `train --limit 1000 --epochs 2` (seed 42): per epoch loss, accuracy, val_loss,
/// val_accuracy, as measured on 2026-12-01 (before and after the pipeline change: identical).
const TRAIN_HISTORY: [(f64, f64, f64, f64); 2] = [
    (1.982433786392212, 0.3175, 1.5359737192010714, 0.475),
    (1.1336446571350098, 0.59875, 1.1058458313079333, 0.57),
];

/// `cv --limit 600 --folds 2 --epochs 1`: (val_accuracy, val_loss) per fold.
const CV_FOLDS: [(f64, f64); 2] = [
    (0.37333333333333335, 2.180450648660518),
    (0.44666666666666666, 2.1025098586795297),
];

fn run(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_fashion-mnist"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn close(name: &str, got: f64, pinned: f64, tolerance: f64) {
    assert!(
        (got - pinned).abs() <= tolerance,
        "{name}: {got}, pinned {pinned} (tolerance {tolerance})"
    );
}

fn check_history(history: &History) {
    assert_eq!(history.epochs.len(), TRAIN_HISTORY.len());
    for (record, &(loss, accuracy, val_loss, val_accuracy)) in
        history.epochs.iter().zip(&TRAIN_HISTORY)
    {
        let epoch = record.epoch;
        close(&format!("epoch {epoch} loss"), record.loss, loss, 2e-3);
        // 800 training and 200 validation images: up to two training images and one
        // validation image may flip with rounding.
        close(
            &format!("epoch {epoch} accuracy"),
            record.accuracy,
            accuracy,
            2.6e-3,
        );
        close(
            &format!("epoch {epoch} val_loss"),
            record.val_loss.unwrap(),
            val_loss,
            2e-3,
        );
        close(
            &format!("epoch {epoch} val_accuracy"),
            record.val_accuracy.unwrap(),
            val_accuracy,
            5.1e-3,
        );
    }
}

#[test]
fn train_reproduces_the_pinned_history_and_the_stage_function_matches_it_exactly() {
    let sample = common::sample_idx_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("train");
    run(&[
        "train",
        "--data",
        sample.to_str().unwrap(),
        "--limit",
        "1000",
        "--epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(out.join("history.json")).unwrap();
    let cli: History = serde_json::from_str(&text).unwrap();
    check_history(&cli);

    // The library's stage with the same config: the same numbers, to the last bit.
    let data = source::load(&source::locate(Some(&sample)).unwrap()).unwrap();
    let config = LeNet5Stage {
        train: TrainConfig {
            epochs: 2,
            ..TrainConfig::default()
        },
        split: SplitConfig {
            limit: Some(1000),
            ..SplitConfig::walkthrough(42)
        },
        ..LeNet5Stage::walkthrough(2, 42)
    };
    let split = config.split.apply(&data.train);
    let test = Prepared::from_dataset(data.test.as_ref().unwrap());
    let outcome =
        lenet5::run(&split, Some(&test), &config, DeviceChoice::Cpu, &mut Silent).unwrap();
    let strip = |h: &History| -> Vec<(f64, f64, Option<f64>, Option<f64>)> {
        h.epochs
            .iter()
            .map(|r| (r.loss, r.accuracy, r.val_loss, r.val_accuracy))
            .collect()
    };
    assert_eq!(strip(&outcome.results.history), strip(&cli));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(
        metrics["test_accuracy"].as_f64(),
        outcome.results.test.map(|t| t.accuracy)
    );
}

#[test]
fn cross_validation_reproduces_the_pinned_folds() {
    let sample = common::sample_idx_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cv");
    run(&[
        "cv",
        "--data",
        sample.to_str().unwrap(),
        "--limit",
        "600",
        "--folds",
        "2",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let folds: Vec<serde_json::Value> = std::fs::read_to_string(out.join("folds.jsonl"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(folds.len(), CV_FOLDS.len());
    for (fold, &(accuracy, loss)) in folds.iter().zip(&CV_FOLDS) {
        let n = fold["fold"].as_u64().unwrap();
        // 300 validation images per fold: one image is 0.0033.
        close(
            &format!("fold {n} val_accuracy"),
            fold["val_accuracy"].as_f64().unwrap(),
            accuracy,
            3.4e-3,
        );
        close(
            &format!("fold {n} val_loss"),
            fold["val_loss"].as_f64().unwrap(),
            loss,
            2e-3,
        );
    }
}
