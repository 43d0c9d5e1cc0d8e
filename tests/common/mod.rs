//! Helpers shared by the integration tests.

use std::path::Path;

use fashion_mnist::data::{csv, source, Dataset};

/// A few thousand real training images from `$FASHION_MNIST_DATA` (a directory with the IDX
/// files; for test binaries copied to another machine) or the Debian package (CI installs it),
/// else the committed 200-image sample.
pub fn real_train_and_heldout() -> (Dataset, Dataset) {
    let from_env = std::env::var_os("FASHION_MNIST_DATA").map(std::path::PathBuf::from);
    let debian = from_env.unwrap_or_else(|| Path::new(source::DEBIAN_DATA_DIR).to_path_buf());
    if debian.join("train-images-idx3-ubyte.gz").is_file() {
        let loaded = source::load(&source::locate(Some(&debian)).unwrap()).unwrap();
        (loaded.train.head(4000), loaded.test.unwrap().head(1000))
    } else {
        eprintln!("note: real IDX files not installed; using the 200-image sample");
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
        (
            csv::read_kaggle_csv(&sample.join("fashion-mnist_train.csv")).unwrap(),
            csv::read_kaggle_csv(&sample.join("fashion-mnist_test.csv")).unwrap(),
        )
    }
}
