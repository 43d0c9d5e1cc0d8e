//! The whole study in one call, as `fashion-mnist report` runs it: data checks, LeNet-5,
//! the random search, 5-fold cross-validation, VGG-16 and ResNet-50 transfer, and the
//! comparison. Each stage saves its settings, versions, device, wall time and results under the
//! run directory (`STAGE/stage.json`); a stage that already ran with the same settings is
//! reused, so an interrupted study resumes. [`render_html`] turns the results into one
//! self-contained HTML page.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dfdx::prelude::Cpu;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::cross_validation::{self, CvConfig, FoldRecord};
use crate::data::prepare::{split_scaled, Prepared};
use crate::data::{eda, FashionMnist, CLASS_NAMES};
use crate::error::TrainError;
use crate::models::{ImageClassifier, LeNet5, LeNet5Config};
use crate::ops::{DeviceChoice, ModelDevice};
use crate::plots::{self, Chart};
use crate::report::Table;
use crate::resume::RunKey;
use crate::training::{
    self, checkpoint, ClassificationReport, ConfusionMatrix, EarlyStopping, History, TrainConfig,
    TrainObserver,
};
use crate::transfer::{
    self, weights, Architecture, FineTuneConfig, LoadedBackbone, Preprocessing, Score,
    TransferConfig, TransferObserver, TransferOutcome, WeightsInfo,
};
use crate::tuning::{self, LeNet5Trials, Objective, SearchOptions, SearchSpace, TrialRecord};

/// The walkthrough's reported validation scores (accuracy, loss).
pub const WALKTHROUGH_LENET5: (f64, f64) = (0.8947, 0.2888);
pub const WALKTHROUGH_VGG16: (f64, f64) = (0.8768, 0.3973);
pub const WALKTHROUGH_RESNET50: (f64, f64) = (0.7875, 0.5851);

/// How big a study: the walkthrough's settings, or a few minutes' try.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyPreset {
    pub name: String,
    /// Training images used (None: all 60,000).
    pub train_limit: Option<usize>,
    pub seed: u64,
    /// LeNet-5: at most this many epochs, early stopping (patience 3) on val loss.
    pub lenet5_max_epochs: usize,
    pub tuning_trials: usize,
    pub tuning_epochs: usize,
    pub cv_folds: usize,
    pub cv_epochs: usize,
    pub transfer_head_epochs: usize,
    /// Fine-tuning epochs of VGG-16's block 5 after the head (0: none).
    pub fine_tune_epochs: usize,
    /// Training images for the transfer stages (feature extraction is the slow part).
    pub transfer_limit: Option<usize>,
    /// Test images evaluated (None: all 10,000).
    pub test_limit: Option<usize>,
}

impl StudyPreset {
    /// The walkthrough's settings on all the data.
    pub fn full() -> Self {
        StudyPreset {
            name: "full".into(),
            train_limit: None,
            seed: 42,
            lenet5_max_epochs: 30,
            tuning_trials: 8,
            tuning_epochs: 10,
            cv_folds: 5,
            cv_epochs: 30,
            transfer_head_epochs: 10,
            fine_tune_epochs: 3,
            transfer_limit: None,
            test_limit: None,
        }
    }

    /// A minute or two on a laptop CPU: small subsets, few epochs. Not for conclusions.
    pub fn quick() -> Self {
        StudyPreset {
            name: "quick".into(),
            train_limit: Some(2000),
            seed: 42,
            lenet5_max_epochs: 3,
            tuning_trials: 3,
            tuning_epochs: 2,
            cv_folds: 3,
            cv_epochs: 2,
            transfer_head_epochs: 2,
            fine_tune_epochs: 1,
            transfer_limit: Some(1000),
            test_limit: Some(500),
        }
    }
}

/// What every stage records about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord<T> {
    pub stage: String,
    /// The settings that determine the results; a rerun with equal settings reuses them.
    pub config: serde_json::Value,
    pub seed: u64,
    pub version: String,
    pub device: String,
    /// Seconds since the Unix epoch when the stage started.
    pub started_unix: u64,
    pub wall_seconds: f64,
    /// Everything that determines the results (the exact images, `config`, the version): the
    /// stage is reused only under an equal key (absent in records of older versions).
    #[serde(default)]
    pub run_key: RunKey,
    /// Files the stage wrote (relative to the run directory) with their SHA-256: the stage is
    /// reused only while they are all there and unchanged.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    pub results: T,
}

/// A file a stage wrote, and the SHA-256 of its content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub sha256: String,
}

impl Artifact {
    fn of(out: &Path, relative: &str) -> Result<Self, TrainError> {
        let path = out.join(relative);
        let bytes = std::fs::read(&path).map_err(|e| crate::error::DataError::io(&path, e))?;
        Ok(Artifact {
            path: relative.to_string(),
            sha256: crate::resume::fingerprint([bytes.as_slice()]),
        })
    }

    /// Why the file no longer verifies (None: it does).
    fn problem(&self, out: &Path) -> Option<String> {
        let path = out.join(&self.path);
        match std::fs::read(&path) {
            Err(e) => Some(format!("{} cannot be read ({e})", path.display())),
            Ok(bytes) if crate::resume::fingerprint([bytes.as_slice()]) != self.sha256 => Some(
                format!("{} has changed since the stage wrote it", path.display()),
            ),
            Ok(_) => None,
        }
    }
}

/// Progress of the study: stage starts and ends, plus the training and extraction progress of
/// the stage inside.
pub trait StudyObserver: TransferObserver {
    fn on_stage_start(&mut self, _index: usize, _count: usize, _name: &str, _reused: bool) {}
    fn on_stage_end(&mut self, _name: &str, _seconds: f64) {}
}

impl StudyObserver for training::Silent {}
impl StudyObserver for training::EpochLines {
    fn on_stage_start(&mut self, index: usize, count: usize, name: &str, reused: bool) {
        let note = if reused {
            " (reusing earlier results)"
        } else {
            ""
        };
        println!("[{index}/{count}] {name}{note}");
    }
}

/// Names and rough costs of the stages in the full study on 2 CPU cores (minutes), for the
/// ETA; a quick study scales them down.
pub const STAGES: [(&str, f64); 7] = [
    ("data", 0.2),
    ("lenet5", 1.0),
    ("tuning", 7.0),
    ("cross_validation", 11.0),
    ("vgg16", 45.0),
    ("resnet50", 5.0),
    ("comparison", 0.1),
];

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn stage_file(out: &Path, stage: &str) -> PathBuf {
    out.join(stage).join("stage.json")
}

/// The record saved for `stage` when it can be reused: made under `key`, its artifacts intact.
/// A record made under another key is refused (naming what differs); an unreadable record or
/// a missing or changed artifact means the stage runs again (with a warning).
fn reusable<T: DeserializeOwned>(
    out: &Path,
    stage: &str,
    key: &RunKey,
    observer: &mut dyn StudyObserver,
) -> Result<Option<StageRecord<T>>, TrainError> {
    let path = stage_file(out, stage);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let record: StageRecord<T> = match serde_json::from_str(&text) {
        Ok(record) => record,
        Err(e) => {
            observer.on_stage(&format!(
                "warning: {} cannot be read ({e}); running the stage again",
                path.display()
            ));
            return Ok(None);
        }
    };
    key.check(&record.run_key, &path)?;
    if let Some(problem) = record.artifacts.iter().find_map(|a| a.problem(out)) {
        observer.on_stage(&format!(
            "warning: stage {stage}: {problem}; running the stage again"
        ));
        return Ok(None);
    }
    Ok(Some(record))
}

fn save_record<T: Serialize>(out: &Path, record: &StageRecord<T>) -> Result<(), TrainError> {
    let path = stage_file(out, &record.stage);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| crate::error::DataError::io(dir, e))?;
    }
    let json = serde_json::to_string_pretty(record).expect("plain data");
    crate::fsutil::write_bytes_atomically(&path, json.as_bytes())?;
    Ok(())
}

/// Where and on what a study's stages run: keys every stage record.
struct StageContext<'a> {
    out: &'a Path,
    device: &'a str,
    /// Fingerprint of the training and test images.
    data: RunKey,
    seed: u64,
}

/// Runs `work` unless a reusable record with the same settings exists; saves the new record,
/// with the SHA-256 of the `artifacts` (paths relative to the run directory) it wrote.
fn stage<T: Serialize + DeserializeOwned>(
    context: &StageContext<'_>,
    (index, name): (usize, &str),
    config: serde_json::Value,
    artifacts: &[&str],
    observer: &mut dyn StudyObserver,
    work: impl FnOnce(&mut dyn StudyObserver) -> Result<T, TrainError>,
) -> Result<StageRecord<T>, TrainError> {
    let out = context.out;
    let key = context.data.clone().with("config", &config);
    if let Some(record) = reusable::<T>(out, name, &key, observer)? {
        observer.on_stage_start(index, STAGES.len(), name, true);
        observer.on_stage_end(name, 0.0);
        return Ok(record);
    }
    observer.on_stage_start(index, STAGES.len(), name, false);
    let (started, started_unix) = (Instant::now(), now_unix());
    let results = work(observer)?;
    let record = StageRecord {
        stage: name.to_string(),
        config,
        seed: context.seed,
        version: crate::resume::CODE_VERSION.to_string(),
        device: context.device.to_string(),
        started_unix,
        wall_seconds: started.elapsed().as_secs_f64(),
        run_key: key,
        artifacts: artifacts
            .iter()
            .map(|a| Artifact::of(out, a))
            .collect::<Result<_, _>>()?,
        results,
    };
    save_record(out, &record)?;
    observer.on_stage_end(name, record.wall_seconds);
    Ok(record)
}

/// Results of the data checks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataResults {
    pub source: String,
    pub verification: String,
    pub train_images: usize,
    pub test_images: usize,
    pub missing_values: usize,
    pub duplicates: usize,
    pub class_counts: Vec<usize>,
}

/// A model trained and evaluated (LeNet-5).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelResults {
    pub history: History,
    pub validation: Score,
    pub test: Option<Score>,
    pub confusion: Option<ConfusionMatrix>,
    pub report: Option<ClassificationReport>,
    pub params: usize,
    pub train_seconds: f64,
    pub train_images: usize,
}

impl ModelResults {
    /// Training images per second (epochs x images / training seconds).
    pub fn images_per_second(&self) -> f64 {
        (self.history.epochs.len() * self.train_images) as f64
            / self.history.total_seconds().max(1e-9)
    }
}

/// Results of the random search.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuningSummary {
    pub trials: Vec<TrialRecord>,
    pub best_units: usize,
    pub best_learning_rate: f64,
    pub best_score: f64,
}

/// Results of the cross-validation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CvSummary {
    pub folds: Vec<FoldRecord>,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub loss_mean: f64,
    pub loss_std: f64,
}

/// Everything the study measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyResults {
    pub preset: StudyPreset,
    pub data: StageRecord<DataResults>,
    pub lenet5: StageRecord<ModelResults>,
    pub tuning: StageRecord<TuningSummary>,
    pub cross_validation: StageRecord<CvSummary>,
    pub vgg16: StageRecord<Vec<TransferOutcome>>,
    pub resnet50: StageRecord<Vec<TransferOutcome>>,
    pub wall_seconds: f64,
}

/// The test images a preset evaluates on.
fn test_set(data: &FashionMnist, preset: &StudyPreset) -> Option<crate::data::Dataset> {
    let test = data.test.as_ref()?;
    Some(match preset.test_limit {
        Some(n) => test.head(n),
        None => test.clone(),
    })
}

fn data_stage(data: &FashionMnist) -> Result<DataResults, TrainError> {
    let df = eda::to_dataframe(&data.train).map_err(|e| TrainError::Device(e.to_string()))?;
    let (_, missing) = eda::missing_values(&df);
    let duplicates = eda::duplicate_count(&df).map_err(|e| TrainError::Device(e.to_string()))?;
    Ok(DataResults {
        source: data.located.origin.to_string(),
        verification: format!("{:?}", data.verification),
        train_images: data.train.len(),
        test_images: data.test.as_ref().map_or(0, |t| t.len()),
        missing_values: missing,
        duplicates,
        class_counts: data.train.class_counts().to_vec(),
    })
}

/// The LeNet-5 stage's checkpoint, relative to the run directory.
const LENET5_CHECKPOINT: &str = "lenet5/model.safetensors";

fn lenet5_stage<D: ModelDevice>(
    data: &FashionMnist,
    preset: &StudyPreset,
    out: &Path,
    device: &D,
    observer: &mut dyn TrainObserver,
) -> Result<ModelResults, TrainError> {
    let (train, validation) =
        split_scaled(&data.train, preset.train_limit, 0.2, preset.seed, false);
    let mut model = LeNet5::new(device, LeNet5Config::default(), preset.seed);
    let config = lenet5_config(preset);
    let history = training::fit(&mut model, &train, Some(&validation), &config, observer)?;
    checkpoint::save(&model, &out.join(LENET5_CHECKPOINT))?;
    let val = training::evaluate(&model, &validation, 1000)?;
    let (test, confusion, report) = match test_set(data, preset) {
        Some(test) => {
            let test = Prepared::from_dataset(&test);
            let e = training::evaluate(&model, &test, 1000)?;
            let confusion = e.confusion_matrix(&test.labels);
            let report = confusion.report();
            (Some(Score::from(&e)), Some(confusion), Some(report))
        }
        None => (None, None, None),
    };
    Ok(ModelResults {
        train_seconds: history.total_seconds(),
        history,
        validation: Score::from(&val),
        test,
        confusion,
        report,
        params: model.param_count(),
        train_images: train.len(),
    })
}

fn lenet5_config(preset: &StudyPreset) -> TrainConfig {
    TrainConfig {
        epochs: preset.lenet5_max_epochs,
        seed: preset.seed,
        early_stopping: Some(EarlyStopping::new(3)),
        ..TrainConfig::default()
    }
}

fn tuning_stage(
    data: &FashionMnist,
    preset: &StudyPreset,
    out: &Path,
    device: DeviceChoice,
    observer: &mut dyn StudyObserver,
) -> Result<TuningSummary, TrainError> {
    let (train, validation) =
        split_scaled(&data.train, preset.train_limit, 0.2, preset.seed, false);
    let runner = LeNet5Trials {
        train: &train,
        validation: &validation,
        batch_size: 32,
        seed: preset.seed,
        early_stopping: None,
        device,
    };
    let observer = std::sync::Mutex::new(observer);
    let options = SearchOptions {
        objective: Objective::MaxValAccuracy,
        executions_per_trial: 1,
        seed: preset.seed,
        parallel_trials: rayon::current_num_threads(),
    };
    let results = tuning::random_search(
        &SearchSpace::walkthrough(),
        preset.tuning_trials,
        preset.tuning_epochs,
        &runner,
        &options,
        Some(&out.join("tuning").join("random.jsonl")),
        // Trials finish on several threads; their lines go through the observer one at a time.
        &|r| lock(&observer).on_stage(&r.to_string()),
    )?;
    let best = results.best().ok_or_else(|| TrainError::Config {
        name: "tuning".into(),
        message: "no trial finished".into(),
    })?;
    Ok(TuningSummary {
        best_units: best
            .hyperparams
            .get("units")
            .and_then(|v| v.as_u64())
            .unwrap_or(120) as usize,
        best_learning_rate: best
            .hyperparams
            .get("learning_rate")
            .and_then(|v| v.as_f64())
            .unwrap_or(1e-3),
        best_score: best.score,
        trials: results.trials.clone(),
    })
}

fn cv_stage<D: ModelDevice>(
    data: &FashionMnist,
    preset: &StudyPreset,
    tuned: &TuningSummary,
    out: &Path,
    device: &D,
    observer: &mut dyn StudyObserver,
) -> Result<CvSummary, TrainError> {
    let observer = std::sync::Mutex::new(observer);
    let train = match preset.train_limit {
        Some(n) => Prepared::from_dataset(&data.train.head(n)),
        None => Prepared::from_dataset(&data.train),
    };
    let config = cv_config(preset, tuned);
    let results = cross_validation::cross_validate(
        device,
        &train,
        &config,
        Some(&out.join("cross_validation").join("folds.jsonl")),
        false,
        &|f| {
            lock(&observer).on_stage(&format!(
                "fold {}: val_accuracy {:.4}, val_loss {:.4} ({:.0} s)",
                f.fold, f.val_accuracy, f.val_loss, f.seconds
            ))
        },
    )?;
    let (accuracy_mean, accuracy_std) = results.accuracy_mean_std();
    let (loss_mean, loss_std) = results.loss_mean_std();
    Ok(CvSummary {
        folds: results.folds,
        accuracy_mean,
        accuracy_std,
        loss_mean,
        loss_std,
    })
}

/// The observer behind a mutex (a panic elsewhere does not silence progress lines).
fn lock<'a, 'b>(
    observer: &'a std::sync::Mutex<&'b mut dyn StudyObserver>,
) -> std::sync::MutexGuard<'a, &'b mut dyn StudyObserver> {
    observer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn cv_config(preset: &StudyPreset, tuned: &TuningSummary) -> CvConfig {
    CvConfig {
        folds: preset.cv_folds,
        seed: preset.seed,
        stratified: false,
        model: LeNet5Config {
            dense1_units: tuned.best_units,
        },
        train: TrainConfig {
            epochs: preset.cv_epochs,
            learning_rate: tuned.best_learning_rate,
            seed: preset.seed,
            ..TrainConfig::default()
        },
    }
}

/// The backbone to use: ImageNet weights from `weights_dir` (VGG-16's fetched when missing),
/// else — ResNet-50 on machines without its weights — a random initialization, labelled so.
pub fn backbone_for_study(
    architecture: Architecture,
    weights_dir: &Path,
    python: &str,
    seed: u64,
) -> Result<(LoadedBackbone, WeightsInfo), TrainError> {
    let path = weights::imagenet_path(weights_dir, architecture);
    if !path.is_file() && architecture == Architecture::Vgg16 {
        weights::fetch_vgg16(weights_dir, python)?;
    }
    if path.is_file() {
        return Ok((
            weights::load_backbone(&path)?,
            WeightsInfo::from_file(&path)?,
        ));
    }
    let backbone =
        match architecture {
            Architecture::Vgg16 => {
                LoadedBackbone::Vgg16(crate::models::Vgg16::new(&Cpu::default(), seed))
            }
            Architecture::Resnet50 => LoadedBackbone::Resnet50(Box::new(
                crate::models::ResNet50::new(&Cpu::default(), Default::default(), seed),
            )),
        };
    Ok((backbone, WeightsInfo::random(seed)))
}

fn transfer_configs(preset: &StudyPreset, architecture: Architecture) -> Vec<TransferConfig> {
    let base = |preprocessing| {
        let mut c = TransferConfig::walkthrough(architecture, preprocessing);
        c.seed = preset.seed;
        c.head.seed = preset.seed;
        c.head.epochs = preset.transfer_head_epochs;
        c.limit = preset.transfer_limit;
        c
    };
    match architecture {
        Architecture::Vgg16 => {
            let mut configs = vec![base(Preprocessing::Caffe), base(Preprocessing::Unit)];
            if preset.fine_tune_epochs > 0 {
                let mut tuned = base(Preprocessing::Caffe);
                tuned.fine_tune = Some(FineTuneConfig {
                    epochs: preset.fine_tune_epochs,
                    ..FineTuneConfig::default()
                });
                configs.push(tuned);
            }
            configs
        }
        Architecture::Resnet50 => vec![base(Preprocessing::Caffe)],
    }
}

/// Where the study keeps its files.
#[derive(Clone, Debug)]
pub struct StudyPaths {
    pub out: PathBuf,
    pub weights_dir: PathBuf,
    pub feature_cache: PathBuf,
    pub python: String,
}

/// Runs (or reuses) every stage on `device` and saves `results.json` in `paths.out`. Stages
/// finished earlier are reused whatever device ran them (each stage records its device).
pub fn run_study(
    data: &FashionMnist,
    preset: &StudyPreset,
    paths: &StudyPaths,
    device: DeviceChoice,
    observer: &mut dyn StudyObserver,
) -> Result<StudyResults, TrainError> {
    crate::on_device!(device, d => run_study_on(data, preset, paths, d, observer))?
}

fn run_study_on<D: ModelDevice>(
    data: &FashionMnist,
    preset: &StudyPreset,
    paths: &StudyPaths,
    device: &D,
    observer: &mut dyn StudyObserver,
) -> Result<StudyResults, TrainError> {
    let described = device.describe();
    let device_text = described.as_str();
    let started = Instant::now();
    let out = paths.out.as_path();
    let seed = preset.seed;
    let context = StageContext {
        out,
        device: device_text,
        data: RunKey::new()
            .with("train_data", data.train.fingerprint())
            .with("test_data", data.test.as_ref().map(|t| t.fingerprint())),
        seed,
    };
    let data_config = serde_json::json!({ "train_images": data.train.len() });
    let data_record = stage(&context, (1, "data"), data_config, &[], observer, |_| {
        data_stage(data)
    })?;

    let lenet_config = serde_json::json!({
        "train": lenet5_config(preset), "train_limit": preset.train_limit, "validation_split": 0.2,
        "test_limit": preset.test_limit,
    });
    let lenet5 = stage(
        &context,
        (2, "lenet5"),
        lenet_config,
        &[LENET5_CHECKPOINT],
        observer,
        |o| lenet5_stage(data, preset, out, device, o),
    )?;

    let tuning_config = serde_json::json!({
        "space": "walkthrough", "trials": preset.tuning_trials, "epochs": preset.tuning_epochs,
        "train_limit": preset.train_limit,
    });
    let tuning = stage(&context, (3, "tuning"), tuning_config, &[], observer, |o| {
        tuning_stage(data, preset, out, D::CHOICE, o)
    })?;

    let cv_settings = serde_json::json!({
        "cv": cv_config(preset, &tuning.results), "train_limit": preset.train_limit,
    });
    let cross_validation = stage(
        &context,
        (4, "cross_validation"),
        cv_settings,
        &[],
        observer,
        |o| cv_stage(data, preset, &tuning.results, out, device, o),
    )?;

    let test = test_set(data, preset);
    let transfer_stage = |index: usize,
                          architecture: Architecture,
                          observer: &mut dyn StudyObserver| {
        let configs = transfer_configs(preset, architecture);
        let (backbone, info) =
            backbone_for_study(architecture, &paths.weights_dir, &paths.python, seed)?;
        let config = serde_json::json!({
            "runs": configs, "weights": info, "test_limit": preset.test_limit,
        });
        let inputs = transfer::TransferInputs {
            train_set: &data.train,
            test_set: test.as_ref(),
            backbone: &backbone,
            weights: &info,
            cache_dir: Some(&paths.feature_cache),
            device,
        };
        stage(
            &context,
            (index, architecture.name()),
            config,
            &[],
            observer,
            |o| {
                configs
                    .iter()
                    .map(|c| transfer::run_or_reuse(&out.join(architecture.name()), &inputs, c, o))
                    .collect::<Result<Vec<_>, _>>()
            },
        )
    };
    let vgg16 = transfer_stage(5, Architecture::Vgg16, observer)?;
    let resnet50 = transfer_stage(6, Architecture::Resnet50, observer)?;

    observer.on_stage_start(7, STAGES.len(), "comparison", false);
    let results = StudyResults {
        preset: preset.clone(),
        data: data_record,
        lenet5,
        tuning,
        cross_validation,
        vgg16,
        resnet50,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&results).expect("plain data");
    crate::fsutil::write_bytes_atomically(&out.join("results.json"), json.as_bytes())?;
    observer.on_stage_end("comparison", 0.0);
    Ok(results)
}

/// Reads a study's `results.json`.
pub fn load_results(path: &Path) -> Result<StudyResults, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::error::DataError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("not a study results file: {e}"),
    })
}

fn f4(v: f64) -> String {
    format!("{v:.4}")
}

fn minutes(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{:.1} min", seconds / 60.0)
    }
}

/// The walkthrough's comparison table, extended: test accuracy, parameters, training time and
/// images/s, with the walkthrough's own numbers beside ours.
pub fn comparison_table(results: &StudyResults) -> Table {
    let mut table = Table::new(&[
        "model",
        "walkthrough val accuracy",
        "walkthrough val loss",
        "val accuracy",
        "val loss",
        "test accuracy",
        "trainable params",
        "time (transfer: incl. features)",
        "training images/s",
    ]);
    let l = &results.lenet5.results;
    table.push(vec![
        "LeNet-5 (from scratch)".into(),
        f4(WALKTHROUGH_LENET5.0),
        f4(WALKTHROUGH_LENET5.1),
        f4(l.validation.accuracy),
        f4(l.validation.loss),
        l.test.map_or("-".into(), |t| f4(t.accuracy)),
        l.params.to_string(),
        minutes(l.train_seconds),
        format!("{:.0}", l.images_per_second()),
    ]);
    let cv = &results.cross_validation.results;
    table.push(vec![
        format!("tuned LeNet-5, {}-fold CV (mean)", cv.folds.len()),
        "-".into(),
        "-".into(),
        format!("{:.4} +/- {:.4}", cv.accuracy_mean, cv.accuracy_std),
        format!("{:.4} +/- {:.4}", cv.loss_mean, cv.loss_std),
        "-".into(),
        LeNet5::new(
            &Cpu::default(),
            LeNet5Config {
                dense1_units: results.tuning.results.best_units,
            },
            0,
        )
        .param_count()
        .to_string(),
        minutes(results.cross_validation.wall_seconds),
        "-".into(),
    ]);
    let transfer_rows = results
        .vgg16
        .results
        .iter()
        .chain(&results.resnet50.results);
    for o in transfer_rows {
        let walkthrough = match o.config.backbone {
            Architecture::Vgg16 => WALKTHROUGH_VGG16,
            Architecture::Resnet50 => WALKTHROUGH_RESNET50,
        };
        let stage = o.final_stage();
        // Training vectors per epoch: the training share of the images features were made for.
        let extracted = o
            .extraction
            .iter()
            .find(|(what, _)| what == "train")
            .map_or(0, |(_, r)| r.images);
        let train_images =
            (stage.history.epochs.len() * extracted) as f64 * (1.0 - o.config.validation_split);
        let name = match &o.fine_tune {
            Some(_) => format!("{} + block 5 fine-tuned", o.label),
            None => o.label.clone(),
        };
        table.push(vec![
            name,
            f4(walkthrough.0),
            f4(walkthrough.1),
            f4(stage.validation.accuracy),
            f4(stage.validation.loss),
            stage.test.map_or("-".into(), |t| f4(t.accuracy)),
            stage.trainable_params.to_string(),
            minutes(o.wall_seconds),
            format!(
                "{:.0}",
                train_images / stage.history.total_seconds().max(1e-9)
            ),
        ]);
    }
    table
}

/// Validation accuracy of every model as a bar chart, the walkthrough's numbers beside ours.
pub fn comparison_chart(results: &StudyResults) -> Result<Chart, plots::PlotError> {
    let mut labels = vec!["LeNet-5".to_string()];
    let mut values = vec![results.lenet5.results.validation.accuracy];
    for o in results
        .vgg16
        .results
        .iter()
        .chain(&results.resnet50.results)
    {
        let short = o
            .label
            .replace(" (ImageNet, frozen)", "")
            .replace(" (RANDOM init, frozen: not transfer learning)", " RANDOM")
            .replace(" input", "");
        labels.push(if o.fine_tune.is_some() {
            format!("{short} +ft")
        } else {
            short
        });
        values.push(o.final_stage().validation.accuracy);
    }
    labels.extend(
        [
            "walkthrough LeNet-5",
            "walkthrough VGG-16",
            "walkthrough ResNet-50",
        ]
        .map(String::from),
    );
    values.extend([
        WALKTHROUGH_LENET5.0,
        WALKTHROUGH_VGG16.0,
        WALKTHROUGH_RESNET50.0,
    ]);
    plots::bar_chart(
        "Validation accuracy",
        "validation accuracy",
        &labels,
        &values,
    )
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The study as one self-contained HTML page: every chart inline (SVG), tables, a short text
/// per section written from the numbers.
pub fn render_html(
    results: &StudyResults,
    data: Option<&FashionMnist>,
) -> Result<String, plots::PlotError> {
    let mut html = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Fashion-MNIST study</title>\
         <style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
         h1,h2{border-bottom:1px solid #ccc;padding-bottom:4px}figure{margin:1em 0}svg{max-width:100%;height:auto}\
         .note{color:#555;font-size:0.9em}.warn{color:#a00;font-weight:bold}</style></head><body>",
    );
    let p = |html: &mut String, text: &str| html.push_str(&format!("<p>{}</p>", html_escape(text)));
    let chart = |html: &mut String, chart: Chart| {
        html.push_str("<figure>");
        html.push_str(chart.svg());
        html.push_str("</figure>");
    };
    let preset = &results.preset;
    html.push_str("<h1>Fashion-MNIST: the Kaggle study, reproduced in Rust</h1>");
    p(
        &mut html,
        &format!(
            "Preset \"{}\"{}; seed {}; {}; fashion-mnist {}; whole study {} (stages reused from earlier runs count their original time).",
            preset.name,
            if preset.name == "quick" { " (small subsets and few epochs: for trying the pipeline, not for conclusions)" } else { " (the walkthrough's settings on all the data)" },
            preset.seed,
            results.lenet5.device,
            results.lenet5.version,
            minutes(
                results.data.wall_seconds
                    + results.lenet5.wall_seconds
                    + results.tuning.wall_seconds
                    + results.cross_validation.wall_seconds
                    + results.vgg16.wall_seconds
                    + results.resnet50.wall_seconds
            ),
        ),
    );

    html.push_str("<h2>Comparison</h2>");
    html.push_str(&comparison_table(results).to_html());
    chart(&mut html, comparison_chart(results)?);

    let d = &results.data.results;
    html.push_str("<h2>1. Data</h2>");
    p(
        &mut html,
        &format!(
            "{} training and {} test images from {} (verification: {}). Missing values: {}. Duplicate rows: {}. Training images per class: {} to {}.",
            d.train_images,
            d.test_images,
            d.source,
            d.verification,
            d.missing_values,
            d.duplicates,
            d.class_counts.iter().min().unwrap_or(&0),
            d.class_counts.iter().max().unwrap_or(&0)
        ),
    );
    let labels: Vec<String> = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    let counts: Vec<f64> = d.class_counts.iter().map(|&c| c as f64).collect();
    chart(
        &mut html,
        plots::bar_chart("Images per class", "images", &labels, &counts)?,
    );
    if let Some(data) = data {
        chart(
            &mut html,
            crate::notebook::samples_by_class(&data.train, 2)?,
        );
    }

    let l = &results.lenet5.results;
    html.push_str("<h2>2. LeNet-5 from scratch</h2>");
    p(
        &mut html,
        &format!(
            "{} parameters, Adam 1e-3, batch 32, early stopping on validation loss (patience 3, best weights restored): {} epochs, best epoch {}. Validation accuracy {:.4} (walkthrough {:.4}), test accuracy {}. Training took {} ({:.0} images/s).",
            l.params,
            l.history.epochs.len(),
            l.history.best_epoch.map_or("-".into(), |e| e.to_string()),
            l.validation.accuracy,
            WALKTHROUGH_LENET5.0,
            l.test.map_or("-".into(), |t| format!("{:.4}", t.accuracy)),
            minutes(l.train_seconds),
            l.images_per_second()
        ),
    );
    chart(&mut html, plots::training_curves(&l.history, "LeNet-5")?);
    if let Some(confusion) = &l.confusion {
        chart(
            &mut html,
            plots::confusion_matrix_chart(confusion, &CLASS_NAMES, "LeNet-5 on the test set")?,
        );
    }
    if let Some(report) = &l.report {
        html.push_str(&Table::from(report).to_html());
    }

    let t = &results.tuning.results;
    html.push_str("<h2>3. Tuning (random search)</h2>");
    p(
        &mut html,
        &format!(
            "{} trials of {} epochs over the first dense layer (64-128 units) and the learning rate (1e-2 or 1e-3). Best: {} units, learning rate {}, validation accuracy {:.4}; {}.",
            t.trials.len(),
            preset.tuning_epochs,
            t.best_units,
            t.best_learning_rate,
            t.best_score,
            minutes(results.tuning.wall_seconds)
        ),
    );
    let tuning_results = tuning::TuningResults {
        objective: Some(Objective::MaxValAccuracy),
        trials: t.trials.clone(),
    };
    html.push_str(&tuning_results.results_summary(10).to_html());
    chart(
        &mut html,
        crate::notebook::trial_scores_chart(&tuning_results, "random search")?,
    );

    let cv = &results.cross_validation.results;
    html.push_str("<h2>4. Cross-validation</h2>");
    p(
        &mut html,
        &format!(
            "{}-fold cross-validation of the tuned model, {} epochs per fold: validation accuracy {:.4} +/- {:.4}, loss {:.4} +/- {:.4} (sample standard deviation); {}.",
            cv.folds.len(),
            preset.cv_epochs,
            cv.accuracy_mean,
            cv.accuracy_std,
            cv.loss_mean,
            cv.loss_std,
            minutes(results.cross_validation.wall_seconds)
        ),
    );
    let cv_results = cross_validation::CvResults {
        folds: cv.folds.clone(),
    };
    html.push_str(&cv_results.table().to_html());
    let (accuracy_chart, loss_chart) = cv_results.curves()?;
    chart(&mut html, accuracy_chart);
    chart(&mut html, loss_chart);

    html.push_str("<h2>5. Transfer learning</h2>");
    let all: Vec<TransferOutcome> = results
        .vgg16
        .results
        .iter()
        .chain(&results.resnet50.results)
        .cloned()
        .collect();
    for o in &all {
        if !o.weights.imagenet {
            html.push_str(&format!(
                "<p class=\"warn\">{}: no ImageNet weights were available ({}). This row is NOT transfer learning: it measures a head on random frozen features.</p>",
                html_escape(&o.label),
                html_escape(&o.weights.origin)
            ));
        }
    }
    p(
        &mut html,
        "Images resized to 32x32, gray repeated to 3 channels; the backbone frozen, its features computed once and cached, the walkthrough's heads trained on them. \"caffe\" input is what the ImageNet weights expect (Keras preprocess_input); \"unit\" is the walkthrough's 0..1 pixels. Fine-tuning unfreezes VGG-16's block 5 at learning rate 1e-5 with mirrored images.",
    );
    html.push_str(&transfer::results_table(&all).to_html());
    let refs: Vec<&TransferOutcome> = all.iter().collect();
    chart(&mut html, crate::notebook::transfer_curves(&refs)?);

    html.push_str("<h2>Stages</h2>");
    html.push_str(&stages_table(results).to_html());
    html.push_str("<p class=\"note\">Machine-readable results: results.json and each stage's stage.json in this directory.</p></body></html>");
    Ok(html)
}

impl<T> StageRecord<T> {
    /// stage, device, version, seed, start, wall time.
    fn summary_row(&self) -> Vec<String> {
        vec![
            self.stage.clone(),
            self.device.clone(),
            self.version.clone(),
            self.seed.to_string(),
            self.started_unix.to_string(),
            minutes(self.wall_seconds),
        ]
    }
}

/// When, where and how long each stage ran.
pub fn stages_table(results: &StudyResults) -> Table {
    let mut table = Table::new(&[
        "stage",
        "device",
        "version",
        "seed",
        "started (unix)",
        "wall time",
    ]);
    table.push(results.data.summary_row());
    table.push(results.lenet5.summary_row());
    table.push(results.tuning.summary_row());
    table.push(results.cross_validation.summary_row());
    table.push(results.vgg16.summary_row());
    table.push(results.resnet50.summary_row());
    table
}
