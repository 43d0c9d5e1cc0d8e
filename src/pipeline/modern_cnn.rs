//! Stage: the modern CNN (conv-BatchNorm-ReLU blocks) trained from scratch with augmentation
//! and a cosine learning-rate schedule, the best epoch kept on validation accuracy, then
//! evaluated. Beyond the walkthrough: how far a small CNN from scratch goes.

use dfdx::prelude::Cpu;
use serde::{Deserialize, Serialize};

use super::{Split, SplitConfig};
use crate::data::augment::Augmentation;
use crate::data::prepare::Prepared;
use crate::error::TrainError;
use crate::models::{ImageClassifier, ModelSummary, ModernCnn, ModernCnnConfig};
use crate::ops::DeviceChoice;
use crate::progress::Progress;
use crate::training::{EarlyStopping, History, LearningRateSchedule, Monitor, TrainConfig};

/// Everything that determines a modern-CNN run's results (besides the images).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModernCnnStage {
    pub model: ModernCnnConfig,
    pub train: TrainConfig,
    pub split: SplitConfig,
    /// Test images evaluated (None: all 10,000).
    pub test_limit: Option<usize>,
}

impl ModernCnnStage {
    /// The recipe: the default architecture, Adam with a peak rate of 3e-3 on a cosine
    /// schedule (10% warm-up), batch 64, shifts of up to 1 pixel and horizontal flips, and the
    /// epoch with the best validation accuracy kept; the walkthrough's 80/20 split.
    pub fn recommended(epochs: usize, seed: u64) -> Self {
        ModernCnnStage {
            model: ModernCnnConfig::default(),
            train: TrainConfig {
                epochs,
                batch_size: 64,
                learning_rate: 3e-3,
                seed,
                early_stopping: Some(keep_best_epoch(epochs)),
                augmentation: Some(Augmentation::shifts_and_flips()),
                schedule: LearningRateSchedule::Cosine {
                    warmup_fraction: 0.1,
                },
            },
            split: SplitConfig::walkthrough(seed),
            test_limit: None,
        }
    }

    /// Refuses settings that cannot train (before any data is read).
    pub fn validate(&self) -> Result<(), TrainError> {
        self.model
            .validate()
            .map_err(|message| TrainError::Config {
                name: "model".into(),
                message,
            })?;
        self.split.validate()?;
        self.train.validate()?;
        if self.train.early_stopping.is_some() && self.split.validation_split == 0.0 {
            return Err(TrainError::Config {
                name: "early_stopping".into(),
                message: "needs validation images: a validation split above 0".into(),
            });
        }
        Ok(())
    }

    /// A fresh model of this stage, as it starts training (seeded by the split's seed).
    pub fn model(&self) -> ModernCnn {
        ModernCnn::new(&Cpu::default(), self.model.clone(), self.split.seed)
    }

    /// Keras-style summary of the model.
    pub fn summary(&self) -> ModelSummary {
        self.model().summary()
    }
}

/// Early stopping that never stops a run of `epochs` epochs but restores the epoch with the
/// best validation accuracy: model selection on validation images, never on test images.
pub fn keep_best_epoch(epochs: usize) -> EarlyStopping {
    EarlyStopping {
        monitor: Monitor::ValAccuracy,
        patience: epochs.max(1),
        min_delta: 0.0,
        restore_best_weights: true,
    }
}

/// The stage's outcome: the trained model (on the CPU), its results and the test evaluation.
pub type ModernCnnOutcome = super::Trained<ModernCnn>;

/// Trains `model` on `device` (its trained weights come back into `model`, on the CPU).
pub fn fit(
    model: &mut ModernCnn,
    train: &Prepared,
    validation: Option<&Prepared>,
    config: &TrainConfig,
    device: DeviceChoice,
    progress: &mut dyn Progress,
) -> Result<History, TrainError> {
    super::fit_on_device(model, train, validation, config, device, progress)
}

/// Trains the stage's model on `split` (validating on its validation part when there is one),
/// then evaluates it on the validation and `test` images.
pub fn run(
    split: &Split,
    test: Option<&Prepared>,
    config: &ModernCnnStage,
    device: DeviceChoice,
    progress: &mut dyn Progress,
) -> Result<ModernCnnOutcome, TrainError> {
    config.validate()?;
    super::train_and_score(
        config.model(),
        split,
        test,
        (&config.split, &config.train),
        device,
        progress,
    )
}
