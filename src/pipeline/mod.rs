//! The study's stages, one function each: LeNet-5 training and evaluation ([`lenet5`]), the
//! hyperparameter search ([`tuning`]), cross-validation ([`cv`]), transfer learning
//! ([`transfer`]) and the comparison ([`comparison`]). Each takes a typed, serializable config
//! and returns typed results; the CLI, `study` and `notebook` (the front ends) only build
//! configs and present results. A config is what a front end saves next to its results, and
//! (with the data's fingerprint) what decides whether saved results are reused.

pub mod comparison;
pub mod cv;
pub mod lenet5;
pub mod modern_cnn;
pub mod transfer;
pub mod tuning;

use serde::{Deserialize, Serialize};

use crate::data::prepare::{split_scaled, Prepared};
use crate::data::Dataset;
use crate::error::TrainError;

/// How the training images are split into training and validation images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    /// Use only the first N training images (None: all).
    pub limit: Option<usize>,
    /// Fraction held out for validation (the walkthrough: 0.2).
    pub validation_split: f64,
    /// Keep class proportions in both parts.
    pub stratify: bool,
    /// Seeds the split (and, in the stages, the initialization and the shuffling).
    pub seed: u64,
}

impl SplitConfig {
    /// The walkthrough's 80/20 split of all the training images.
    pub fn walkthrough(seed: u64) -> Self {
        SplitConfig {
            limit: None,
            validation_split: 0.2,
            stratify: false,
            seed,
        }
    }

    /// Refuses a fraction outside [0, 1) and a limit of 0.
    pub fn validate(&self) -> Result<(), TrainError> {
        if !(0.0..1.0).contains(&self.validation_split) {
            return Err(TrainError::Config {
                name: "validation_split".into(),
                message: format!("must be in [0, 1), got {}", self.validation_split),
            });
        }
        if self.limit == Some(0) {
            return Err(TrainError::Config {
                name: "limit".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// The scaled training and validation images of `train_set`.
    pub fn apply(&self, train_set: &Dataset) -> Split {
        let (train, validation) = split_scaled(
            train_set,
            self.limit,
            self.validation_split,
            self.seed,
            self.stratify,
        );
        Split { train, validation }
    }
}

/// Training and validation images, scaled to 0..1.
#[derive(Clone, Debug, Default)]
pub struct Split {
    pub train: Prepared,
    pub validation: Prepared,
}

/// A model trained from scratch by a stage: the model (on the CPU), its results and the test
/// evaluation.
pub struct Trained<M> {
    pub model: M,
    pub results: lenet5::ModelResults,
    pub test_evaluation: Option<crate::training::Evaluation>,
}

/// Trains `model` on `split` (validating on its validation part, refused when `split_config`
/// asks for one and none is left) on `device`, then scores it on the validation and `test`
/// images.
pub(crate) fn train_and_score<M: crate::models::MovableClassifier>(
    mut model: M,
    split: &Split,
    test: Option<&Prepared>,
    (split_config, train_config): (&SplitConfig, &crate::training::TrainConfig),
    device: crate::ops::DeviceChoice,
    progress: &mut dyn crate::progress::Progress,
) -> Result<Trained<M>, TrainError> {
    let validation = lenet5::validation_part(split, split_config)?;
    let history = fit_on_device(
        &mut model,
        &split.train,
        validation,
        train_config,
        device,
        progress,
    )?;
    let (results, test_evaluation) = lenet5::score(&model, split, test, history)?;
    Ok(Trained {
        model,
        results,
        test_evaluation,
    })
}

/// Trains a CPU `model` on `device` (its trained weights come back into `model`).
pub(crate) fn fit_on_device<M: crate::models::MovableClassifier>(
    model: &mut M,
    train: &Prepared,
    validation: Option<&Prepared>,
    config: &crate::training::TrainConfig,
    device: crate::ops::DeviceChoice,
    progress: &mut dyn crate::progress::Progress,
) -> Result<crate::training::History, TrainError> {
    crate::on_device!(device, d => {
        let mut on_device = model.moved_to_device(d);
        let history = crate::training::fit(&mut on_device, train, validation, config, progress)?;
        *model = M::back_to_cpu(&on_device);
        history
    })
    .map_err(TrainError::from)
}

/// The first `limit` images of `test_set` (all when None), scaled to 0..1.
pub fn test_images(test_set: Option<&Dataset>, limit: Option<usize>) -> Option<Prepared> {
    let test = test_set?;
    Some(match limit {
        Some(n) => Prepared::from_dataset(&test.head(n)),
        None => Prepared::from_dataset(test),
    })
}
