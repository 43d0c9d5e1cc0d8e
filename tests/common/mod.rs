//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fashion_mnist::data::{source, Dataset, FashionMnist};

/// The full Fashion-MNIST files: `$FASHION_MNIST_DATA` (a directory with the IDX files; for
/// test binaries copied to another machine) or the Debian package (CI installs it), if present.
pub fn full_data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FASHION_MNIST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(source::DEBIAN_DATA_DIR).to_path_buf());
    dir.join("train-images-idx3-ubyte.gz")
        .is_file()
        .then_some(dir)
}

/// The committed sample: the first 2,000 training and 1,000 test images of the real files.
pub fn sample_idx_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/idx")
}

/// Real images: the full files when present, else the committed sample (a fresh machine).
pub fn real_data() -> FashionMnist {
    let dir = full_data_dir().unwrap_or_else(|| {
        eprintln!("note: full data not installed; using the committed 2,000/1,000-image sample");
        sample_idx_dir()
    });
    source::load(&source::locate(Some(&dir)).unwrap()).unwrap()
}

/// Up to `train` real training images and `test` real test images.
pub fn real_images(train: usize, test: usize) -> (Dataset, Dataset) {
    let data = real_data();
    (data.train.head(train), data.test.unwrap().head(test))
}

/// A few thousand real training images and 1,000 held-out test images.
pub fn real_train_and_heldout() -> (Dataset, Dataset) {
    real_images(4000, 1000)
}
