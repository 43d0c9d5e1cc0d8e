//! Hyperparameter search, as Keras Tuner does it for the walkthrough: a search space, random
//! search with a seed (`max_trials`, executions per trial, an objective), and successive
//! halving (the bracket Hyperband repeats) that spends fewer epochs on poor trials. Every
//! finished trial is appended to a JSON-lines file, so an interrupted search resumes without
//! redoing finished trials.

mod space;

pub use space::{HyperParams, Param, SearchSpace};

use std::path::Path;
use std::time::Instant;

use crate::ops::{DeviceChoice, ModelDevice};
use crate::resume::RunKey;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::prepare::Prepared;
use crate::error::{DataError, TrainError};
use crate::models::{LeNet5, LeNet5Config};
use crate::progress::Progress;
use crate::report::Table;
use crate::training::{self, EarlyStopping, History, Silent, TrainConfig};

/// The metric a search optimizes, and in which direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Highest validation accuracy (the walkthrough's objective).
    MaxValAccuracy,
    /// Lowest validation loss.
    MinValLoss,
}

impl Objective {
    /// The best value of the metric over a run's epochs (as Keras Tuner scores a trial).
    pub fn score(&self, history: &History) -> f64 {
        let values = history.epochs.iter();
        match self {
            Objective::MaxValAccuracy => values
                .filter_map(|r| r.val_accuracy)
                .fold(f64::NEG_INFINITY, f64::max),
            Objective::MinValLoss => values
                .filter_map(|r| r.val_loss)
                .fold(f64::INFINITY, f64::min),
        }
    }

    /// Whether score `a` is better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self {
            Objective::MaxValAccuracy => a > b,
            Objective::MinValLoss => a < b,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Objective::MaxValAccuracy => "val_accuracy",
            Objective::MinValLoss => "val_loss",
        }
    }
}

/// Trains one model with given hyperparameters for a number of epochs.
pub trait TrialRunner: Sync {
    /// `execution` numbers repeated runs of the same trial (different initializations).
    fn run(
        &self,
        trial: usize,
        hyperparams: &HyperParams,
        epochs: usize,
        execution: usize,
    ) -> Result<History, TrainError>;

    /// Everything besides the hyperparameters and the epochs that determines a trial's result
    /// (the exact training and validation images, the training settings, the device): finished
    /// trials are reused only under the same key.
    fn key(&self) -> RunKey;

    /// Refuses a space this runner cannot train (names it does not know, or lacks).
    fn check_space(&self, _space: &SearchSpace) -> Result<(), TrainError> {
        Ok(())
    }

    /// Trials this runner can train at once (`SearchOptions::parallel_trials` is capped by it).
    fn max_parallel_trials(&self) -> usize {
        usize::MAX
    }
}

/// One finished trial.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrialRecord {
    /// Which search ("random" or "halving") and, for halving, which rung.
    pub search: String,
    pub rung: usize,
    pub trial: usize,
    pub hyperparams: HyperParams,
    pub epochs: usize,
    /// The objective's score of each execution.
    pub execution_scores: Vec<f64>,
    /// Mean over executions.
    pub score: f64,
    /// History of the first execution.
    pub history: History,
    pub seconds: f64,
}

impl TrialRecord {
    /// Epochs actually trained (early stopping may end a run before its budget).
    pub fn epochs_trained(&self) -> usize {
        self.history.epochs.len() * self.execution_scores.len()
    }
}

impl std::fmt::Display for TrialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values: Vec<String> = self
            .hyperparams
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        write!(
            f,
            "{} trial {:>2} (rung {}, {} epochs): {} -> {:.4} ({:.0} s)",
            self.search,
            self.trial,
            self.rung,
            self.epochs,
            values.join(", "),
            self.score,
            self.seconds
        )
    }
}

/// All trials of a search.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TuningResults {
    pub objective: Option<Objective>,
    pub trials: Vec<TrialRecord>,
}

fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let v = n.as_f64().unwrap_or_default();
            if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
                format!("{v:.1e}")
            } else {
                format!("{v:.4}")
            }
        }
        other => other.to_string(),
    }
}

impl TuningResults {
    fn objective(&self) -> Objective {
        self.objective.unwrap_or(Objective::MaxValAccuracy)
    }

    /// The trials of the last rung (all trials for random search), best first.
    pub fn ranked(&self) -> Vec<&TrialRecord> {
        let last_rung = self.trials.iter().map(|t| t.rung).max().unwrap_or(0);
        let objective = self.objective();
        let mut ranked: Vec<&TrialRecord> =
            self.trials.iter().filter(|t| t.rung == last_rung).collect();
        ranked.sort_by(|a, b| {
            if objective.better(a.score, b.score) {
                std::cmp::Ordering::Less
            } else if objective.better(b.score, a.score) {
                std::cmp::Ordering::Greater
            } else {
                a.trial.cmp(&b.trial)
            }
        });
        ranked
    }

    pub fn best(&self) -> Option<&TrialRecord> {
        self.ranked().into_iter().next()
    }

    pub fn best_hyperparameters(&self) -> Option<HyperParams> {
        self.best().map(|t| t.hyperparams.clone())
    }

    /// The best trial's values as the modified LeNet-5's (an error if they are not).
    pub fn best_lenet5(&self) -> Result<Option<LeNet5Hyperparameters>, TrainError> {
        self.best()
            .map(|t| LeNet5Hyperparameters::from_values(&t.hyperparams))
            .transpose()
    }

    /// Epochs trained over all trials and executions.
    pub fn epochs_spent(&self) -> usize {
        self.trials.iter().map(TrialRecord::epochs_trained).sum()
    }

    pub fn seconds(&self) -> f64 {
        self.trials.iter().map(|t| t.seconds).sum()
    }

    /// Keras Tuner's `results_summary`: the best `top` trials, ranked, with their values and score.
    pub fn results_summary(&self, top: usize) -> Table {
        let names: Vec<String> = self
            .trials
            .first()
            .map(|t| t.hyperparams.keys().cloned().collect())
            .unwrap_or_default();
        let mut headers = vec!["rank".to_string(), "trial".to_string()];
        headers.extend(names.iter().cloned());
        headers.extend([
            self.objective().name().to_string(),
            "epochs".into(),
            "seconds".into(),
        ]);
        let mut table = Table {
            title: Some(format!(
                "{} trials, {} epochs, objective {}",
                self.trials.len(),
                self.epochs_spent(),
                self.objective().name()
            )),
            headers,
            rows: Vec::new(),
        };
        for (rank, t) in self.ranked().into_iter().take(top).enumerate() {
            let mut row = vec![(rank + 1).to_string(), t.trial.to_string()];
            row.extend(
                names
                    .iter()
                    .map(|n| t.hyperparams.get(n).map(value_text).unwrap_or_default()),
            );
            row.extend([
                format!("{:.4}", t.score),
                t.epochs.to_string(),
                format!("{:.1}", t.seconds),
            ]);
            table.push(row);
        }
        table
    }

    /// Reads the records of a results file (missing file: none) without checking what made
    /// them.
    pub fn load(path: &Path) -> Result<Vec<TrialRecord>, DataError> {
        crate::resume::read_records(path)
    }
}

/// Appends to the results file when there is one.
struct ResultsLog(Option<crate::resume::ResultsLog>);

impl ResultsLog {
    fn append(&self, record: &TrialRecord) -> Result<(), TrainError> {
        if let Some(log) = &self.0 {
            log.append(record)?;
        }
        Ok(())
    }
}

/// Settings shared by the searches.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SearchOptions {
    pub objective: Objective,
    pub executions_per_trial: usize,
    pub seed: u64,
    /// Trials trained at the same time (each shares the CPU cores with the others).
    pub parallel_trials: usize,
}

impl SearchOptions {
    /// Refuses settings that cannot give a meaningful search.
    pub fn validate(&self) -> Result<(), TrainError> {
        let positive = [
            ("executions per trial", self.executions_per_trial),
            ("parallel trials", self.parallel_trials),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(TrainError::Config {
                    name: name.into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            objective: Objective::MaxValAccuracy,
            executions_per_trial: 1,
            seed: 42,
            parallel_trials: 1,
        }
    }
}

struct Pending {
    search: &'static str,
    rung: usize,
    trial: usize,
    hyperparams: HyperParams,
    epochs: usize,
}

/// Runs the pending trials not already in `done`, appending each to the log as it finishes.
fn run_trials(
    pending: Vec<Pending>,
    done: &[TrialRecord],
    runner: &dyn TrialRunner,
    options: &SearchOptions,
    log: &ResultsLog,
    progress: &mut dyn Progress,
) -> Result<Vec<TrialRecord>, TrainError> {
    let progress = crate::progress::Shared::new(progress);
    let run_one = |p: &Pending| -> Result<TrialRecord, TrainError> {
        if let Some(found) = done.iter().find(|r| {
            r.search == p.search && r.rung == p.rung && r.trial == p.trial && r.epochs == p.epochs
        }) {
            if found.hyperparams != p.hyperparams {
                return Err(TrainError::Results {
                    path: log.0.as_ref().map(|l| l.path().to_path_buf()).unwrap_or_default(),
                    message: format!(
                        "trial {} there has other hyperparameters than this search draws (another seed or space?); use a new file",
                        p.trial
                    ),
                });
            }
            return Ok(found.clone());
        }
        let started = Instant::now();
        let mut histories = Vec::new();
        for execution in 0..options.executions_per_trial.max(1) {
            histories.push(runner.run(p.trial, &p.hyperparams, p.epochs, execution)?);
        }
        let scores: Vec<f64> = histories
            .iter()
            .map(|h| options.objective.score(h))
            .collect();
        let record = TrialRecord {
            search: p.search.to_string(),
            rung: p.rung,
            trial: p.trial,
            hyperparams: p.hyperparams.clone(),
            epochs: p.epochs,
            score: scores.iter().sum::<f64>() / scores.len() as f64,
            execution_scores: scores,
            history: histories.swap_remove(0),
            seconds: started.elapsed().as_secs_f64(),
        };
        log.append(&record)?;
        progress.with(|p| p.on_message(&record.to_string()));
        Ok(record)
    };
    let parallel = options.parallel_trials.min(runner.max_parallel_trials());
    if parallel <= 1 {
        return pending.iter().map(run_one).collect();
    }
    let pool =
        crate::training::training_pool(parallel).map_err(|e| TrainError::Threads(e.to_string()))?;
    pool.install(|| pending.par_iter().map(run_one).collect())
}

/// Checks the settings, reads the trials finished earlier with the same key (`search`: the
/// search's own settings) and opens the results file.
fn start(
    space: &SearchSpace,
    runner: &dyn TrialRunner,
    options: &SearchOptions,
    search: RunKey,
    results_file: Option<&Path>,
) -> Result<(Vec<TrialRecord>, ResultsLog), TrainError> {
    space.validate().map_err(|message| TrainError::Config {
        name: "search space".into(),
        message,
    })?;
    runner.check_space(space)?;
    options.validate()?;
    let Some(path) = results_file else {
        return Ok((Vec::new(), ResultsLog(None)));
    };
    let key = runner
        .key()
        .merged(&search)
        .with("space", space)
        .with("objective", options.objective)
        .with("executions_per_trial", options.executions_per_trial)
        .with("seed", options.seed);
    let (log, done) = crate::resume::ResultsLog::open(path, &key)?;
    Ok((done, ResultsLog(Some(log))))
}

/// Up to `count` draws, none repeated (as Keras Tuner retries a draw it has seen). A small
/// space yields fewer: once 100 draws in a row bring nothing new it counts as exhausted.
fn distinct_samples(space: &SearchSpace, count: usize, rng: &mut ChaCha8Rng) -> Vec<HyperParams> {
    let mut drawn: Vec<HyperParams> = Vec::new();
    let mut misses = 0;
    while drawn.len() < count && misses < 100 {
        let candidate = space.sample(rng);
        if drawn.contains(&candidate) {
            misses += 1;
        } else {
            drawn.push(candidate);
            misses = 0;
        }
    }
    drawn
}

/// Refuses random-search settings that train nothing.
pub fn check_random_search(max_trials: usize, epochs: usize) -> Result<(), TrainError> {
    for (name, value) in [("max trials", max_trials), ("epochs per trial", epochs)] {
        if value == 0 {
            return Err(TrainError::Config {
                name: name.into(),
                message: "must be at least 1".into(),
            });
        }
    }
    Ok(())
}

/// Refuses successive-halving settings that cannot form rungs.
pub fn check_successive_halving(
    trials: usize,
    min_epochs: usize,
    max_epochs: usize,
    eta: usize,
) -> Result<(), TrainError> {
    if trials == 0 || eta < 2 || min_epochs == 0 || max_epochs < min_epochs {
        return Err(TrainError::Config {
            name: "successive halving".into(),
            message: format!("needs at least 1 trial, eta >= 2 and 1 <= min_epochs <= max_epochs (trials {trials}, eta {eta}, epochs {min_epochs}..{max_epochs})"),
        });
    }
    Ok(())
}

/// Keras Tuner's `RandomSearch`: `max_trials` draws from `space` (seeded), each trained for
/// `epochs` (`executions_per_trial` times), scored by the objective.
pub fn random_search(
    space: &SearchSpace,
    max_trials: usize,
    epochs: usize,
    runner: &dyn TrialRunner,
    options: &SearchOptions,
    results_file: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<TuningResults, TrainError> {
    check_random_search(max_trials, epochs)?;
    let search = RunKey::new()
        .with("search", "random")
        .with("max_trials", max_trials)
        .with("epochs", epochs);
    let (done, log) = start(space, runner, options, search, results_file)?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let pending: Vec<Pending> = distinct_samples(space, max_trials, &mut rng)
        .into_iter()
        .enumerate()
        .map(|(trial, hyperparams)| Pending {
            search: "random",
            rung: 0,
            trial,
            hyperparams,
            epochs,
        })
        .collect();
    let trials = run_trials(pending, &done, runner, options, &log, progress)?;
    Ok(TuningResults {
        objective: Some(options.objective),
        trials,
    })
}

/// Successive halving: `trials` draws trained for `min_epochs`; the best `1/eta` go on to the
/// next rung with `eta` times the epochs (retrained from scratch), until `max_epochs`.
#[allow(clippy::too_many_arguments)]
pub fn successive_halving(
    space: &SearchSpace,
    trials: usize,
    min_epochs: usize,
    max_epochs: usize,
    eta: usize,
    runner: &dyn TrialRunner,
    options: &SearchOptions,
    results_file: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<TuningResults, TrainError> {
    check_successive_halving(trials, min_epochs, max_epochs, eta)?;
    let search = RunKey::new()
        .with("search", "halving")
        .with("trials", trials)
        .with("min_epochs", min_epochs)
        .with("max_epochs", max_epochs)
        .with("eta", eta);
    let (done, log) = start(space, runner, options, search, results_file)?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut alive: Vec<(usize, HyperParams)> = distinct_samples(space, trials, &mut rng)
        .into_iter()
        .enumerate()
        .collect();
    let mut all = Vec::new();
    let (mut rung, mut epochs) = (0, min_epochs);
    loop {
        let pending = alive
            .iter()
            .map(|(trial, hp)| Pending {
                search: "halving",
                rung,
                trial: *trial,
                hyperparams: hp.clone(),
                epochs,
            })
            .collect();
        let mut finished = run_trials(pending, &done, runner, options, &log, progress)?;
        let results = TuningResults {
            objective: Some(options.objective),
            trials: finished.clone(),
        };
        let rung_size = alive.len();
        let keep = (rung_size / eta).max(1);
        alive = results
            .ranked()
            .into_iter()
            .take(keep)
            .map(|t| (t.trial, t.hyperparams.clone()))
            .collect();
        all.append(&mut finished);
        // Stop at the full budget, or when a single trial is left to train.
        if epochs >= max_epochs || rung_size == 1 {
            break;
        }
        rung += 1;
        epochs = (epochs * eta).min(max_epochs);
    }
    Ok(TuningResults {
        objective: Some(options.objective),
        trials: all,
    })
}

/// The modified LeNet-5's hyperparameters: the first dense layer's width and Adam's learning
/// rate (the walkthrough's defaults: 120 units, 1e-3).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LeNet5Hyperparameters {
    pub units: usize,
    pub learning_rate: f64,
}

impl Default for LeNet5Hyperparameters {
    fn default() -> Self {
        LeNet5Hyperparameters {
            units: 120,
            learning_rate: 1e-3,
        }
    }
}

fn space_error(message: String) -> TrainError {
    TrainError::Config {
        name: "search space".into(),
        message,
    }
}

impl LeNet5Hyperparameters {
    /// The names a search space for the modified LeNet-5 must declare, no more, no fewer.
    pub const NAMES: [&'static str; 2] = ["units", "learning_rate"];

    /// Refuses a space whose names differ from [`Self::NAMES`], naming the unknown and the
    /// missing ones (a typo would otherwise train every trial at the default).
    pub fn check_space(space: &SearchSpace) -> Result<(), TrainError> {
        let declared: Vec<&str> = space.params.iter().map(Param::name).collect();
        let unknown: Vec<&str> = declared
            .iter()
            .copied()
            .filter(|n| !Self::NAMES.contains(n))
            .collect();
        let missing: Vec<&str> = Self::NAMES
            .iter()
            .copied()
            .filter(|n| !declared.contains(n))
            .collect();
        let mut problems = Vec::new();
        if !unknown.is_empty() {
            problems.push(format!("unknown hyperparameter(s) {}", unknown.join(", ")));
        }
        if !missing.is_empty() {
            problems.push(format!("missing {}", missing.join(", ")));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(space_error(format!(
            "{} (the modified LeNet-5 takes exactly: {})",
            problems.join("; "),
            Self::NAMES.join(", ")
        )))
    }

    /// The typed values of one draw; a value of the wrong kind is an error naming it.
    pub fn from_values(values: &HyperParams) -> Result<Self, TrainError> {
        let get = |name: &str| {
            values
                .get(name)
                .ok_or_else(|| space_error(format!("a trial has no value for {name}")))
        };
        let units = get("units")?;
        let units =
            units.as_u64().filter(|&u| u >= 1).ok_or_else(|| {
                space_error(format!("units must be a whole number >= 1, got {units}"))
            })? as usize;
        let rate = get("learning_rate")?;
        let learning_rate = rate
            .as_f64()
            .filter(|r| r.is_finite() && *r > 0.0)
            .ok_or_else(|| {
                space_error(format!(
                    "learning_rate must be a positive number, got {rate}"
                ))
            })?;
        Ok(LeNet5Hyperparameters {
            units,
            learning_rate,
        })
    }
}

/// Trains the walkthrough's "modified LeNet-5" with [`LeNet5Hyperparameters`].
pub struct LeNet5Trials<'a> {
    train: &'a Prepared,
    validation: &'a Prepared,
    batch_size: usize,
    seed: u64,
    early_stopping: Option<EarlyStopping>,
    device: DeviceChoice,
    /// Fingerprints of the images, computed once (a search asks for its key more than once).
    fingerprints: (String, String),
}

impl<'a> LeNet5Trials<'a> {
    /// Trials on `train`, scored on `validation`, `batch_size` images a step, seeds derived
    /// from `seed`, optionally with early stopping inside each trial, on `device` (a GPU
    /// trains one trial at a time).
    pub fn new(
        train: &'a Prepared,
        validation: &'a Prepared,
        batch_size: usize,
        seed: u64,
        early_stopping: Option<EarlyStopping>,
        device: DeviceChoice,
    ) -> Self {
        LeNet5Trials {
            train,
            validation,
            batch_size,
            seed,
            early_stopping,
            device,
            fingerprints: (train.fingerprint(), validation.fingerprint()),
        }
    }

    /// The model and its history for `hyperparams`, trained as trial `trial` was (same seeds,
    /// so the same weights as in the search).
    pub fn train<D: ModelDevice>(
        &self,
        device: &D,
        trial: usize,
        hyperparams: &HyperParams,
        epochs: usize,
        execution: usize,
    ) -> Result<(LeNet5<D>, History), TrainError> {
        let values = LeNet5Hyperparameters::from_values(hyperparams)?;
        let seed = self.seed ^ ((trial as u64) << 16) ^ ((execution as u64) << 40);
        let mut model = LeNet5::new(
            device,
            LeNet5Config {
                dense1_units: values.units,
            },
            seed,
        );
        let config = TrainConfig {
            epochs,
            batch_size: self.batch_size,
            learning_rate: values.learning_rate,
            seed,
            early_stopping: self.early_stopping,
            ..TrainConfig::default()
        };
        let history = training::fit(
            &mut model,
            self.train,
            Some(self.validation),
            &config,
            &mut Silent,
        )?;
        Ok((model, history))
    }
}

impl TrialRunner for LeNet5Trials<'_> {
    fn key(&self) -> RunKey {
        RunKey::new()
            .with("model", "lenet5-modified")
            .with("train_data", &self.fingerprints.0)
            .with("validation_data", &self.fingerprints.1)
            .with("batch_size", self.batch_size)
            .with("trial_seed", self.seed)
            .with("early_stopping", self.early_stopping)
            .with("device", self.device)
    }

    fn run(
        &self,
        trial: usize,
        hyperparams: &HyperParams,
        epochs: usize,
        execution: usize,
    ) -> Result<History, TrainError> {
        crate::on_device!(self.device, d => {
            self.train(d, trial, hyperparams, epochs, execution)
                .map(|(_, h)| h)
        })?
    }

    fn check_space(&self, space: &SearchSpace) -> Result<(), TrainError> {
        LeNet5Hyperparameters::check_space(space)
    }

    fn max_parallel_trials(&self) -> usize {
        match self.device {
            DeviceChoice::Cpu => usize::MAX,
            // A GPU's context belongs to one thread: one trial at a time.
            DeviceChoice::Cuda => 1,
        }
    }
}
/// Random search vs successive halving: trials, epochs trained, time, best score.
pub fn compare_searches(searches: &[(&str, &TuningResults)]) -> Table {
    let mut table = Table::new(&[
        "search",
        "trials",
        "epochs trained",
        "seconds",
        "best score",
        "best hyperparameters",
    ]);
    for (name, results) in searches {
        let best = results.best();
        table.push(vec![
            name.to_string(),
            results.trials.len().to_string(),
            results.epochs_spent().to_string(),
            format!("{:.0}", results.seconds()),
            best.map_or("-".into(), |b| format!("{:.4}", b.score)),
            best.map_or("-".into(), |b| {
                serde_json::to_string(&b.hyperparams).unwrap_or_default()
            }),
        ]);
    }
    table
}
