//! Stage: the hyperparameter search over the modified LeNet-5 (random search or successive
//! halving).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Split, SplitConfig};
use crate::error::TrainError;
use crate::ops::DeviceChoice;
use crate::progress::Progress;
use crate::training::EarlyStopping;
use crate::tuning::{
    self, LeNet5Hyperparameters, LeNet5Trials, Objective, SearchOptions, SearchSpace, TuningResults,
};

/// Which search, with its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Search {
    /// Keras Tuner's RandomSearch: `max_trials` draws, each trained `epochs` epochs.
    Random { max_trials: usize, epochs: usize },
    /// `trials` draws for `min_epochs`; the best 1/eta go on with eta times the epochs, up to
    /// `max_epochs`.
    Halving {
        trials: usize,
        min_epochs: usize,
        max_epochs: usize,
        eta: usize,
    },
}

impl Search {
    /// The walkthrough's random search: 8 trials of 10 epochs.
    pub fn walkthrough() -> Self {
        Search::Random {
            max_trials: 8,
            epochs: 10,
        }
    }

    /// "random" or "halving": the name of its results file and charts.
    pub fn slug(&self) -> &'static str {
        match self {
            Search::Random { .. } => "random",
            Search::Halving { .. } => "halving",
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            Search::Random { .. } => "random search",
            Search::Halving { .. } => "successive halving",
        }
    }

    /// Refuses budgets that train nothing or cannot form rungs.
    pub fn validate(&self) -> Result<(), TrainError> {
        match *self {
            Search::Random { max_trials, epochs } => {
                tuning::check_random_search(max_trials, epochs)
            }
            Search::Halving {
                trials,
                min_epochs,
                max_epochs,
                eta,
            } => tuning::check_successive_halving(trials, min_epochs, max_epochs, eta),
        }
    }
}

/// Everything that determines a search's results (besides the images).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuningStage {
    /// Its names must be [`LeNet5Hyperparameters::NAMES`].
    pub space: SearchSpace,
    pub search: Search,
    pub objective: Objective,
    /// Runs per trial (different initializations), scores averaged.
    pub executions_per_trial: usize,
    pub batch_size: usize,
    /// Early stopping inside each trial (patience in epochs; None: off).
    pub early_stopping: Option<usize>,
    /// The split trials train and are scored on; its seed also seeds the draws and the trials.
    pub split: SplitConfig,
}

impl TuningStage {
    /// The walkthrough's search: its space, 8 trials of 10 epochs, validation accuracy.
    pub fn walkthrough(seed: u64) -> Self {
        TuningStage {
            space: SearchSpace::walkthrough(),
            search: Search::walkthrough(),
            objective: Objective::MaxValAccuracy,
            executions_per_trial: 1,
            batch_size: 32,
            early_stopping: None,
            split: SplitConfig::walkthrough(seed),
        }
    }

    /// Refuses settings that cannot give a meaningful search (before any data is read),
    /// including a space whose names are not the modified LeNet-5's.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.space
            .validate()
            .map_err(|message| TrainError::Config {
                name: "search space".into(),
                message,
            })?;
        LeNet5Hyperparameters::check_space(&self.space)?;
        self.search.validate()?;
        self.split.validate()?;
        let positive = [
            ("executions per trial", Some(self.executions_per_trial)),
            ("batch size", Some(self.batch_size)),
            ("early stopping patience", self.early_stopping),
        ];
        for (name, value) in positive {
            if value == Some(0) {
                return Err(TrainError::Config {
                    name: name.into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

/// The stage's search on `split`; `results_file` keeps finished trials (an interrupted search
/// resumes); `parallel_trials` trials train at once (the results do not depend on it).
pub fn run(
    split: &Split,
    config: &TuningStage,
    results_file: Option<&Path>,
    parallel_trials: usize,
    device: DeviceChoice,
    progress: &mut dyn Progress,
) -> Result<TuningResults, TrainError> {
    config.validate()?;
    if split.validation.is_empty() {
        return Err(TrainError::Config {
            name: "validation_split".into(),
            message: format!(
                "{}: {} training images leave no validation image to score trials on; use more images",
                config.split.validation_split,
                split.train.len()
            ),
        });
    }
    let runner = LeNet5Trials::new(
        &split.train,
        &split.validation,
        config.batch_size,
        config.split.seed,
        config.early_stopping.map(EarlyStopping::new),
        device,
    );
    let options = SearchOptions {
        objective: config.objective,
        executions_per_trial: config.executions_per_trial,
        seed: config.split.seed,
        parallel_trials,
    };
    match config.search {
        Search::Random { max_trials, epochs } => tuning::random_search(
            &config.space,
            max_trials,
            epochs,
            &runner,
            &options,
            results_file,
            progress,
        ),
        Search::Halving {
            trials,
            min_epochs,
            max_epochs,
            eta,
        } => tuning::successive_halving(
            &config.space,
            trials,
            min_epochs,
            max_epochs,
            eta,
            &runner,
            &options,
            results_file,
            progress,
        ),
    }
}

/// The search's best trial, typed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuningSummary {
    pub trials: Vec<tuning::TrialRecord>,
    pub best_units: usize,
    pub best_learning_rate: f64,
    pub best_score: f64,
}

impl TuningSummary {
    /// The best trial of `results` (an error when no trial finished).
    pub fn of(results: &TuningResults) -> Result<Self, TrainError> {
        let best = results.best().ok_or_else(|| TrainError::Config {
            name: "tuning".into(),
            message: "no trial finished".into(),
        })?;
        let values = LeNet5Hyperparameters::from_values(&best.hyperparams)?;
        Ok(TuningSummary {
            best_units: values.units,
            best_learning_rate: values.learning_rate,
            best_score: best.score,
            trials: results.trials.clone(),
        })
    }

    pub fn best(&self) -> LeNet5Hyperparameters {
        LeNet5Hyperparameters {
            units: self.best_units,
            learning_rate: self.best_learning_rate,
        }
    }
}
