//! The one progress interface: training, feature extraction, trials, folds and the study's
//! stages all report through [`Progress`]. The CLI draws bars (indicatif), the notebooks print
//! a line per epoch ([`EpochLines`]), tests stay [`Silent`]. Every method defaults to nothing.
//! It lives in `training` (re-exported as `crate::progress`) and knows nothing of the modules
//! above that report through it.

use super::EpochRecord;

/// Receives progress while the library works. Implementations must not write results to
/// stdout on the CLI's behalf: progress is for people watching.
pub trait Progress: Send {
    /// An epoch of `steps` mini-batches begins.
    fn on_epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// `step` mini-batches of the epoch done; running means of loss and accuracy.
    fn on_batch(&mut self, _step: usize, _running_loss: f64, _running_accuracy: f64) {}
    fn on_epoch_end(&mut self, _record: &EpochRecord) {}
    fn on_early_stop(&mut self, _best_epoch: usize, _restored: bool) {}
    /// `done` of `total` images through a frozen backbone.
    fn on_extraction(&mut self, _done: usize, _total: usize) {}
    /// A stage of the study begins (`index` of `count`, 1-based); `reused`: its results come
    /// from an earlier run.
    fn on_stage_start(&mut self, _index: usize, _count: usize, _name: &str, _reused: bool) {}
    /// A stage of the study does not run in this preset; `why` says so in a person's words.
    fn on_stage_skipped(&mut self, _index: usize, _count: usize, _name: &str, _why: &str) {}
    fn on_stage_end(&mut self, _name: &str, _seconds: f64) {}
    /// A line worth showing: what runs now, a finished trial or fold, a warning, a summary
    /// (trials may finish on several threads; the calls come one at a time).
    fn on_message(&mut self, _message: &str) {}
}

/// Shows nothing.
pub struct Silent;
impl Progress for Silent {}

/// A line per epoch, trial, fold, stage and message on stdout, as Keras prints with
/// `verbose=2`: what a notebook cell shows.
pub struct EpochLines;

impl Progress for EpochLines {
    fn on_epoch_end(&mut self, record: &EpochRecord) {
        println!("{record}");
    }
    fn on_early_stop(&mut self, best_epoch: usize, restored: bool) {
        println!(
            "early stopping: best epoch {best_epoch}{}",
            if restored {
                ", its weights restored"
            } else {
                ""
            }
        );
    }
    fn on_extraction(&mut self, done: usize, total: usize) {
        // About every 10,000 images (a multiple of the CPU's and the GPU's batches), and at
        // the end.
        if done == total || done.is_multiple_of(10_240) {
            println!("  {done}/{total} images");
        }
    }
    fn on_stage_start(&mut self, index: usize, count: usize, name: &str, reused: bool) {
        let note = if reused {
            " (reusing earlier results)"
        } else {
            ""
        };
        println!("[{index}/{count}] {name}{note}");
    }
    fn on_stage_skipped(&mut self, index: usize, count: usize, name: &str, why: &str) {
        println!("[{index}/{count}] {name} skipped: {why}");
    }
    fn on_message(&mut self, message: &str) {
        println!("{message}");
    }
}

/// A [`Progress`] shared by threads (parallel trials): calls go through one at a time.
pub(crate) struct Shared<'a, 'p>(std::sync::Mutex<&'a mut (dyn Progress + 'p)>);

impl<'a, 'p> Shared<'a, 'p> {
    pub(crate) fn new(progress: &'a mut (dyn Progress + 'p)) -> Self {
        Shared(std::sync::Mutex::new(progress))
    }

    /// Runs `f` on the progress; a panic elsewhere does not silence it.
    pub(crate) fn with(&self, f: impl FnOnce(&mut dyn Progress)) {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut **guard)
    }
}
