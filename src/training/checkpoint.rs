//! Checkpoints: a model's parameters as a safetensors file (f32, little-endian), with the
//! architecture and its settings in the header metadata. Written atomically; loading checks
//! every tensor's name, shape and dtype and lists all differences at once.

use std::collections::HashMap;
use std::path::Path;

use ::safetensors::tensor::{Dtype as SafeDtype, Metadata, SafeTensors, TensorInfo, TensorView};
use dfdx::prelude::*;

use crate::error::TrainError;
use crate::models::{
    LeNet5, LeNet5Config, ModernCnn, ModernCnnConfig, ParamVisitor, ParamVisitorMut, Parameters,
};
use crate::ops::ModelDevice;
use crate::resume::RunKey;
use crate::training::optim::{Adam, ParamMoments};
use crate::training::{History, TrainConfig};

/// Format tag stored in every checkpoint's metadata.
pub const CHECKPOINT_FORMAT: &str = "fashion-mnist/1";

fn checkpoint_error(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// What a safetensors reading error means for the file, in words (the library's names, such
/// as `HeaderTooLarge`, say little to a user).
pub(crate) fn safetensors_problem(error: &::safetensors::SafeTensorError) -> String {
    use ::safetensors::SafeTensorError as E;
    match error {
        E::HeaderTooSmall => "too short to be a safetensors file (empty or truncated)".into(),
        E::HeaderTooLarge | E::InvalidHeaderLength => {
            "not a safetensors file, or truncated: its first 8 bytes give a header length the file cannot hold".into()
        }
        E::InvalidHeader | E::InvalidHeaderStart | E::InvalidHeaderDeserialization | E::JsonError(_) => {
            "not a safetensors file, or damaged: its header is not the expected JSON".into()
        }
        E::MetadataIncompleteBuffer | E::TensorInvalidInfo | E::InvalidOffset(_) | E::ValidationOverflow => {
            "truncated or damaged: the tensor data does not match what its header lists".into()
        }
        E::InvalidTensorView(..) => "damaged: a tensor's size does not match its shape".into(),
        E::TensorNotFound(name) => format!("has no tensor {name}"),
        E::IoError(e) => e.to_string(),
    }
}

/// SHA-256 of a model's tensors (names and little-endian data, by name): stored in every
/// checkpoint and checked on loading, so any changed byte is caught.
fn tensors_digest<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sorted: Vec<(&str, &[u8])> = tensors.into_iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    crate::resume::fingerprint(sorted.iter().flat_map(|(n, d)| [n.as_bytes(), *d]))
}

struct Collect(Vec<(String, Vec<usize>, Vec<u8>)>);

impl<D: ModelDevice> ParamVisitor<D> for Collect {
    type Error = std::convert::Infallible;
    fn visit<S: Shape>(&mut self, name: &str, t: &Tensor<S, f32, D>) -> Result<(), Self::Error> {
        let bytes = t.as_vec().iter().flat_map(|v| v.to_le_bytes()).collect();
        self.0
            .push((name.to_string(), t.shape().concrete().into(), bytes));
        Ok(())
    }
}

/// Saves `model` to `path` (safetensors), replacing any file there only once the new one is
/// complete.
pub fn save<M: Parameters>(model: &M, path: &Path) -> Result<(), TrainError> {
    save_with(model, path, &[])
}

/// [`save`], with extra metadata entries (e.g. where imported weights came from).
pub fn save_with<M: Parameters>(
    model: &M,
    path: &Path,
    extra_metadata: &[(&str, &str)],
) -> Result<(), TrainError> {
    let mut collected = Collect(Vec::new());
    let Ok(()) = model.visit_params(&mut collected);
    let mut metadata = HashMap::from([
        ("architecture".to_string(), model.architecture().to_string()),
        ("config".to_string(), model.config_json().to_string()),
    ]);
    for (key, value) in extra_metadata {
        metadata.insert(key.to_string(), value.to_string());
    }
    write_tensors(path, &collected.0, metadata)
}

/// Writes named f32 tensors (shape, little-endian bytes) with `metadata`, the format tag and
/// the tensors' digest, atomically.
fn write_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    mut metadata: HashMap<String, String>,
) -> Result<(), TrainError> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view = TensorView::new(SafeDtype::F32, shape.clone(), bytes)
                .expect("shape matches the data");
            (name.clone(), view)
        })
        .collect();
    let digest = tensors_digest(
        tensors
            .iter()
            .map(|(name, _, bytes)| (name.as_str(), bytes.as_slice())),
    );
    metadata.insert("format".to_string(), CHECKPOINT_FORMAT.to_string());
    metadata.insert("sha256".to_string(), digest);
    let bytes = ::safetensors::tensor::serialize(views, &Some(metadata))
        .map_err(|e| checkpoint_error(path, e.to_string()))?;
    crate::fsutil::write_bytes_atomically(path, &bytes)?;
    Ok(())
}

struct Fill<'a> {
    tensors: HashMap<String, &'a TensorInfo>,
    data: &'a [u8],
    seen: Vec<String>,
    problems: Vec<String>,
    /// Tensors holding NaN or infinity.
    non_finite: Vec<String>,
}

impl<D: ModelDevice> ParamVisitorMut<D> for Fill<'_> {
    type Error = std::convert::Infallible;
    fn visit<S: Shape>(
        &mut self,
        name: &str,
        t: &mut Tensor<S, f32, D>,
    ) -> Result<(), Self::Error> {
        self.seen.push(name.to_string());
        let expected: Vec<usize> = t.shape().concrete().into();
        let Some(info) = self.tensors.get(name) else {
            self.problems
                .push(format!("missing tensor {name} {expected:?}"));
            return Ok(());
        };
        if info.dtype != SafeDtype::F32 {
            self.problems
                .push(format!("{name}: dtype {:?}, expected F32", info.dtype));
        } else if info.shape != expected {
            self.problems.push(format!(
                "{name}: shape {:?}, expected {expected:?}",
                info.shape
            ));
        } else {
            let (start, end) = info.data_offsets;
            let values: Vec<f32> = self.data[start..end]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let non_finite = values.iter().filter(|v| !v.is_finite()).count();
            if non_finite > 0 {
                self.non_finite
                    .push(format!("{name} ({non_finite} of its values)"));
            } else {
                t.copy_from(&values);
            }
        }
        Ok(())
    }
}

/// Reads a checkpoint file's header; the tensor data starts at the returned offset.
fn read_header(path: &Path, bytes: &[u8]) -> Result<(usize, Metadata), TrainError> {
    // Validates the header and that every tensor's offsets lie inside the file.
    SafeTensors::deserialize(bytes).map_err(|e| checkpoint_error(path, safetensors_problem(&e)))?;
    let (header_len, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| checkpoint_error(path, safetensors_problem(&e)))?;
    Ok((8 + header_len, metadata))
}

/// Copies the tensors of the checkpoint at `path` into `model`, which must have the same
/// architecture and shapes.
pub fn load_into<M: Parameters>(model: &mut M, path: &Path) -> Result<(), TrainError> {
    let bytes = std::fs::read(path).map_err(|e| checkpoint_error(path, e.to_string()))?;
    let (data_start, metadata) = read_header(path, &bytes)?;
    fill_model(model, path, &metadata, &bytes[data_start..], |_| true)
}

/// Copies the tensors of a checkpoint read into memory (`data`: its tensor bytes) whose names
/// pass `of_model` into `model`; checks names, shapes, values and the stored digest (which
/// covers every tensor of the file).
fn fill_model<M: Parameters>(
    model: &mut M,
    path: &Path,
    metadata: &Metadata,
    data: &[u8],
    of_model: impl Fn(&str) -> bool,
) -> Result<(), TrainError> {
    let all_tensors = metadata.tensors();
    let mut fill = Fill {
        tensors: all_tensors
            .iter()
            .filter(|(name, _)| of_model(name))
            .map(|(name, info)| (name.clone(), *info))
            .collect(),
        data,
        seen: Vec::new(),
        problems: Vec::new(),
        non_finite: Vec::new(),
    };
    let Ok(()) = model.visit_params_mut(&mut fill);
    let mut unexpected: Vec<&String> = fill
        .tensors
        .keys()
        .filter(|name| !fill.seen.contains(name))
        .collect();
    unexpected.sort();
    for name in unexpected {
        fill.problems.push(format!("unexpected tensor {name}"));
    }
    if fill.problems.is_empty() && !fill.non_finite.is_empty() {
        return Err(checkpoint_error(
            path,
            format!(
                "NaN or infinite weights in {} (the file is damaged, or the run that wrote it diverged)",
                fill.non_finite.join(", ")
            ),
        ));
    }
    // Any other changed byte: the digest stored at saving (absent in older checkpoints).
    let stored_digest = metadata.metadata().as_ref().and_then(|m| m.get("sha256"));
    if let (true, Some(stored)) = (fill.problems.is_empty(), stored_digest) {
        let actual = tensors_digest(all_tensors.iter().map(|(name, info)| {
            let (start, end) = info.data_offsets;
            (name.as_str(), &data[start..end])
        }));
        if &actual != stored {
            return Err(checkpoint_error(
                path,
                "its tensors changed after it was written (their SHA-256 differs from the one stored in it): the file is damaged",
            ));
        }
    }
    if fill.problems.is_empty() {
        Ok(())
    } else {
        Err(checkpoint_error(
            path,
            format!(
                "does not fit the {} model: {}",
                model.architecture(),
                fill.problems.join("; ")
            ),
        ))
    }
}

/// What the `contents` metadata entry of a training state says.
const TRAINING_STATE_CONTENTS: &str = "training state";
/// Name prefixes of Adam's moments in a training state.
const FIRST_MOMENT: &str = "adam.first_moment/";
const SECOND_MOMENT: &str = "adam.second_moment/";

/// Where a resumable run is after a number of epochs: what [`save_training_state`] writes
/// besides the model's parameters and the optimizer's moments.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainingProgress {
    /// Everything that determines the run: a state saved under another key is not resumed.
    pub key: RunKey,
    pub epochs_done: usize,
    pub optimizer_steps: i32,
    pub history: History,
    /// The run's first batch loss (the reference for an exploding loss).
    pub first_loss: Option<f32>,
    /// The run's training settings (absent in states saved before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainConfig>,
}

/// Saves a resumable run's state: `model`'s parameters, Adam's moments (as flat tensors) and
/// `progress`, atomically (a run stopped while saving keeps the previous epoch's state).
pub fn save_training_state<M: Parameters>(
    path: &Path,
    model: &M,
    optimizer: &Adam<M::Device>,
    progress: &TrainingProgress,
) -> Result<(), TrainError> {
    let mut collected = Collect(Vec::new());
    let Ok(()) = model.visit_params(&mut collected);
    let bytes_of = |values: &[f32]| values.iter().flat_map(|v| v.to_le_bytes()).collect();
    for moments in optimizer.moments(model) {
        let len = vec![moments.first.len()];
        let first = (format!("{FIRST_MOMENT}{}", moments.name), len.clone());
        collected
            .0
            .push((first.0, first.1, bytes_of(&moments.first)));
        let second = format!("{SECOND_MOMENT}{}", moments.name);
        collected.0.push((second, len, bytes_of(&moments.second)));
    }
    let metadata = HashMap::from([
        ("architecture".to_string(), model.architecture().to_string()),
        ("config".to_string(), model.config_json().to_string()),
        ("contents".to_string(), TRAINING_STATE_CONTENTS.to_string()),
        (
            "progress".to_string(),
            serde_json::to_string(progress).expect("plain data"),
        ),
    ]);
    write_tensors(path, &collected.0, metadata)
}

/// The progress record of the training state read into `bytes`, checked against `key`, with
/// the file's header.
fn training_progress(
    path: &Path,
    bytes: &[u8],
    key: &RunKey,
) -> Result<(TrainingProgress, usize, Metadata), TrainError> {
    let (data_start, metadata) = read_header(path, bytes)?;
    let fields = metadata.metadata().clone().unwrap_or_default();
    if fields.get("contents").map(String::as_str) != Some(TRAINING_STATE_CONTENTS) {
        return Err(checkpoint_error(path, "not a saved training state"));
    }
    let progress: TrainingProgress = fields
        .get("progress")
        .map(|text| serde_json::from_str(text))
        .transpose()
        .map_err(|e| checkpoint_error(path, format!("its progress record cannot be read: {e}")))?
        .ok_or_else(|| checkpoint_error(path, "its metadata has no progress record"))?;
    let differences = key.differences(&progress.key);
    if !differences.is_empty() {
        return Err(checkpoint_error(
            path,
            format!(
                "the saved state of a run with other data or settings ({})",
                differences
                    .join("; ")
                    .replace("in the stored results", "in the saved state")
            ),
        ));
    }
    Ok((progress, data_start, metadata))
}

/// What a refused or damaged training state's error adds: what to do about it.
fn with_advice(error: TrainError) -> TrainError {
    match error {
        TrainError::Checkpoint { path, message } => TrainError::Checkpoint {
            path,
            message: format!(
                "{message}. Delete it to start the training over (its earlier epochs are lost), or use another output directory"
            ),
        },
        other => other,
    }
}

/// How many epochs the training state at `path` holds, reading only its header and checking
/// nothing else (for estimates; None when there is no readable state).
pub fn saved_epochs(path: &Path) -> Option<usize> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).ok()?;
    let length = usize::try_from(u64::from_le_bytes(length)).ok()?;
    if length > 100_000_000 {
        return None;
    }
    let mut header = vec![0u8; length];
    file.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let progress = header.get("__metadata__")?.get("progress")?.as_str()?;
    let progress: serde_json::Value = serde_json::from_str(progress).ok()?;
    usize::try_from(progress.get("epochs_done")?.as_u64()?).ok()
}

/// The progress record of the training state at `path`, after checking it was saved under
/// `key` (None when there is no state): lets a run refuse a foreign state before any work.
pub fn read_training_progress(
    path: &Path,
    key: &RunKey,
) -> Result<Option<TrainingProgress>, TrainError> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| checkpoint_error(path, e.to_string()))?;
    let (progress, ..) = training_progress(path, &bytes, key).map_err(with_advice)?;
    Ok(Some(progress))
}

/// Loads the state [`save_training_state`] wrote at `path` into `model` and `optimizer` and
/// returns where the run was. A state saved under a key other than `key` is refused, naming
/// the settings that differ; every error says what to do.
pub fn load_training_state<M: Parameters>(
    path: &Path,
    key: &RunKey,
    model: &mut M,
    optimizer: &mut Adam<M::Device>,
) -> Result<TrainingProgress, TrainError> {
    load_training_state_here(path, key, model, optimizer).map_err(with_advice)
}

fn load_training_state_here<M: Parameters>(
    path: &Path,
    key: &RunKey,
    model: &mut M,
    optimizer: &mut Adam<M::Device>,
) -> Result<TrainingProgress, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| checkpoint_error(path, e.to_string()))?;
    let (progress, data_start, metadata) = training_progress(path, &bytes, key)?;
    let data = &bytes[data_start..];
    let is_moment = |name: &str| name.starts_with(FIRST_MOMENT) || name.starts_with(SECOND_MOMENT);
    fill_model(model, path, &metadata, data, |name| !is_moment(name))?;
    let tensors = metadata.tensors();
    let values_of = |name: &str| {
        tensors.get(name).map(|info| {
            let (start, end) = info.data_offsets;
            data[start..end]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<f32>>()
        })
    };
    let mut moments = Vec::new();
    let mut names: Vec<&String> = tensors
        .keys()
        .filter(|n| n.starts_with(FIRST_MOMENT))
        .collect();
    names.sort();
    for first_name in names {
        let name = &first_name[FIRST_MOMENT.len()..];
        let second = values_of(&format!("{SECOND_MOMENT}{name}"))
            .ok_or_else(|| checkpoint_error(path, format!("no second moment for {name}")))?;
        moments.push(ParamMoments {
            name: name.to_string(),
            first: values_of(first_name).unwrap_or_default(),
            second,
        });
    }
    optimizer
        .restore(model, progress.optimizer_steps, &moments)
        .map_err(|problems| checkpoint_error(path, format!("optimizer state: {problems}")))?;
    Ok(progress)
}

/// The architecture and settings stored in a checkpoint's metadata.
pub fn read_metadata(path: &Path) -> Result<(String, serde_json::Value), TrainError> {
    let bytes = std::fs::read(path).map_err(|e| checkpoint_error(path, e.to_string()))?;
    metadata_in(path, &bytes)
}

/// [`read_metadata`] of a checkpoint already read into memory (`path` names it in errors).
pub(crate) fn metadata_in(
    path: &Path,
    bytes: &[u8],
) -> Result<(String, serde_json::Value), TrainError> {
    let (_, metadata) = read_header(path, bytes)?;
    let fields = metadata.metadata().clone().unwrap_or_default();
    if fields.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT) {
        return Err(checkpoint_error(
            path,
            format!(
                "not a fashion-mnist checkpoint (metadata format is not {CHECKPOINT_FORMAT:?})"
            ),
        ));
    }
    let architecture = fields
        .get("architecture")
        .cloned()
        .ok_or_else(|| checkpoint_error(path, "metadata has no architecture"))?;
    let config = fields
        .get("config")
        .map(|c| serde_json::from_str(c))
        .transpose()
        .map_err(|e| checkpoint_error(path, format!("metadata config is not JSON: {e}")))?
        .unwrap_or(serde_json::Value::Null);
    Ok((architecture, config))
}

/// Loads a LeNet-5 checkpoint, rebuilding the architecture from its metadata.
pub fn load_lenet5<D: ModelDevice>(device: &D, path: &Path) -> Result<LeNet5<D>, TrainError> {
    let config: LeNet5Config = config_of(path, "lenet5")?;
    let mut model = LeNet5::new(device, config, 0);
    load_into(&mut model, path)?;
    Ok(model)
}

/// Loads a modern-CNN checkpoint, rebuilding the architecture from its metadata.
pub fn load_modern_cnn<D: ModelDevice>(
    device: &D,
    path: &Path,
) -> Result<ModernCnn<D>, TrainError> {
    let config: ModernCnnConfig = config_of(path, "modern_cnn")?;
    config
        .validate()
        .map_err(|e| checkpoint_error(path, format!("bad modern_cnn config: {e}")))?;
    let mut model = ModernCnn::new(device, config, 0);
    load_into(&mut model, path)?;
    Ok(model)
}

/// The settings stored in a checkpoint of `architecture` (an error for another architecture).
fn config_of<C: serde::de::DeserializeOwned>(
    path: &Path,
    architecture: &str,
) -> Result<C, TrainError> {
    let (found, config) = read_metadata(path)?;
    if found != architecture {
        return Err(checkpoint_error(
            path,
            format!("holds a {found} model, not {architecture}"),
        ));
    }
    serde_json::from_value(config)
        .map_err(|e| checkpoint_error(path, format!("bad {architecture} config: {e}")))
}
