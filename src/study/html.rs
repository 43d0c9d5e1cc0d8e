//! The study as one self-contained HTML page (`templates/study.html`): every chart inline
//! (SVG), tables, a short text per section written from the numbers.

use serde::Serialize;

use super::{comparison_table, minutes, stages_table, StudyResults};
use crate::cross_validation::CvResults;
use crate::data::{FashionMnist, CLASS_NAMES};
use crate::error::TrainError;
use crate::pipeline::comparison::WALKTHROUGH_LENET5;
use crate::pipeline::modern_cnn::ModernCnnStage;
use crate::plots;
use crate::report::Table;
use crate::training::LearningRateSchedule;
use crate::transfer::{self, FineTuneConfig, TransferOutcome};
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
    cost_chart: String,
    verdict: String,
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
    modern_cnn: Option<ModernCnnSection>,
    transfer_warnings: Vec<Warning>,
    transfer_text: String,
    transfer_table: Table,
    transfer_chart: String,
    vgg16_grid: Option<Vgg16GridSection>,
    stages: Table,
}

/// VGG-16 by fine-tuning depth and input size (only when the study ran beyond the
/// walkthrough's runs).
#[derive(Serialize)]
struct Vgg16GridSection {
    text: String,
    table: Table,
}

/// How the grid's runs were made, from the end-to-end runs' own settings.
fn vgg16_grid_intro(results: &StudyResults) -> String {
    let end_to_end: Vec<(usize, &FineTuneConfig)> = results
        .transfer_runs()
        .filter_map(|o| o.config.fine_tune.as_ref().map(|ft| (o.config.side, ft)))
        .filter(|(_, ft)| ft.is_end_to_end())
        .collect();
    let recipe = end_to_end.first().map_or(String::new(), |&(_, ft)| {
        let schedule = schedule_text(ft.schedule, ft.learning_rate);
        format!(
            " Fine-tuning end to end trains every block together with the head (which starts from its trained state) for {}: Adam, {schedule}, batches of {}{}; the last epoch is scored.",
            end_to_end_epochs_text(&end_to_end),
            ft.batch_size.map_or("the head's size".into(), |b| b.to_string()),
            if ft.mirror { ", mirrored images" } else { "" }
        )
    });
    format!(
        "The walkthrough trains a head on frozen 32x32 features, and our block-5 run unfreezes only the last block. A practitioner would also try a larger input (the 28x28 images resized to 64x64, so the backbone's five poolings keep 2x2 positions instead of 1x1) and fine-tuning the whole network.{recipe} Each cell: test accuracy, validation accuracy in brackets, the run's wall time (feature extraction, head and fine-tuning; features found in the cache are not recomputed)."
    )
}

/// The end-to-end runs' epochs in words: "2 epochs" when all runs agree, else per input side
/// ("2 epochs at 32x32, 5 at 64x64").
fn end_to_end_epochs_text(runs: &[(usize, &FineTuneConfig)]) -> String {
    let epochs = |n: usize| format!("{n} epoch{}", if n == 1 { "" } else { "s" });
    match runs {
        [(_, first), rest @ ..] if rest.iter().all(|(_, ft)| ft.epochs == first.epochs) => {
            epochs(first.epochs)
        }
        _ => runs
            .iter()
            .enumerate()
            .map(|(i, (side, ft))| {
                let count = if i == 0 {
                    epochs(ft.epochs)
                } else {
                    ft.epochs.to_string()
                };
                format!("{count} at {side}x{side}")
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A learning-rate schedule in words, e.g. "a cosine schedule (peak 0.003, 10% linear warm-up)".
fn schedule_text(schedule: LearningRateSchedule, learning_rate: f64) -> String {
    match schedule {
        LearningRateSchedule::Constant => format!("a constant learning rate of {learning_rate}"),
        LearningRateSchedule::Cosine { warmup_fraction } => format!(
            "a cosine schedule (peak {learning_rate}, {:.0}% linear warm-up)",
            100.0 * warmup_fraction
        ),
    }
}

/// How the modern CNN was trained, from its stage config.
fn recipe_text(stage: &ModernCnnStage) -> String {
    let t = &stage.train;
    let schedule = schedule_text(t.schedule, t.learning_rate);
    let augmentation = match t.augmentation {
        Some(a) => format!(
            "each image shifted by up to {} pixels{} at random every epoch",
            a.max_shift,
            if a.horizontal_flip {
                " and mirrored"
            } else {
                ""
            }
        ),
        None => "no augmentation".into(),
    };
    format!(
        "Trained {} epochs with Adam on {schedule}, batch {}, {augmentation}.",
        t.epochs, t.batch_size
    )
}

/// The modern CNN's section.
#[derive(Serialize)]
struct ModernCnnSection {
    text: String,
    curves: String,
    confusion: Option<String>,
}

fn modern_cnn_section(results: &StudyResults) -> Result<Option<ModernCnnSection>, TrainError> {
    let Some(record) = &results.modern_cnn else {
        return Ok(None);
    };
    let m = &record.results;
    let lenet5_test = results.lenet5.results.test.map(|t| t.accuracy);
    let gain = match (m.test, lenet5_test) {
        (Some(t), Some(l)) => format!(
            " LeNet-5 scored {l:.4} on the same test images ({:+.1} points for the modern CNN).",
            100.0 * (t.accuracy - l)
        ),
        _ => String::new(),
    };
    let recipe = serde_json::from_value::<ModernCnnStage>(record.config.clone())
        .map(|stage| recipe_text(&stage))
        .unwrap_or_default();
    let text = format!(
        "Beyond the walkthrough: blocks of two 3x3 convolutions, each followed by batch normalization (batch statistics while training, running averages when evaluating) and ReLU, then max-pooling and dropout; {} trainable parameters. {recipe} The epoch with the best validation accuracy ({}) was kept. Validation accuracy {:.4}, test accuracy {}.{} Training took {} ({:.0} images/s).",
        m.params,
        m.history.best_epoch.map_or("-".into(), |e| e.to_string()),
        m.validation.accuracy,
        m.test.map_or("-".into(), |t| format!("{:.4}", t.accuracy)),
        gain,
        minutes(m.train_seconds),
        m.images_per_second()
    );
    Ok(Some(ModernCnnSection {
        text,
        curves: svg(plots::training_curves(&m.history, "modern CNN")?),
        confusion: m
            .confusion
            .as_ref()
            .map(|c| {
                plots::confusion_matrix_chart(c, &CLASS_NAMES, "modern CNN on the test set")
                    .map(svg)
            })
            .transpose()?,
    }))
}

fn svg(chart: plots::Chart) -> String {
    chart.svg().to_string()
}

fn intro(results: &StudyResults) -> String {
    let preset = &results.preset;
    let stages_seconds = results.data.wall_seconds
        + results.lenet5.wall_seconds
        + results.tuning.wall_seconds
        + results.cross_validation.seconds_with_resumed_folds()
        + results.modern_cnn.as_ref().map_or(0.0, |r| r.wall_seconds)
        + results.vgg16.seconds_with_resumed_runs()
        + results.resnet50.seconds_with_resumed_runs()
        + results
            .vgg16_beyond
            .as_ref()
            .map_or(0.0, |r| r.seconds_with_resumed_runs());
    format!(
        "Preset \"{}\"{}; seed {}; {}; fashion-mnist {}; whole study {} (stages and runs reused from earlier runs count their original time).",
        preset.name,
        match preset.name.as_str() {
            "quick" => {
                " (small subsets and few epochs: for trying the pipeline, not for conclusions)"
            }
            "extended" => {
                " (the walkthrough's settings on all the data, and VGG-16 at 64x64 and fine-tuned end to end)"
            }
            _ => " (the walkthrough's settings on all the data)",
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
        minutes(results.cross_validation.seconds_with_resumed_folds())
    )
}

const TRANSFER_TEXT: &str = "Images resized to 32x32 (unless a run says otherwise), gray repeated to 3 channels; the backbone frozen, its features computed once and cached, the walkthrough's heads trained on them. \"caffe\" input is what the ImageNet weights expect (Keras preprocess_input); \"unit\" is the walkthrough's 0..1 pixels. Block-5 fine-tuning unfreezes VGG-16's last block at learning rate 1e-5 with mirrored images; end-to-end fine-tuning (beyond the walkthrough, below) trains every block.";

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
        cost_chart: svg(plots::accuracy_vs_cost_chart(&results.comparison())?),
        verdict: super::verdict(&results.comparison()),
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
        modern_cnn: modern_cnn_section(results)?,
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
        vgg16_grid: results.vgg16_beyond.as_ref().map(|_| Vgg16GridSection {
            text: [vgg16_grid_intro(results), super::vgg16_grid_text(results)]
                .join(" ")
                .trim_end()
                .to_string(),
            table: super::vgg16_grid_table(results),
        }),
        stages: stages_table(results),
    };
    crate::report::render("study.html", &page).map_err(|e| TrainError::Results {
        path: "report.html".into(),
        message: format!("rendering the report: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_to_end_epochs_are_named_per_side_only_when_the_runs_differ() {
        let two = FineTuneConfig::end_to_end(2);
        let five = FineTuneConfig::end_to_end(5);
        let one = FineTuneConfig::end_to_end(1);
        assert_eq!(
            end_to_end_epochs_text(&[(32, &two), (64, &two)]),
            "2 epochs"
        );
        assert_eq!(end_to_end_epochs_text(&[(64, &one)]), "1 epoch");
        assert_eq!(
            end_to_end_epochs_text(&[(32, &two), (64, &five)]),
            "2 epochs at 32x32, 5 at 64x64"
        );
    }
}
