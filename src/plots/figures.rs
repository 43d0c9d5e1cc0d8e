//! The study's figures, drawn from its data types with the chart kinds of [`super`]: what the
//! notebooks, the CLI and the HTML report show.

use polars::prelude::DataFrame;

use super::{
    bar_chart, heatmap, image_grid, labelled_scatter_panels, line_chart, scatter_colored, Chart,
    LabelledPoint, PlotError, Series,
};
use crate::cross_validation::FoldRecord;
use crate::data::prepare::{resize_bilinear, Prepared};
use crate::data::{eda, Dataset, CLASS_NAMES, IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES};
use crate::pipeline::comparison::{
    ComparisonRow, WALKTHROUGH_LENET5, WALKTHROUGH_RESNET50, WALKTHROUGH_VGG16,
};
use crate::training::{EpochRecord, Evaluation, History};
use crate::transfer::TransferOutcome;
use crate::tuning::{Objective, TuningResults};

/// Bar chart of images per class of a Kaggle-format table.
pub fn class_counts_chart(df: &DataFrame) -> Result<Chart, PlotError> {
    let counts = eda::class_counts(df)?;
    let values: Vec<f64> = counts
        .column("count")?
        .u32()?
        .into_no_null_iter()
        .map(|c| c as f64)
        .collect();
    class_bars(&values)
}

/// Bar chart of a count per class.
pub fn class_bars(counts: &[f64]) -> Result<Chart, PlotError> {
    let labels: Vec<String> = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    bar_chart("Images per class", "images", &labels, counts)
}

/// Heatmap of the mean intensity of every pixel over all images.
pub fn mean_image_heatmap(dataset: &Dataset) -> Result<Chart, PlotError> {
    let mut sums = vec![0f64; IMAGE_PIXELS];
    for image in dataset.images.chunks_exact(IMAGE_PIXELS) {
        for (s, &p) in sums.iter_mut().zip(image) {
            *s += p as f64;
        }
    }
    let n = dataset.len().max(1) as f64;
    let means: Vec<f64> = sums.iter().map(|s| s / n).collect();
    heatmap(
        &format!("Mean pixel value over {} images", dataset.len()),
        &means,
        IMAGE_SIDE,
        IMAGE_SIDE,
    )
}

/// `per_class` sample images of every class, one column per class.
pub fn samples_by_class(dataset: &Dataset, per_class: usize) -> Result<Chart, PlotError> {
    let mut picked: Vec<Vec<usize>> = vec![Vec::new(); NUM_CLASSES];
    for (i, &label) in dataset.labels.iter().enumerate() {
        let slot = &mut picked[label as usize];
        if slot.len() < per_class {
            slot.push(i);
        }
    }
    let (mut images, mut captions) = (Vec::new(), Vec::new());
    for row in 0..per_class {
        for (class, indices) in picked.iter().enumerate() {
            if let Some(&i) = indices.get(row) {
                images.push(dataset.image(i).to_vec());
                captions.push(CLASS_NAMES[class].to_string());
            }
        }
    }
    image_grid(
        "Samples of each class",
        &images,
        IMAGE_SIDE,
        &captions,
        NUM_CLASSES,
    )
}

/// Validation accuracy per epoch of several runs, one line each.
pub fn compare_runs_chart(runs: &[(&str, &History)]) -> Result<Chart, PlotError> {
    let series: Vec<Series> = runs
        .iter()
        .map(|(name, history)| {
            Series::new(
                *name,
                history
                    .epochs
                    .iter()
                    .filter_map(|r| r.val_accuracy.map(|a| (r.epoch as f64, a)))
                    .collect(),
            )
        })
        .collect();
    line_chart(
        "Validation accuracy per epoch",
        "epoch",
        "validation accuracy",
        &series,
    )
}

/// Confusion matrix of an evaluation on `data`.
pub fn confusion_chart(evaluation: &Evaluation, data: &Prepared) -> Result<Chart, PlotError> {
    let matrix = evaluation.confusion_matrix(&data.labels);
    super::confusion_matrix_chart(
        &matrix,
        &CLASS_NAMES,
        &format!(
            "Confusion matrix ({} images, accuracy {:.4})",
            data.len(),
            matrix.accuracy()
        ),
    )
}

/// The first `count` misclassified images, captioned "true -> predicted".
pub fn misclassified_grid(
    evaluation: &Evaluation,
    data: &Prepared,
    count: usize,
) -> Result<Chart, PlotError> {
    let (mut images, mut captions) = (Vec::new(), Vec::new());
    for (i, (&truth, &predicted)) in data.labels.iter().zip(&evaluation.predicted).enumerate() {
        if truth != predicted && images.len() < count {
            images.push(
                data.image(i)
                    .iter()
                    .map(|&v| (v * 255.0).round() as u8)
                    .collect(),
            );
            captions.push(format!(
                "{} -> {}",
                CLASS_NAMES[truth as usize], CLASS_NAMES[predicted as usize]
            ));
        }
    }
    image_grid(
        "Misclassified test images (true -> predicted)",
        &images,
        IMAGE_SIDE,
        &captions,
        6,
    )
}

fn objective_label(objective: Option<Objective>) -> &'static str {
    match objective.unwrap_or(Objective::MaxValAccuracy) {
        Objective::MaxValAccuracy => "validation accuracy",
        Objective::MinValLoss => "validation loss",
    }
}

/// The objective's score of every trial, in trial order, one line per rung.
pub fn trial_scores_chart(results: &TuningResults, name: &str) -> Result<Chart, PlotError> {
    let mut by_rung: Vec<Series> = Vec::new();
    let last = results.trials.iter().map(|t| t.rung).max().unwrap_or(0);
    for rung in 0..=last {
        let mut points: Vec<(f64, f64)> = results
            .trials
            .iter()
            .filter(|t| t.rung == rung)
            .map(|t| (t.trial as f64, t.score))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let epochs = results
            .trials
            .iter()
            .find(|t| t.rung == rung)
            .map_or(0, |t| t.epochs);
        by_rung.push(Series::new(format!("{epochs} epochs"), points));
    }
    line_chart(
        &format!("{name}: score per trial"),
        "trial",
        objective_label(results.objective),
        &by_rung,
    )
}

/// The trials of the last rung placed by their first two hyperparameters, coloured by score.
/// A value range over more than a factor 10 is shown as log10.
pub fn search_space_chart(results: &TuningResults, name: &str) -> Result<Chart, PlotError> {
    let ranked = results.ranked();
    let names: Vec<String> = ranked
        .first()
        .map(|t| t.hyperparams.keys().cloned().collect())
        .unwrap_or_default();
    let axis = |i: usize| -> (String, Vec<f64>) {
        let Some(key) = names.get(i) else {
            return ("-".into(), vec![0.0; ranked.len()]);
        };
        let values: Vec<f64> = ranked
            .iter()
            .map(|t| {
                t.hyperparams
                    .get(key)
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0)
            })
            .collect();
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if lo > 0.0 && hi / lo >= 10.0 {
            (
                format!("log10({key})"),
                values.iter().map(|v| v.log10()).collect(),
            )
        } else {
            (key.clone(), values)
        }
    };
    let (x_name, xs) = axis(0);
    let (y_name, ys) = axis(1);
    let points: Vec<(f64, f64, f64)> = ranked
        .iter()
        .zip(xs.iter().zip(&ys))
        .map(|(t, (&x, &y))| (x, y, t.score))
        .collect();
    scatter_colored(
        &format!("{name}: the search space"),
        &x_name,
        &y_name,
        objective_label(results.objective),
        &points,
    )
}

/// Validation accuracy (first) and loss (second) per epoch, one line per fold.
pub fn fold_curves(folds: &[FoldRecord]) -> Result<(Chart, Chart), PlotError> {
    let per_fold = |pick: fn(&EpochRecord) -> Option<f64>| -> Vec<Series> {
        folds
            .iter()
            .map(|f| {
                Series::new(
                    format!("fold {}", f.fold),
                    f.history
                        .epochs
                        .iter()
                        .filter_map(|r| pick(r).map(|v| (r.epoch as f64, v)))
                        .collect(),
                )
            })
            .collect()
    };
    Ok((
        line_chart(
            "Validation accuracy per fold",
            "epoch",
            "validation accuracy",
            &per_fold(|r| r.val_accuracy),
        )?,
        line_chart(
            "Validation loss per fold",
            "epoch",
            "validation loss",
            &per_fold(|r| r.val_loss),
        )?,
    ))
}

/// What a backbone sees: the first `count` images resized to `side` x `side` (bilinear, as
/// Keras resizes), captioned with their class.
pub fn backbone_inputs_grid(
    dataset: &Dataset,
    count: usize,
    side: usize,
) -> Result<Chart, PlotError> {
    let (mut images, mut captions) = (Vec::new(), Vec::new());
    for i in 0..count.min(dataset.len()) {
        let gray: Vec<f32> = dataset.image(i).iter().map(|&p| p as f32).collect();
        let resized = resize_bilinear(&gray, IMAGE_SIDE, IMAGE_SIDE, side, side);
        images.push(
            resized
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        );
        captions.push(CLASS_NAMES[dataset.labels[i] as usize].to_string());
    }
    image_grid(
        &format!("Backbone inputs: 28x28 resized to {side}x{side}"),
        &images,
        side,
        &captions,
        8,
    )
}

/// Validation accuracy per epoch of the heads (and fine-tuning) of several transfer runs.
pub fn transfer_curves(outcomes: &[&TransferOutcome]) -> Result<Chart, PlotError> {
    let mut runs: Vec<(String, &History)> = Vec::new();
    for o in outcomes {
        runs.push((o.label.clone(), &o.head.history));
        if let (Some(ft), Some(label)) = (&o.fine_tune, o.fine_tuned_label()) {
            runs.push((label, &ft.history));
        }
    }
    let named: Vec<(&str, &History)> = runs.iter().map(|(n, h)| (n.as_str(), *h)).collect();
    compare_runs_chart(&named)
}

/// Validation accuracy of every model that has a walkthrough counterpart, as bars, with the
/// walkthrough's numbers beside ours.
pub fn comparison_chart(rows: &[ComparisonRow]) -> Result<Chart, PlotError> {
    let mut labels = Vec::new();
    let mut values = Vec::new();
    for row in rows.iter().filter(|r| r.walkthrough.is_some()) {
        labels.push(row.short_name.clone());
        values.push(row.validation.accuracy);
    }
    for (name, score) in [
        ("walkthrough LeNet-5", WALKTHROUGH_LENET5),
        ("walkthrough VGG-16", WALKTHROUGH_VGG16),
        ("walkthrough ResNet-50", WALKTHROUGH_RESNET50),
    ] {
        labels.push(name.to_string());
        values.push(score.accuracy);
    }
    bar_chart(
        "Validation accuracy",
        "validation accuracy",
        &labels,
        &values,
    )
}

/// Test accuracy of every model of the study against its trainable parameters and its time
/// (transfer runs: including feature extraction); models without a test score are left out.
pub fn accuracy_vs_cost_chart(rows: &[ComparisonRow]) -> Result<Chart, PlotError> {
    let points: Vec<LabelledPoint> = rows
        .iter()
        .filter_map(|row| {
            Some(LabelledPoint {
                label: row.short_name.clone(),
                xs: vec![row.trainable_params as f64, row.seconds / 60.0],
                y: row.test_accuracy?,
            })
        })
        .collect();
    labelled_scatter_panels(
        "Test accuracy against model size and time",
        &["trainable parameters (log)", "minutes (log)"],
        "test accuracy",
        &points,
    )
}
