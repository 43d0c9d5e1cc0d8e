//! Frozen-backbone features: the walkthrough's input pipeline (28x28 gray -> bilinear resize ->
//! 3 channels -> the weights' preprocessing), a backbone forward pass without a tape, and a
//! disk cache keyed by everything that changes the numbers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ::safetensors::tensor::{Dtype as SafeDtype, SafeTensors, TensorView};
use dfdx::prelude::*;
use sha2::{Digest, Sha256};

use super::weights::{Architecture, LoadedBackbone};
use crate::data::prepare::resize_bilinear;
use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};
use crate::error::TrainError;
use crate::models::{FoldedResNet50, PreparedVgg16, Vgg16};
use crate::ops::{ModelDevice, Tensor4};

/// How pixels are scaled before the backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preprocessing {
    /// Keras' `preprocess_input` for VGG-16 and ResNet-50 ("caffe" mode), what the ImageNet
    /// weights expect: pixels 0..255, RGB -> BGR, minus the ImageNet channel means.
    Caffe,
    /// What the walkthrough fed: pixels scaled to 0..1, no `preprocess_input`.
    Unit,
}

/// ImageNet channel means in BGR order (Keras' caffe mode).
const IMAGENET_BGR_MEANS: [f32; 3] = [103.939, 116.779, 123.68];

impl Preprocessing {
    pub const ALL: [Preprocessing; 2] = [Preprocessing::Caffe, Preprocessing::Unit];

    pub fn name(&self) -> &'static str {
        match self {
            Preprocessing::Caffe => "caffe",
            Preprocessing::Unit => "unit",
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Preprocessing::Caffe => "0..255, BGR, minus ImageNet means (Keras preprocess_input)",
            Preprocessing::Unit => "0..1, no preprocess_input (as the walkthrough did)",
        }
    }

    /// Applies the scaling to RGB images (N, 3, side, side) with values 0..255.
    pub fn apply_nchw(&self, rgb: &[f32], side: usize) -> Vec<f32> {
        let mut out = rgb.to_vec();
        for image in out.chunks_exact_mut(3 * side * side) {
            self.apply_to_image(image);
        }
        out
    }

    /// Scales one image (3, H, W) in place.
    fn apply_to_image(&self, rgb: &mut [f32]) {
        match self {
            Preprocessing::Unit => rgb.iter_mut().for_each(|v| *v /= 255.0),
            Preprocessing::Caffe => {
                let plane = rgb.len() / 3;
                let (red, rest) = rgb.split_at_mut(plane);
                red.swap_with_slice(&mut rest[plane..]);
                for (channel, mean) in rgb.chunks_exact_mut(plane).zip(IMAGENET_BGR_MEANS) {
                    channel.iter_mut().for_each(|v| *v -= mean);
                }
            }
        }
    }
}

impl std::str::FromStr for Preprocessing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "caffe" => Ok(Preprocessing::Caffe),
            "unit" => Ok(Preprocessing::Unit),
            _ => Err(format!(
                "unknown preprocessing {s:?} (expected caffe or unit)"
            )),
        }
    }
}

/// One Fashion-MNIST image (784 bytes) as a backbone input: bilinear resize to `side`,
/// optionally mirrored left-right, gray repeated to 3 channels (3, side, side), then scaled.
fn backbone_input(
    image: &[u8],
    side: usize,
    mirrored: bool,
    preprocessing: Preprocessing,
) -> Vec<f32> {
    let gray: Vec<f32> = image.iter().map(|&p| p as f32).collect();
    let mut resized = resize_bilinear(&gray, IMAGE_SIDE, IMAGE_SIDE, side, side);
    if mirrored {
        resized.chunks_exact_mut(side).for_each(|row| row.reverse());
    }
    let mut rgb = Vec::with_capacity(3 * side * side);
    for _ in 0..3 {
        rgb.extend_from_slice(&resized);
    }
    preprocessing.apply_to_image(&mut rgb);
    rgb
}

/// Backbone inputs (3, side, side) of `images` (784 bytes each), as [`extract`] feeds them:
/// what fine-tuning end to end trains on.
pub fn backbone_inputs(images: &[u8], side: usize, preprocessing: Preprocessing) -> Vec<f32> {
    images
        .chunks_exact(IMAGE_PIXELS)
        .flat_map(|image| backbone_input(image, side, false, preprocessing))
        .collect()
}

/// Where in the backbone features are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureStage {
    /// The backbone's output (`block5_pool`, `conv5_block3_out`).
    Output,
    /// VGG-16's `block4_pool`: the input of block 5, for fine-tuning block 5.
    Vgg16Block4,
}

/// Everything that determines a feature file's numbers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSettings {
    pub backbone: Architecture,
    /// Identifies the weights: SHA-256 of the weights file, or `random-init-seed-N`.
    pub weights_id: String,
    pub preprocessing: Preprocessing,
    /// Side the 28x28 images are resized to (32 in the walkthrough).
    pub side: usize,
    pub stage: FeatureStage,
    /// Mirrored left-right (augmentation).
    pub mirrored: bool,
}

/// Features of a set of images, (C, H, W) each.
#[derive(Clone, Debug)]
pub struct Features {
    pub values: Vec<f32>,
    pub shape: (usize, usize, usize),
}

impl Features {
    pub fn len(&self) -> usize {
        self.values.len() / (self.shape.0 * self.shape.1 * self.shape.2).max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Each channel's mean over its positions (Keras' `GlobalAveragePooling2D`): (C, 1, 1)
    /// per image.
    pub fn global_average_pooled(self) -> Features {
        let (channels, height, width) = self.shape;
        let positions = height * width;
        if positions == 1 {
            return self;
        }
        let values = self
            .values
            .chunks_exact(positions)
            .map(|plane| plane.iter().sum::<f32>() / positions as f32)
            .collect();
        Features {
            values,
            shape: (channels, 1, 1),
        }
    }
}

/// A frozen backbone with its weights on device `D`, made once per run and used for every
/// extraction (BatchNorm folded into ResNet-50's convolutions).
pub enum Extractor<D: ModelDevice = Cpu> {
    /// With its weights prepared for the CPU's channel-major pass, on the CPU.
    Vgg16(Vgg16<D>, Option<PreparedVgg16>),
    ResNet50(FoldedResNet50<D>),
}

impl<D: ModelDevice> Extractor<D> {
    /// The backbone's weights on `device` (shared, not copied, when they are already there).
    pub fn new(backbone: &LoadedBackbone, device: &D) -> Self {
        match backbone {
            LoadedBackbone::Vgg16(m) => {
                let model = m.to_device(device);
                let prepared = PreparedVgg16::new(&model);
                Extractor::Vgg16(model, prepared)
            }
            LoadedBackbone::Resnet50(m) => Extractor::ResNet50(m.to_device(device).fold()),
        }
    }

    fn check_stage(&self, stage: FeatureStage) -> Result<(), TrainError> {
        match (self, stage) {
            (Extractor::ResNet50(_), FeatureStage::Vgg16Block4) => Err(TrainError::Config {
                name: "stage".into(),
                message: "block4 features exist only for VGG-16".into(),
            }),
            _ => Ok(()),
        }
    }

    fn forward(&self, x: Tensor4<NoneTape, D>, stage: FeatureStage) -> Tensor4<NoneTape, D> {
        match (self, stage) {
            (Extractor::Vgg16(m, prepared), FeatureStage::Output) => {
                vgg16_blocks(m, prepared.as_ref(), x, 1..=5)
            }
            (Extractor::Vgg16(m, prepared), FeatureStage::Vgg16Block4) => {
                vgg16_blocks(m, prepared.as_ref(), x, 1..=4)
            }
            (Extractor::ResNet50(m), _) => m.forward(x),
        }
    }

    fn device(&self) -> D {
        match self {
            Extractor::Vgg16(m, _) => m.convs[0].kernel.device().clone(),
            Extractor::ResNet50(m) => m.device(),
        }
    }
}

/// Images per forward pass of feature extraction on the CPU (see
/// [`ModelDevice::extraction_batch`]).
pub const EXTRACTION_BATCH: usize = 64;

/// Features of `images` (784 bytes each) at `settings.stage`, computed in batches; `progress`
/// gets the number of images done after each batch.
pub fn extract<D: ModelDevice>(
    extractor: &Extractor<D>,
    images: &[u8],
    settings: &FeatureSettings,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Features, TrainError> {
    extractor.check_stage(settings.stage)?;
    Ok(crate::training::on_device_threads::<D, _>(|| {
        let device = extractor.device();
        let n = images.len() / IMAGE_PIXELS;
        let side = settings.side;
        let mut values = Vec::new();
        let mut shape = (0, 0, 0);
        let batch_images = device.extraction_batch();
        for (b, batch) in images.chunks(batch_images * IMAGE_PIXELS).enumerate() {
            let count = batch.len() / IMAGE_PIXELS;
            let input: Vec<f32> = batch
                .chunks_exact(IMAGE_PIXELS)
                .flat_map(|image| {
                    backbone_input(image, side, settings.mirrored, settings.preprocessing)
                })
                .collect();
            let x = device.images(input, (count, 3, side, side));
            let y = extractor.forward(x, settings.stage);
            let (_, c, h, w) = *y.shape();
            shape = (c, h, w);
            if values.is_empty() {
                values.reserve_exact(n * c * h * w);
            }
            values.extend(D::activations_to_host(y));
            progress((b * batch_images + count).min(n));
        }
        Features { values, shape }
    }))
}

/// VGG-16 blocks `blocks` without a tape: on the weights prepared for the CPU when there are.
fn vgg16_blocks<D: ModelDevice>(
    model: &Vgg16<D>,
    prepared: Option<&PreparedVgg16>,
    x: Tensor4<NoneTape, D>,
    blocks: std::ops::RangeInclusive<usize>,
) -> Tensor4<NoneTape, D> {
    match prepared {
        Some(prepared) => prepared.forward_blocks(x, blocks),
        None => model.forward_blocks(x, blocks),
    }
}

/// Runs VGG-16's block 5 on block-4 features (from [`FeatureStage::Vgg16Block4`]), on the
/// weights prepared for the CPU when there are.
pub fn vgg16_block5<D: ModelDevice>(
    model: &Vgg16<D>,
    prepared: Option<&PreparedVgg16>,
    block4: &Features,
) -> Features {
    crate::training::on_device_threads::<D, _>(|| {
        let device = model.convs[0].kernel.device().clone();
        let (c, h, w) = block4.shape;
        let per_image = c * h * w;
        let mut values = Vec::new();
        let mut shape = (0, 0, 0);
        for batch in block4.values.chunks(device.extraction_batch() * per_image) {
            let count = batch.len() / per_image;
            let x = device.images(batch.to_vec(), (count, c, h, w));
            let y = vgg16_blocks(model, prepared, x, 5..=5);
            let (_, oc, oh, ow) = *y.shape();
            shape = (oc, oh, ow);
            values.extend(D::activations_to_host(y));
        }
        Features { values, shape }
    })
}

/// How features were obtained.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ExtractionRecord {
    pub images: usize,
    /// Seconds spent computing (0 when read from the cache).
    pub seconds: f64,
    /// Whether the features, or the block-4 features they were computed from, came from the
    /// cache (then `seconds` is not the cost of an extraction).
    pub from_cache: bool,
    pub cache_file: Option<PathBuf>,
}

impl ExtractionRecord {
    pub fn images_per_second(&self) -> Option<f64> {
        (!self.from_cache && self.seconds > 0.0).then(|| self.images as f64 / self.seconds)
    }
}

/// The cache file for `settings`, this exact set of images and this library version.
pub fn cache_path(dir: &Path, settings: &FeatureSettings, images: &[u8]) -> PathBuf {
    let mut hasher = Sha256::new();
    hasher.update(crate::resume::CODE_VERSION.as_bytes());
    hasher.update(serde_json::to_vec(settings).expect("plain struct"));
    hasher.update(Sha256::digest(images));
    let key = hex::encode(hasher.finalize());
    let stage = match settings.stage {
        FeatureStage::Output => "out",
        FeatureStage::Vgg16Block4 => "block4",
    };
    dir.join(format!(
        "{}-{}-{}{}-{}.safetensors",
        settings.backbone.name(),
        settings.preprocessing.name(),
        stage,
        if settings.mirrored { "-mirrored" } else { "" },
        &key[..16]
    ))
}

fn cache_error(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_cache(path: &Path, settings: &FeatureSettings, n: usize) -> Result<Features, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| cache_error(path, e.to_string()))?;
    let invalid = |e: ::safetensors::SafeTensorError| {
        let problem = crate::training::checkpoint::safetensors_problem(&e);
        cache_error(path, format!("not a valid feature file: {problem}"))
    };
    let file = SafeTensors::deserialize(&bytes).map_err(invalid)?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(invalid)?;
    let stored: Option<FeatureSettings> = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get("settings"))
        .and_then(|s| serde_json::from_str(s).ok());
    if stored.as_ref() != Some(settings) {
        return Err(cache_error(path, "made with other settings"));
    }
    let view = file.tensor("features").map_err(|e| {
        cache_error(
            path,
            format!(
                "no features tensor: {}",
                crate::training::checkpoint::safetensors_problem(&e)
            ),
        )
    })?;
    let [count, c, h, w] = view.shape()[..] else {
        return Err(cache_error(path, "features tensor is not 4-D"));
    };
    if count != n || view.dtype() != SafeDtype::F32 {
        return Err(cache_error(
            path,
            format!("holds {count} images, expected {n}"),
        ));
    }
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Features {
        values,
        shape: (c, h, w),
    })
}

fn write_cache(
    path: &Path,
    settings: &FeatureSettings,
    features: &Features,
) -> Result<(), TrainError> {
    let bytes: Vec<u8> = features
        .values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (c, h, w) = features.shape;
    let view = TensorView::new(SafeDtype::F32, vec![features.len(), c, h, w], &bytes)
        .map_err(|e| cache_error(path, format!("{e:?}")))?;
    let metadata = std::collections::HashMap::from([(
        "settings".to_string(),
        serde_json::to_string(settings).expect("plain struct"),
    )]);
    let file = ::safetensors::tensor::serialize([("features", view)], &Some(metadata))
        .map_err(|e| cache_error(path, format!("{e:?}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| cache_error(dir, e.to_string()))?;
    }
    crate::fsutil::write_bytes_atomically(path, &file)?;
    Ok(())
}

/// Features of `images` for `settings`: read from `cache_dir` when a file made with the same
/// settings and images is there, computed (and written there) otherwise. A cache file that is
/// unreadable or does not match is recomputed and replaced.
pub fn cached_features<D: ModelDevice>(
    extractor: &Extractor<D>,
    images: &[u8],
    settings: &FeatureSettings,
    cache_dir: Option<&Path>,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<(Features, ExtractionRecord), TrainError> {
    let n = images.len() / IMAGE_PIXELS;
    let path = cache_dir.map(|dir| cache_path(dir, settings, images));
    if let Some(path) = &path {
        if let Ok(features) = read_cache(path, settings, n) {
            progress(n);
            return Ok((
                features,
                ExtractionRecord {
                    images: n,
                    seconds: 0.0,
                    from_cache: true,
                    cache_file: Some(path.clone()),
                },
            ));
        }
    }
    let started = Instant::now();
    let features = match (extractor, settings.stage) {
        // VGG-16's output is block 5 on block-4 features, which fine-tuning caches as well.
        (Extractor::Vgg16(model, prepared), FeatureStage::Output) => {
            let block4_settings = FeatureSettings {
                stage: FeatureStage::Vgg16Block4,
                ..settings.clone()
            };
            let (block4, record) =
                cached_features(extractor, images, &block4_settings, cache_dir, progress)?;
            (
                vgg16_block5(model, prepared.as_ref(), &block4),
                record.from_cache,
            )
        }
        _ => (extract(extractor, images, settings, progress)?, false),
    };
    let (features, partly_cached) = features;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &path {
        write_cache(path, settings, &features)?;
    }
    Ok((
        features,
        ExtractionRecord {
            images: n,
            seconds,
            from_cache: partly_cached,
            cache_file: path,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_average_pooling_takes_each_channels_mean_per_image() {
        // Two images, two channels of 2x2 positions.
        let features = Features {
            values: vec![
                1.0, 2.0, 3.0, 6.0, /* */ -4.0, 0.0, 0.0, 0.0, // image 1
                0.5, 0.5, 0.5, 0.5, /* */ 8.0, 8.0, 0.0, 0.0, // image 2
            ],
            shape: (2, 2, 2),
        };
        let pooled = features.global_average_pooled();
        assert_eq!(pooled.shape, (2, 1, 1));
        assert_eq!(pooled.values, vec![3.0, -1.0, 0.5, 4.0]);
        assert_eq!(pooled.len(), 2);
        // One position: nothing to pool.
        let single = Features {
            values: vec![7.0, 9.0],
            shape: (2, 1, 1),
        };
        assert_eq!(single.clone().global_average_pooled().values, single.values);
    }
}
