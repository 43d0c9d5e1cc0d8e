//! Stage: K-fold cross-validation of the (tuned) modified LeNet-5.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cross_validation::{self, CvConfig, CvResults, FoldRecord};
use crate::data::prepare::Prepared;
use crate::data::Dataset;
use crate::error::TrainError;
use crate::models::LeNet5Config;
use crate::ops::DeviceChoice;
use crate::progress::Progress;
use crate::training::TrainConfig;
use crate::tuning::LeNet5Hyperparameters;

/// Everything that determines a cross-validation's results (besides the images).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CvStage {
    pub cv: CvConfig,
    /// Use only the first N training images (None: all).
    pub limit: Option<usize>,
}

impl CvStage {
    /// The walkthrough's cross-validation of the tuned model: `folds` folds of `epochs` epochs,
    /// batch 32, Adam at the tuned learning rate.
    pub fn walkthrough(
        folds: usize,
        epochs: usize,
        tuned: LeNet5Hyperparameters,
        seed: u64,
    ) -> Self {
        CvStage {
            cv: CvConfig {
                folds,
                seed,
                stratified: false,
                model: LeNet5Config {
                    dense1_units: tuned.units,
                },
                train: TrainConfig {
                    epochs,
                    learning_rate: tuned.learning_rate,
                    seed,
                    ..TrainConfig::default()
                },
            },
            limit: None,
        }
    }

    /// Refuses settings that cannot train (before any data is read).
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |name: &str, message: String| {
            Err(TrainError::Config {
                name: name.into(),
                message,
            })
        };
        if self.cv.folds < 2 {
            return bad(
                "folds",
                format!("must be at least 2, got {}", self.cv.folds),
            );
        }
        if self.cv.model.dense1_units == 0 {
            return bad("dense_units", "must be at least 1".into());
        }
        if self.limit == Some(0) {
            return bad("limit", "must be at least 1".into());
        }
        self.cv.train.validate()
    }

    /// The images the folds are made of: the first `limit` of `train_set`, scaled.
    pub fn images(&self, train_set: &Dataset) -> Prepared {
        match self.limit {
            Some(n) => Prepared::from_dataset(&train_set.head(n)),
            None => Prepared::from_dataset(train_set),
        }
    }
}

/// Mean and spread of the folds' validation scores, with every fold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CvSummary {
    pub folds: Vec<FoldRecord>,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub loss_mean: f64,
    pub loss_std: f64,
}

impl CvSummary {
    pub fn of(results: CvResults) -> Self {
        let (accuracy_mean, accuracy_std) = results.accuracy_mean_std();
        let (loss_mean, loss_std) = results.loss_mean_std();
        CvSummary {
            folds: results.folds,
            accuracy_mean,
            accuracy_std,
            loss_mean,
            loss_std,
        }
    }

    /// The folds as [`CvResults`] (for its table and best fold).
    pub fn results(&self) -> CvResults {
        CvResults {
            folds: self.folds.clone(),
        }
    }
}

/// The stage's cross-validation on `images` (see [`CvStage::images`]); `results_file` keeps
/// finished folds (an interrupted run resumes).
pub fn run(
    images: &Prepared,
    config: &CvStage,
    results_file: Option<&Path>,
    device: DeviceChoice,
    progress: &mut dyn Progress,
) -> Result<CvSummary, TrainError> {
    config.validate()?;
    let results = crate::on_device!(device, d => cross_validation::cross_validate(
        d,
        images,
        &config.cv,
        results_file,
        progress,
    ))??;
    Ok(CvSummary::of(results))
}
