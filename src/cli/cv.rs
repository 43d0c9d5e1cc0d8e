//! `cv`: K-fold cross-validation of the (modified) LeNet-5.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use fashion_mnist::cross_validation::CvConfig;
use fashion_mnist::models::LeNet5Config;
use fashion_mnist::ops::DeviceChoice;
use fashion_mnist::pipeline::cv::{self, CvStage};
use fashion_mnist::plots;
use fashion_mnist::training::EarlyStopping;
use serde::Serialize;

use super::common::{
    check_at_least_one, create_dir, save_chart, settings_ok, usage, write_json, DataSource, Fresh,
    Optimizer, SeedAndLimit,
};
use super::progress::Bars;

#[derive(Args)]
pub struct CvArgs {
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
    #[command(flatten)]
    optimizer: Optimizer,
    /// Early stopping inside each fold (patience in epochs)
    #[arg(long, value_name = "PATIENCE")]
    early_stopping: Option<usize>,
    #[command(flatten)]
    subset: SeedAndLimit,
    /// Output directory: folds.jsonl (resumable), cv.json, charts
    #[arg(long, default_value = "runs/cv")]
    out: PathBuf,
    #[command(flatten)]
    fresh: Fresh,
}

/// `cv.json`.
#[derive(Serialize)]
struct CvFile<'a> {
    config: &'a CvStage,
    val_accuracy_mean: f64,
    val_accuracy_std: f64,
    val_loss_mean: f64,
    val_loss_std: f64,
    best_fold: Option<usize>,
    wall_seconds: f64,
}

/// The stage's config from the arguments, every one checked (before any data is read).
fn stage_config(args: &CvArgs) -> Result<CvStage> {
    if args.folds < 2 {
        usage!("--folds must be at least 2, got {}", args.folds);
    }
    check_at_least_one("--dense-units", Some(args.dense_units))?;
    check_at_least_one("--early-stopping", args.early_stopping)?;
    args.subset.check()?;
    let config = CvStage {
        cv: CvConfig {
            folds: args.folds,
            seed: args.subset.seed,
            stratified: args.stratify,
            model: LeNet5Config {
                dense1_units: args.dense_units,
            },
            train: args.optimizer.train_config(
                args.epochs,
                args.subset.seed,
                args.early_stopping.map(EarlyStopping::new),
            ),
        },
        limit: args.subset.limit,
    };
    settings_ok(config.validate())?;
    Ok(config)
}

pub fn run(args: CvArgs, device: DeviceChoice) -> Result<()> {
    let started = Instant::now();
    let config = stage_config(&args)?;
    let loaded = args.source.load()?;
    let images = config.images(&loaded.train);
    if args.folds > images.len() {
        usage!(
            "--folds {}: more folds than the {} images",
            args.folds,
            images.len()
        );
    }
    args.fresh.apply(&args.out)?;
    create_dir(&args.out)?;
    let folds_file = args.out.join("folds.jsonl");
    let summary = cv::run(
        &images,
        &config,
        Some(&folds_file),
        device,
        &mut Bars::new(),
    )?;
    let results = summary.results();
    println!("{}", results.table());
    let best_fold = results.best_fold();
    if let Some(best) = best_fold {
        println!(
            "best fold: {} (val_accuracy {:.4})",
            best.fold, best.val_accuracy
        );
    }
    let (accuracy_chart, loss_chart) = plots::fold_curves(&summary.folds)
        .map_err(|e| anyhow::anyhow!("drawing the fold curves: {e}"))?;
    save_chart(Ok(accuracy_chart), &args.out.join("folds-accuracy.svg"))?;
    save_chart(Ok(loss_chart), &args.out.join("folds-loss.svg"))?;
    let file = CvFile {
        config: &config,
        val_accuracy_mean: summary.accuracy_mean,
        val_accuracy_std: summary.accuracy_std,
        val_loss_mean: summary.loss_mean,
        val_loss_std: summary.loss_std,
        best_fold: best_fold.map(|f| f.fold),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&args.out.join("cv.json"), &file)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
