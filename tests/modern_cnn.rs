//! The modern CNN (beyond the walkthrough): it learns with augmentation and a cosine schedule,
//! keeps the best validation epoch, scores in inference mode with batch normalization's running
//! averages, and its checkpoints load back to the same predictions.

mod common;

use dfdx::prelude::*;
use fashion_mnist::data::augment::Augmentation;
use fashion_mnist::data::prepare::Prepared;
use fashion_mnist::models::{ImageClassifier, ModernCnn, ModernCnnConfig};
use fashion_mnist::pipeline::modern_cnn::{self, ModernCnnStage};
use fashion_mnist::pipeline::SplitConfig;
use fashion_mnist::training::{self, checkpoint, Silent, TrainConfig};

fn small() -> ModernCnnConfig {
    ModernCnnConfig {
        block_channels: vec![8, 16],
        dense_units: 32,
        block_dropout: 0.1,
        dense_dropout: 0.2,
    }
}

/// Trained with the recipe (augmentation, cosine schedule, best validation epoch kept) on
/// real images, the network scores well above chance on held-out test images; its checkpoint
/// gives the same test predictions.
#[test]
fn the_modern_cnn_learns_and_its_checkpoint_predicts_the_same() {
    let (train_set, test_set) = common::real_images(2000, 500);
    let stage = ModernCnnStage {
        model: small(),
        split: SplitConfig {
            limit: None,
            ..SplitConfig::walkthrough(3)
        },
        ..ModernCnnStage::recommended(4, 3)
    };
    let stage = ModernCnnStage {
        train: TrainConfig {
            batch_size: 32,
            ..stage.train.clone()
        },
        ..stage
    };
    let split = stage.split.apply(&train_set);
    let test = Prepared::from_dataset(&test_set);
    let outcome = modern_cnn::run(
        &split,
        Some(&test),
        &stage,
        fashion_mnist::ops::DeviceChoice::Cpu,
        &mut Silent,
    )
    .unwrap();
    let results = &outcome.results;
    let accuracy = results.test.unwrap().accuracy;
    eprintln!(
        "modern CNN (8/16 channels) after 4 epochs on 1,600 images: validation {:.3}, test {accuracy:.3}",
        results.validation.accuracy
    );
    assert!(accuracy > 0.6, "test accuracy {accuracy}");
    assert_eq!(results.history.epochs.len(), 4);
    // The kept epoch is the one with the best validation accuracy.
    let best = results.history.best_epoch.expect("a best epoch");
    let best_val = results.history.epochs[best - 1].val_accuracy.unwrap();
    assert!(results
        .history
        .epochs
        .iter()
        .all(|e| e.val_accuracy.unwrap() <= best_val));
    assert!((results.validation.accuracy - best_val).abs() < 1e-9);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cnn.safetensors");
    checkpoint::save(&outcome.model, &path).unwrap();
    let loaded = checkpoint::load_modern_cnn(&Cpu::default(), &path).unwrap();
    let reloaded = training::evaluate(&loaded, &test, 250).unwrap();
    assert_eq!(
        reloaded.predicted,
        outcome.test_evaluation.unwrap().predicted
    );
    // Not a LeNet-5 checkpoint, and the error says what it holds.
    let err = checkpoint::load_lenet5(&Cpu::default(), &path).unwrap_err();
    assert!(err.to_string().contains("modern_cnn"), "{err}");
}

/// The same seed gives the same run (augmentation draws, dropout masks, shuffling); another
/// seed gives another.
#[test]
fn augmented_training_is_reproducible_from_the_seed() {
    let (train_set, _) = common::real_images(600, 0);
    let train = Prepared::from_dataset(&train_set);
    let run_with = |seed: u64, augmentation: Option<Augmentation>| {
        let mut model = ModernCnn::new(&Cpu::default(), small(), 1);
        let config = TrainConfig {
            epochs: 1,
            batch_size: 64,
            seed,
            augmentation,
            ..TrainConfig::default()
        };
        training::fit(&mut model, &train, None, &config, &mut Silent).unwrap();
        model
            .forward(
                Cpu::default().tensor_from_vec(train.pixels[..784 * 4].to_vec(), (4, 1, 28, 28)),
            )
            .as_vec()
    };
    let run = |seed| run_with(seed, Some(Augmentation::shifts_and_flips()));
    let first = run(5);
    assert_eq!(first, run(5));
    assert_ne!(first, run(6));
    // The same seed without augmentation shuffles the same way: only the shifts and flips
    // differ, and they change the run.
    assert_ne!(first, run_with(5, None));
}

/// Shifts beyond half an image are refused before training starts.
#[test]
fn a_shift_that_empties_the_picture_is_refused() {
    let config = TrainConfig {
        augmentation: Some(Augmentation {
            max_shift: 28,
            horizontal_flip: false,
        }),
        ..TrainConfig::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("augmentation") && err.contains("max_shift 28"),
        "{err}"
    );
}

/// Feature vectors are not images: a head refuses augmentation instead of zeroing its inputs.
#[test]
fn a_head_refuses_augmentation() {
    let mut head = fashion_mnist::models::DenseHead::new(
        &Cpu::default(),
        fashion_mnist::models::HeadConfig::walkthrough_vgg16(16),
        0,
    );
    let vectors = Prepared {
        pixels: vec![0.5; 16 * 4],
        labels: vec![0, 1, 2, 3],
    };
    let config = TrainConfig {
        augmentation: Some(Augmentation::shifts_and_flips()),
        ..TrainConfig::default()
    };
    let err = training::fit_head(&mut head, &vectors, None, &config, &mut Silent).unwrap_err();
    assert!(err.to_string().contains("augmentation"), "{err}");
}
