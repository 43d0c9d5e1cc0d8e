//! `cnn`: the modern CNN (conv-BatchNorm-ReLU blocks, augmentation, cosine schedule) from
//! scratch, the best epoch kept on validation accuracy, evaluated on the test set.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use fashion_mnist::data::augment::Augmentation;
use fashion_mnist::ops::DeviceChoice;
use fashion_mnist::pipeline::modern_cnn::{self, keep_best_epoch, ModernCnnStage};
use fashion_mnist::pipeline::SplitConfig;
use fashion_mnist::training::LearningRateSchedule;

use super::common::{settings_ok, usage, write_json, DataSource, SeedAndLimit, ValidationSplit};
use super::progress::Bars;
use super::train::{load_split, report, save_run, RunRecord};

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleArg {
    /// Linear warm-up over the first 10% of steps, then cosine decay to 0
    Cosine,
    /// The same rate every step
    Constant,
}

#[derive(Args)]
pub struct CnnArgs {
    #[command(flatten)]
    source: DataSource,
    #[arg(long, default_value_t = fashion_mnist::study::MODERN_CNN_FULL_EPOCHS)]
    epochs: usize,
    /// Channels of each block's two 3x3 convolutions, comma-separated (each block halves the side)
    #[arg(long, value_delimiter = ',', default_value = "32,64")]
    block_channels: Vec<usize>,
    /// Width of the dense layer before the output
    #[arg(long, default_value_t = 128)]
    dense_units: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (Adam)
    #[arg(long, default_value_t = 3e-3, allow_negative_numbers = true)]
    learning_rate: f64,
    #[arg(long, value_enum, default_value = "cosine")]
    schedule: ScheduleArg,
    /// Largest random shift in pixels (0: none)
    #[arg(long, default_value_t = 1)]
    max_shift: usize,
    /// No random horizontal flips
    #[arg(long)]
    no_flip: bool,
    #[command(flatten)]
    subset: SeedAndLimit,
    #[command(flatten)]
    split: ValidationSplit,
    /// Output directory: config.json, history.json/csv, curves.svg, model.safetensors, metrics.json
    #[arg(long, default_value = "runs/modern-cnn")]
    out: PathBuf,
}

/// The stage's config from the arguments, every one checked (before any data is read).
fn stage_config(args: &CnnArgs) -> Result<ModernCnnStage> {
    let split = args.split.validation_split;
    if !(0.0..1.0).contains(&split) {
        usage!("--validation-split must be in [0, 1), got {split}");
    }
    args.subset.check()?;
    let recipe = ModernCnnStage::recommended(args.epochs, args.subset.seed);
    let augmentation = Augmentation {
        max_shift: args.max_shift,
        horizontal_flip: !args.no_flip,
    };
    let mut config = ModernCnnStage {
        model: fashion_mnist::models::ModernCnnConfig {
            block_channels: args.block_channels.clone(),
            dense_units: args.dense_units,
            ..recipe.model
        },
        train: fashion_mnist::training::TrainConfig {
            batch_size: args.batch_size,
            learning_rate: args.learning_rate,
            schedule: match args.schedule {
                ScheduleArg::Cosine => recipe.train.schedule,
                ScheduleArg::Constant => LearningRateSchedule::Constant,
            },
            augmentation: (augmentation.max_shift > 0 || augmentation.horizontal_flip)
                .then_some(augmentation),
            ..recipe.train
        },
        split: SplitConfig {
            limit: args.subset.limit,
            validation_split: split,
            ..recipe.split
        },
        test_limit: None,
    };
    // Without validation images there is no best epoch to keep: the last one is the result.
    if split == 0.0 {
        config.train.early_stopping = None;
    } else {
        config.train.early_stopping = Some(keep_best_epoch(args.epochs));
    }
    settings_ok(config.train.validate())?;
    settings_ok(config.validate())?;
    Ok(config)
}

pub fn run(args: CnnArgs, device: DeviceChoice) -> Result<()> {
    let started = Instant::now();
    let config = stage_config(&args)?;
    let (loaded, split, test) = load_split(&args.source, &config.split, &args.out)?;
    println!("{}", config.summary());
    let outcome = modern_cnn::run(&split, test.as_ref(), &config, device, &mut Bars::new())?;
    // Written once training has succeeded: a failed or diverged run leaves the output
    // directory as it was.
    let record = RunRecord {
        model: "modern_cnn",
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
        "modern CNN",
    )?;
    if let Some(best) = outcome.results.history.best_epoch {
        println!("best validation epoch: {best} (its weights kept)");
    }
    let metrics = report(&outcome.results, outcome.test_evaluation.as_ref(), started);
    write_json(&args.out.join("metrics.json"), &metrics)?;
    println!(
        "\nwrote {} (model.safetensors, history.json/csv, curves.svg, config.json, metrics.json)",
        args.out.display()
    );
    Ok(())
}
