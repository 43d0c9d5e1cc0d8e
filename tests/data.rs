//! Loaders with real values, every bad-input case, EDA duplicates, splits, folds, resizing.

use std::path::{Path, PathBuf};

use fashion_mnist::data::prepare::{
    kfold_indices, one_hot, resize_bilinear, scale_to_unit, train_validation_split,
};
use fashion_mnist::data::{csv, eda, idx, source, Dataset, IMAGE_PIXELS};
use fashion_mnist::DataError;

const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample")
}

fn real_data_present() -> bool {
    Path::new(DEBIAN_DIR)
        .join("train-images-idx3-ubyte.gz")
        .is_file()
}

#[test]
fn real_idx_files_load_verify_and_have_the_published_first_labels() {
    if !real_data_present() {
        eprintln!("skipped: {DEBIAN_DIR} not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    let located = source::locate(Some(Path::new(DEBIAN_DIR))).unwrap();
    let loaded = source::load(&located).unwrap();
    assert_eq!(loaded.verification, source::Verification::Verified);
    assert_eq!(loaded.train.len(), 60_000);
    let test = loaded.test.as_ref().unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(&loaded.train.labels[..10], &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    assert_eq!(&test.labels[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    assert_eq!(loaded.train.class_counts(), [6000; 10]);
    assert_eq!(test.class_counts(), [1000; 10]);
    // The committed sample is the first rows of the real files, exported as Kaggle CSV.
    let sample = csv::read_kaggle_csv(&sample_dir().join("fashion-mnist_train.csv")).unwrap();
    assert_eq!(sample, loaded.train.head(200));
}

#[test]
fn sample_csv_has_real_values() {
    let sample = csv::read_kaggle_csv(&sample_dir().join("fashion-mnist_train.csv")).unwrap();
    assert_eq!(sample.len(), 200);
    assert_eq!(&sample.labels[..10], &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    // First image (an ankle boot): dark border, bright object.
    let first = sample.image(0);
    assert_eq!(first[0], 0);
    assert!(first.iter().filter(|&&p| p > 100).count() > 200);
    let sum: u64 = first.iter().map(|&p| p as u64).sum();
    assert!(sum > 50_000, "pixel sum {sum}");
}

fn write_temp(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

fn header() -> String {
    let mut h = String::from("label");
    for i in 1..=IMAGE_PIXELS {
        h.push_str(&format!(",pixel{i}"));
    }
    h
}

fn row(label: &str, pixels: &[String]) -> String {
    format!("{label},{}", pixels.join(","))
}

fn zeros() -> Vec<String> {
    vec!["0".to_string(); IMAGE_PIXELS]
}

/// Reads `content` as CSV and returns the error's (row, column, message).
fn csv_error(content: String) -> (u64, String, String) {
    let (_dir, path) = write_temp("bad.csv", content.as_bytes());
    match csv::read_kaggle_csv(&path) {
        Err(DataError::Malformed {
            path: p,
            row,
            column,
            message,
        }) => {
            assert_eq!(p, path);
            let full = DataError::Malformed {
                path: p,
                row,
                column: column.clone(),
                message: message.clone(),
            }
            .to_string();
            assert!(
                full.contains("bad.csv") && full.contains(&format!("row {row}")),
                "{full}"
            );
            (row, column, message)
        }
        other => panic!("expected a Malformed error, got {other:?}"),
    }
}

#[test]
fn csv_errors_name_file_row_and_column() {
    let good = row("3", &zeros());

    let (r, c, m) = csv_error("lable,pixel1\n".to_string());
    assert_eq!((r, c.as_str()), (1, "label"));
    assert!(m.contains("lable"), "{m}");

    let (r, c, _) = csv_error(header().replace(",pixel7,", ",pixel77,") + "\n");
    assert_eq!((r, c.as_str()), (1, "pixel7"));

    let (r, c, m) = csv_error(String::new());
    assert_eq!((r, c.as_str()), (1, "label"));
    assert!(m.contains("empty"), "{m}");

    let short = row("1", &zeros()[..700]);
    let (r, c, m) = csv_error(format!("{}\n{good}\n{short}\n", header()));
    assert_eq!((r, c.as_str()), (3, "pixel701"), "first missing column");
    assert!(m.contains("701 values"), "{m}");

    let long = format!("{good},0");
    let (r, c, _) = csv_error(format!("{}\n{long}\n", header()));
    assert_eq!((r, c.as_str()), (2, "786 (after pixel784)"));

    let mut pixels = zeros();
    pixels[41] = "1.5".into();
    let (r, c, m) = csv_error(format!(
        "{}\n{good}\n{good}\n{}\n",
        header(),
        row("2", &pixels)
    ));
    assert_eq!((r, c.as_str()), (4, "pixel42"));
    assert!(m.contains("not an integer"), "{m}");

    let mut pixels = zeros();
    pixels[783] = "256".into();
    let (r, c, m) = csv_error(format!("{}\n{}\n", header(), row("2", &pixels)));
    assert_eq!((r, c.as_str()), (2, "pixel784"));
    assert!(m.contains("outside 0-255"), "{m}");

    let (r, c, m) = csv_error(format!("{}\n{}\n", header(), row("10", &zeros())));
    assert_eq!((r, c.as_str()), (2, "label"));
    assert!(m.contains("outside 0-9"), "{m}");

    let mut pixels = zeros();
    pixels[0] = "".into();
    let (r, c, m) = csv_error(format!("{}\n{}\n", header(), row("2", &pixels)));
    assert_eq!((r, c.as_str()), (2, "pixel1"));
    assert!(m.contains("missing"), "{m}");
}

#[test]
fn csv_round_trips_through_the_writer() {
    let sample = csv::read_kaggle_csv(&sample_dir().join("fashion-mnist_test.csv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    csv::write_kaggle_csv(&sample, &path).unwrap();
    assert_eq!(csv::read_kaggle_csv(&path).unwrap(), sample);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(sample_dir().join("fashion-mnist_test.csv")).unwrap()
    );
}

fn tiny_dataset() -> Dataset {
    let images: Vec<u8> = (0..3 * IMAGE_PIXELS).map(|i| (i % 251) as u8).collect();
    Dataset::new(images, vec![1, 7, 9])
}

#[test]
fn idx_reads_raw_and_gzip_and_rejects_bad_files() {
    let data = tiny_dataset();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images-idx3-ubyte");
    let labels = dir.path().join("labels-idx1-ubyte.gz");
    std::fs::write(&images, idx::encode_images(&data.images, 3)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &idx::encode_labels(&data.labels)).unwrap();
    std::fs::write(&labels, gz.finish().unwrap()).unwrap();
    let (read, _) = idx::read_pair(&images, &labels).unwrap();
    assert_eq!(read, data);

    // Truncated: the last image is cut short.
    let mut bytes = idx::encode_images(&data.images, 3);
    bytes.truncate(bytes.len() - 100);
    let err = idx::parse_images(Path::new("t.idx"), &bytes).unwrap_err();
    match &err {
        DataError::Malformed {
            row,
            column,
            message,
            ..
        } => {
            assert_eq!(*row, 2);
            assert_eq!(column, "pixel 684");
            assert!(message.contains("truncated"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().starts_with("t.idx: row 2"), "{err}");

    // Truncated inside the header.
    let err = idx::parse_images(Path::new("t.idx"), &bytes[..10]).unwrap_err();
    assert!(err.to_string().contains("inside the IDX header"), "{err}");

    // Wrong magic: a labels file read as images.
    let err = idx::parse_images(Path::new("l.idx"), &idx::encode_labels(&data.labels)).unwrap_err();
    assert!(
        err.to_string()
            .contains("column magic: wrong magic number 0x00000801"),
        "{err}"
    );

    // A truncated gzip stream.
    let stored = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &stored[..stored.len() / 2]).unwrap();
    let err = idx::read_maybe_gz(&labels).unwrap_err();
    assert!(err.to_string().contains("corrupt or truncated"), "{err}");

    // A label outside 0-9.
    let err = idx::parse_labels(Path::new("l.idx"), &idx::encode_labels(&[1, 2, 12])).unwrap_err();
    assert!(
        err.to_string().contains("row 2, column label: label 12"),
        "{err}"
    );
}

#[test]
fn locate_prefers_the_given_path_and_reports_bad_ones() {
    let found = source::locate(Some(&sample_dir())).unwrap();
    assert_eq!(found.origin, source::Origin::UserPath);
    assert_eq!(found.format, source::DataFormat::KaggleCsv);
    assert!(found.test.is_some());
    let loaded = source::load(&found).unwrap();
    assert_eq!(loaded.verification, source::Verification::NotApplicable);
    assert_eq!((loaded.train.len(), loaded.test.unwrap().len()), (200, 100));

    let err = source::locate(Some(Path::new("/no/such/dir"))).unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = source::locate(Some(empty.path())).unwrap_err();
    assert!(err.to_string().contains("neither the IDX files"), "{err}");
}

#[test]
fn eda_counts_and_drops_planted_duplicates_keeping_first() {
    let sample = csv::read_kaggle_csv(&sample_dir().join("fashion-mnist_train.csv")).unwrap();
    let clean = eda::to_dataframe(&sample).unwrap();
    assert_eq!(clean.shape(), (200, 785));
    assert_eq!(eda::duplicate_count(&clean).unwrap(), 0);
    assert_eq!(eda::missing_values(&clean).1, 0);

    // Plant 5 duplicates: rows 3 (twice), 10, 150, and row 0 at the end.
    let planted: Vec<usize> = (0..200).chain([3, 3, 10, 150, 0]).collect();
    let with_duplicates = sample.subset(&planted);
    let df = eda::to_dataframe(&with_duplicates).unwrap();
    assert_eq!(eda::duplicate_count(&df).unwrap(), 5);
    let dropped = eda::drop_duplicates(&df).unwrap();
    assert_eq!(dropped.height(), 200);
    assert_eq!(
        eda::from_dataframe(&dropped).unwrap(),
        sample,
        "keeps first, in order"
    );

    // Same pixels, different label: not a duplicate row.
    let mut relabeled = sample.subset(&[0, 0]);
    relabeled.labels[1] = 3;
    let df = eda::to_dataframe(&relabeled).unwrap();
    assert_eq!(eda::duplicate_count(&df).unwrap(), 0);

    let counts = eda::class_counts(&clean).unwrap();
    let total: u32 = counts
        .column("count")
        .unwrap()
        .u32()
        .unwrap()
        .into_no_null_iter()
        .sum();
    assert_eq!(total, 200);
}

#[test]
fn preparation_scales_encodes_and_splits() {
    assert_eq!(scale_to_unit(&[0, 51, 255]), vec![0.0, 0.2, 1.0]);
    assert_eq!(one_hot(&[2, 0]), {
        let mut v = vec![0.0; 20];
        v[2] = 1.0;
        v[10] = 1.0;
        v
    });
    let labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
    let split = train_validation_split(&labels, 0.2, 42, false);
    assert_eq!((split.train.len(), split.validation.len()), (800, 200));
    let mut all: Vec<usize> = split
        .train
        .iter()
        .chain(&split.validation)
        .copied()
        .collect();
    all.sort();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    assert_eq!(
        split,
        train_validation_split(&labels, 0.2, 42, false),
        "seeded"
    );
    assert_ne!(split, train_validation_split(&labels, 0.2, 43, false));
    assert_ne!(
        split.validation[..10],
        (0..10).collect::<Vec<_>>()[..],
        "shuffled"
    );

    let stratified = train_validation_split(&labels, 0.2, 42, true);
    for class in 0..10u8 {
        let n = stratified
            .validation
            .iter()
            .filter(|&&i| labels[i] == class)
            .count();
        assert_eq!(n, 20, "class {class}");
    }
}

#[test]
fn kfold_partitions_exactly_without_overlap() {
    let labels: Vec<u8> = (0..1003).map(|i| (i * 7 % 10) as u8).collect();
    for stratified in [false, true] {
        let folds = kfold_indices(&labels, 5, 42, stratified);
        assert_eq!(folds.len(), 5);
        let mut seen = vec![0u32; labels.len()];
        for fold in &folds {
            assert!(
                (200..=201).contains(&fold.validation.len()),
                "{}",
                fold.validation.len()
            );
            assert_eq!(fold.train.len() + fold.validation.len(), labels.len());
            for &i in &fold.validation {
                seen[i] += 1;
                assert!(!fold.train.contains(&i));
            }
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "every image validates exactly once"
        );
        assert_eq!(folds, kfold_indices(&labels, 5, 42, stratified));
    }
}

#[test]
fn bilinear_resize_follows_tensorflow_half_pixel_rule() {
    // A 2x2 image upsampled to 4x4: corners stay, edges interpolate at 1/4 and 3/4.
    let out = resize_bilinear(&[0.0, 4.0, 8.0, 12.0], 2, 2, 4, 4);
    assert_eq!(&out[..4], &[0.0, 1.0, 3.0, 4.0]);
    assert_eq!(&out[12..], &[8.0, 9.0, 11.0, 12.0]);
    let same = resize_bilinear(&[1.0, 2.0, 3.0, 4.0], 2, 2, 2, 2);
    assert_eq!(same, vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn resize_matches_keras_reference_for_real_test_images() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/vgg16_imagenet_parity.safetensors");
    if !reference.is_file() || !real_data_present() {
        eprintln!("skipped: Keras reference or real data not present");
        return;
    }
    let bytes = std::fs::read(&reference).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let raw = tensors.tensor("raw_input").unwrap();
    assert_eq!(raw.shape(), &[4, 32, 32, 3]);
    let keras: Vec<f32> = raw
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let located = source::locate(Some(Path::new(DEBIAN_DIR))).unwrap();
    let test = source::load(&located).unwrap().test.unwrap();
    for n in 0..4 {
        let pixels: Vec<f32> = test.image(n).iter().map(|&p| p as f32).collect();
        let ours = resize_bilinear(&pixels, 28, 28, 32, 32);
        for (i, v) in ours.iter().enumerate() {
            let k = keras[(n * 1024 + i) * 3];
            assert!(
                (v - k).abs() < 1e-3,
                "image {n} pixel {i}: ours {v}, Keras {k}"
            );
        }
    }
}
