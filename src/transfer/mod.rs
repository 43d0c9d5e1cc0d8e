//! Transfer learning from ImageNet (the walkthrough's part IV): frozen VGG-16 and ResNet-50
//! backbones, their weights, features cached on disk, heads trained on the features, and
//! fine-tuning of VGG-16: its last block, or the whole network end to end.

pub mod features;
mod fine_tune;
pub mod weights;

pub use features::{
    cached_features, ExtractionRecord, Extractor, FeatureSettings, FeatureStage, Features,
    Preprocessing,
};
pub use fine_tune::{ResNet50FineTuned, Vgg16FineTuned};
pub use weights::{Architecture, LoadedBackbone};

use std::path::{Path, PathBuf};
use std::time::Instant;

use dfdx::prelude::*;

use crate::data::augment::Augmentation;
use crate::data::prepare::{train_validation_split, Prepared};
use crate::data::Dataset;
use crate::error::TrainError;
use crate::models::{DenseHead, HeadConfig, ImageClassifier, ModelSummary};
use crate::ops::ModelDevice;
use crate::progress::Progress;
use crate::resume::RunKey;
use crate::training::{
    self, EarlyStopping, Evaluation, History, LearningRateSchedule, SavedState, TrainConfig,
};

/// Which weights a backbone carries.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightsInfo {
    /// SHA-256 of the weights file, or `random-init-seed-N`.
    pub id: String,
    /// Where they came from, in words.
    pub origin: String,
    /// Whether these are ImageNet weights (only then is this transfer learning).
    pub imagenet: bool,
}

impl WeightsInfo {
    /// Weights read from one of our weights files, with the provenance recorded in it.
    pub fn from_file(path: &Path) -> Result<Self, TrainError> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::Weights {
            source_name: path.display().to_string(),
            message: e.to_string(),
        })?;
        let (origin, imagenet) = weights::weights_provenance(path, &bytes)?;
        Ok(WeightsInfo {
            id: weights::sha256_hex(&bytes),
            origin,
            imagenet,
        })
    }

    /// A randomly initialized backbone: NOT transfer learning.
    pub fn random(seed: u64) -> Self {
        WeightsInfo {
            id: format!("random-init-seed-{seed}"),
            origin: format!("random initialization (seed {seed}), no ImageNet weights"),
            imagenet: false,
        }
    }
}

/// Fine-tuning after the head: VGG-16 from block `from_block` on is unfrozen and trained with
/// the head at a low learning rate, optionally on mirrored images too.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FineTuneConfig {
    pub epochs: usize,
    pub learning_rate: f64,
    /// Light augmentation: each epoch, each training image is mirrored left-right with
    /// probability 1/2 (for block 5, the mirrored block-4 features are computed and cached
    /// once).
    pub mirror: bool,
    pub early_stopping: Option<EarlyStopping>,
    /// The first trained block: 5 (the last block, on cached block-4 features; the default)
    /// or 1 (the whole network end to end, on images: every step runs all of VGG-16).
    #[serde(default = "last_block", skip_serializing_if = "is_last_block")]
    pub from_block: usize,
    /// Images per step (None: the head's batch size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// The learning rate over the run (constant unless set).
    #[serde(default, skip_serializing_if = "LearningRateSchedule::is_constant")]
    pub schedule: LearningRateSchedule,
}

fn last_block() -> usize {
    5
}

fn is_last_block(block: &usize) -> bool {
    *block == 5
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        FineTuneConfig {
            epochs: 3,
            learning_rate: 1e-5,
            mirror: true,
            early_stopping: None,
            from_block: 5,
            batch_size: None,
            schedule: LearningRateSchedule::Constant,
        }
    }
}

impl FineTuneConfig {
    /// VGG-16 fine-tuned end to end, the way a practitioner would: all blocks, Adam with a
    /// small peak rate on a cosine schedule with warm-up, mirrored images, batches of 64.
    pub fn end_to_end(epochs: usize) -> Self {
        FineTuneConfig {
            epochs,
            learning_rate: END_TO_END_LEARNING_RATE,
            mirror: true,
            early_stopping: None,
            from_block: 1,
            batch_size: Some(64),
            schedule: LearningRateSchedule::Cosine {
                warmup_fraction: 0.1,
            },
        }
    }

    /// Whether every block trains (from block 1), not only block 5.
    pub fn is_end_to_end(&self) -> bool {
        self.from_block == 1
    }

    /// Where the fine-tuning starts, in words.
    pub fn depth_label(&self) -> &'static str {
        if self.is_end_to_end() {
            END_TO_END_LABEL
        } else {
            BLOCK5_LABEL
        }
    }
}

/// [`FineTuneConfig::depth_label`] of block-5 fine-tuning.
pub const BLOCK5_LABEL: &str = "block 5 fine-tuned";
/// [`FineTuneConfig::depth_label`] of end-to-end fine-tuning.
pub const END_TO_END_LABEL: &str = "fine-tuned end to end";

/// Peak learning rate of [`FineTuneConfig::end_to_end`].
pub const END_TO_END_LEARNING_RATE: f64 = 1e-4;

/// Settings of one transfer-learning run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransferConfig {
    pub backbone: Architecture,
    pub preprocessing: Preprocessing,
    /// The 28x28 images are resized to side x side (32 in the walkthrough).
    pub side: usize,
    pub validation_split: f64,
    /// Seeds the split (the same split as LeNet-5 with the same seed) and the head.
    pub seed: u64,
    /// Use only the first N training images.
    pub limit: Option<usize>,
    pub head: TrainConfig,
    pub fine_tune: Option<FineTuneConfig>,
}

impl TransferConfig {
    /// The walkthrough's setting for `backbone`: 32x32 inputs, 80/20 split, the head trained
    /// 10 epochs with Adam 1e-3, batch 32.
    pub fn walkthrough(backbone: Architecture, preprocessing: Preprocessing) -> Self {
        TransferConfig {
            backbone,
            preprocessing,
            side: 32,
            validation_split: 0.2,
            seed: 42,
            limit: None,
            head: TrainConfig {
                epochs: 10,
                ..TrainConfig::default()
            },
            fine_tune: None,
        }
    }

    fn head_config(&self, features: usize) -> HeadConfig {
        match self.backbone {
            Architecture::Vgg16 => HeadConfig::walkthrough_vgg16(features),
            Architecture::Resnet50 => HeadConfig::walkthrough_resnet50(features),
        }
    }
}

/// Loss and accuracy on one split.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    pub accuracy: f64,
    pub loss: f64,
}

impl From<&Evaluation> for Score {
    fn from(e: &Evaluation) -> Self {
        Score {
            accuracy: e.accuracy,
            loss: e.loss,
        }
    }
}

/// One trained stage (the head, or the fine-tuning after it).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StageOutcome {
    pub history: History,
    pub validation: Score,
    pub test: Option<Score>,
    pub trainable_params: usize,
    /// Mean seconds per training epoch (validation included).
    pub epoch_seconds: f64,
}

/// Everything a transfer-learning run measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TransferOutcome {
    /// e.g. "VGG-16 (ImageNet) + head, caffe preprocessing".
    pub label: String,
    pub config: TransferConfig,
    pub weights: WeightsInfo,
    /// Feature extraction per image set (train, test, train mirrored).
    pub extraction: Vec<(String, ExtractionRecord)>,
    pub head_summary: ModelSummary,
    pub head: StageOutcome,
    /// Estimated seconds per head epoch if the frozen backbone ran on every image every epoch
    /// (head epoch + extraction of the training and validation images), when the extraction
    /// was timed in this run.
    pub recompute_epoch_seconds: Option<f64>,
    pub fine_tune: Option<StageOutcome>,
    pub wall_seconds: f64,
    /// Where it ran, e.g. "cpu (2 threads)" or "cuda:0" (absent in results of older versions).
    #[serde(default)]
    pub device: String,
    /// What made these results (see [`run_key`]; absent in results of older versions).
    #[serde(default)]
    pub run_key: RunKey,
}

impl TransferOutcome {
    /// The final scores: after fine-tuning when it ran, else the head's.
    pub fn final_stage(&self) -> &StageOutcome {
        self.fine_tune.as_ref().unwrap_or(&self.head)
    }

    /// The label of the fine-tuned model, e.g. "VGG-16 (ImageNet, frozen), caffe input + block 5
    /// fine-tuned" (None without fine-tuning). End to end, nothing stays frozen.
    pub fn fine_tuned_label(&self) -> Option<String> {
        let ft = self.config.fine_tune.as_ref()?;
        let label = if ft.is_end_to_end() {
            self.label.replace(", frozen", "")
        } else {
            self.label.clone()
        };
        Some(format!("{label} + {}", ft.depth_label()))
    }

    /// Images per second of the timed extractions (None when everything came from the cache).
    pub fn extraction_images_per_second(&self) -> Option<f64> {
        let timed: Vec<&ExtractionRecord> = self
            .extraction
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.images_per_second().is_some())
            .collect();
        let images: usize = timed.iter().map(|r| r.images).sum();
        let seconds: f64 = timed.iter().map(|r| r.seconds).sum();
        (seconds > 0.0).then(|| images as f64 / seconds)
    }
}

/// A human label for a run's backbone, weights, preprocessing and input size (named when it
/// is not the walkthrough's 32x32); says loudly when the weights are not ImageNet's.
pub fn run_label(config: &TransferConfig, weights: &WeightsInfo) -> String {
    let name = match config.backbone {
        Architecture::Vgg16 => "VGG-16",
        Architecture::Resnet50 => "ResNet-50",
    };
    let size = if config.side == 32 {
        String::new()
    } else {
        format!(", {0}x{0}", config.side)
    };
    let preprocessing = config.preprocessing.name();
    if weights.imagenet {
        format!("{name} (ImageNet, frozen), {preprocessing} input{size}")
    } else {
        format!("{name} (RANDOM init, frozen: not transfer learning), {preprocessing} input{size}")
    }
}

fn features_of<D: ModelDevice>(
    extractor: &Extractor<D>,
    images: &Dataset,
    settings: &FeatureSettings,
    cache_dir: Option<&Path>,
    progress: &mut dyn Progress,
    what: &str,
) -> Result<(Prepared, ExtractionRecord), TrainError> {
    let total = images.len();
    progress.on_message(&format!(
        "features: {what} ({total} images, {:?}{})",
        settings.stage,
        if settings.mirrored { ", mirrored" } else { "" }
    ));
    let (features, record) = cached_features(
        extractor,
        &images.images,
        settings,
        cache_dir,
        &mut |done| progress.on_extraction(done, total),
    )?;
    let message = if record.from_cache {
        format!("  {what}: from cache")
    } else {
        format!(
            "  {what}: {:.1} s, {:.0} images/s",
            record.seconds,
            record.images_per_second().unwrap_or(0.0)
        )
    };
    progress.on_message(&message);
    // The walkthrough's ResNet-50 head starts with GlobalAveragePooling2D; the cache keeps
    // the positions (one at 32x32, where pooling changes nothing).
    let features = if settings.backbone == Architecture::Resnet50 {
        features.global_average_pooled()
    } else {
        features
    };
    Ok((
        Prepared {
            pixels: features.values,
            labels: images.labels.clone(),
        },
        record,
    ))
}

fn mean_epoch_seconds(history: &History) -> f64 {
    history.total_seconds() / history.epochs.len().max(1) as f64
}

fn stage_outcome<M: ImageClassifier>(
    model: &M,
    history: History,
    validation: &Prepared,
    test: Option<&Prepared>,
) -> Result<StageOutcome, TrainError> {
    let validation = Score::from(&training::evaluate(model, validation, 500)?);
    let test = test
        .map(|t| training::evaluate(model, t, 500).map(|e| Score::from(&e)))
        .transpose()?;
    Ok(StageOutcome {
        epoch_seconds: mean_epoch_seconds(&history),
        history,
        validation,
        test,
        trainable_params: model.param_count(),
    })
}

/// The training settings of a fine-tuning stage: the head's, with the fine-tuning's epochs,
/// rate, schedule, batch size and mirroring.
fn fine_tune_train_config(ft: &FineTuneConfig, head: &TrainConfig) -> TrainConfig {
    TrainConfig {
        epochs: ft.epochs,
        learning_rate: ft.learning_rate,
        early_stopping: ft.early_stopping,
        batch_size: ft.batch_size.unwrap_or(head.batch_size),
        schedule: ft.schedule,
        augmentation: ft.mirror.then_some(Augmentation {
            max_shift: 0,
            horizontal_flip: true,
        }),
        ..head.clone()
    }
}

/// A fine-tuning stage ready to train: the model, its training inputs (one per precomputed
/// augmentation), validation and test inputs, and its settings.
struct FineTuneRun<M> {
    model: M,
    train_variants: Vec<Prepared>,
    validation: Prepared,
    test: Option<Prepared>,
    train: TrainConfig,
    description: String,
}

impl FineTuneRun<()> {
    fn with_model<M>(self, model: M) -> FineTuneRun<M> {
        FineTuneRun {
            model,
            train_variants: self.train_variants,
            validation: self.validation,
            test: self.test,
            train: self.train,
            description: self.description,
        }
    }
}

/// Trains a fine-tuning stage and scores it on validation and test inputs.
fn fine_tune_and_score<M: ImageClassifier>(
    run: FineTuneRun<M>,
    state: Option<&SavedState>,
    progress: &mut dyn Progress,
) -> Result<StageOutcome, TrainError> {
    let FineTuneRun {
        mut model,
        train_variants,
        validation,
        test,
        train,
        description,
    } = run;
    progress.on_message(&format!(
        "fine-tuning {description}: {} trainable parameters, {} epochs{}",
        model.param_count(),
        train.epochs,
        if train_variants.len() > 1 || train.augmentation.is_some() {
            ", mirrored images"
        } else {
            ""
        }
    ));
    let variant_refs: Vec<&Prepared> = train_variants.iter().collect();
    let history = match state {
        Some(state) => training::fit_resumable(
            &mut model,
            &variant_refs,
            Some(&validation),
            &train,
            progress,
            state,
        )?,
        None => training::fit_augmented(
            &mut model,
            &variant_refs,
            Some(&validation),
            &train,
            progress,
        )?,
    };
    stage_outcome(&model, history, &validation, test.as_ref())
}

/// What a transfer-learning run works on.
pub struct TransferInputs<'a, D: ModelDevice = Cpu> {
    pub train_set: &'a Dataset,
    /// Evaluated after training when given.
    pub test_set: Option<&'a Dataset>,
    pub backbone: &'a LoadedBackbone,
    pub weights: &'a WeightsInfo,
    /// Where features are cached (None: computed every time).
    pub cache_dir: Option<&'a Path>,
    /// Where extraction and training run.
    pub device: &'a D,
}

impl<D: ModelDevice> Clone for TransferInputs<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D: ModelDevice> Copy for TransferInputs<'_, D> {}

/// Trains the walkthrough's head on `backbone`'s frozen features (computed once, cached in
/// `cache_dir`), then optionally fine-tunes VGG-16's block 5; evaluates on the validation split
/// and the test set.
pub fn run_transfer<D: ModelDevice>(
    inputs: &TransferInputs<'_, D>,
    config: &TransferConfig,
    progress: &mut dyn Progress,
) -> Result<TransferOutcome, TrainError> {
    run_transfer_keyed(inputs, config, run_key(inputs, config), None, progress)
}

/// [`run_transfer`] with its [`run_key`] already computed (fingerprinting the images is not
/// free); with `state_path`, the fine-tuning saves its state there after every epoch and goes
/// on from a state saved there earlier.
fn run_transfer_keyed<D: ModelDevice>(
    inputs: &TransferInputs<'_, D>,
    config: &TransferConfig,
    key: RunKey,
    state_path: Option<PathBuf>,
    progress: &mut dyn Progress,
) -> Result<TransferOutcome, TrainError> {
    let state = state_path.map(|path| SavedState {
        path,
        key: fine_tuning_key(&key),
    });
    let state = state.as_ref();
    let TransferInputs {
        train_set,
        test_set,
        backbone,
        weights,
        cache_dir,
        device,
    } = *inputs;
    let started = Instant::now();
    if backbone.architecture() != config.backbone {
        return Err(TrainError::Config {
            name: "backbone".into(),
            message: format!(
                "weights are for {}, the run asks for {}",
                backbone.architecture().name(),
                config.backbone.name()
            ),
        });
    }
    // Both backbones halve the image five times (rounding down, as Keras's valid pooling).
    if config.side < 32 {
        return Err(TrainError::Config {
            name: "side".into(),
            message: format!("must be at least 32 (got {})", config.side),
        });
    }
    if let Some(ft) = &config.fine_tune {
        if config.backbone != Architecture::Vgg16 && !ft.is_end_to_end() {
            return Err(TrainError::Config {
                name: "fine_tune.from_block".into(),
                message: format!(
                    "{} is fine-tuned end to end only (from_block 1), got {}",
                    config.backbone.name(),
                    ft.from_block
                ),
            });
        }
        if ft.from_block != 1 && ft.from_block != 5 {
            return Err(TrainError::Config {
                name: "fine_tune.from_block".into(),
                message: format!(
                    "must be 5 (the last block) or 1 (end to end), got {}",
                    ft.from_block
                ),
            });
        }
        if ft.batch_size == Some(0) {
            return Err(TrainError::Config {
                name: "fine_tune.batch_size".into(),
                message: "must be at least 1".into(),
            });
        }
        ft.schedule
            .validate()
            .map_err(|message| TrainError::Config {
                name: "fine_tune.schedule".into(),
                message,
            })?;
    }
    let n = config
        .limit
        .map_or(train_set.len(), |l| l.min(train_set.len()));
    let train_images = train_set.head(n);
    let split = train_validation_split(
        &train_images.labels,
        config.validation_split,
        config.seed,
        false,
    );

    let settings = |stage: FeatureStage, mirrored: bool| FeatureSettings {
        backbone: config.backbone,
        weights_id: weights.id.clone(),
        preprocessing: config.preprocessing,
        side: config.side,
        stage,
        mirrored,
    };
    // The backbone goes to the device once; every extraction and fine-tuning uses it there.
    let extractor = Extractor::new(backbone, device);
    let mut extraction = Vec::new();
    let output = settings(FeatureStage::Output, false);
    let (train_features, record) = features_of(
        &extractor,
        &train_images,
        &output,
        cache_dir,
        progress,
        "training images",
    )?;
    extraction.push(("train".to_string(), record));
    let test_features = match test_set {
        Some(test) => {
            let (f, record) = features_of(
                &extractor,
                test,
                &output,
                cache_dir,
                progress,
                "test images",
            )?;
            extraction.push(("test".to_string(), record));
            Some(f)
        }
        None => None,
    };
    let feature_len = train_features.values_per_image();
    let train = train_features.subset(&split.train);
    let validation = train_features.subset(&split.validation);
    drop(train_features);

    let mut head = DenseHead::new(device, config.head_config(feature_len), config.seed);
    let head_summary = head.summary();
    progress.on_message(&format!(
        "head: {} trainable parameters, {} epochs on {} cached feature vectors",
        head.param_count(),
        config.head.epochs,
        train.len()
    ));
    let history = training::fit_head(&mut head, &train, Some(&validation), &config.head, progress)?;
    let head_outcome = stage_outcome(&head, history, &validation, test_features.as_ref())?;
    let recompute_epoch_seconds = extraction[0]
        .1
        .images_per_second()
        .map(|rate| head_outcome.epoch_seconds + (train.len() + validation.len()) as f64 / rate);

    // Each depth prepares its own inputs; training and scoring are shared.
    let end_to_end = |ft: &FineTuneConfig, name: &str| {
        let side = config.side;
        let inputs_of = |images: &Dataset| Prepared {
            pixels: features::backbone_inputs(&images.images, side, config.preprocessing),
            labels: images.labels.clone(),
        };
        // Split the 28x28 images first: resized inputs are up to 20x larger.
        let train_inputs = inputs_of(&train_images.subset(&split.train));
        let validation = inputs_of(&train_images.subset(&split.validation));
        let train = fine_tune_train_config(ft, &config.head);
        let description = format!(
            "{name} end to end + head, {} images at {side}x{side}, batch {}, peak learning rate {}",
            train_inputs.len(),
            train.batch_size,
            ft.learning_rate,
        );
        FineTuneRun {
            model: (),
            train_variants: vec![train_inputs],
            validation,
            test: test_set.map(inputs_of),
            train,
            description,
        }
    };
    let fine_tune = match (&config.fine_tune, &extractor, backbone) {
        (Some(ft), Extractor::Vgg16(vgg, _), _) if ft.is_end_to_end() => {
            let model = Vgg16FineTuned::new(vgg, head.clone(), 1, (3, config.side, config.side));
            Some(fine_tune_and_score(
                end_to_end(ft, "VGG-16").with_model(model),
                state,
                progress,
            )?)
        }
        (Some(ft), Extractor::ResNet50(_), LoadedBackbone::Resnet50(resnet))
            if ft.is_end_to_end() =>
        {
            let model =
                ResNet50FineTuned::new(&resnet.to_device(device), head.clone(), config.side);
            Some(fine_tune_and_score(
                end_to_end(ft, "ResNet-50").with_model(model),
                state,
                progress,
            )?)
        }
        (Some(ft), Extractor::Vgg16(vgg, _), _) => {
            let block4 = settings(FeatureStage::Vgg16Block4, false);
            let (all, record) = features_of(
                &extractor,
                &train_images,
                &block4,
                cache_dir,
                progress,
                "training images",
            )?;
            extraction.push(("train block4".to_string(), record));
            let mut variants = vec![all.subset(&split.train)];
            let validation4 = all.subset(&split.validation);
            drop(all);
            if ft.mirror {
                let (mirrored, record) = features_of(
                    &extractor,
                    &train_images,
                    &settings(FeatureStage::Vgg16Block4, true),
                    cache_dir,
                    progress,
                    "training images, mirrored",
                )?;
                extraction.push(("train block4 mirrored".to_string(), record));
                variants.push(mirrored.subset(&split.train));
            }
            let test4 = match test_set {
                Some(test) => {
                    let (f, record) = features_of(
                        &extractor,
                        test,
                        &block4,
                        cache_dir,
                        progress,
                        "test images",
                    )?;
                    extraction.push(("test block4".to_string(), record));
                    Some(f)
                }
                None => None,
            };
            let side4 = config.side / 16;
            let train = TrainConfig {
                // Mirroring comes from the precomputed mirrored features.
                augmentation: None,
                ..fine_tune_train_config(ft, &config.head)
            };
            let description = format!(
                "block 5 + head on precomputed block-4 features, learning rate {}",
                ft.learning_rate
            );
            let run = FineTuneRun {
                model: Vgg16FineTuned::new(vgg, head.clone(), 5, (512, side4, side4)),
                train_variants: variants,
                validation: validation4,
                test: test4,
                train,
                description,
            };
            Some(fine_tune_and_score(run, state, progress)?)
        }
        _ => None,
    };

    Ok(TransferOutcome {
        label: run_label(config, weights),
        config: config.clone(),
        weights: weights.clone(),
        extraction,
        head_summary,
        head: head_outcome,
        recompute_epoch_seconds,
        // A fine-tuning resumed from its saved state also took its earlier epochs' time.
        wall_seconds: started.elapsed().as_secs_f64()
            + fine_tune
                .as_ref()
                .map_or(0.0, |f| earlier_epochs_seconds(&f.history)),
        fine_tune,
        device: device.describe(),
        run_key: key,
    })
}

/// Seconds of the epochs a resumed training ran in earlier invocations (0 when not resumed).
fn earlier_epochs_seconds(history: &History) -> f64 {
    let resumed_after = history.resumed_after_epochs.last().copied().unwrap_or(0);
    history
        .epochs
        .iter()
        .filter(|e| e.epoch <= resumed_after)
        .map(|e| e.seconds)
        .sum()
}

/// One row per run and stage: scores, sizes and timings.
pub fn results_table(outcomes: &[TransferOutcome]) -> crate::report::Table {
    let mut table = crate::report::Table::new(&[
        "run",
        "stage",
        "val accuracy",
        "val loss",
        "test accuracy",
        "trainable params",
        "s/epoch",
        "s/epoch recomputing features",
        "extraction images/s",
    ]);
    let score =
        |s: Option<Score>, f: fn(Score) -> f64| s.map_or("-".into(), |s| format!("{:.4}", f(s)));
    for o in outcomes {
        let fine_tuned = o
            .config
            .fine_tune
            .as_ref()
            .map(|ft| format!("+ {}", ft.depth_label()));
        let stages = std::iter::once(("head on frozen features".to_string(), &o.head))
            .chain(fine_tuned.zip(o.fine_tune.as_ref()));
        for (i, (stage, outcome)) in stages.enumerate() {
            table.push(vec![
                if i == 0 {
                    o.label.clone()
                } else {
                    String::new()
                },
                stage,
                format!("{:.4}", outcome.validation.accuracy),
                format!("{:.4}", outcome.validation.loss),
                score(outcome.test, |s| s.accuracy),
                outcome.trainable_params.to_string(),
                format!("{:.1}", outcome.epoch_seconds),
                match (i, o.recompute_epoch_seconds) {
                    (0, Some(s)) => format!("{s:.0}"),
                    _ => "-".into(),
                },
                match (i, o.extraction_images_per_second()) {
                    (0, Some(r)) => format!("{r:.0}"),
                    _ => "-".into(),
                },
            ]);
        }
    }
    table
}

/// File name of a run's results in an output directory, e.g. `vgg16-caffe-fine-tuned.json`
/// (`vgg16-caffe-64px-fine-tuned-all.json` at 64x64, fine-tuned end to end).
pub fn result_file_name(config: &TransferConfig) -> String {
    let size = if config.side == 32 {
        String::new()
    } else {
        format!("-{}px", config.side)
    };
    let fine_tune = match &config.fine_tune {
        None => "",
        Some(ft) if ft.is_end_to_end() => "-fine-tuned-all",
        Some(_) => "-fine-tuned",
    };
    format!(
        "{}-{}{size}{fine_tune}.json",
        config.backbone.name(),
        config.preprocessing.name(),
    )
}

/// File name of a run's fine-tuning state in an output directory while the run is under way
/// (saved after every epoch, removed once the results are saved), e.g.
/// `vgg16-caffe-64px-fine-tuned-all.training-state.safetensors`.
pub fn training_state_file_name(config: &TransferConfig) -> String {
    let results = result_file_name(config);
    let stem = results.strip_suffix(".json").unwrap_or(&results);
    format!("{stem}.training-state.safetensors")
}

/// The key of a run's fine-tuning state: the run's, marked as that stage.
fn fine_tuning_key(run: &RunKey) -> RunKey {
    run.clone().with("stage", "fine-tuning")
}

/// What determines a transfer run's results: the exact images, the settings, the weights, the
/// device and the library version.
pub fn run_key<D: ModelDevice>(inputs: &TransferInputs<'_, D>, config: &TransferConfig) -> RunKey {
    let key = RunKey::new()
        .with("train_data", inputs.train_set.fingerprint())
        .with("test_data", inputs.test_set.map(|t| t.fingerprint()))
        .with("config", config)
        .with("weights", inputs.weights)
        .with("device", D::CHOICE);
    // Above 32x32 ResNet-50's head once flattened its 2x2 (or larger) map; results from then
    // lack this entry and are refused. At 32x32 the map is 1x1 and both heads are the same.
    if config.backbone == Architecture::Resnet50 && config.side > 32 {
        key.with("resnet50_head_input", "global average pooled")
    } else {
        key
    }
}

/// The results saved at `path`, if there are any. Results made under another key are refused
/// (naming what differs); an unreadable file is reported and its run done again.
pub fn previous_outcome(
    path: &Path,
    key: &RunKey,
    progress: &mut dyn Progress,
) -> Result<Option<TransferOutcome>, TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    match serde_json::from_str::<TransferOutcome>(&text) {
        Ok(outcome) => {
            key.check(&outcome.run_key, path)?;
            Ok(Some(outcome))
        }
        Err(e) => {
            progress.on_message(&format!(
                "warning: {} cannot be read ({e}); running it again",
                path.display()
            ));
            Ok(None)
        }
    }
}

/// [`run_transfer`], unless `out_dir` already holds results of the same images, configuration
/// and weights (then they are loaded); new results are saved there (atomically).
pub fn run_or_reuse<D: ModelDevice>(
    out_dir: &Path,
    inputs: &TransferInputs<'_, D>,
    config: &TransferConfig,
    progress: &mut dyn Progress,
) -> Result<TransferOutcome, TrainError> {
    let weights = inputs.weights;
    let path = out_dir.join(result_file_name(config));
    let key = run_key(inputs, config);
    let state_path = out_dir.join(training_state_file_name(config));
    if let Some(outcome) = previous_outcome(&path, &key, progress)? {
        progress.on_message(&format!(
            "{}: results of an earlier run, {}",
            outcome.label,
            path.display()
        ));
        // Left by a run stopped between saving its results and removing its state.
        if state_path.exists() {
            if let Err(e) = std::fs::remove_file(&state_path) {
                progress.on_message(&format!(
                    "warning: {} (a finished run's training state) cannot be removed: {e}",
                    state_path.display()
                ));
            }
        }
        return Ok(outcome);
    }
    progress.on_message(&format!("== {}", run_label(config, weights)));
    // A state of other settings is refused now, before features and the head are computed.
    training::checkpoint::read_training_progress(&state_path, &fine_tuning_key(&key))?;
    std::fs::create_dir_all(out_dir).map_err(|e| crate::error::DataError::io(out_dir, e))?;
    let outcome = run_transfer_keyed(inputs, config, key, Some(state_path.clone()), progress)?;
    let json = serde_json::to_string_pretty(&outcome).expect("plain data");
    crate::fsutil::write_bytes_atomically(&path, json.as_bytes())?;
    // The results are saved: the run is finished and its state is no longer needed.
    match std::fs::remove_file(&state_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(crate::error::DataError::io(&state_path, e).into())
        }
        _ => Ok(outcome),
    }
}
