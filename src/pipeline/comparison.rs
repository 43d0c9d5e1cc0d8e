//! Stage: every model of the study side by side, with the walkthrough's reported scores.

use dfdx::prelude::Cpu;
use serde::{Deserialize, Serialize};

use super::cv::CvSummary;
use super::lenet5::ModelResults;
use crate::models::{ImageClassifier, LeNet5, LeNet5Config};
use crate::transfer::{Architecture, Score, TransferOutcome};

/// The walkthrough's reported validation scores.
pub const WALKTHROUGH_LENET5: Score = Score {
    accuracy: 0.8947,
    loss: 0.2888,
};
pub const WALKTHROUGH_VGG16: Score = Score {
    accuracy: 0.8768,
    loss: 0.3973,
};
pub const WALKTHROUGH_RESNET50: Score = Score {
    accuracy: 0.7875,
    loss: 0.5851,
};

/// One model's row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub model: String,
    /// A short name for charts.
    pub short_name: String,
    /// The walkthrough's validation scores for this kind of model.
    pub walkthrough: Option<Score>,
    /// Validation scores (the mean over folds for cross-validation).
    pub validation: Score,
    /// Standard deviation over folds (cross-validation only).
    pub validation_std: Option<Score>,
    pub test_accuracy: Option<f64>,
    pub trainable_params: usize,
    /// Wall time (transfer runs: including feature extraction).
    pub seconds: f64,
    pub training_images_per_second: Option<f64>,
    /// Trained from scratch (false: a transfer-learning run on a pretrained or random backbone).
    #[serde(default)]
    pub from_scratch: bool,
    /// A transfer-learning run on ImageNet weights (false: from scratch, or a random backbone).
    #[serde(default)]
    pub pretrained: bool,
}

/// The stages' results the comparison is made of.
pub struct ComparisonInputs<'a> {
    pub lenet5: &'a ModelResults,
    pub cv: &'a CvSummary,
    pub cv_seconds: f64,
    /// The tuned model's first dense layer (what cross-validation trained).
    pub tuned_units: usize,
    /// The modern CNN from scratch, when the study trained it.
    pub modern_cnn: Option<&'a ModelResults>,
    pub transfer: Vec<&'a TransferOutcome>,
}

fn transfer_row(o: &TransferOutcome) -> ComparisonRow {
    let walkthrough = match o.config.backbone {
        Architecture::Vgg16 => WALKTHROUGH_VGG16,
        Architecture::Resnet50 => WALKTHROUGH_RESNET50,
    };
    let stage = o.final_stage();
    // Training vectors per epoch: the training share of the images features were made for.
    let extracted = o
        .extraction
        .iter()
        .find(|(what, _)| what == "train")
        .map_or(0, |(_, r)| r.images);
    let train_images =
        (stage.history.epochs.len() * extracted) as f64 * (1.0 - o.config.validation_split);
    let short = o
        .label
        .replace(" (ImageNet, frozen)", "")
        .replace(" (RANDOM init, frozen: not transfer learning)", " RANDOM")
        .replace(" input", "");
    let (model, short_name) = match (o.fine_tuned_label(), &o.config.fine_tune) {
        (Some(label), Some(ft)) if ft.is_end_to_end() => (label, format!("{short} +ft all")),
        (Some(label), _) => (label, format!("{short} +ft")),
        _ => (o.label.clone(), short),
    };
    // The walkthrough ran 32x32 inputs, with at most block 5 fine-tuned.
    let walkthrough_kind = o.config.side == 32
        && o.config
            .fine_tune
            .as_ref()
            .is_none_or(|ft| !ft.is_end_to_end());
    ComparisonRow {
        model,
        short_name,
        walkthrough: walkthrough_kind.then_some(walkthrough),
        validation: stage.validation,
        validation_std: None,
        test_accuracy: stage.test.map(|t| t.accuracy),
        trainable_params: stage.trainable_params,
        seconds: o.wall_seconds,
        training_images_per_second: Some(train_images / stage.history.total_seconds().max(1e-9)),
        from_scratch: false,
        pretrained: o.weights.imagenet,
    }
}

/// The comparison: LeNet-5, the cross-validated tuned LeNet-5, the modern CNN, then every
/// transfer run.
pub fn compare(inputs: &ComparisonInputs<'_>) -> Vec<ComparisonRow> {
    let l = inputs.lenet5;
    let mut rows = vec![ComparisonRow {
        model: "LeNet-5 (from scratch)".into(),
        short_name: "LeNet-5".into(),
        walkthrough: Some(WALKTHROUGH_LENET5),
        validation: l.validation,
        validation_std: None,
        test_accuracy: l.test.map(|t| t.accuracy),
        trainable_params: l.params,
        seconds: l.train_seconds,
        training_images_per_second: Some(l.images_per_second()),
        from_scratch: true,
        pretrained: false,
    }];
    let cv = inputs.cv;
    let tuned = LeNet5::new(
        &Cpu::default(),
        LeNet5Config {
            dense1_units: inputs.tuned_units,
        },
        0,
    );
    rows.push(ComparisonRow {
        model: format!("tuned LeNet-5, {}-fold CV (mean)", cv.folds.len()),
        short_name: "tuned LeNet-5 (CV)".into(),
        walkthrough: None,
        validation: Score {
            accuracy: cv.accuracy_mean,
            loss: cv.loss_mean,
        },
        validation_std: Some(Score {
            accuracy: cv.accuracy_std,
            loss: cv.loss_std,
        }),
        test_accuracy: None,
        trainable_params: tuned.param_count(),
        seconds: inputs.cv_seconds,
        training_images_per_second: None,
        from_scratch: true,
        pretrained: false,
    });
    if let Some(m) = inputs.modern_cnn {
        rows.push(ComparisonRow {
            model: "modern CNN (from scratch: BatchNorm, augmentation, cosine schedule)".into(),
            short_name: "modern CNN".into(),
            walkthrough: None,
            validation: m.validation,
            validation_std: None,
            test_accuracy: m.test.map(|t| t.accuracy),
            trainable_params: m.params,
            seconds: m.train_seconds,
            training_images_per_second: Some(m.images_per_second()),
            from_scratch: true,
            pretrained: false,
        });
    }
    rows.extend(inputs.transfer.iter().map(|o| transfer_row(o)));
    rows
}
