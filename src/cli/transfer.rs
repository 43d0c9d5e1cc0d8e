//! `transfer`: the walkthrough's heads on a frozen VGG-16 / ResNet-50, optionally VGG-16's
//! block 5 (or the whole network) fine-tuned after.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use fashion_mnist::ops::DeviceChoice;
use fashion_mnist::pipeline::transfer::{self, TransferPaths, TransferStage, WeightsChoice};
use fashion_mnist::plots;
use fashion_mnist::training::EarlyStopping;
use fashion_mnist::transfer::{
    result_file_name, results_table, weights, Architecture, FineTuneConfig, Preprocessing,
    TransferConfig, TransferOutcome,
};
use serde::Serialize;

use super::common::{
    check_validation_split, create_dir, parse_architecture, save_chart, settings_ok, usage,
    write_json, DataSource, Fresh, Optimizer, SeedAndLimit, ValidationSplit,
};
use super::progress::Bars;

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
pub struct TransferArgs {
    #[command(flatten)]
    source: DataSource,
    #[arg(long, value_name = "vgg16|resnet50")]
    backbone: String,
    /// Our weights file (default: data/weights/BACKBONE_imagenet.safetensors; VGG-16's is
    /// fetched when missing; without ResNet-50's, a random initialization, labelled so)
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Use a randomly initialized backbone (NOT transfer learning)
    #[arg(long)]
    random_init: bool,
    #[arg(long, value_enum, default_value = "both")]
    preprocessing: PreprocessingArg,
    /// Head training epochs
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[command(flatten)]
    optimizer: Optimizer,
    /// Stop the head's training when val loss stops improving; restore the best weights
    #[arg(long)]
    early_stopping: bool,
    #[arg(long, default_value_t = 3)]
    patience: usize,
    /// After the head: train VGG-16's block 5 (or, with --fine-tune-all, the whole backbone)
    /// with the head for N epochs (0: no fine-tuning)
    #[arg(long, default_value_t = 0)]
    fine_tune_epochs: usize,
    /// Fine-tune the whole backbone end to end (on images: every step runs the whole network;
    /// ResNet-50's batch normalizations train), batches of 64, cosine schedule with warm-up,
    /// instead of VGG-16's block 5 alone
    #[arg(long)]
    fine_tune_all: bool,
    /// Fine-tuning learning rate (peak rate with --fine-tune-all) [default: 1e-5, or 1e-4
    /// with --fine-tune-all]
    #[arg(long, allow_negative_numbers = true)]
    fine_tune_learning_rate: Option<f64>,
    /// Fine-tune without mirrored images
    #[arg(long)]
    no_mirror: bool,
    /// Side the 28x28 images are resized to
    #[arg(long, default_value_t = 32)]
    side: usize,
    #[command(flatten)]
    split: ValidationSplit,
    #[command(flatten)]
    subset: SeedAndLimit,
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
    #[command(flatten)]
    fresh: Fresh,
}

/// `transfer.json`.
#[derive(Serialize)]
struct TransferFile<'a> {
    config: &'a TransferStage,
    runs: Vec<String>,
    wall_seconds: f64,
    threads: usize,
    version: &'static str,
}

/// The runs asked for, every argument checked (before any data or weights are read).
fn stage_config(args: &TransferArgs, architecture: Architecture) -> Result<TransferStage> {
    check_validation_split(args.split.validation_split)?;
    args.subset.check()?;
    let stopping = args
        .early_stopping
        .then(|| EarlyStopping::new(args.patience));
    let head = args
        .optimizer
        .train_config(args.epochs, args.subset.seed, stopping);
    settings_ok(head.validate())?;
    let mut fine_tune = if args.fine_tune_all {
        FineTuneConfig::end_to_end(args.fine_tune_epochs)
    } else {
        FineTuneConfig {
            epochs: args.fine_tune_epochs,
            ..FineTuneConfig::default()
        }
    };
    fine_tune.mirror = !args.no_mirror;
    let rate = args
        .fine_tune_learning_rate
        .unwrap_or(fine_tune.learning_rate);
    fine_tune.learning_rate = rate;
    if args.fine_tune_all && args.fine_tune_epochs == 0 {
        usage!("--fine-tune-all needs --fine-tune-epochs N (N >= 1)");
    }
    if args.fine_tune_epochs > 0 && !(rate.is_finite() && rate > 0.0) {
        usage!("--fine-tune-learning-rate must be a positive number, got {rate}");
    }
    if args.side < 32 {
        usage!(
            "--side must be at least 32 (both backbones halve it five times), got {}",
            args.side
        );
    }
    if args.fine_tune_epochs > 0 && !args.fine_tune_all && architecture != Architecture::Vgg16 {
        usage!("--fine-tune-epochs: ResNet-50 is fine-tuned end to end only (add --fine-tune-all)");
    }
    if args.random_init && args.weights.is_some() {
        usage!("--random-init and --weights exclude each other");
    }
    let preprocessings = match args.preprocessing {
        PreprocessingArg::Caffe => vec![Preprocessing::Caffe],
        PreprocessingArg::Unit => vec![Preprocessing::Unit],
        PreprocessingArg::Both => Preprocessing::ALL.to_vec(),
    };
    let runs = preprocessings
        .into_iter()
        .map(|preprocessing| TransferConfig {
            side: args.side,
            validation_split: args.split.validation_split,
            seed: args.subset.seed,
            limit: args.subset.limit,
            head: head.clone(),
            fine_tune: (args.fine_tune_epochs > 0).then(|| fine_tune.clone()),
            ..TransferConfig::walkthrough(architecture, preprocessing)
        })
        .collect();
    Ok(TransferStage {
        runs,
        test_limit: None,
    })
}

pub fn run(args: TransferArgs, device: DeviceChoice) -> Result<()> {
    let started = Instant::now();
    let architecture = parse_architecture(&args.backbone)?;
    let config = stage_config(&args, architecture)?;
    let choice = match (&args.weights, args.random_init) {
        (Some(path), _) => WeightsChoice::File(path.clone()),
        (None, true) => WeightsChoice::RandomInit,
        (None, false) => WeightsChoice::ImageNet {
            dir: weights::default_weights_dir(),
            python: args.python.clone(),
        },
    };
    let mut progress = Bars::new();
    let backbone = transfer::backbone(architecture, &choice, args.subset.seed, &mut progress)?;
    let loaded = args.source.load()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/transfer-{}", architecture.name())));
    args.fresh.apply(&out)?;
    create_dir(&out)?;
    let paths = TransferPaths {
        out_dir: &out,
        cache_dir: (!args.no_cache).then_some(args.cache.as_path()),
    };
    let outcomes = transfer::run(
        &loaded.train,
        loaded.test.as_ref(),
        &backbone,
        &config,
        paths,
        device,
        &mut progress,
    )?;
    for (run, outcome) in config.runs.iter().zip(&outcomes) {
        save_curves(&out, run, outcome)?;
    }
    println!("\n{}", results_table(&outcomes));
    let file = TransferFile {
        config: &config,
        runs: outcomes.iter().map(|o| o.label.clone()).collect(),
        wall_seconds: started.elapsed().as_secs_f64(),
        threads: rayon::current_num_threads(),
        version: env!("CARGO_PKG_VERSION"),
    };
    write_json(&out.join("transfer.json"), &file)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn save_curves(
    out: &std::path::Path,
    run: &TransferConfig,
    outcome: &TransferOutcome,
) -> Result<()> {
    let slug = result_file_name(run).replace(".json", "");
    save_chart(
        plots::training_curves(&outcome.head.history, &outcome.label),
        &out.join(format!("{slug}-head-curves.svg")),
    )?;
    if let (Some(ft), Some(label)) = (&outcome.fine_tune, outcome.fine_tuned_label()) {
        save_chart(
            plots::training_curves(&ft.history, &label),
            &out.join(format!("{slug}-fine-tune-curves.svg")),
        )?;
    }
    Ok(())
}
