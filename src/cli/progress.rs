//! Progress on stderr: a bar per epoch and for feature extraction (rate and ETA, indicatif), a
//! line per epoch, trial, fold and message, and (report) a line per stage with an ETA for the
//! rest of the study.

use std::time::{Duration, Instant};

use fashion_mnist::progress::Progress;
use fashion_mnist::training::EpochRecord;
use indicatif::{ProgressBar, ProgressStyle};

pub struct Bars {
    epoch_bar: Option<ProgressBar>,
    epoch: usize,
    epochs: usize,
    extraction: Option<ProgressBar>,
    started: Instant,
    /// Expected minutes of each stage of the study (`report`), for its ETA.
    stage_minutes: Vec<f64>,
    /// Stages that reuse part of their work from an earlier run: left out of the pace.
    stages_partly_done: Vec<bool>,
    /// When stderr is no terminal (a log file), the bar is hidden: a plain line every
    /// [`LOG_LINE_EVERY`] says how the epoch or extraction goes instead.
    last_log_line: Instant,
    epoch_started: Instant,
    /// Expected minutes of the stage running now (0 when none, reused or partly done before).
    running_stage_minutes: f64,
    /// Expected and actual minutes of the stages this run finished: how fast this machine
    /// is against the estimates.
    pace: (f64, f64),
}

/// How often a log (stderr not a terminal) gets a line about the running epoch.
const LOG_LINE_EVERY: Duration = Duration::from_secs(60);

/// "epoch 1/2: step 120/750, 3.20 steps/s, ETA 3.3 min, loss 0.4120 accuracy 0.8610".
fn epoch_log_line(
    (epoch, epochs): (usize, usize),
    (step, steps): (usize, usize),
    elapsed: Duration,
    (loss, accuracy): (f64, f64),
) -> String {
    let rate = step as f64 / elapsed.as_secs_f64().max(1e-9);
    let eta_minutes = steps.saturating_sub(step) as f64 / rate.max(1e-9) / 60.0;
    format!(
        "epoch {epoch}/{epochs}: step {step}/{steps}, {rate:.2} steps/s, ETA {eta_minutes:.1} min, loss {loss:.4} accuracy {accuracy:.4}"
    )
}

fn bar(length: usize, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(length as u64);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

impl Bars {
    pub fn new() -> Self {
        Bars::for_study(Vec::new(), Vec::new())
    }

    /// For `report`: an ETA for the rest of the study from each stage's expected minutes;
    /// `stages_partly_done` are left out of the pace (their time covers only part of them).
    pub fn for_study(stage_minutes: Vec<f64>, stages_partly_done: Vec<bool>) -> Self {
        Bars {
            epoch_bar: None,
            epoch: 0,
            epochs: 0,
            extraction: None,
            started: Instant::now(),
            stage_minutes,
            stages_partly_done,
            running_stage_minutes: 0.0,
            pace: (0.0, 0.0),
            last_log_line: Instant::now(),
            epoch_started: Instant::now(),
        }
    }

    /// Minutes left from stage `index` (from 1) on, the estimates scaled by this machine's pace
    /// once the stages that ran whole in this invocation were expected to take 3 minutes or
    /// more; the factor (kept within 1/4..4: one odd stage should not swing it), when applied.
    fn minutes_left(&self, index: usize) -> (f64, Option<f64>) {
        let remaining: f64 = self
            .stage_minutes
            .iter()
            .skip(index.saturating_sub(1))
            .sum();
        let (expected, actual) = self.pace;
        if expected >= 3.0 && actual > 0.0 {
            let factor = (actual / expected).clamp(0.25, 4.0);
            (remaining * factor, Some(factor))
        } else {
            (remaining, None)
        }
    }

    /// Prints a line without tearing a bar that is drawn.
    fn line(&self, text: &str) {
        match &self.epoch_bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

impl Progress for Bars {
    fn on_epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        let bar = bar(
            steps,
            "epoch {prefix} [{bar:30}] {pos}/{len} steps, {per_sec}, ETA {eta} {msg}",
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.epoch_bar = Some(bar);
        self.epoch = epoch;
        self.epochs = epochs;
        (self.epoch_started, self.last_log_line) = (Instant::now(), Instant::now());
    }

    fn on_batch(&mut self, step: usize, running_loss: f64, running_accuracy: f64) {
        if let Some(bar) = &self.epoch_bar {
            if bar.is_hidden() && self.last_log_line.elapsed() >= LOG_LINE_EVERY {
                self.last_log_line = Instant::now();
                let steps = bar.length().unwrap_or(0) as usize;
                eprintln!(
                    "{}",
                    epoch_log_line(
                        (self.epoch, self.epochs),
                        (step, steps),
                        self.epoch_started.elapsed(),
                        (running_loss, running_accuracy)
                    )
                );
            }
            bar.set_position(step as u64);
            if step.is_multiple_of(50) {
                bar.set_message(format!(
                    "loss {running_loss:.4} accuracy {running_accuracy:.4}"
                ));
            }
        }
    }

    fn on_epoch_end(&mut self, record: &EpochRecord) {
        if let Some(bar) = self.epoch_bar.take() {
            bar.finish_and_clear();
        }
        eprintln!("{record}");
    }

    fn on_early_stop(&mut self, best_epoch: usize, restored: bool) {
        eprintln!(
            "early stopping after epoch {}: best epoch {best_epoch}{}",
            self.epoch,
            if restored {
                ", its weights restored"
            } else {
                ""
            }
        );
    }

    fn on_extraction(&mut self, done: usize, total: usize) {
        if self.extraction.is_none() {
            self.last_log_line = Instant::now();
        }
        let bar = self.extraction.get_or_insert_with(|| {
            bar(
                total,
                "extracting [{bar:30}] {pos}/{len} images, {per_sec}, ETA {eta}",
            )
        });
        bar.set_position(done as u64);
        if bar.is_hidden() && self.last_log_line.elapsed() >= LOG_LINE_EVERY {
            self.last_log_line = Instant::now();
            eprintln!(
                "extracting: {done}/{total} images, {:.0} images/s, ETA {:.1} min",
                bar.per_sec(),
                bar.eta().as_secs_f64() / 60.0
            );
        }
    }

    fn on_stage_start(&mut self, index: usize, count: usize, name: &str, reused: bool) {
        let stage = index.saturating_sub(1);
        let partly_done = self.stages_partly_done.get(stage).copied().unwrap_or(false);
        self.running_stage_minutes = if reused || partly_done {
            0.0
        } else {
            self.stage_minutes.get(stage).copied().unwrap_or(0.0)
        };
        let eta = if reused {
            String::from("reusing earlier results")
        } else {
            match self.minutes_left(index) {
                (left, None) => format!("ETA for the rest of the study ~{left:.0} min"),
                (left, Some(factor)) => format!(
                    "ETA for the rest of the study ~{left:.0} min (estimates x{factor:.2}, this machine's pace so far)"
                ),
            }
        };
        eprintln!(
            "\n[stage {index}/{count}: {name}] {:.1} min elapsed, {eta}",
            self.started.elapsed().as_secs_f64() / 60.0
        );
    }

    fn on_stage_skipped(&mut self, index: usize, count: usize, name: &str, why: &str) {
        eprintln!("\n[stage {index}/{count}: {name}] skipped: {why}");
    }

    fn on_stage_end(&mut self, name: &str, seconds: f64) {
        if seconds > 0.0 {
            eprintln!("[{name} done in {:.1} min]", seconds / 60.0);
            if self.running_stage_minutes > 0.0 {
                self.pace.0 += self.running_stage_minutes;
                self.pace.1 += seconds / 60.0;
            }
        }
        self.running_stage_minutes = 0.0;
    }

    fn on_message(&mut self, message: &str) {
        if let Some(bar) = self.extraction.take() {
            bar.finish_and_clear();
        }
        self.line(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_study_eta_follows_this_machines_pace_once_a_long_enough_stage_ran() {
        let mut bars =
            Bars::for_study(vec![1.0, 10.0, 20.0, 40.0], vec![false, false, true, false]);
        assert_eq!(bars.minutes_left(1), (71.0, None));
        // A reused stage says nothing about the pace.
        bars.on_stage_start(1, 3, "short", true);
        bars.on_stage_end("short", 0.0);
        assert_eq!(bars.minutes_left(2), (70.0, None));
        // Expected 10 min, took 5: the rest is estimated at half.
        bars.on_stage_start(2, 4, "long", false);
        bars.on_stage_end("long", 300.0);
        assert_eq!(bars.minutes_left(3), (30.0, Some(0.5)));
        // A stage that reused part of its work took less than a whole one would: not counted.
        bars.on_stage_start(3, 4, "resumed", false);
        bars.on_stage_end("resumed", 60.0);
        assert_eq!(bars.minutes_left(4), (20.0, Some(0.5)));
        // Far off pace is kept within 1/4..4.
        bars.pace = (10.0, 0.1);
        assert_eq!(bars.minutes_left(4), (10.0, Some(0.25)));
    }

    #[test]
    fn a_log_line_gives_the_epochs_rate_and_eta() {
        let line = epoch_log_line(
            (1, 2),
            (120, 750),
            Duration::from_secs(60),
            (0.41204, 0.861),
        );
        assert_eq!(
            line,
            "epoch 1/2: step 120/750, 2.00 steps/s, ETA 5.2 min, loss 0.4120 accuracy 0.8610"
        );
    }
}
