//! Preparation as in the walkthrough: scale pixels to 0..1, one-hot labels, a seeded 80/20
//! train/validation split (optionally stratified), seeded K-fold indices, and for the transfer
//! models a bilinear resize to 32x32 (as Keras/TensorFlow does it) with gray repeated to RGB.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Dataset, IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES};

/// The walkthrough's defaults: 20% validation, seed 42.
pub const DEFAULT_VALIDATION_FRACTION: f64 = 0.2;
pub const DEFAULT_SEED: u64 = 42;

/// Pixels scaled from 0..255 to 0..1, as `f32`, row-major, 784 per image.
pub fn scale_to_unit(images: &[u8]) -> Vec<f32> {
    images.iter().map(|&p| p as f32 / 255.0).collect()
}

/// One-hot rows of length 10.
pub fn one_hot(labels: &[u8]) -> Vec<f32> {
    let mut out = vec![0.0; labels.len() * NUM_CLASSES];
    for (row, &label) in labels.iter().enumerate() {
        out[row * NUM_CLASSES + label as usize] = 1.0;
    }
    out
}

/// Images ready for a model: scaled pixels and labels.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    pub pixels: Vec<f32>,
    pub labels: Vec<u8>,
}

impl Prepared {
    pub fn from_dataset(dataset: &Dataset) -> Self {
        Prepared {
            pixels: scale_to_unit(&dataset.images),
            labels: dataset.labels.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn one_hot(&self) -> Vec<f32> {
        one_hot(&self.labels)
    }

    /// SHA-256 (hex) of the exact values and labels: what results reused from disk are keyed by.
    pub fn fingerprint(&self) -> String {
        let bytes: Vec<u8> = self.pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
        crate::resume::fingerprint([bytes.as_slice(), &self.labels])
    }

    /// Values per image: 784 for Fashion-MNIST pixels, more for resized images or features.
    pub fn values_per_image(&self) -> usize {
        if self.labels.is_empty() {
            IMAGE_PIXELS
        } else {
            self.pixels.len() / self.labels.len()
        }
    }

    pub fn image(&self, index: usize) -> &[f32] {
        let n = self.values_per_image();
        &self.pixels[index * n..(index + 1) * n]
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Prepared {
        let mut pixels = Vec::with_capacity(indices.len() * self.values_per_image());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Prepared { pixels, labels }
    }
}

/// Indices of a train/validation split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitIndices {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
}

fn indices_by_class(labels: &[u8]) -> Vec<Vec<usize>> {
    let mut by_class = vec![Vec::new(); NUM_CLASSES];
    for (i, &label) in labels.iter().enumerate() {
        by_class[label as usize].push(i);
    }
    by_class
}

/// A seeded shuffled split; `validation_fraction` of the images go to validation. With
/// `stratified`, each class is split in the same proportion.
pub fn train_validation_split(
    labels: &[u8],
    validation_fraction: f64,
    seed: u64,
    stratified: bool,
) -> SplitIndices {
    assert!(
        (0.0..1.0).contains(&validation_fraction),
        "validation fraction must be in [0, 1)"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = SplitIndices {
        train: Vec::new(),
        validation: Vec::new(),
    };
    let groups = if stratified {
        indices_by_class(labels)
    } else {
        vec![(0..labels.len()).collect()]
    };
    for mut group in groups {
        group.shuffle(&mut rng);
        let n_val = (group.len() as f64 * validation_fraction).round() as usize;
        split.validation.extend_from_slice(&group[..n_val]);
        split.train.extend_from_slice(&group[n_val..]);
    }
    if stratified {
        split.train.shuffle(&mut rng);
        split.validation.shuffle(&mut rng);
    }
    split
}

/// The first `limit` images of `dataset` (all when None), split as [`train_validation_split`]
/// does and scaled to 0..1: (train, validation). Only the selected images are copied.
pub fn split_scaled(
    dataset: &Dataset,
    limit: Option<usize>,
    validation_fraction: f64,
    seed: u64,
    stratified: bool,
) -> (Prepared, Prepared) {
    let n = limit.map_or(dataset.len(), |l| l.min(dataset.len()));
    let split = train_validation_split(&dataset.labels[..n], validation_fraction, seed, stratified);
    (
        Prepared::from_dataset(&dataset.subset(&split.train)),
        Prepared::from_dataset(&dataset.subset(&split.validation)),
    )
}

/// Seeded K-fold indices: `k` (train, validation) splits whose validation parts partition all
/// images. With `stratified`, each class is dealt evenly over the folds.
pub fn kfold_indices(labels: &[u8], k: usize, seed: u64, stratified: bool) -> Vec<SplitIndices> {
    assert!(
        k >= 2 && k <= labels.len(),
        "need 2 <= k <= number of images"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut folds: Vec<Vec<usize>> = vec![Vec::new(); k];
    if stratified {
        let mut next = 0;
        for mut group in indices_by_class(labels) {
            group.shuffle(&mut rng);
            for i in group {
                folds[next % k].push(i);
                next += 1;
            }
        }
    } else {
        let mut all: Vec<usize> = (0..labels.len()).collect();
        all.shuffle(&mut rng);
        let base = all.len() / k;
        let extra = all.len() % k;
        let mut start = 0;
        for (f, fold) in folds.iter_mut().enumerate() {
            let size = base + usize::from(f < extra);
            fold.extend_from_slice(&all[start..start + size]);
            start += size;
        }
    }
    (0..k)
        .map(|f| SplitIndices {
            validation: folds[f].clone(),
            train: folds
                .iter()
                .enumerate()
                .filter(|(g, _)| *g != f)
                .flat_map(|(_, fold)| fold.iter().copied())
                .collect(),
        })
        .collect()
}

/// Bilinear resize of one gray image, matching TensorFlow's `tf.image.resize` (half-pixel
/// centres, no antialiasing), which Keras uses.
pub fn resize_bilinear(
    src: &[f32],
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
) -> Vec<f32> {
    assert_eq!(src.len(), src_h * src_w);
    let weights = |dst: usize, src_len: usize| -> Vec<(usize, usize, f32)> {
        let scale = src_len as f32 / dst as f32;
        (0..dst)
            .map(|i| {
                let pos = (i as f32 + 0.5) * scale - 0.5;
                let floor = pos.floor();
                let lower = (floor as i64).max(0) as usize;
                let upper = (pos.ceil() as i64).min(src_len as i64 - 1) as usize;
                (lower, upper, pos - floor)
            })
            .collect()
    };
    let ys = weights(dst_h, src_h);
    let xs = weights(dst_w, src_w);
    let mut out = Vec::with_capacity(dst_h * dst_w);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top_left = src[y0 * src_w + x0];
            let top_right = src[y0 * src_w + x1];
            let bottom_left = src[y1 * src_w + x0];
            let bottom_right = src[y1 * src_w + x1];
            let top = top_left + (top_right - top_left) * fx;
            let bottom = bottom_left + (bottom_right - bottom_left) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    out
}

/// Each 28x28 gray image resized to `side` x `side` and repeated to 3 channels, channel-first
/// (3, side, side) per image. Pixel values keep their scale.
pub fn resize_gray_to_rgb(pixels: &[f32], side: usize) -> Vec<f32> {
    let n = pixels.len() / IMAGE_PIXELS;
    let mut out = Vec::with_capacity(n * 3 * side * side);
    for image in pixels.chunks_exact(IMAGE_PIXELS) {
        let resized = resize_bilinear(image, IMAGE_SIDE, IMAGE_SIDE, side, side);
        for _ in 0..3 {
            out.extend_from_slice(&resized);
        }
    }
    out
}

/// Turns any picture into a Fashion-MNIST-like input: gray, dark background (inverted when the
/// picture's border is light, as in product photos), fitted into 28x28 keeping its aspect ratio
/// and centred, scaled to 0..1.
pub fn picture_to_pixels(picture: &image::DynamicImage) -> Vec<f32> {
    let gray = picture.to_luma8();
    let (w, h) = gray.dimensions();
    let border: Vec<u8> = (0..w)
        .flat_map(|x| [gray.get_pixel(x, 0)[0], gray.get_pixel(x, h - 1)[0]])
        .chain((0..h).flat_map(|y| [gray.get_pixel(0, y)[0], gray.get_pixel(w - 1, y)[0]]))
        .collect();
    let border_mean = border.iter().map(|&v| v as f64).sum::<f64>() / border.len().max(1) as f64;
    let mut gray = gray;
    if border_mean > 127.0 {
        image::imageops::invert(&mut gray);
    }
    let side = IMAGE_SIDE as u32;
    let scale = side as f64 / w.max(h) as f64;
    let new_w = ((w as f64 * scale).round() as u32).clamp(1, side);
    let new_h = ((h as f64 * scale).round() as u32).clamp(1, side);
    let resized =
        image::imageops::resize(&gray, new_w, new_h, image::imageops::FilterType::Triangle);
    let mut canvas = image::GrayImage::new(side, side);
    image::imageops::overlay(
        &mut canvas,
        &resized,
        ((side - new_w) / 2) as i64,
        ((side - new_h) / 2) as i64,
    );
    canvas.pixels().map(|p| p[0] as f32 / 255.0).collect()
}
