//! Typed errors of the library. Every error names the file (or argument) it is about and,
//! where it applies, the row (1-based line) and column.

use std::path::PathBuf;

/// Errors raised while finding, reading, verifying or writing data files.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed value in a text or binary file; `row` is the 1-based line (CSV) or record
    /// index (IDX), `column` the CSV column name or the IDX field.
    #[error("{path}: row {row}, column {column}: {message}")]
    Malformed {
        path: PathBuf,
        row: u64,
        column: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: content check failed: expected SHA-256 {expected}, got {actual} (the file is corrupt or truncated; delete it and fetch again)")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("download of {url} failed: {message}")]
    Download { url: String, message: String },
    /// Results on disk made with other data or settings than the run that would reuse them.
    #[error("{path}: these results were made with other data or settings, so they are not reused: {differences}. Start over with --fresh (the old results are kept beside, as .old) or use another output directory")]
    StaleResults { path: PathBuf, differences: String },
    /// A study stage's record made with other data or settings (e.g. a default that changed).
    #[error("{path}: stage {stage} was made with other data or settings, so it is not reused: {differences}. Run this stage again with `report --redo {stage}` (its old folder is kept beside, as {stage}.old; the other stages are reused), start over with --fresh, or use another output directory")]
    StaleStage {
        path: PathBuf,
        stage: String,
        differences: String,
    },
    /// A table operation (polars) on the images failed.
    #[error("data table: {0}")]
    Table(#[from] polars::error::PolarsError),
    #[error("Fashion-MNIST not found. Looked in: {searched}. Install it with `apt-get install dataset-fashion-mnist`, pass `--data DIR`, or allow the download with `--download`")]
    NotFound { searched: String },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(
        path: impl Into<PathBuf>,
        row: u64,
        column: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        DataError::Malformed {
            path: path.into(),
            row,
            column: column.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Errors raised by models, training and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training diverged: the loss became {value} at epoch {epoch}, step {step}; try a lower learning rate (now {learning_rate})")]
    Diverged {
        epoch: usize,
        step: usize,
        value: f32,
        learning_rate: f64,
    },
    #[error("training diverged: parameter {parameter} holds NaN or infinity after epoch {epoch}; try a lower learning rate (now {learning_rate})")]
    NonFiniteWeights {
        epoch: usize,
        parameter: String,
        learning_rate: f64,
    },
    #[error("invalid setting {name}: {message}")]
    Config { name: String, message: String },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// Backbone weights that cannot be fetched, read or matched to the architecture.
    #[error("weights {source_name}: {message}")]
    Weights {
        source_name: String,
        message: String,
    },
    /// A results file (a study's results.json, a search's trials) that cannot be used.
    #[error("results file {path}: {message}")]
    Results { path: PathBuf, message: String },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("device error: {0}")]
    Device(String),
    /// The worker threads (rayon) could not be started.
    #[error("starting worker threads: {0}")]
    Threads(String),
    /// A chart could not be drawn (`plots::PlotError`).
    #[error("drawing a chart: {0}")]
    Chart(#[from] Box<dyn std::error::Error + Send + Sync>),
}

impl From<crate::ops::DeviceError> for TrainError {
    fn from(error: crate::ops::DeviceError) -> Self {
        TrainError::Device(error.0)
    }
}

/// `text` cut to its first `max` characters (values echoed in messages can be huge).
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}... ({} bytes in all)", &text[..end], text.len()),
        None => text.to_string(),
    }
}

pub type DataResult<T> = Result<T, DataError>;
