//! Every chart renders to SVG with its labels and rasterizes to PNG; the tables render.
//! The files land in target/test-charts/ for a look.

use std::path::{Path, PathBuf};

use fashion_mnist::data::{csv, eda, CLASS_NAMES};
use fashion_mnist::notebook;
use fashion_mnist::plots::{self, Chart, Series};
use fashion_mnist::report::Table;
use fashion_mnist::training::{ConfusionMatrix, EpochRecord, History};

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-charts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn check(chart: &Chart, name: &str, expected_texts: &[&str]) {
    let svg = chart.svg();
    assert!(svg.starts_with("<svg"), "{name}: not SVG");
    for text in expected_texts {
        assert!(svg.contains(text), "{name}: {text:?} missing from the SVG");
    }
    let png = chart.to_png().unwrap();
    assert_eq!(&png[1..4], b"PNG", "{name}: PNG signature");
    chart.save(&out_dir().join(format!("{name}.svg"))).unwrap();
    chart.save(&out_dir().join(format!("{name}.png"))).unwrap();
    let err = chart
        .save(&out_dir().join(format!("{name}.gif")))
        .unwrap_err();
    assert!(err.to_string().contains(".svg or .png"), "{err}");
}

fn sample() -> fashion_mnist::data::Dataset {
    csv::read_kaggle_csv(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/fashion-mnist_train.csv"),
    )
    .unwrap()
}

#[test]
fn charts_render_with_their_labels() {
    let history = History {
        epochs: (1..=5)
            .map(|e| EpochRecord {
                epoch: e,
                loss: 1.0 / e as f64,
                accuracy: 0.6 + 0.05 * e as f64,
                val_loss: Some(1.1 / e as f64),
                val_accuracy: Some(0.58 + 0.05 * e as f64),
                seconds: 1.0,
            })
            .collect(),
        ..Default::default()
    };
    check(
        &plots::training_curves(&history, "LeNet-5").unwrap(),
        "curves",
        &["LeNet-5: accuracy", "validation", "epoch"],
    );
    check(
        &plots::line_chart(
            "Folds",
            "epoch",
            "val accuracy",
            &[
                Series::per_epoch("fold 1", &[0.8, 0.85]),
                Series::per_epoch("fold 2", &[0.82, 0.86]),
            ],
        )
        .unwrap(),
        "lines",
        &["fold 1", "fold 2", "val accuracy"],
    );

    let data = sample();
    let df = eda::to_dataframe(&data).unwrap();
    check(
        &notebook::class_counts_chart(&df).unwrap(),
        "class-counts",
        &["Images per class", "Ankle boot"],
    );
    check(
        &notebook::mean_image_heatmap(&data).unwrap(),
        "heatmap",
        &["Mean pixel value over 200 images"],
    );
    let grid = notebook::samples_by_class(&data, 2).unwrap();
    check(
        &grid,
        "samples",
        &["Samples of each class", "Trouser", "data:image/png;base64"],
    );

    let truth: Vec<u8> = data.labels.clone();
    let predicted: Vec<u8> = truth.iter().map(|&t| if t == 6 { 0 } else { t }).collect();
    let matrix = ConfusionMatrix::new(&truth, &predicted);
    check(
        &plots::confusion_matrix_chart(&matrix, &CLASS_NAMES, "Confusion").unwrap(),
        "confusion",
        &["predicted class", "true class", "Shirt"],
    );
}

#[test]
fn tables_render_as_html_and_text() {
    let data = sample();
    let df = eda::to_dataframe(&data).unwrap();
    let head = notebook::head_table(&df, 3);
    assert_eq!(head.rows.len(), 3);
    assert_eq!(head.headers[0], "label");
    assert_eq!(head.rows[0][0], "9");
    let html = head.to_html();
    assert!(html.starts_with("<table") && html.contains("<th") && html.contains(">pixel784<"));
    let text = head.to_string();
    assert!(text.lines().count() == 5, "{text}");

    let mut table = Table::new(&["a", "b<c"]);
    table.push(vec!["1".into(), "x&y".into()]);
    assert!(table.to_html().contains("b&lt;c") && table.to_html().contains("x&amp;y"));
}
