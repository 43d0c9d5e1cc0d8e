//! The whole study in one call, as `fashion-mnist report` runs it: data checks, LeNet-5, the
//! random search, 5-fold cross-validation, the modern CNN (beyond the walkthrough), VGG-16 and
//! ResNet-50 transfer, and the comparison.
//! Every stage is a [`crate::pipeline`] function; this module chooses the study's configs,
//! saves each stage's record under the run directory (`STAGE/stage.json`, see [`records`]) and
//! reuses a stage that already ran with the same images and config, so an interrupted study
//! resumes. [`html::render_html`] turns the results into one self-contained page.

mod html;
mod records;
mod vgg16_grid;

pub use html::render_html;
pub use records::{Artifact, StageRecord};
pub use vgg16_grid::{vgg16_grid_table, vgg16_grid_text};

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{eda, FashionMnist};
use crate::error::TrainError;
use crate::ops::DeviceChoice;
use crate::pipeline::comparison::{self, ComparisonInputs, ComparisonRow};
pub use crate::pipeline::cv::CvSummary;
use crate::pipeline::cv::{self as cv_stage, CvStage};
pub use crate::pipeline::lenet5::ModelResults;
use crate::pipeline::lenet5::{self as lenet5_stage, LeNet5Stage};
use crate::pipeline::modern_cnn::{self as modern_cnn_stage, ModernCnnStage};
use crate::pipeline::transfer::{
    self as transfer_stage, TransferPaths, TransferStage, WeightsChoice,
};
pub use crate::pipeline::tuning::TuningSummary;
use crate::pipeline::tuning::{self as tuning_stage, Search, TuningStage};
use crate::pipeline::{test_images, SplitConfig};
use crate::progress::Progress;
use crate::report::Table;
use crate::resume::RunKey;
use crate::training::checkpoint;
use crate::transfer::{self, Architecture, TransferConfig, TransferOutcome, WeightsInfo};
use records::{stage, StageContext};

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
    /// Epochs of the modern CNN from scratch (0: skip that stage; older results lack it).
    #[serde(default)]
    pub modern_cnn_epochs: usize,
    /// Training images for the transfer stages (feature extraction is the slow part).
    pub transfer_limit: Option<usize>,
    /// Test images evaluated (None: all 10,000).
    pub test_limit: Option<usize>,
    /// Beyond the walkthrough: VGG-16's head on frozen features at this input side (0: none).
    #[serde(default)]
    pub vgg16_larger_side: usize,
    /// Beyond the walkthrough: epochs of VGG-16 fine-tuned end to end, at 32x32 and (unless
    /// `vgg16_larger_end_to_end_epochs` says otherwise) at `vgg16_larger_side` (0: none).
    #[serde(default)]
    pub vgg16_end_to_end_epochs: usize,
    /// Epochs of the end-to-end run at `vgg16_larger_side`, when not `vgg16_end_to_end_epochs`
    /// (None: the same; older results lack it).
    #[serde(default)]
    pub vgg16_larger_end_to_end_epochs: Option<usize>,
    /// Training images for those VGG-16 runs (None: all).
    #[serde(default)]
    pub vgg16_beyond_limit: Option<usize>,
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
            modern_cnn_epochs: MODERN_CNN_FULL_EPOCHS,
            transfer_limit: None,
            test_limit: None,
            vgg16_larger_side: 0,
            vgg16_end_to_end_epochs: 0,
            vgg16_larger_end_to_end_epochs: None,
            vgg16_beyond_limit: None,
        }
    }

    /// The full study plus VGG-16 the way a practitioner would use it: frozen features at
    /// 64x64, and the whole network fine-tuned end to end at 32x32 and 64x64. Hours on a CPU.
    pub fn extended() -> Self {
        StudyPreset {
            name: "extended".into(),
            vgg16_larger_side: 64,
            vgg16_end_to_end_epochs: 2,
            vgg16_larger_end_to_end_epochs: Some(VGG16_LARGER_END_TO_END_EPOCHS),
            vgg16_beyond_limit: None,
            ..StudyPreset::full()
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
            modern_cnn_epochs: 2,
            transfer_limit: Some(1000),
            test_limit: Some(500),
            vgg16_larger_side: 64,
            vgg16_end_to_end_epochs: 1,
            vgg16_larger_end_to_end_epochs: None,
            vgg16_beyond_limit: Some(300),
        }
    }
}

/// The modern CNN's epochs in the full study: 17 reach 0.9405 test accuracy (12: 0.9336), in
/// about 22-26 minutes on 2 AVX-512 cores (about 40 on 2 AVX2 cores).
pub const MODERN_CNN_FULL_EPOCHS: usize = 17;

/// Epochs of VGG-16 fine-tuned end to end at 64x64 in the extended study: 5 reach test 0.9327
/// (2: 0.9163), about 47 minutes each on 2 AVX-512 cores.
pub const VGG16_LARGER_END_TO_END_EPOCHS: usize = 5;

/// The stages of a study, in order.
pub const STAGES: [&str; 9] = [
    "data",
    "lenet5",
    "tuning",
    "cross_validation",
    "modern_cnn",
    "vgg16",
    "resnet50",
    "vgg16_beyond",
    "comparison",
];

/// The stages that keep a folder of their own in the run directory: all but the last, the
/// comparison, which is made from the others every time.
pub const STAGES_WITH_FOLDERS: &[&str] = match STAGES.split_last() {
    Some((_, others)) => others,
    None => &[],
};

/// (stage number from 1, name) of a stage of [`STAGES`].
fn numbered(name: &str) -> (usize, &str) {
    let index = STAGES
        .iter()
        .position(|s| *s == name)
        .unwrap_or_else(|| panic!("{name} is not a stage of the study"));
    (index + 1, name)
}

/// Rough minutes of the walkthrough's stages in the full study on 2 CPU cores (AVX2), for
/// the ETA; a quick study scales them down.
const FULL_STAGE_MINUTES: [(&str, f64); 7] = [
    ("data", 0.2),
    ("lenet5", 1.0),
    ("tuning", 7.0),
    ("cross_validation", 11.0),
    ("modern_cnn", 40.0),
    ("vgg16", 45.0),
    ("resnet50", 5.0),
];

impl StudyPreset {
    /// Rough minutes each stage of this preset takes on 2 CPU cores (AVX2), in [`STAGES`]
    /// order, for the ETA (0 for a stage the preset skips).
    pub fn stage_minutes(&self) -> Vec<f64> {
        self.minutes_of_stages(|_| false, |_| false, |_| 0)
    }

    /// [`Self::stage_minutes`] for a study resumed in `out`: 0 for a stage that left a record
    /// there (it will most likely be reused), and only the VGG-16 runs beyond the walkthrough
    /// that left no results file. A stale record is refused with a message anyway, so the
    /// estimate need not check keys; a record that cannot be read is run again, taking longer
    /// than estimated here.
    pub fn stage_minutes_left(&self, out: &Path) -> Vec<f64> {
        let folder = out.join("vgg16_beyond");
        self.minutes_of_stages(
            |stage| records::stage_file(out, stage).is_file(),
            |run| folder.join(transfer::result_file_name(run)).is_file(),
            |run| {
                checkpoint::saved_epochs(&folder.join(transfer::training_state_file_name(run)))
                    .unwrap_or(0)
            },
        )
    }

    /// For each stage of [`STAGES`]: whether it was started in `out` before and left part of
    /// its work there (trials, folds, runs, a training state) without finishing. Such a stage
    /// reuses that part, so its time says nothing about this machine's pace.
    pub fn stages_partly_done(&self, out: &Path) -> Vec<bool> {
        STAGES
            .iter()
            .map(|&stage| {
                let folder = out.join(stage);
                !records::stage_file(out, stage).is_file()
                    && std::fs::read_dir(&folder).is_ok_and(|mut entries| entries.next().is_some())
            })
            .collect()
    }

    fn minutes_of_stages(
        &self,
        stage_done: impl Fn(&str) -> bool,
        beyond_run_done: impl Fn(&TransferConfig) -> bool,
        beyond_epochs_saved: impl Fn(&TransferConfig) -> usize,
    ) -> Vec<f64> {
        let scale = if self.train_limit.is_some() {
            0.05
        } else {
            1.0
        };
        let full = |name: &str| {
            FULL_STAGE_MINUTES
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, minutes)| minutes * scale)
        };
        STAGES
            .iter()
            .map(|&name| match name {
                _ if stage_done(name) => 0.0,
                "modern_cnn" => {
                    full(name) * self.modern_cnn_epochs as f64 / MODERN_CNN_FULL_EPOCHS as f64
                }
                "vgg16_beyond" => self.vgg16_beyond_minutes(&beyond_run_done, &beyond_epochs_saved),
                "comparison" => 0.1,
                _ => full(name),
            })
            .collect()
    }

    /// The VGG-16 runs beyond the walkthrough, from rates measured on 2 AVX2 cores: ~120
    /// images/s extracting features at 32x32 (those are cached by the walkthrough's stage) and
    /// 18 at 64x64 (each larger side is extracted once), ~48 images/s training end to end and
    /// ~100 evaluating at 32x32, cost growing with the pixel count; ~7 min of head training per
    /// 60,000 images.
    /// Runs for which `done` holds are left out, and so is the extraction of their features
    /// (assumed still in the feature cache); so are the fine-tuning epochs `epochs_saved` says
    /// a run's saved training state holds.
    fn vgg16_beyond_minutes(
        &self,
        done: &dyn Fn(&TransferConfig) -> bool,
        epochs_saved: &dyn Fn(&TransferConfig) -> usize,
    ) -> f64 {
        let Some(stage) = self.vgg16_beyond() else {
            return 0.0;
        };
        let test = self.test_limit.unwrap_or(10_000) as f64;
        let mut extracted = vec![32];
        extracted.extend(stage.runs.iter().filter(|r| done(r)).map(|r| r.side));
        let mut seconds = 0.0;
        for run in stage.runs.iter().filter(|r| !done(r)) {
            let images = run.limit.unwrap_or(60_000) as f64;
            let pixels = (run.side as f64 / 32.0).powi(2);
            if !extracted.contains(&run.side) {
                extracted.push(run.side);
                // 64x64 measured 0.6x the rate its pixel count predicts.
                seconds += (images + test) * pixels / 72.0;
            }
            seconds += 7.0 * 60.0 * images / 60_000.0;
            if let Some(ft) = &run.fine_tune {
                let epochs = ft.epochs.saturating_sub(epochs_saved(run)) as f64;
                let (train, validation) = (images * 0.8, images * 0.2);
                seconds += pixels * (epochs * train / 48.0 + (epochs * validation + test) / 100.0);
            }
        }
        seconds / 60.0
    }
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

/// Everything the study measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyResults {
    pub preset: StudyPreset,
    pub data: StageRecord<DataResults>,
    pub lenet5: StageRecord<ModelResults>,
    pub tuning: StageRecord<TuningSummary>,
    pub cross_validation: StageRecord<CvSummary>,
    /// The modern CNN from scratch (None: the preset skipped it, or an older study).
    #[serde(default)]
    pub modern_cnn: Option<StageRecord<ModelResults>>,
    pub vgg16: StageRecord<Vec<TransferOutcome>>,
    pub resnet50: StageRecord<Vec<TransferOutcome>>,
    /// VGG-16 beyond the walkthrough: a larger input, fine-tuning end to end (None: the preset
    /// skipped them, or an older study).
    #[serde(default)]
    pub vgg16_beyond: Option<StageRecord<Vec<TransferOutcome>>>,
    pub wall_seconds: f64,
}

impl StudyResults {
    /// Every transfer run: VGG-16's (the walkthrough's, then those beyond it), ResNet-50's.
    pub fn transfer_runs(&self) -> impl Iterator<Item = &TransferOutcome> {
        let beyond = self.vgg16_beyond.iter().flat_map(|r| &r.results);
        self.vgg16
            .results
            .iter()
            .chain(beyond)
            .chain(&self.resnet50.results)
    }

    /// The comparison stage: every model in one list.
    pub fn comparison(&self) -> Vec<ComparisonRow> {
        comparison::compare(&ComparisonInputs {
            lenet5: &self.lenet5.results,
            cv: &self.cross_validation.results,
            cv_seconds: self.cross_validation.seconds_with_resumed_folds(),
            tuned_units: self.tuning.results.best_units,
            modern_cnn: self.modern_cnn.as_ref().map(|r| &r.results),
            transfer: self.transfer_runs().collect(),
        })
    }
}

/// The data stage's config: what it looked at.
#[derive(Serialize)]
struct DataStage {
    train_images: usize,
}

fn data_checks(data: &FashionMnist) -> Result<DataResults, TrainError> {
    let df = eda::to_dataframe(&data.train).map_err(crate::DataError::from)?;
    let (_, missing) = eda::missing_values(&df);
    let duplicates = eda::duplicate_count(&df).map_err(crate::DataError::from)?;
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
/// The modern CNN's checkpoint, relative to the run directory.
const MODERN_CNN_CHECKPOINT: &str = "modern_cnn/model.safetensors";

impl StudyPreset {
    fn split(&self) -> SplitConfig {
        SplitConfig {
            limit: self.train_limit,
            ..SplitConfig::walkthrough(self.seed)
        }
    }

    /// The LeNet-5 stage of this preset.
    pub fn lenet5(&self) -> LeNet5Stage {
        LeNet5Stage {
            split: self.split(),
            test_limit: self.test_limit,
            ..LeNet5Stage::walkthrough(self.lenet5_max_epochs, self.seed)
        }
    }

    /// The tuning stage of this preset: the walkthrough's space and random search.
    pub fn tuning(&self) -> TuningStage {
        TuningStage {
            search: Search::Random {
                max_trials: self.tuning_trials,
                epochs: self.tuning_epochs,
            },
            split: self.split(),
            ..TuningStage::walkthrough(self.seed)
        }
    }

    /// The cross-validation stage of this preset, for the tuned hyperparameters.
    pub fn cross_validation(&self, tuned: &TuningSummary) -> CvStage {
        CvStage {
            limit: self.train_limit,
            ..CvStage::walkthrough(self.cv_folds, self.cv_epochs, tuned.best(), self.seed)
        }
    }

    /// The modern-CNN stage of this preset (None when it has no epochs).
    pub fn modern_cnn(&self) -> Option<ModernCnnStage> {
        (self.modern_cnn_epochs > 0).then(|| ModernCnnStage {
            split: self.split(),
            test_limit: self.test_limit,
            ..ModernCnnStage::recommended(self.modern_cnn_epochs, self.seed)
        })
    }

    /// VGG-16's runs beyond the walkthrough (None when the preset has none).
    pub fn vgg16_beyond(&self) -> Option<TransferStage> {
        let stage = TransferStage {
            test_limit: self.test_limit,
            ..TransferStage::vgg16_beyond(
                self.vgg16_larger_side,
                self.vgg16_end_to_end_epochs,
                self.vgg16_larger_end_to_end_epochs
                    .unwrap_or(self.vgg16_end_to_end_epochs),
                self.transfer_head_epochs,
                self.vgg16_beyond_limit,
                self.seed,
            )
        };
        (!stage.runs.is_empty()).then_some(stage)
    }

    /// The transfer runs of this preset for `architecture`.
    pub fn transfer(&self, architecture: Architecture) -> TransferStage {
        TransferStage {
            test_limit: self.test_limit,
            ..TransferStage::walkthrough(
                architecture,
                self.transfer_head_epochs,
                self.fine_tune_epochs,
                self.transfer_limit,
                self.seed,
            )
        }
    }
}

/// A transfer stage's key: its runs and the backbone's weights.
#[derive(Serialize)]
struct TransferStageKey<'a> {
    #[serde(flatten)]
    stage: &'a TransferStage,
    weights: &'a WeightsInfo,
}

/// Where the study keeps its files.
#[derive(Clone, Debug)]
pub struct StudyPaths {
    pub out: PathBuf,
    pub weights_dir: PathBuf,
    pub feature_cache: PathBuf,
    pub python: String,
}

/// What every stage of one study run works with.
struct Study<'a> {
    data: &'a FashionMnist,
    preset: &'a StudyPreset,
    paths: &'a StudyPaths,
    device: DeviceChoice,
    context: StageContext<'a>,
}

impl Study<'_> {
    fn lenet5(&self, progress: &mut dyn Progress) -> Result<StageRecord<ModelResults>, TrainError> {
        let config = self.preset.lenet5();
        let (data, out) = (self.data, self.paths.out.as_path());
        stage(
            &self.context,
            numbered("lenet5"),
            &config,
            &[LENET5_CHECKPOINT],
            progress,
            |p| {
                let split = config.split.apply(&data.train);
                let test = test_images(data.test.as_ref(), config.test_limit);
                let outcome = lenet5_stage::run(&split, test.as_ref(), &config, self.device, p)?;
                checkpoint::save(&outcome.model, &out.join(LENET5_CHECKPOINT))?;
                Ok(outcome.results)
            },
        )
    }

    fn modern_cnn(
        &self,
        progress: &mut dyn Progress,
    ) -> Result<Option<StageRecord<ModelResults>>, TrainError> {
        let Some(config) = self.preset.modern_cnn() else {
            return Ok(None);
        };
        let (data, out) = (self.data, self.paths.out.as_path());
        stage(
            &self.context,
            numbered("modern_cnn"),
            &config,
            &[MODERN_CNN_CHECKPOINT],
            progress,
            |p| {
                let split = config.split.apply(&data.train);
                let test = test_images(data.test.as_ref(), config.test_limit);
                let outcome =
                    modern_cnn_stage::run(&split, test.as_ref(), &config, self.device, p)?;
                checkpoint::save(&outcome.model, &out.join(MODERN_CNN_CHECKPOINT))?;
                Ok(outcome.results)
            },
        )
        .map(Some)
    }

    fn tuning(
        &self,
        progress: &mut dyn Progress,
    ) -> Result<StageRecord<TuningSummary>, TrainError> {
        let config = self.preset.tuning();
        stage(
            &self.context,
            numbered("tuning"),
            &config,
            &[],
            progress,
            |p| {
                let split = config.split.apply(&self.data.train);
                let file = self.paths.out.join("tuning").join("random.jsonl");
                let parallel = rayon::current_num_threads();
                let results =
                    tuning_stage::run(&split, &config, Some(&file), parallel, self.device, p)?;
                TuningSummary::of(&results)
            },
        )
    }

    fn cross_validation(
        &self,
        tuned: &TuningSummary,
        progress: &mut dyn Progress,
    ) -> Result<StageRecord<CvSummary>, TrainError> {
        let config = self.preset.cross_validation(tuned);
        stage(
            &self.context,
            numbered("cross_validation"),
            &config,
            &[],
            progress,
            |p| {
                let file = self.paths.out.join("cross_validation").join("folds.jsonl");
                let images = config.images(&self.data.train);
                cv_stage::run(&images, &config, Some(&file), self.device, p)
            },
        )
    }

    /// A transfer stage: `config`'s runs on `architecture` with ImageNet weights, their files
    /// in the stage's own folder.
    fn transfer(
        &self,
        (index, name): (usize, &str),
        architecture: Architecture,
        config: &TransferStage,
        progress: &mut dyn Progress,
    ) -> Result<StageRecord<Vec<TransferOutcome>>, TrainError> {
        let weights = WeightsChoice::ImageNet {
            dir: self.paths.weights_dir.clone(),
            python: self.paths.python.clone(),
        };
        let backbone =
            transfer_stage::backbone(architecture, &weights, self.preset.seed, progress)?;
        let key = TransferStageKey {
            stage: config,
            weights: &backbone.weights,
        };
        let out_dir = self.paths.out.join(name);
        let paths = TransferPaths {
            out_dir: &out_dir,
            cache_dir: Some(&self.paths.feature_cache),
        };
        let data = self.data;
        stage(&self.context, (index, name), &key, &[], progress, |p| {
            transfer_stage::run(
                &data.train,
                data.test.as_ref(),
                &backbone,
                config,
                paths,
                self.device,
                p,
            )
        })
    }
}

/// Runs (or reuses) only the modern-CNN stage of `preset` in `paths.out`, as the whole study
/// would (the same record, so `report` reuses it and it reuses what `report` left), and loads
/// its trained model. None when the preset has no modern-CNN epochs.
pub fn run_modern_cnn_stage(
    data: &FashionMnist,
    preset: &StudyPreset,
    out: &Path,
    device: DeviceChoice,
    progress: &mut dyn Progress,
) -> Result<Option<(StageRecord<ModelResults>, crate::models::ModernCnn)>, TrainError> {
    let described = device.describe()?;
    let paths = StudyPaths {
        out: out.to_path_buf(),
        weights_dir: PathBuf::new(),
        feature_cache: PathBuf::new(),
        python: String::new(),
    };
    let study = Study {
        data,
        preset,
        paths: &paths,
        device,
        context: study_context(data, preset, out, &described),
    };
    let Some(record) = study.modern_cnn(progress)? else {
        return Ok(None);
    };
    let model = checkpoint::load_modern_cnn(
        &dfdx::prelude::Cpu::default(),
        &out.join(MODERN_CNN_CHECKPOINT),
    )?;
    Ok(Some((record, model)))
}

fn study_context<'a>(
    data: &FashionMnist,
    preset: &StudyPreset,
    out: &'a Path,
    device: &'a str,
) -> StageContext<'a> {
    StageContext {
        out,
        device,
        data: RunKey::new()
            .with("train_data", data.train.fingerprint())
            .with("test_data", data.test.as_ref().map(|t| t.fingerprint())),
        seed: preset.seed,
    }
}

/// Runs (or reuses) every stage on `device` and saves `results.json` in `paths.out`. Stages
/// finished earlier are reused whatever device ran them (each stage records its device).
pub fn run_study(
    data: &FashionMnist,
    preset: &StudyPreset,
    paths: &StudyPaths,
    device: DeviceChoice,
    progress: &mut dyn Progress,
) -> Result<StudyResults, TrainError> {
    let described = device.describe()?;
    let started = Instant::now();
    let study = Study {
        data,
        preset,
        paths,
        device,
        context: study_context(data, preset, &paths.out, &described),
    };
    let data_config = DataStage {
        train_images: data.train.len(),
    };
    let data_record = stage(
        &study.context,
        numbered("data"),
        &data_config,
        &[],
        progress,
        |_| data_checks(data),
    )?;
    let lenet5 = study.lenet5(progress)?;
    let tuning = study.tuning(progress)?;
    let cross_validation = study.cross_validation(&tuning.results, progress)?;
    let modern_cnn = study.modern_cnn(progress)?;
    let transfer_stage = |architecture: Architecture, progress: &mut dyn Progress| {
        let config = preset.transfer(architecture);
        let name = architecture.name();
        study.transfer(numbered(name), architecture, &config, progress)
    };
    let vgg16 = transfer_stage(Architecture::Vgg16, progress)?;
    let resnet50 = transfer_stage(Architecture::Resnet50, progress)?;
    let beyond = numbered("vgg16_beyond");
    let vgg16_beyond = match preset.vgg16_beyond() {
        Some(config) => Some(study.transfer(beyond, Architecture::Vgg16, &config, progress)?),
        None => {
            progress.on_stage_skipped(
                beyond.0,
                STAGES.len(),
                beyond.1,
                "this preset has no VGG-16 runs beyond the walkthrough; report --extended runs them",
            );
            None
        }
    };

    progress.on_stage_start(numbered("comparison").0, STAGES.len(), "comparison", false);
    let results = StudyResults {
        preset: preset.clone(),
        data: data_record,
        lenet5,
        tuning,
        cross_validation,
        modern_cnn,
        vgg16,
        resnet50,
        vgg16_beyond,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&results).expect("plain data");
    crate::fsutil::write_bytes_atomically(&paths.out.join("results.json"), json.as_bytes())?;
    progress.on_stage_end("comparison", 0.0);
    Ok(results)
}

/// Reads a study's `results.json`.
pub fn load_results(path: &Path) -> Result<StudyResults, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::error::DataError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Results {
        path: path.to_path_buf(),
        message: format!("not a study results file: {e}"),
    })
}

fn f4(v: f64) -> String {
    format!("{v:.4}")
}

/// Seconds as "42 s" or "3.5 min".
pub fn minutes(seconds: f64) -> String {
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
    let dash = || String::from("-");
    for row in results.comparison() {
        let (accuracy, loss) = match row.validation_std {
            Some(sd) => (
                format!("{:.4} +/- {:.4}", row.validation.accuracy, sd.accuracy),
                format!("{:.4} +/- {:.4}", row.validation.loss, sd.loss),
            ),
            None => (f4(row.validation.accuracy), f4(row.validation.loss)),
        };
        table.push(vec![
            row.model,
            row.walkthrough.map_or_else(dash, |w| f4(w.accuracy)),
            row.walkthrough.map_or_else(dash, |w| f4(w.loss)),
            accuracy,
            loss,
            row.test_accuracy.map_or_else(dash, f4),
            row.trainable_params.to_string(),
            minutes(row.seconds),
            row.training_images_per_second
                .map_or_else(dash, |r| format!("{r:.0}")),
        ]);
    }
    table
}

/// Which won on the test images, from scratch or transfer learning (ImageNet weights only: a
/// random backbone is not transfer), in one sentence written from the comparison rows. Each
/// side's model is picked on validation accuracy (the test images never choose a model); their
/// test scores then decide.
pub fn verdict(rows: &[ComparisonRow]) -> String {
    let pick = |side: fn(&ComparisonRow) -> bool| {
        rows.iter()
            .filter(|r| side(r))
            .filter_map(|r| Some((r, r.test_accuracy?)))
            .max_by(|a, b| a.0.validation.accuracy.total_cmp(&b.0.validation.accuracy))
    };
    let describe = |(row, accuracy): (&ComparisonRow, f64)| {
        format!(
            "{} (test {accuracy:.4}, validation {:.4}, {} trainable parameters, {})",
            row.model,
            row.validation.accuracy,
            row.trainable_params,
            minutes(row.seconds)
        )
    };
    match (pick(|r| r.from_scratch), pick(|r| r.pretrained)) {
        (Some(scratch), Some(transfer)) => {
            let winner = if scratch.1 >= transfer.1 {
                "training from scratch wins"
            } else {
                "transfer learning wins"
            };
            format!(
                "On the test images {winner}: of the models trained from scratch, the best on validation is {}; of the transfer-learning models, {}.",
                describe(scratch),
                describe(transfer)
            )
        }
        (Some(scratch), None) => format!(
            "The model trained from scratch that is best on validation is {}; no transfer-learning run (ImageNet weights) has a test score to compare with.",
            describe(scratch)
        ),
        _ => "No model trained from scratch has a test score, so there is no verdict.".into(),
    }
}

/// Validation accuracy of every model as a bar chart, the walkthrough's numbers beside ours.
pub fn comparison_chart(
    results: &StudyResults,
) -> Result<crate::plots::Chart, crate::plots::PlotError> {
    crate::plots::comparison_chart(&results.comparison())
}

impl StageRecord<Vec<TransferOutcome>> {
    /// The stage's time with every run counted: a run reused from its own results file (an
    /// interrupted stage resumed) counts the time it took then. The larger of the stage's wall
    /// time (this invocation's, which also covers reading and scoring) and the sum of its runs'.
    pub fn seconds_with_resumed_runs(&self) -> f64 {
        self.seconds_with_parts(self.results.iter().map(|run| run.wall_seconds))
    }
}

impl StageRecord<CvSummary> {
    /// The stage's time with every fold counted: folds reused from the folds file (an
    /// interrupted stage resumed) count the time they took then. Folds train one after another,
    /// so this is the larger of the stage's wall time and the sum of its folds'.
    pub fn seconds_with_resumed_folds(&self) -> f64 {
        self.seconds_with_parts(self.results.folds.iter().map(|fold| fold.seconds))
    }
}

impl<T> StageRecord<T> {
    /// The larger of this invocation's wall time and the sum of the stage's parts, which run
    /// one after another and keep their own times when an interrupted stage resumes.
    fn seconds_with_parts(&self, part_seconds: impl Iterator<Item = f64>) -> f64 {
        self.wall_seconds.max(part_seconds.sum())
    }

    /// stage, device, version, seed, start, wall time.
    fn summary_row(&self) -> Vec<String> {
        self.summary_row_taking(self.wall_seconds)
    }

    fn summary_row_taking(&self, seconds: f64) -> Vec<String> {
        vec![
            self.stage.clone(),
            self.device.clone(),
            self.version.clone(),
            self.seed.to_string(),
            self.started_unix.to_string(),
            minutes(seconds),
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
    table.push(
        results
            .cross_validation
            .summary_row_taking(results.cross_validation.seconds_with_resumed_folds()),
    );
    if let Some(record) = &results.modern_cnn {
        table.push(record.summary_row());
    }
    let transfer_row =
        |r: &StageRecord<Vec<TransferOutcome>>| r.summary_row_taking(r.seconds_with_resumed_runs());
    table.push(transfer_row(&results.vgg16));
    table.push(transfer_row(&results.resnet50));
    if let Some(record) = &results.vgg16_beyond {
        table.push(transfer_row(record));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::Score;

    fn row(model: &str, validation: f64, test: f64, from_scratch: bool) -> ComparisonRow {
        ComparisonRow {
            model: model.into(),
            short_name: model.into(),
            walkthrough: None,
            validation: Score {
                accuracy: validation,
                loss: 0.3,
            },
            validation_std: None,
            test_accuracy: Some(test),
            trainable_params: 1000,
            seconds: 60.0,
            training_images_per_second: None,
            from_scratch,
            pretrained: !from_scratch,
        }
    }

    #[test]
    fn the_verdict_picks_each_sides_model_on_validation_and_compares_their_test_scores() {
        let rows = [
            row("CNN A", 0.93, 0.90, true),
            // Best on test, but validation would not have picked it.
            row("CNN B", 0.91, 0.92, true),
            row("VGG-16 frozen", 0.89, 0.91, false),
        ];
        let text = verdict(&rows);
        assert!(text.contains("transfer learning wins"), "{text}");
        assert!(text.contains("CNN A (test 0.9000"), "{text}");
        assert!(!text.contains("CNN B"), "{text}");
        let text = verdict(&rows[1..]);
        assert!(text.contains("training from scratch wins"), "{text}");
    }

    #[test]
    fn a_resumed_cross_validation_counts_the_folds_of_earlier_invocations() {
        let fold = |n: usize, seconds: f64| crate::cross_validation::FoldRecord {
            fold: n,
            train_images: 8,
            validation_images: 2,
            config: crate::cross_validation::CvConfig {
                folds: 3,
                seed: 42,
                stratified: true,
                model: Default::default(),
                train: Default::default(),
            },
            history: Default::default(),
            val_accuracy: 0.9,
            val_loss: 0.3,
            seconds,
        };
        let record = |wall_seconds: f64| StageRecord {
            stage: "cross_validation".into(),
            config: serde_json::Value::Null,
            seed: 42,
            version: String::new(),
            device: "cpu".into(),
            started_unix: 0,
            wall_seconds,
            run_key: Default::default(),
            artifacts: Vec::new(),
            results: CvSummary {
                folds: vec![fold(1, 100.0), fold(2, 110.0), fold(3, 120.0)],
                accuracy_mean: 0.9,
                accuracy_std: 0.0,
                loss_mean: 0.3,
                loss_std: 0.0,
            },
        };
        // Folds 1 and 2 came from an earlier invocation; this one trained fold 3 only.
        assert_eq!(record(125.0).seconds_with_resumed_folds(), 330.0);
        // One invocation did everything: its wall time also covers splitting and scoring.
        assert_eq!(record(345.0).seconds_with_resumed_folds(), 345.0);
    }

    #[test]
    fn every_preset_estimates_every_stage_and_skips_what_it_does_not_run() {
        for preset in [
            StudyPreset::quick(),
            StudyPreset::full(),
            StudyPreset::extended(),
        ] {
            let minutes = preset.stage_minutes();
            assert_eq!(minutes.len(), STAGES.len(), "{}", preset.name);
            assert!(minutes.iter().all(|m| m.is_finite() && *m >= 0.0));
        }
        let beyond = numbered("vgg16_beyond").0 - 1;
        assert_eq!(StudyPreset::full().stage_minutes()[beyond], 0.0);
        let extended = StudyPreset::extended().stage_minutes()[beyond];
        // Hours on 2 cores: end to end at 64x64 dominates.
        assert!((120.0..600.0).contains(&extended), "{extended}");
        assert!(StudyPreset::quick().stage_minutes()[beyond] < 5.0);
        assert_eq!(numbered("data"), (1, "data"));
        assert_eq!(numbered("comparison").0, STAGES.len());
        // `report --redo` offers every stage but the comparison, which keeps no folder.
        assert_eq!(STAGES.last(), Some(&"comparison"));
        assert!(!STAGES_WITH_FOLDERS.contains(&"comparison"));
        assert_eq!(STAGES_WITH_FOLDERS.len(), STAGES.len() - 1);
    }

    #[test]
    fn the_eta_of_a_resumed_study_leaves_out_what_left_results() {
        let out = tempfile::tempdir().unwrap();
        let extended = StudyPreset::extended();
        let all = extended.stage_minutes();
        assert_eq!(extended.stage_minutes_left(out.path()), all);
        let (lenet5, beyond) = (numbered("lenet5").0 - 1, numbered("vgg16_beyond").0 - 1);
        std::fs::create_dir_all(out.path().join("lenet5")).unwrap();
        std::fs::write(out.path().join("lenet5").join("stage.json"), "{}").unwrap();
        let runs = extended.vgg16_beyond().unwrap().runs;
        let frozen_64 = runs.iter().find(|r| r.fine_tune.is_none()).unwrap();
        std::fs::create_dir_all(out.path().join("vgg16_beyond")).unwrap();
        let file = out
            .path()
            .join("vgg16_beyond")
            .join(transfer::result_file_name(frozen_64));
        std::fs::write(file, "{}").unwrap();
        let left = extended.stage_minutes_left(out.path());
        assert_eq!(left[lenet5], 0.0);
        assert!(all[lenet5] > 0.0);
        // The 64x64 frozen run and its feature extraction are done; the end-to-end runs are not.
        assert!(
            left[beyond] > 0.5 * all[beyond] && left[beyond] < all[beyond] - 10.0,
            "{} of {}",
            left[beyond],
            all[beyond]
        );
        let others = |m: &[f64]| -> f64 {
            m.iter()
                .enumerate()
                .filter(|(i, _)| *i != lenet5 && *i != beyond)
                .map(|(_, v)| v)
                .sum()
        };
        assert_eq!(others(&left), others(&all));
        // A training state with 2 of the 64x64 end-to-end run's 5 epochs: 3/5 of that run's
        // training is left.
        let e2e_64 = runs
            .iter()
            .find(|r| r.side == 64 && r.fine_tune.is_some())
            .unwrap();
        assert_eq!(e2e_64.fine_tune.as_ref().unwrap().epochs, 5);
        let state = out
            .path()
            .join("vgg16_beyond")
            .join(transfer::training_state_file_name(e2e_64));
        std::fs::write(&state, "damaged").unwrap();
        assert_eq!(
            extended.stage_minutes_left(out.path())[beyond],
            left[beyond]
        );
        let model =
            crate::models::LeNet5::new(&dfdx::prelude::Cpu::default(), Default::default(), 0);
        let progress = checkpoint::TrainingProgress {
            key: crate::resume::RunKey::new(),
            epochs_done: 2,
            optimizer_steps: 0,
            history: Default::default(),
            first_loss: None,
            train: None,
        };
        checkpoint::save_training_state(
            &state,
            &model,
            &crate::training::Adam::new(1e-3),
            &progress,
        )
        .unwrap();
        let with_state = extended.stage_minutes_left(out.path())[beyond];
        assert!(
            with_state < left[beyond] - 20.0 && with_state > 0.3 * left[beyond],
            "{with_state} of {}",
            left[beyond]
        );
        let partly = extended.stages_partly_done(out.path());
        assert!(partly[beyond], "a run of the stage left its results");
        assert!(!partly[lenet5], "finished");
        assert_eq!(partly.iter().filter(|p| **p).count(), 1, "{partly:?}");
    }

    #[test]
    fn the_extended_preset_keeps_the_full_studys_stages_and_adds_the_vgg16_grid() {
        let (full, extended) = (StudyPreset::full(), StudyPreset::extended());
        assert_eq!(full.lenet5(), extended.lenet5());
        assert_eq!(
            full.transfer(Architecture::Vgg16),
            extended.transfer(Architecture::Vgg16)
        );
        assert!(full.vgg16_beyond().is_none());
        let runs = extended.vgg16_beyond().unwrap().runs;
        let described: Vec<(usize, Option<usize>)> = runs
            .iter()
            .map(|r| {
                let end_to_end = r.fine_tune.as_ref().filter(|f| f.is_end_to_end());
                (r.side, end_to_end.map(|f| f.epochs))
            })
            .collect();
        assert_eq!(
            described,
            vec![
                (64, None),
                (32, Some(2)),
                (64, Some(VGG16_LARGER_END_TO_END_EPOCHS))
            ]
        );
    }
}
