//! Fashion-MNIST classification in Rust, following the Kaggle study step by step: data
//! checks, LeNet-5 from scratch, tuning, cross-validation and transfer learning, on dfdx.

pub mod cross_validation;
pub mod data;
pub mod error;
pub mod fsutil;
pub mod models;
pub mod notebook;
pub mod ops;
pub mod pipeline;
pub mod plots;
pub mod report;
pub mod resume;
pub mod study;
pub mod training;
// The one progress interface lives with training (the lowest layer that reports progress).
pub use training::progress;
pub mod transfer;
pub mod tuning;

pub use error::{DataError, TrainError};
