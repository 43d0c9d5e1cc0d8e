//! Per-epoch history, like the `History` object Keras' `fit` returns.

use std::fmt;
use std::path::Path;

use crate::error::DataResult;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub seconds: f64,
}

impl fmt::Display for EpochRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "epoch {:>3}: loss {:.4}, accuracy {:.4}",
            self.epoch, self.loss, self.accuracy
        )?;
        if let (Some(l), Some(a)) = (self.val_loss, self.val_accuracy) {
            write!(f, ", val_loss {l:.4}, val_accuracy {a:.4}")?;
        }
        write!(f, " ({:.1} s)", self.seconds)
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
    /// Epoch with the best monitored value (with early stopping).
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    /// Whether the model was reset to the best epoch's weights.
    pub restored_best: bool,
    /// Epochs after which a resumable run was stopped and went on from its saved state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed_after_epochs: Vec<usize>,
}

impl History {
    /// The record of the epoch whose weights the model ends with.
    pub fn final_record(&self) -> Option<&EpochRecord> {
        match (self.restored_best, self.best_epoch) {
            (true, Some(best)) => self.epochs.iter().find(|r| r.epoch == best),
            _ => self.epochs.last(),
        }
    }

    pub fn total_seconds(&self) -> f64 {
        self.epochs.iter().map(|r| r.seconds).sum()
    }

    /// CSV with one row per epoch (as Keras' `CSVLogger` writes it).
    pub fn to_csv(&self) -> String {
        let mut out = String::from("epoch,loss,accuracy,val_loss,val_accuracy,seconds\n");
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        for r in &self.epochs {
            out.push_str(&format!(
                "{},{:.6},{:.6},{},{},{:.3}\n",
                r.epoch,
                r.loss,
                r.accuracy,
                opt(r.val_loss),
                opt(r.val_accuracy),
                r.seconds
            ));
        }
        out
    }

    /// Writes `history.json` and `history.csv` into `dir`.
    pub fn save(&self, dir: &Path) -> DataResult<()> {
        let json = serde_json::to_string_pretty(self).expect("plain data");
        crate::fsutil::write_bytes_atomically(&dir.join("history.json"), json.as_bytes())?;
        crate::fsutil::write_bytes_atomically(&dir.join("history.csv"), self.to_csv().as_bytes())
    }
}
