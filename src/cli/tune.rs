//! `tune`: hyperparameter search for the modified LeNet-5 (random search and successive
//! halving).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use fashion_mnist::ops::DeviceChoice;
use fashion_mnist::pipeline::tuning::{self, Search, TuningStage};
use fashion_mnist::pipeline::SplitConfig;
use fashion_mnist::plots;
use fashion_mnist::tuning::{compare_searches, HyperParams, Objective, SearchSpace, TuningResults};
use serde::Serialize;

use super::common::{
    check_at_least_one, check_validation_split, create_dir, save_chart, settings_ok, usage,
    write_json, DataSource, Fresh, SeedAndLimit, ValidationSplit,
};
use super::progress::Bars;

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
pub struct TuneArgs {
    #[command(flatten)]
    source: DataSource,
    /// Search space: `walkthrough` (units 64-128 step 16, learning rate 1e-2 or 1e-3), `wide`
    /// (learning rate log-uniform 1e-4..1e-2), or a TOML (`[[param]]` tables) / JSON file
    /// declaring `units` and `learning_rate`
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
    #[command(flatten)]
    split: ValidationSplit,
    #[command(flatten)]
    subset: SeedAndLimit,
    /// Output directory: random.jsonl / halving.jsonl (resumable), summaries, charts
    #[arg(long, default_value = "runs/tune")]
    out: PathBuf,
    #[command(flatten)]
    fresh: Fresh,
}

/// One search's entry in `tuning.json`.
#[derive(Serialize)]
struct SearchSummary {
    config: TuningStage,
    best_hyperparameters: HyperParams,
    best_score: f64,
    trials: usize,
    epochs_trained: usize,
    seconds: f64,
}

#[derive(Serialize)]
struct TuningFile {
    searches: Vec<SearchSummary>,
    wall_seconds: f64,
}

/// One stage config per search asked for, every argument checked (before any data is read).
fn stage_configs(args: &TuneArgs) -> Result<Vec<TuningStage>> {
    let space = SearchSpace::named_or_file(&args.space)?;
    settings_ok(fashion_mnist::tuning::LeNet5Hyperparameters::check_space(
        &space,
    ))?;
    check_validation_split(args.split.validation_split)?;
    check_at_least_one("--executions", Some(args.executions))?;
    check_at_least_one("--parallel", args.parallel)?;
    check_at_least_one("--batch-size", Some(args.batch_size))?;
    check_at_least_one("--early-stopping", args.early_stopping)?;
    args.subset.check()?;
    let random = Search::Random {
        max_trials: args.max_trials,
        epochs: args.epochs,
    };
    let halving = Search::Halving {
        trials: args.halving_trials,
        min_epochs: args.min_epochs,
        max_epochs: args.max_epochs,
        eta: args.eta,
    };
    let searches = match args.search {
        SearchKind::Random => vec![random],
        SearchKind::Halving => vec![halving],
        SearchKind::Both => vec![random, halving],
    };
    let configs: Vec<TuningStage> = searches
        .into_iter()
        .map(|search| TuningStage {
            space: space.clone(),
            search,
            objective: match args.objective {
                ObjectiveArg::ValAccuracy => Objective::MaxValAccuracy,
                ObjectiveArg::ValLoss => Objective::MinValLoss,
            },
            executions_per_trial: args.executions,
            batch_size: args.batch_size,
            early_stopping: args.early_stopping,
            split: SplitConfig {
                limit: args.subset.limit,
                validation_split: args.split.validation_split,
                stratify: false,
                seed: args.subset.seed,
            },
        })
        .collect();
    for config in &configs {
        settings_ok(config.validate())?;
    }
    Ok(configs)
}

pub fn run(args: TuneArgs, device: DeviceChoice) -> Result<()> {
    let started = Instant::now();
    let configs = stage_configs(&args)?;
    let loaded = args.source.load()?;
    // Every search trains on the same split.
    let split = configs[0].split.apply(&loaded.train);
    if split.validation.is_empty() {
        usage!(
            "--validation-split {}: {} training images leave no validation image to score trials on; use more images",
            args.split.validation_split,
            split.train.len()
        );
    }
    args.fresh.apply(&args.out)?;
    create_dir(&args.out)?;
    let parallel = args.parallel.unwrap_or_else(rayon::current_num_threads);
    let mut searches = Vec::new();
    let mut done: Vec<(&str, TuningResults)> = Vec::new();
    for config in configs {
        let file = args.out.join(format!("{}.jsonl", config.search.slug()));
        let results = tuning::run(
            &split,
            &config,
            Some(&file),
            parallel,
            device,
            &mut Bars::new(),
        )?;
        present(&args, &config, &results)?;
        let best = results.best().context("no trial finished")?;
        searches.push(SearchSummary {
            best_hyperparameters: best.hyperparams.clone(),
            best_score: best.score,
            trials: results.trials.len(),
            epochs_trained: results.epochs_spent(),
            seconds: results.seconds(),
            config: config.clone(),
        });
        done.push((config.search.title(), results));
    }
    let named: Vec<(&str, &TuningResults)> = done.iter().map(|(n, r)| (*n, r)).collect();
    println!("\n{}", compare_searches(&named));
    let file = TuningFile {
        searches,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&args.out.join("tuning.json"), &file)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Prints a search's summary; saves its charts.
fn present(args: &TuneArgs, config: &TuningStage, results: &TuningResults) -> Result<()> {
    let (name, slug) = (config.search.title(), config.search.slug());
    println!("\n{name}\n{}", results.results_summary(10));
    let best = results.best().context("no trial finished")?;
    let chart = |kind: &str| args.out.join(format!("{slug}-{kind}.svg"));
    save_chart(plots::trial_scores_chart(results, name), &chart("scores"))?;
    save_chart(plots::search_space_chart(results, name), &chart("space"))?;
    save_chart(
        plots::training_curves(&best.history, &format!("best trial {}", best.trial)),
        &chart("best-curves"),
    )?;
    Ok(())
}
