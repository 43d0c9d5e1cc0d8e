//! `fashion-mnist`: the command-line face of the library. Results go to stdout; progress and
//! diagnostics to stderr. Each subcommand lives in its own file under `cli/`; this file only
//! parses and dispatches.

mod cli;

use clap::{Parser, Subcommand};
use fashion_mnist::ops::DeviceChoice;

use cli::common::{error_text, DeviceArg, UsageError};
use cli::{bench, cnn, cv, data, eda, evaluate, report, train, transfer, tune, weights};

#[derive(Parser)]
#[command(
    name = "fashion-mnist",
    version,
    about = "Fashion-MNIST classification in Rust: the Kaggle LeNet-5 study, reproduced with dfdx",
    after_help = "Examples:\n  fashion-mnist data\n  fashion-mnist eda\n  fashion-mnist train --epochs 30 --early-stopping --out runs/lenet5\n  fashion-mnist cnn --out runs/modern-cnn\n  fashion-mnist evaluate --checkpoint runs/lenet5/model.safetensors\n  fashion-mnist predict --checkpoint runs/lenet5/model.safetensors shoe.jpg\n  fashion-mnist bench --keras /path/to/python3"
)]
struct Cli {
    /// Worker threads (default: all cores)
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Where models train and features are computed: cpu, or cuda (an NVIDIA GPU; needs a build
    /// with `--features cuda`, see scripts/build-cuda.sh)
    #[arg(long, global = true, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Where the data was found, counts per split and class, and whether it verified
    Data(data::DataArgs),
    /// The walkthrough's exploratory checks: shape, head, missing values, duplicates, classes
    Eda(eda::EdaArgs),
    /// Train LeNet-5 (or the modified LeNet-5) and evaluate it on the test set
    Train(train::TrainArgs),
    /// Beyond the walkthrough: a modern CNN (BatchNorm, augmentation, cosine schedule) from scratch
    Cnn(cnn::CnnArgs),
    /// Evaluate a checkpoint on the 10,000-image test set
    Evaluate(evaluate::EvaluateArgs),
    /// Classify pictures (PNG/JPEG) with a checkpoint: top-3 classes
    Predict(evaluate::PredictArgs),
    /// Hyperparameter search for the modified LeNet-5 (random search and successive halving)
    Tune(tune::TuneArgs),
    /// K-fold cross-validation of (modified) LeNet-5
    Cv(cv::CvArgs),
    /// Time LeNet-5 training epochs (optionally beside the walkthrough's Keras code)
    Bench(bench::BenchArgs),
    /// ImageNet weights for the transfer-learning backbones: fetch VGG-16's, import your own
    Weights(weights::WeightsArgs),
    /// Transfer learning: the walkthrough's heads on frozen VGG-16 / ResNet-50 features
    Transfer(transfer::TransferArgs),
    /// The whole study (data, LeNet-5, tuning, CV, transfer, comparison) as an HTML report + JSON
    Report(report::ReportArgs),
}

/// `--threads`: sizes the global thread pool (warning about far more threads than cores).
fn set_threads(threads: usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > 4 * cores {
        eprintln!(
            "warning: --threads {threads} on a machine with {cores} cores: far more threads than cores makes every step slower (measured 400x at 1000 threads)"
        );
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("thread pool is configured once");
}

fn main() {
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        set_threads(threads);
    }
    // The GPU's code path on the CPU, for checking or timing it on a machine without a GPU.
    if std::env::var("FASHION_MNIST_CPU_OPS").as_deref() == Ok("composite") {
        fashion_mnist::ops::set_cpu_ops(fashion_mnist::ops::CpuOps::Composite);
    }
    let device = DeviceChoice::from(cli.device);
    let result = device
        .check()
        .map_err(|e| anyhow::anyhow!("--device {device}: {e}"))
        .and_then(|()| match cli.command {
            Command::Data(args) => data::run(args),
            Command::Eda(args) => eda::run(args),
            Command::Train(args) => train::run(args, device),
            Command::Cnn(args) => cnn::run(args, device),
            Command::Evaluate(args) => evaluate::run_evaluate(args, device),
            Command::Predict(args) => evaluate::run_predict(args),
            Command::Tune(args) => tune::run(args, device),
            Command::Cv(args) => cv::run(args, device),
            Command::Bench(args) => bench::run(args, device),
            Command::Weights(args) => weights::run(args),
            Command::Transfer(args) => transfer::run(args, device),
            Command::Report(args) => report::run(args, device),
        });
    if let Err(error) = result {
        eprintln!("error: {}", error_text(&error));
        let usage = error.downcast_ref::<UsageError>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}
