//! Confusion matrix and per-class precision / recall / F1, as scikit-learn reports them.

use std::fmt;

use crate::data::{CLASS_NAMES, NUM_CLASSES};

/// `counts[true][predicted]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfusionMatrix {
    pub counts: Vec<Vec<u32>>,
}

impl ConfusionMatrix {
    pub fn new(truth: &[u8], predicted: &[u8]) -> Self {
        assert_eq!(truth.len(), predicted.len());
        let mut counts = vec![vec![0u32; NUM_CLASSES]; NUM_CLASSES];
        for (&t, &p) in truth.iter().zip(predicted) {
            counts[t as usize][p as usize] += 1;
        }
        ConfusionMatrix { counts }
    }

    pub fn total(&self) -> u32 {
        self.counts.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u32 = (0..NUM_CLASSES).map(|i| self.counts[i][i]).sum();
        correct as f64 / self.total().max(1) as f64
    }

    pub fn report(&self) -> ClassificationReport {
        let classes = (0..NUM_CLASSES)
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                let support: u32 = self.counts[c].iter().sum();
                let predicted: u32 = (0..NUM_CLASSES).map(|t| self.counts[t][c]).sum();
                let precision = if predicted > 0 {
                    tp / predicted as f64
                } else {
                    0.0
                };
                let recall = if support > 0 {
                    tp / support as f64
                } else {
                    0.0
                };
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    class: CLASS_NAMES[c].to_string(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        ClassificationReport {
            classes,
            accuracy: self.accuracy(),
        }
    }
}

impl fmt::Display for ConfusionMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rows: true class, columns: predicted class")?;
        write!(f, "{:>12}", "")?;
        for c in 0..NUM_CLASSES {
            write!(f, "{c:>6}")?;
        }
        writeln!(f)?;
        for (t, row) in self.counts.iter().enumerate() {
            write!(f, "{:>9} {t:>2}", truncate(CLASS_NAMES[t], 9))?;
            for count in row {
                write!(f, "{count:>6}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

fn truncate(s: &str, n: usize) -> &str {
    &s[..s.len().min(n)]
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u32,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassificationReport {
    pub classes: Vec<ClassMetrics>,
    pub accuracy: f64,
}

impl ClassificationReport {
    /// Unweighted mean of precision, recall and F1 over classes.
    pub fn macro_average(&self) -> (f64, f64, f64) {
        let n = self.classes.len().max(1) as f64;
        let sum = |f: fn(&ClassMetrics) -> f64| self.classes.iter().map(f).sum::<f64>() / n;
        (sum(|c| c.precision), sum(|c| c.recall), sum(|c| c.f1))
    }
}

impl fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>12} {:>9} {:>9} {:>9} {:>9}",
            "", "precision", "recall", "f1-score", "support"
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "{:>12} {:>9.4} {:>9.4} {:>9.4} {:>9}",
                c.class, c.precision, c.recall, c.f1, c.support
            )?;
        }
        let support: u32 = self.classes.iter().map(|c| c.support).sum();
        let (p, r, f1) = self.macro_average();
        writeln!(
            f,
            "{:>12} {:>9} {:>9} {:>9.4} {:>9}",
            "accuracy", "", "", self.accuracy, support
        )?;
        write!(
            f,
            "{:>12} {p:>9.4} {r:>9.4} {f1:>9.4} {support:>9}",
            "macro avg"
        )
    }
}
