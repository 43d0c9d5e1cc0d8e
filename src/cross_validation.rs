//! K-fold cross-validation as the walkthrough runs it: a fresh model per fold, per-fold
//! histories, the mean and spread of the validation scores. Finished folds are appended to a
//! JSON-lines file, so an interrupted run resumes where it stopped.

use std::path::Path;
use std::time::Instant;

use crate::ops::ModelDevice;
use crate::resume::RunKey;

use crate::data::prepare::{kfold_indices, Prepared};
use crate::error::{DataError, TrainError};
use crate::models::{LeNet5, LeNet5Config};
use crate::progress::Progress;
use crate::report::Table;
use crate::training::{self, History, TrainConfig};

/// One finished fold.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FoldRecord {
    /// 1-based, as the walkthrough numbers them.
    pub fold: usize,
    pub train_images: usize,
    pub validation_images: usize,
    /// The run's settings, so a resumed run never mixes folds of different settings.
    pub config: CvConfig,
    pub history: History,
    /// Of the epoch the model ended with (the best one when early stopping restored it).
    pub val_accuracy: f64,
    pub val_loss: f64,
    pub seconds: f64,
}

impl std::fmt::Display for FoldRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fold {}: val_accuracy {:.4}, val_loss {:.4}, {} epochs in {:.0} s",
            self.fold,
            self.val_accuracy,
            self.val_loss,
            self.history.epochs.len(),
            self.seconds
        )
    }
}

/// Settings of a cross-validation run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CvConfig {
    pub folds: usize,
    pub seed: u64,
    pub stratified: bool,
    pub model: LeNet5Config,
    pub train: TrainConfig,
}

/// Results of all folds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CvResults {
    pub folds: Vec<FoldRecord>,
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

impl CvResults {
    /// Mean and sample standard deviation of the folds' validation accuracy.
    pub fn accuracy_mean_std(&self) -> (f64, f64) {
        mean_std(
            &self
                .folds
                .iter()
                .map(|f| f.val_accuracy)
                .collect::<Vec<_>>(),
        )
    }

    /// Mean and sample standard deviation of the folds' validation loss.
    pub fn loss_mean_std(&self) -> (f64, f64) {
        mean_std(&self.folds.iter().map(|f| f.val_loss).collect::<Vec<_>>())
    }

    /// The fold with the highest validation accuracy (the one the walkthrough calls best).
    pub fn best_fold(&self) -> Option<&FoldRecord> {
        self.folds
            .iter()
            .max_by(|a, b| a.val_accuracy.total_cmp(&b.val_accuracy))
    }

    /// Per-fold scores, then mean +/- standard deviation.
    pub fn table(&self) -> Table {
        let mut table = Table::new(&[
            "fold",
            "val_accuracy",
            "val_loss",
            "epochs",
            "best epoch",
            "seconds",
        ]);
        for f in &self.folds {
            table.push(vec![
                f.fold.to_string(),
                format!("{:.4}", f.val_accuracy),
                format!("{:.4}", f.val_loss),
                f.history.epochs.len().to_string(),
                f.history
                    .best_epoch
                    .map_or_else(|| "-".to_string(), |e| e.to_string()),
                format!("{:.1}", f.seconds),
            ]);
        }
        let (acc, acc_sd) = self.accuracy_mean_std();
        let (loss, loss_sd) = self.loss_mean_std();
        table.push(vec![
            "mean +/- std".into(),
            format!("{acc:.4} +/- {acc_sd:.4}"),
            format!("{loss:.4} +/- {loss_sd:.4}"),
            String::new(),
            String::new(),
            format!("{:.1}", self.folds.iter().map(|f| f.seconds).sum::<f64>()),
        ]);
        table
    }

    /// Reads the folds recorded in a results file (missing file: none) without checking what
    /// made them.
    pub fn load(path: &Path) -> Result<Vec<FoldRecord>, DataError> {
        crate::resume::read_records(path)
    }
}

/// K-fold cross-validation of (modified) LeNet-5 on `data`. With `results_file`, folds found
/// there are reused and new ones appended. Epochs and finished folds are reported to `progress`.
pub fn cross_validate<D: ModelDevice>(
    device: &D,
    data: &Prepared,
    config: &CvConfig,
    results_file: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<CvResults, TrainError> {
    if config.folds < 2 || config.folds > data.len() {
        return Err(TrainError::Config {
            name: "folds".into(),
            message: format!(
                "needs 2 <= folds <= {} images, got {}",
                data.len(),
                config.folds
            ),
        });
    }
    config.train.validate()?;
    // Folds are reused only when made from the same images, settings, device and version.
    let (log, done) = match results_file {
        Some(path) => {
            let key = RunKey::new()
                .with("data", data.fingerprint())
                .with("cv", config)
                .with("device", D::CHOICE);
            let (log, done) = crate::resume::ResultsLog::open(path, &key)?;
            (Some(log), done)
        }
        None => (None, Vec::<FoldRecord>::new()),
    };
    let splits = kfold_indices(&data.labels, config.folds, config.seed, config.stratified);
    let mut results = CvResults::default();
    for (index, split) in splits.iter().enumerate() {
        let fold = index + 1;
        if let Some(found) = done.iter().find(|f| f.fold == fold) {
            results.folds.push(found.clone());
            continue;
        }
        let started = Instant::now();
        let train = data.subset(&split.train);
        let validation = data.subset(&split.validation);
        let mut model = LeNet5::new(device, config.model, config.seed + fold as u64);
        progress.on_message(&format!("fold {fold}/{}", config.folds));
        let history = training::fit(
            &mut model,
            &train,
            Some(&validation),
            &config.train,
            progress,
        )?;
        let last = history.final_record().cloned().expect("at least one epoch");
        let record = FoldRecord {
            fold,
            train_images: train.len(),
            validation_images: validation.len(),
            config: config.clone(),
            val_accuracy: last.val_accuracy.unwrap_or(f64::NAN),
            val_loss: last.val_loss.unwrap_or(f64::NAN),
            history,
            seconds: started.elapsed().as_secs_f64(),
        };
        if let Some(log) = &log {
            log.append(&record)?;
        }
        progress.on_message(&record.to_string());
        results.folds.push(record);
    }
    Ok(results)
}
