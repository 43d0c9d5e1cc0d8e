//! What the subcommands share: options flattened into several of them, argument checks that
//! exit with status 2, and writing results.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, ValueEnum};
use fashion_mnist::data::{source, FashionMnist, Verification};
use fashion_mnist::ops::DeviceChoice;
use fashion_mnist::transfer::Architecture;

/// An invalid argument found by our own checks: exits with status 2, as clap's usage errors do.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Returns a [`UsageError`] from the enclosing function.
macro_rules! usage {
    ($($message:tt)*) => {
        return Err(anyhow::Error::new($crate::cli::common::UsageError(format!($($message)*))))
    };
}
pub(crate) use usage;

/// A library settings check, as a usage error when it fails.
pub fn settings_ok(check: Result<(), fashion_mnist::TrainError>) -> Result<()> {
    check.map_err(|e| anyhow::Error::new(UsageError(e.to_string())))
}

/// The error and its causes on one line, each cause once (an I/O error's text is often
/// repeated by the error that wraps it).
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

pub fn check_at_least_one(name: &str, value: Option<usize>) -> Result<()> {
    if value == Some(0) {
        usage!("{name} must be at least 1");
    }
    Ok(())
}

/// Tuning and transfer need a validation split: a fraction strictly between 0 and 1.
pub fn check_validation_split(value: f64) -> Result<()> {
    if !(0.0..1.0).contains(&value) || value == 0.0 {
        usage!("--validation-split must be in (0, 1), got {value}");
    }
    Ok(())
}

pub fn parse_architecture(name: &str) -> Result<Architecture> {
    name.parse().map_err(|e: String| anyhow::anyhow!("{e}"))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    fashion_mnist::fsutil::write_bytes_atomically(path, text.as_bytes())?;
    Ok(())
}

/// Saves a chart as SVG, naming the file when drawing fails.
pub fn save_chart(
    chart: Result<fashion_mnist::plots::Chart, fashion_mnist::plots::PlotError>,
    path: &Path,
) -> Result<()> {
    chart
        .and_then(|c| c.save(path))
        .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

/// Creates the output directory `out`.
pub fn create_dir(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("creating {}: {e}", out.display()))
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl From<DeviceArg> for DeviceChoice {
    fn from(arg: DeviceArg) -> Self {
        match arg {
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Cuda => DeviceChoice::Cuda,
        }
    }
}

/// Where the data comes from (every command that reads it).
#[derive(Args, Clone)]
pub struct DataSource {
    /// Directory with the IDX files (.gz or raw) or Kaggle CSVs, or a Kaggle-format CSV file.
    /// Default: ./data/fashion-mnist, then /usr/share/datasets/fashion-mnist
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Download from Zalando's mirror (or $FASHION_MNIST_MIRROR) when no local copy is found
    #[arg(long)]
    pub download: bool,
}

impl DataSource {
    pub fn load(&self) -> Result<FashionMnist> {
        let loaded = source::find_and_load(self.data.as_deref(), self.download)?;
        if let Verification::Mismatch(files) = &loaded.verification {
            eprintln!(
                "warning: these files differ from the published Fashion-MNIST: {}",
                files.join(", ")
            );
        }
        Ok(loaded)
    }
}

/// The seed and the subset of the training images (train, tune, cv, transfer).
#[derive(Args, Clone)]
pub struct SeedAndLimit {
    /// Seeds the split, the initialization and the shuffling
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Use only the first N training images (quick runs)
    #[arg(long)]
    pub limit: Option<usize>,
}

impl SeedAndLimit {
    pub fn check(&self) -> Result<()> {
        check_at_least_one("--limit", self.limit)
    }
}

/// Mini-batch size and Adam's learning rate (train, cv, transfer).
#[derive(Args, Clone)]
pub struct Optimizer {
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub learning_rate: f64,
}

impl Optimizer {
    /// The training settings of `epochs` epochs with these batch size and learning rate.
    pub fn train_config(
        &self,
        epochs: usize,
        seed: u64,
        early_stopping: Option<fashion_mnist::training::EarlyStopping>,
    ) -> fashion_mnist::training::TrainConfig {
        fashion_mnist::training::TrainConfig {
            epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            seed,
            early_stopping,
            ..Default::default()
        }
    }
}

/// The validation fraction (train, tune, transfer).
#[derive(Args, Clone)]
pub struct ValidationSplit {
    /// Fraction of the training images held out for validation
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    pub validation_split: f64,
}

/// `--fresh` (tune, cv, transfer, report).
#[derive(Args, Clone)]
pub struct Fresh {
    /// Start over: move earlier results in the output directory aside (to OUT.old) instead of
    /// reusing them
    #[arg(long)]
    pub fresh: bool,
}

impl Fresh {
    /// Sets an earlier run's results in `out` aside (as OUT.old) when asked to start over.
    pub fn apply(&self, out: &Path) -> Result<()> {
        if self.fresh {
            if let Some(old) = fashion_mnist::resume::set_aside(out)? {
                eprintln!("--fresh: earlier results moved to {}", old.display());
            }
        }
        Ok(())
    }
}
