//! Where the data comes from, in order: a path the user gives, `./data/fashion-mnist/`, the
//! Debian package's `/usr/share/datasets/fashion-mnist/`, else a download from Zalando's
//! mirror. Content is verified by the SHA-256 of the decompressed IDX files.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{csv, idx, Dataset};
use crate::error::{DataError, DataResult};

/// The four original files: name (without `.gz`), decompressed size, SHA-256 of the
/// decompressed content.
pub const IDX_FILES: [(&str, u64, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        47_040_016,
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte",
        60_008,
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte",
        7_840_016,
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte",
        10_008,
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// The committed sample (`data/sample/idx/`): the first 2,000 training and 1,000 test images
/// of the files above, as IDX: name, decompressed size, SHA-256 of the decompressed content.
pub const SAMPLE_IDX_FILES: [(&str, u64, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        1_568_016,
        "71a9f8cec24060d6752b3e4940ce6d6fd729334afa47b735dd553481aa83b53e",
    ),
    (
        "train-labels-idx1-ubyte",
        2_008,
        "8983259dfbc9f185f92698916f7daf361704b43ba7d19568cc7bcdeefdc1bece",
    ),
    (
        "t10k-images-idx3-ubyte",
        784_016,
        "7a6d8e07ea021ec5bc73135ebd0a5770799557ec6f8242d8749c4f32a3cf4643",
    ),
    (
        "t10k-labels-idx1-ubyte",
        1_008,
        "b40abac7ec8228f434940f579deb7cf7b6e3103b5274cb91d1545771f5ef1c8b",
    ),
];

/// Kaggle's CSV export names.
pub const KAGGLE_TRAIN_CSV: &str = "fashion-mnist_train.csv";
pub const KAGGLE_TEST_CSV: &str = "fashion-mnist_test.csv";

/// Zalando's official mirror (from the fashion-mnist README). `FASHION_MNIST_MIRROR` overrides it.
pub const ZALANDO_MIRROR: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
/// Project-local data directory.
pub const PROJECT_DATA_DIR: &str = "data/fashion-mnist";
/// Where Debian's `dataset-fashion-mnist` package installs the files.
pub const DEBIAN_DATA_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Origin {
    UserPath,
    ProjectDir,
    DebianPackage,
    Downloaded,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::UserPath => "the path given",
            Origin::ProjectDir => "the project data directory",
            Origin::DebianPackage => "Debian package dataset-fashion-mnist",
            Origin::Downloaded => "download from Zalando's mirror",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum DataFormat {
    /// The original IDX files (`.gz` or raw).
    Idx,
    /// Kaggle's CSV export.
    KaggleCsv,
}

/// A directory (or CSV file) holding the data, and how it was found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Located {
    pub train: PathBuf,
    pub train_labels: Option<PathBuf>,
    pub test: Option<PathBuf>,
    pub test_labels: Option<PathBuf>,
    pub origin: Origin,
    pub format: DataFormat,
}

/// Result of checking content against the published checksums.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Verification {
    /// All files match the published content.
    Verified,
    /// Some file differs (names the files).
    Mismatch(Vec<String>),
    /// CSV input: there is no published checksum to compare with.
    NotApplicable,
    /// The committed sample: the first images of the published files ([`SAMPLE_IDX_FILES`]).
    Sample,
}

/// The loaded training and test sets.
#[derive(Clone, Debug)]
pub struct FashionMnist {
    pub train: Dataset,
    pub test: Option<Dataset>,
    pub located: Located,
    pub verification: Verification,
}

fn idx_file_in(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

fn locate_in(dir: &Path, origin: Origin) -> Option<Located> {
    let idx: Vec<Option<PathBuf>> = IDX_FILES
        .iter()
        .map(|(name, _, _)| idx_file_in(dir, name))
        .collect();
    if let (Some(train), Some(train_labels)) = (&idx[0], &idx[1]) {
        return Some(Located {
            train: train.clone(),
            train_labels: Some(train_labels.clone()),
            test: idx[2].clone(),
            test_labels: idx[3].clone(),
            origin,
            format: DataFormat::Idx,
        });
    }
    let train_csv = dir.join(KAGGLE_TRAIN_CSV);
    train_csv.is_file().then(|| {
        let test_csv = dir.join(KAGGLE_TEST_CSV);
        Located {
            train: train_csv,
            train_labels: None,
            test: test_csv.is_file().then_some(test_csv),
            test_labels: None,
            origin,
            format: DataFormat::KaggleCsv,
        }
    })
}

/// What `--data PATH` holds: a Kaggle CSV file, or a directory with IDX files or Kaggle CSVs.
fn locate_user_path(path: &Path) -> DataResult<Located> {
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            DataError::invalid(path, "--data: no such file or directory")
        }
        std::io::ErrorKind::PermissionDenied => {
            DataError::invalid(path, "--data: permission denied")
        }
        _ => DataError::io(path, e),
    })?;
    if metadata.is_file() {
        return Ok(Located {
            train: path.to_path_buf(),
            train_labels: None,
            test: None,
            test_labels: None,
            origin: Origin::UserPath,
            format: DataFormat::KaggleCsv,
        });
    }
    if !metadata.is_dir() {
        return Err(DataError::invalid(
            path,
            "--data: neither a regular file nor a directory (a device, pipe or socket?); give a Kaggle CSV file or a directory",
        ));
    }
    let listing = std::fs::read_dir(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => DataError::invalid(
            path,
            "--data: permission denied (the directory cannot be listed)",
        ),
        _ => DataError::io(path, e),
    })?;
    drop(listing);
    if let Some(found) = locate_in(path, Origin::UserPath) {
        let idx = found.format == DataFormat::Idx;
        if idx && found.test.is_some() != found.test_labels.is_some() {
            let missing = if found.test.is_some() {
                IDX_FILES[3].0
            } else {
                IDX_FILES[2].0
            };
            return Err(DataError::invalid(
                path,
                format!(
                    "--data: the directory holds half of the test set: {missing}[.gz] is missing"
                ),
            ));
        }
        return Ok(found);
    }
    let (present, missing): (Vec<&str>, Vec<&str>) = IDX_FILES
        .iter()
        .map(|(name, _, _)| *name)
        .partition(|name| idx_file_in(path, name).is_some());
    Err(DataError::invalid(
        path,
        if present.is_empty() {
            format!(
                "--data: the directory holds neither the IDX files ({}[.gz], ...) nor {KAGGLE_TRAIN_CSV}",
                IDX_FILES[0].0
            )
        } else {
            format!(
                "--data: the directory holds {} but not {} (each with or without .gz)",
                present.join(", "),
                missing.join(", ")
            )
        },
    ))
}

/// Finds the data without downloading. `user_path` may be a directory (IDX files or Kaggle
/// CSVs) or a Kaggle-format CSV file (the training set).
pub fn locate(user_path: Option<&Path>) -> DataResult<Located> {
    if let Some(path) = user_path {
        return locate_user_path(path);
    }
    let candidates = [
        (PathBuf::from(PROJECT_DATA_DIR), Origin::ProjectDir),
        (PathBuf::from(DEBIAN_DATA_DIR), Origin::DebianPackage),
    ];
    for (dir, origin) in &candidates {
        if let Some(found) = locate_in(dir, *origin) {
            return Ok(found);
        }
    }
    Err(DataError::NotFound {
        searched: candidates
            .iter()
            .map(|(d, _)| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The files of `hashes` (path, SHA-256 of the content) that differ from `table`.
fn mismatches(hashes: &[(&Path, String)], table: &[(&str, u64, &str); 4]) -> Vec<String> {
    hashes
        .iter()
        .filter(|(path, actual)| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().trim_end_matches(".gz").to_string())
                .unwrap_or_default();
            !table
                .iter()
                .any(|(n, _, expected)| *n == name && expected == actual)
        })
        .map(|(path, _)| path.display().to_string())
        .collect()
}

/// Loads what [`locate`] found, verifying IDX content against the published checksums.
pub fn load(located: &Located) -> DataResult<FashionMnist> {
    match located.format {
        DataFormat::Idx => {
            let train_labels = located.train_labels.as_ref().expect("IDX has labels");
            let (train, [h_img, h_lab]) = idx::read_pair(&located.train, train_labels)?;
            let mut hashes = vec![
                (located.train.as_path(), h_img),
                (train_labels.as_path(), h_lab),
            ];
            let test = match (&located.test, &located.test_labels) {
                (Some(images), Some(labels)) => {
                    let (test, [h_img, h_lab]) = idx::read_pair(images, labels)?;
                    hashes.extend([(images.as_path(), h_img), (labels.as_path(), h_lab)]);
                    Some(test)
                }
                _ => None,
            };
            let differ = mismatches(&hashes, &IDX_FILES);
            Ok(FashionMnist {
                train,
                test,
                located: located.clone(),
                verification: if differ.is_empty() {
                    Verification::Verified
                } else if mismatches(&hashes, &SAMPLE_IDX_FILES).is_empty() {
                    Verification::Sample
                } else {
                    Verification::Mismatch(differ)
                },
            })
        }
        DataFormat::KaggleCsv => Ok(FashionMnist {
            train: csv::read_kaggle_csv(&located.train)?,
            test: located
                .test
                .as_deref()
                .map(csv::read_kaggle_csv)
                .transpose()?,
            located: located.clone(),
            verification: Verification::NotApplicable,
        }),
    }
}

/// Finds and loads the data; when nothing is found and `download` is set, downloads it from
/// the mirror into `./data/fashion-mnist/` first.
pub fn find_and_load(user_path: Option<&Path>, download: bool) -> DataResult<FashionMnist> {
    match locate(user_path) {
        Ok(found) => load(&found),
        Err(DataError::NotFound { .. }) if download => {
            let mirror =
                std::env::var("FASHION_MNIST_MIRROR").unwrap_or_else(|_| ZALANDO_MIRROR.into());
            download_all(&mirror, Path::new(PROJECT_DATA_DIR))?;
            let mut found = locate_in(Path::new(PROJECT_DATA_DIR), Origin::Downloaded)
                .expect("just downloaded");
            found.origin = Origin::Downloaded;
            load(&found)
        }
        Err(e) => Err(e),
    }
}

/// Downloads the four `.gz` files from `mirror` (a base URL) into `dest`, verifying each
/// before it is renamed to its final name. Files already present and valid are kept.
pub fn download_all(mirror: &str, dest: &Path) -> DataResult<Vec<PathBuf>> {
    IDX_FILES
        .iter()
        .map(|(name, _, _)| download_file(mirror, name, dest))
        .collect()
}

/// Downloads `{mirror}/{name}.gz` into `dest/{name}.gz`, where `name` is one of
/// [`IDX_FILES`]. The file appears under its final name only after its decompressed content
/// matched the published SHA-256; on any failure nothing is left behind.
pub fn download_file(mirror: &str, name: &str, dest: &Path) -> DataResult<PathBuf> {
    let (_, size, sha256) = IDX_FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| DataError::invalid(name, "not one of the four Fashion-MNIST files"))?;
    let (size, sha256) = (*size, *sha256);
    let target = dest.join(format!("{name}.gz"));
    if target.is_file() {
        if let Ok(existing) = idx::read_maybe_gz(&target) {
            if existing.sha256 == sha256 {
                return Ok(target);
            }
        }
    }
    let url = format!("{}/{name}.gz", mirror.trim_end_matches('/'));
    let download_error = |message: String| DataError::Download {
        url: url.clone(),
        message,
    };
    let response = ureq::get(&url)
        .timeout(std::time::Duration::from_secs(300))
        .call()
        .map_err(|e| download_error(e.to_string()))?;
    let announced: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.parse().ok());
    let mut body = Vec::new();
    response
        .into_reader()
        .take(1 << 30)
        .read_to_end(&mut body)
        .map_err(|e| download_error(format!("connection broke: {e}")))?;
    if let Some(expected) = announced {
        if body.len() as u64 != expected {
            return Err(download_error(format!(
                "truncated: received {} of {expected} bytes",
                body.len()
            )));
        }
    }
    let mut decompressed = Vec::with_capacity(size as usize);
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut decompressed)
        .map_err(|e| download_error(format!("not a complete gzip stream: {e}")))?;
    use sha2::Digest;
    let actual = hex::encode(sha2::Sha256::digest(&decompressed));
    if actual != sha256 {
        return Err(DataError::Checksum {
            path: PathBuf::from(url.clone()),
            expected: sha256.to_string(),
            actual,
        });
    }
    crate::fsutil::write_bytes_atomically(&target, &body)?;
    Ok(target)
}
