//! The study as one self-contained HTML page (`templates/study.html`): every chart inline
//! (SVG), tables, a short text per section written from the numbers.

use serde::Serialize;

use super::{comparison_table, minutes, stages_table, StudyResults};
use crate::cross_validation::CvResults;
use crate::data::{FashionMnist, CLASS_NAMES};
use crate::error::TrainError;
use crate::pipeline::comparison::WALKTHROUGH_LENET5;
use crate::plots;
use crate::report::Table;
use crate::transfer::{self, TransferOutcome};
use crate::tuning::{Objective, TuningResults};

#[derive(Serialize)]
struct Warning {
    label: String,
    origin: String,
}

/// What the template shows; charts are SVG text.
#[derive(Serialize)]
struct Page {
    intro: String,
    comparison: Table,
    comparison_chart: String,
    data_text: String,
    class_chart: String,
    samples_chart: Option<String>,
    lenet5_text: String,
    lenet5_curves: String,
    lenet5_confusion: Option<String>,
    lenet5_report: Option<Table>,
    tuning_text: String,
    tuning_table: Table,
    tuning_chart: String,
    cv_text: String,
    cv_table: Table,
    cv_accuracy: String,
    cv_loss: String,
    transfer_warnings: Vec<Warning>,
    transfer_text: String,
    transfer_table: Table,
    transfer_chart: String,
    stages: Table,
}

fn svg(chart: plots::Chart) -> String {
    chart.svg().to_string()
}

fn intro(results: &StudyResults) -> String {
    let preset = &results.preset;
    let stages_seconds = results.data.wall_seconds
        + results.lenet5.wall_seconds
        + results.tuning.wall_seconds
        + results.cross_validation.wall_seconds
        + results.vgg16.wall_seconds
        + results.resnet50.wall_seconds;
    format!(
        "Preset \"{}\"{}; seed {}; {}; fashion-mnist {}; whole study {} (stages reused from earlier runs count their original time).",
        preset.name,
        if preset.name == "quick" {
            " (small subsets and few epochs: for trying the pipeline, not for conclusions)"
        } else {
            " (the walkthrough's settings on all the data)"
        },
        preset.seed,
        results.lenet5.device,
        results.lenet5.version,
        minutes(stages_seconds),
    )
}

fn data_text(results: &StudyResults) -> String {
    let d = &results.data.results;
    format!(
        "{} training and {} test images from {} (verification: {}). Missing values: {}. Duplicate rows: {}. Training images per class: {} to {}.",
        d.train_images,
        d.test_images,
        d.source,
        d.verification,
        d.missing_values,
        d.duplicates,
        d.class_counts.iter().min().unwrap_or(&0),
        d.class_counts.iter().max().unwrap_or(&0)
    )
}

fn lenet5_text(results: &StudyResults) -> String {
    let l = &results.lenet5.results;
    format!(
        "{} parameters, Adam 1e-3, batch 32, early stopping on validation loss (patience 3, best weights restored): {} epochs, best epoch {}. Validation accuracy {:.4} (walkthrough {:.4}), test accuracy {}. Training took {} ({:.0} images/s).",
        l.params,
        l.history.epochs.len(),
        l.history.best_epoch.map_or("-".into(), |e| e.to_string()),
        l.validation.accuracy,
        WALKTHROUGH_LENET5.accuracy,
        l.test.map_or("-".into(), |t| format!("{:.4}", t.accuracy)),
        minutes(l.train_seconds),
        l.images_per_second()
    )
}

fn tuning_text(results: &StudyResults) -> String {
    let t = &results.tuning.results;
    format!(
        "{} trials of {} epochs over the first dense layer (64-128 units) and the learning rate (1e-2 or 1e-3). Best: {} units, learning rate {}, validation accuracy {:.4}; {}.",
        t.trials.len(),
        results.preset.tuning_epochs,
        t.best_units,
        t.best_learning_rate,
        t.best_score,
        minutes(results.tuning.wall_seconds)
    )
}

fn cv_text(results: &StudyResults) -> String {
    let cv = &results.cross_validation.results;
    format!(
        "{}-fold cross-validation of the tuned model, {} epochs per fold: validation accuracy {:.4} +/- {:.4}, loss {:.4} +/- {:.4} (sample standard deviation); {}.",
        cv.folds.len(),
        results.preset.cv_epochs,
        cv.accuracy_mean,
        cv.accuracy_std,
        cv.loss_mean,
        cv.loss_std,
        minutes(results.cross_validation.wall_seconds)
    )
}

const TRANSFER_TEXT: &str = "Images resized to 32x32, gray repeated to 3 channels; the backbone frozen, its features computed once and cached, the walkthrough's heads trained on them. \"caffe\" input is what the ImageNet weights expect (Keras preprocess_input); \"unit\" is the walkthrough's 0..1 pixels. Fine-tuning unfreezes VGG-16's block 5 at learning rate 1e-5 with mirrored images.";

/// The study as one HTML page; with `data`, sample images of each class too.
pub fn render_html(
    results: &StudyResults,
    data: Option<&FashionMnist>,
) -> Result<String, TrainError> {
    let l = &results.lenet5.results;
    let counts: Vec<f64> = results
        .data
        .results
        .class_counts
        .iter()
        .map(|&c| c as f64)
        .collect();
    let tuning = TuningResults {
        objective: Some(Objective::MaxValAccuracy),
        trials: results.tuning.results.trials.clone(),
    };
    let cv = CvResults {
        folds: results.cross_validation.results.folds.clone(),
    };
    let (cv_accuracy, cv_loss) = plots::fold_curves(&cv.folds)?;
    let runs: Vec<TransferOutcome> = results.transfer_runs().cloned().collect();
    let run_refs: Vec<&TransferOutcome> = runs.iter().collect();
    let page = Page {
        intro: intro(results),
        comparison: comparison_table(results),
        comparison_chart: svg(plots::comparison_chart(&results.comparison())?),
        data_text: data_text(results),
        class_chart: svg(plots::class_bars(&counts)?),
        samples_chart: data
            .map(|d| plots::samples_by_class(&d.train, 2).map(svg))
            .transpose()?,
        lenet5_text: lenet5_text(results),
        lenet5_curves: svg(plots::training_curves(&l.history, "LeNet-5")?),
        lenet5_confusion: l
            .confusion
            .as_ref()
            .map(|c| {
                plots::confusion_matrix_chart(c, &CLASS_NAMES, "LeNet-5 on the test set").map(svg)
            })
            .transpose()?,
        lenet5_report: l.report.as_ref().map(Table::from),
        tuning_text: tuning_text(results),
        tuning_table: tuning.results_summary(10),
        tuning_chart: svg(plots::trial_scores_chart(&tuning, "random search")?),
        cv_text: cv_text(results),
        cv_table: cv.table(),
        cv_accuracy: svg(cv_accuracy),
        cv_loss: svg(cv_loss),
        transfer_warnings: runs
            .iter()
            .filter(|o| !o.weights.imagenet)
            .map(|o| Warning {
                label: o.label.clone(),
                origin: o.weights.origin.clone(),
            })
            .collect(),
        transfer_text: TRANSFER_TEXT.into(),
        transfer_table: transfer::results_table(&runs),
        transfer_chart: svg(plots::transfer_curves(&run_refs)?),
        stages: stages_table(results),
    };
    crate::report::render("study.html", &page).map_err(|e| TrainError::Results {
        path: "report.html".into(),
        message: format!("rendering the report: {e}"),
    })
}
