//! Learning-rate schedules, evaluated per optimizer step.

use serde::{Deserialize, Serialize};

/// How the learning rate changes over a run (the configured rate is the peak).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LearningRateSchedule {
    /// The same rate every step (Keras' default; the walkthrough's).
    #[default]
    Constant,
    /// A linear warm-up from 0 over the first `warmup_fraction` of all steps, then a cosine
    /// decay to 0 at the last step (a "one-cycle"-like shape).
    Cosine { warmup_fraction: f64 },
}

impl LearningRateSchedule {
    pub fn is_constant(&self) -> bool {
        matches!(self, LearningRateSchedule::Constant)
    }

    /// Refuses a warm-up fraction outside [0, 1).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            LearningRateSchedule::Constant => Ok(()),
            LearningRateSchedule::Cosine { warmup_fraction } => {
                if (0.0..1.0).contains(warmup_fraction) {
                    Ok(())
                } else {
                    Err(format!(
                        "warmup_fraction must be in [0, 1), got {warmup_fraction}"
                    ))
                }
            }
        }
    }

    /// The rate at step `step` (0-based) of `total` steps, for peak rate `peak`.
    pub fn rate(&self, peak: f64, step: usize, total: usize) -> f64 {
        match *self {
            LearningRateSchedule::Constant => peak,
            LearningRateSchedule::Cosine { warmup_fraction } => {
                let total = total.max(1) as f64;
                // At least one step of decay, whatever the fraction.
                let warmup = (warmup_fraction * total).round().min(total - 1.0);
                let t = step as f64 + 1.0;
                if t <= warmup {
                    return peak * t / warmup;
                }
                let progress = ((t - warmup) / (total - warmup).max(1.0)).min(1.0);
                peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_peaks_and_decays_to_zero() {
        let schedule = LearningRateSchedule::Cosine {
            warmup_fraction: 0.1,
        };
        let rates: Vec<f64> = (0..100).map(|s| schedule.rate(1.0, s, 100)).collect();
        assert!((rates[0] - 0.1).abs() < 1e-12, "{}", rates[0]);
        assert!((rates[9] - 1.0).abs() < 1e-12);
        assert!(rates[..10].windows(2).all(|w| w[0] < w[1]));
        assert!(rates[10..].windows(2).all(|w| w[0] > w[1]));
        assert!(rates[99].abs() < 1e-12);
        assert!((rates[54] - 0.5).abs() < 0.02, "{}", rates[54]);
        assert_eq!(LearningRateSchedule::Constant.rate(0.3, 7, 10), 0.3);
        assert!(LearningRateSchedule::Cosine {
            warmup_fraction: 1.0
        }
        .validate()
        .is_err());
    }
}
