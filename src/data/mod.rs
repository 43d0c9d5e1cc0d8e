//! Fashion-MNIST data: readers for the original IDX files and Kaggle-format CSV, where the files
//! come from (and their verification), the walkthrough's exploratory checks on a polars
//! DataFrame, and the preparation of tensors-to-be (scaling, one-hot, splits, resizing).

pub mod augment;
pub mod csv;
pub mod eda;
pub mod idx;
pub mod prepare;
pub mod source;

pub use source::{load, locate, DataFormat, FashionMnist, Located, Origin, Verification};

/// Side of a Fashion-MNIST image in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels per image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// Zalando's class names, indexed by label.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Images (row-major, 784 bytes each, 0 = background) and their labels (0-9).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Dataset {
    pub fn new(images: Vec<u8>, labels: Vec<u8>) -> Self {
        assert_eq!(
            images.len(),
            labels.len() * IMAGE_PIXELS,
            "one label per image"
        );
        Dataset { images, labels }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 784 pixels of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        &self.images[index * IMAGE_PIXELS..(index + 1) * IMAGE_PIXELS]
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        counts
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * IMAGE_PIXELS);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset { images, labels }
    }

    /// SHA-256 (hex) of the exact images and labels: what results reused from disk are keyed by.
    pub fn fingerprint(&self) -> String {
        crate::resume::fingerprint([self.images.as_slice(), &self.labels])
    }

    /// The first `n` images (all of them when `n` is larger).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * IMAGE_PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }
}
