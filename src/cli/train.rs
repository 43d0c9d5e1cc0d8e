//! `train`: LeNet-5 (or the modified LeNet-5) from scratch, evaluated on the test set.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use fashion_mnist::data::prepare::Prepared;
use fashion_mnist::data::source::Located;
use fashion_mnist::data::FashionMnist;
use fashion_mnist::data::Verification;
use fashion_mnist::models::{LeNet5Config, Parameters};
use fashion_mnist::ops::DeviceChoice;
use fashion_mnist::pipeline::lenet5::{self, LeNet5Stage, ModelResults};
use fashion_mnist::pipeline::{Split, SplitConfig};
use fashion_mnist::training::{
    checkpoint, ClassificationReport, ConfusionMatrix, EarlyStopping, Evaluation, History, Monitor,
};
use serde::Serialize;

use super::common::{
    create_dir, settings_ok, usage, write_json, DataSource, Optimizer, SeedAndLimit,
    ValidationSplit,
};
use super::progress::Bars;

#[derive(Clone, Copy, ValueEnum)]
enum ModelName {
    /// The walkthrough's LeNet-5 (dense 120)
    Lenet5,
    /// LeNet-5 with the first dense layer's width from --dense-units
    Lenet5Modified,
}

#[derive(Clone, Copy, ValueEnum)]
enum MonitorArg {
    ValLoss,
    ValAccuracy,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    source: DataSource,
    #[arg(long, value_enum, default_value = "lenet5")]
    model: ModelName,
    /// First dense layer's width (lenet5-modified)
    #[arg(long, default_value_t = 120)]
    dense_units: usize,
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    #[command(flatten)]
    optimizer: Optimizer,
    #[command(flatten)]
    subset: SeedAndLimit,
    #[command(flatten)]
    split: ValidationSplit,
    /// Keep class proportions in the split
    #[arg(long)]
    stratify: bool,
    /// Stop when the monitored value stops improving and restore the best weights
    #[arg(long)]
    early_stopping: bool,
    /// Epochs without improvement before stopping
    #[arg(long, default_value_t = 3)]
    patience: usize,
    #[arg(long, value_enum, default_value = "val-loss")]
    monitor: MonitorArg,
    /// Output directory: config.json, history.json/csv, curves.svg, model.safetensors, metrics.json
    #[arg(long, default_value = "runs/lenet5")]
    out: PathBuf,
}

/// `config.json`: the stage's config and where it ran.
#[derive(Serialize)]
pub(super) struct RunRecord<'a, S: Serialize> {
    pub model: &'static str,
    pub stage: &'a S,
    pub data: &'a Located,
    pub verification: &'a Verification,
    pub threads: usize,
    pub device: DeviceChoice,
    pub version: &'static str,
}

/// `metrics.json`.
#[derive(Serialize)]
pub(super) struct Metrics {
    epochs_run: usize,
    best_epoch: Option<usize>,
    train_seconds: f64,
    val_loss: Option<f64>,
    val_accuracy: Option<f64>,
    test_accuracy: Option<f64>,
    test_loss: Option<f64>,
    confusion_matrix: Option<ConfusionMatrix>,
    classification_report: Option<ClassificationReport>,
    wall_seconds: f64,
}

/// The stage's config from the arguments, every one checked (before any data is read).
fn stage_config(args: &TrainArgs) -> Result<LeNet5Stage> {
    if let (ModelName::Lenet5, units) = (args.model, args.dense_units) {
        if units != 120 {
            usage!("--dense-units {units} needs --model lenet5-modified");
        }
    }
    if args.dense_units == 0 {
        usage!("--dense-units must be at least 1");
    }
    let split = args.split.validation_split;
    if !(0.0..1.0).contains(&split) {
        usage!("--validation-split must be in [0, 1), got {split}");
    }
    if args.early_stopping && split == 0.0 {
        usage!("--early-stopping needs validation images: a --validation-split above 0");
    }
    args.subset.check()?;
    let stopping = args.early_stopping.then(|| EarlyStopping {
        monitor: match args.monitor {
            MonitorArg::ValLoss => Monitor::ValLoss,
            MonitorArg::ValAccuracy => Monitor::ValAccuracy,
        },
        ..EarlyStopping::new(args.patience)
    });
    let train = args
        .optimizer
        .train_config(args.epochs, args.subset.seed, stopping);
    settings_ok(train.validate())?;
    let config = LeNet5Stage {
        model: LeNet5Config {
            dense1_units: args.dense_units,
        },
        train,
        split: SplitConfig {
            limit: args.subset.limit,
            validation_split: split,
            stratify: args.stratify,
            seed: args.subset.seed,
        },
        test_limit: None,
    };
    settings_ok(config.validate())?;
    Ok(config)
}

pub fn run(args: TrainArgs, device: DeviceChoice) -> Result<()> {
    let started = Instant::now();
    let config = stage_config(&args)?;
    let (loaded, split, test) = load_split(&args.source, &config.split, &args.out)?;
    println!("{}", config.summary());
    let outcome = lenet5::run(&split, test.as_ref(), &config, device, &mut Bars::new())?;
    // Written once training has succeeded: a failed or diverged run leaves the output
    // directory as it was.
    let record = RunRecord {
        model: outcome.model.architecture(),
        stage: &config,
        data: &loaded.located,
        verification: &loaded.verification,
        threads: rayon::current_num_threads(),
        device,
        version: env!("CARGO_PKG_VERSION"),
    };
    save_run(
        &args.out,
        &record,
        &outcome.model,
        &outcome.results.history,
        "LeNet-5",
    )?;
    let metrics = report(&outcome.results, outcome.test_evaluation.as_ref(), started);
    write_json(&args.out.join("metrics.json"), &metrics)?;
    println!(
        "\nwrote {} (model.safetensors, history.json/csv, curves.svg, config.json, metrics.json)",
        args.out.display()
    );
    Ok(())
}

/// Checks `out`, loads the data and splits it as `split` says (refusing a split that leaves
/// no validation image), with the test images; says what it found on stderr.
pub(super) fn load_split(
    source: &DataSource,
    split: &SplitConfig,
    out: &Path,
) -> Result<(FashionMnist, Split, Option<Prepared>)> {
    if out.exists() && !out.is_dir() {
        usage!("--out {}: exists and is not a directory", out.display());
    }
    let loaded = source.load()?;
    let parts = split.apply(&loaded.train);
    if split.validation_split > 0.0 && parts.validation.is_empty() {
        usage!(
            "--validation-split {}: {} training images leave no validation image; use more images",
            split.validation_split,
            parts.train.len()
        );
    }
    eprintln!(
        "data: {} training, {} validation images from {}",
        parts.train.len(),
        parts.validation.len(),
        loaded.located.origin
    );
    let test = loaded.test.as_ref().map(Prepared::from_dataset);
    Ok((loaded, parts, test))
}

/// Writes a finished run: `config.json` (`record`), the history (JSON, CSV, curves.svg titled
/// `title`) and the model's checkpoint.
pub(super) fn save_run(
    out: &Path,
    record: &impl Serialize,
    model: &impl Parameters,
    history: &History,
    title: &str,
) -> Result<()> {
    create_dir(out)?;
    write_json(&out.join("config.json"), record)?;
    history.save(out)?;
    fashion_mnist::plots::training_curves(history, title)
        .and_then(|chart| chart.save(&out.join("curves.svg")))
        .map_err(|e| anyhow::anyhow!("drawing the training curves: {e}"))?;
    checkpoint::save(model, &out.join("model.safetensors"))?;
    Ok(())
}

/// Prints the validation and test scores; the metrics to save.
pub(super) fn report(
    results: &ModelResults,
    test_evaluation: Option<&Evaluation>,
    started: Instant,
) -> Metrics {
    let history = &results.history;
    let last = history.final_record();
    if let Some(record) = last {
        if let (Some(loss), Some(acc)) = (record.val_loss, record.val_accuracy) {
            println!(
                "validation: accuracy {acc:.4}, loss {loss:.4} (epoch {})",
                record.epoch
            );
        }
    }
    if let (Some(evaluation), Some(confusion)) = (test_evaluation, &results.confusion) {
        println!(
            "test:       accuracy {:.4}, loss {:.4} ({} images)",
            evaluation.accuracy,
            evaluation.loss,
            evaluation.predicted.len()
        );
        println!("\n{}", confusion.report());
    }
    Metrics {
        epochs_run: history.epochs.len(),
        best_epoch: history.best_epoch,
        train_seconds: history.total_seconds(),
        val_loss: last.and_then(|r| r.val_loss),
        val_accuracy: last.and_then(|r| r.val_accuracy),
        test_accuracy: results.test.map(|t| t.accuracy),
        test_loss: results.test.map(|t| t.loss),
        confusion_matrix: results.confusion.clone(),
        classification_report: results.report.clone(),
        wall_seconds: started.elapsed().as_secs_f64(),
    }
}
