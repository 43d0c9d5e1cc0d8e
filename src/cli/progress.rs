//! Progress on stderr: a bar per epoch and for feature extraction (rate and ETA, indicatif), a
//! line per epoch, trial, fold and message, and (report) a line per stage with an ETA for the
//! rest of the study.

use std::time::Instant;

use fashion_mnist::progress::Progress;
use fashion_mnist::training::EpochRecord;
use indicatif::{ProgressBar, ProgressStyle};

pub struct Bars {
    epoch_bar: Option<ProgressBar>,
    epoch: usize,
    extraction: Option<ProgressBar>,
    started: Instant,
    /// Expected minutes of each stage of the study (`report`), for its ETA.
    stage_minutes: Vec<f64>,
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
        Bars::for_study(Vec::new())
    }

    /// For `report`: an ETA for the rest of the study from each stage's expected minutes.
    pub fn for_study(stage_minutes: Vec<f64>) -> Self {
        Bars {
            epoch_bar: None,
            epoch: 0,
            extraction: None,
            started: Instant::now(),
            stage_minutes,
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
    }

    fn on_batch(&mut self, step: usize, running_loss: f64, running_accuracy: f64) {
        if let Some(bar) = &self.epoch_bar {
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
        let bar = self.extraction.get_or_insert_with(|| {
            bar(
                total,
                "extracting [{bar:30}] {pos}/{len} images, {per_sec}, ETA {eta}",
            )
        });
        bar.set_position(done as u64);
    }

    fn on_stage_start(&mut self, index: usize, count: usize, name: &str, reused: bool) {
        let remaining: f64 = self.stage_minutes.iter().skip(index - 1).sum();
        let eta = if reused {
            String::from("reusing earlier results")
        } else {
            format!("ETA for the rest of the study ~{remaining:.0} min")
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
        }
    }

    fn on_message(&mut self, message: &str) {
        if let Some(bar) = self.extraction.take() {
            bar.finish_and_clear();
        }
        self.line(message);
    }
}
