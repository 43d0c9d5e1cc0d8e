//! The command-line front end, one file per subcommand (its clap arguments beside the code
//! that runs it). Commands build the library's stage configs and present the results; the
//! work itself is in `fashion_mnist::pipeline`.

pub mod bench;
pub mod bench_all;
pub mod cnn;
pub mod common;
pub mod cv;
pub mod data;
pub mod eda;
pub mod evaluate;
pub mod progress;
pub mod report;
pub mod train;
pub mod transfer;
pub mod tune;
pub mod weights;
