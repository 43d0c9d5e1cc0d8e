//! Stage: LeNet-5 (or the modified LeNet-5) trained from scratch and evaluated.

use dfdx::prelude::Cpu;
use serde::{Deserialize, Serialize};

use super::{Split, SplitConfig};
use crate::data::prepare::Prepared;
use crate::error::TrainError;
use crate::models::{ImageClassifier, LeNet5, LeNet5Config, ModelSummary};
use crate::ops::DeviceChoice;
use crate::progress::Progress;
use crate::training::{
    self, ClassificationReport, ConfusionMatrix, EarlyStopping, Evaluation, History, TrainConfig,
};
use crate::transfer::Score;

/// Everything that determines a LeNet-5 run's results (besides the images).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeNet5Stage {
    pub model: LeNet5Config,
    pub train: TrainConfig,
    pub split: SplitConfig,
    /// Test images evaluated (None: all 10,000).
    pub test_limit: Option<usize>,
}

impl LeNet5Stage {
    /// The walkthrough's LeNet-5: Adam 1e-3, batch 32, at most `max_epochs` epochs with early
    /// stopping on validation loss (patience 3, best weights restored), an 80/20 split.
    pub fn walkthrough(max_epochs: usize, seed: u64) -> Self {
        LeNet5Stage {
            model: LeNet5Config::default(),
            train: TrainConfig {
                epochs: max_epochs,
                seed,
                early_stopping: Some(EarlyStopping::new(3)),
                ..TrainConfig::default()
            },
            split: SplitConfig::walkthrough(seed),
            test_limit: None,
        }
    }

    /// Refuses settings that cannot train (before any data is read).
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.model.dense1_units == 0 {
            return Err(TrainError::Config {
                name: "dense_units".into(),
                message: "must be at least 1".into(),
            });
        }
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
    pub fn model(&self) -> LeNet5 {
        LeNet5::new(&Cpu::default(), self.model, self.split.seed)
    }

    /// Keras-style summary of the model.
    pub fn summary(&self) -> ModelSummary {
        self.model().summary()
    }
}

/// A trained and evaluated LeNet-5, as saved.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelResults {
    pub history: History,
    pub validation: Score,
    pub test: Option<Score>,
    pub confusion: Option<ConfusionMatrix>,
    pub report: Option<ClassificationReport>,
    pub params: usize,
    pub train_seconds: f64,
    pub train_images: usize,
}

impl ModelResults {
    /// Training images per second (epochs x images / training seconds).
    pub fn images_per_second(&self) -> f64 {
        (self.history.epochs.len() * self.train_images) as f64
            / self.history.total_seconds().max(1e-9)
    }
}

/// The stage's outcome: the trained model (on the CPU), its results and the test evaluation.
pub type LeNet5Outcome = super::Trained<LeNet5>;

/// Trains `model` on `device` (its trained weights come back into `model`, on the CPU).
pub fn fit(
    model: &mut LeNet5,
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
    config: &LeNet5Stage,
    device: DeviceChoice,
    progress: &mut dyn Progress,
) -> Result<LeNet5Outcome, TrainError> {
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

/// The split's validation images; an error when the config asks for some and none are left.
pub(crate) fn validation_part<'a>(
    split: &'a Split,
    config: &SplitConfig,
) -> Result<Option<&'a Prepared>, TrainError> {
    let validation = (!split.validation.is_empty()).then_some(&split.validation);
    if config.validation_split > 0.0 && validation.is_none() {
        return Err(TrainError::Config {
            name: "validation_split".into(),
            message: format!(
                "{}: {} training images leave no validation image; use more images",
                config.validation_split,
                split.train.len()
            ),
        });
    }
    Ok(validation)
}

/// A trained model's results: its scores on the split's validation images and on `test`
/// (with the confusion matrix and per-class report), and the test evaluation itself.
pub(crate) fn score<M: ImageClassifier>(
    model: &M,
    split: &Split,
    test: Option<&Prepared>,
    history: History,
) -> Result<(ModelResults, Option<Evaluation>), TrainError> {
    let validation_score = match (!split.validation.is_empty()).then_some(&split.validation) {
        Some(v) => Score::from(&training::evaluate(model, v, 1000)?),
        None => Score {
            accuracy: f64::NAN,
            loss: f64::NAN,
        },
    };
    let test_evaluation = test
        .map(|t| training::evaluate(model, t, 1000))
        .transpose()?;
    let (test_score, confusion, report) = match (&test_evaluation, test) {
        (Some(e), Some(t)) => {
            let confusion = e.confusion_matrix(&t.labels);
            let report = confusion.report();
            (Some(Score::from(e)), Some(confusion), Some(report))
        }
        _ => (None, None, None),
    };
    let results = ModelResults {
        train_seconds: history.total_seconds(),
        history,
        validation: validation_score,
        test: test_score,
        confusion,
        report,
        params: model.param_count(),
        train_images: split.train.len(),
    };
    Ok((results, test_evaluation))
}
