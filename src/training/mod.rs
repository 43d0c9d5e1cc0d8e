//! Training as Keras' `fit` does it: Adam, categorical cross-entropy, mini-batches reshuffled
//! every epoch from a seed, a per-epoch history, early stopping that restores the best weights,
//! and evaluation with a confusion matrix and per-class metrics.

pub mod checkpoint;
mod head_fit;
mod history;
pub mod metrics;
mod optim;
pub mod progress;
mod schedule;

pub use history::{EpochRecord, History};
pub use metrics::{ClassificationReport, ConfusionMatrix};
pub use optim::{Adam, ParamMoments};
pub use schedule::LearningRateSchedule;

// The progress interface training reports through.
pub use progress::{EpochLines, Progress, Silent};

use std::path::PathBuf;
use std::time::Instant;

use dfdx::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::augment::{Augmentation, Transform};
use crate::data::prepare::{one_hot, Prepared};
use crate::data::NUM_CLASSES;
use crate::error::TrainError;
use crate::models::{model_device, ImageClassifier};
use crate::ops::{ModelDevice, Tensor4};
use crate::resume::RunKey;

/// What early stopping watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    ValLoss,
    ValAccuracy,
}

impl Monitor {
    fn value(&self, record: &EpochRecord) -> f64 {
        match self {
            Monitor::ValLoss => record.val_loss.unwrap_or(f64::INFINITY),
            Monitor::ValAccuracy => -record.val_accuracy.unwrap_or(0.0),
        }
    }
}

/// Keras' `EarlyStopping(monitor, patience, min_delta, restore_best_weights)`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlyStopping {
    pub monitor: Monitor,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
    pub restore_best_weights: bool,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> Self {
        EarlyStopping {
            monitor: Monitor::ValLoss,
            patience,
            min_delta: 0.0,
            restore_best_weights: true,
        }
    }
}

/// The knobs of a training run, with the walkthrough's defaults.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Seeds the per-epoch shuffling (model initialization has its own seed).
    pub seed: u64,
    pub early_stopping: Option<EarlyStopping>,
    /// Random shifts and flips of the training images, drawn every epoch from `seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<Augmentation>,
    /// How the learning rate moves over the run (`learning_rate` is its peak).
    #[serde(default, skip_serializing_if = "LearningRateSchedule::is_constant")]
    pub schedule: LearningRateSchedule,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 8,
            batch_size: 32,
            learning_rate: 1e-3,
            seed: 42,
            early_stopping: None,
            augmentation: None,
            schedule: LearningRateSchedule::Constant,
        }
    }
}

/// A batch loss this many times the run's first one (or chance level's, if larger) means the
/// run has exploded, even while the value stays finite.
pub const EXPLODED_LOSS_FACTOR: f32 = 1000.0;

impl TrainConfig {
    /// Refuses settings that cannot train (call it before loading data or writing anything).
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |name: &str, message: &str| {
            Err(TrainError::Config {
                name: name.into(),
                message: message.into(),
            })
        };
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", "must be a positive number");
        }
        if let Err(message) = self.schedule.validate() {
            return bad("schedule", &message);
        }
        if let Some(Err(message)) = self.augmentation.map(|a| a.validate()) {
            return bad("augmentation", &message);
        }
        if let Some(stopping) = &self.early_stopping {
            if stopping.patience == 0 {
                return bad("early_stopping.patience", "must be at least 1 epoch");
            }
            if !(stopping.min_delta.is_finite() && stopping.min_delta >= 0.0) {
                return bad("early_stopping.min_delta", "must be a number >= 0");
            }
        }
        Ok(())
    }

    fn validate_for(&self, has_validation: bool) -> Result<(), TrainError> {
        self.validate()?;
        if self.early_stopping.is_some() && !has_validation {
            return Err(TrainError::Config {
                name: "early_stopping".into(),
                message: "needs validation data to monitor".into(),
            });
        }
        Ok(())
    }
}

/// Copies the images at `indices` into one input tensor (B, C, H, W), each from the variant
/// `variant_of[i]` (the first variant when `variant_of` is empty) and transformed by
/// `transforms[i]` (unchanged when `transforms` is empty).
fn batch_tensor<D: ModelDevice>(
    device: &D,
    variants: &[&Prepared],
    (variant_of, transforms): (&[usize], &[Transform]),
    indices: &[usize],
    shape: (usize, usize, usize),
) -> Tensor4<NoneTape, D> {
    let image_len = shape.0 * shape.1 * shape.2;
    let mut pixels = vec![0.0; indices.len() * image_len];
    for (&i, out) in indices.iter().zip(pixels.chunks_exact_mut(image_len)) {
        let data = variants[variant_of.get(i).copied().unwrap_or(0)];
        let image = &data.pixels[i * image_len..(i + 1) * image_len];
        match transforms.get(i) {
            Some(transform) => transform.apply(image, shape, out),
            None => out.copy_from_slice(image),
        }
    }
    device.images(pixels, (indices.len(), shape.0, shape.1, shape.2))
}

fn check_input<M: ImageClassifier>(model: &M, data: &Prepared) -> Result<(), TrainError> {
    let (c, h, w) = model.input_shape();
    if data.pixels.len() != data.len() * c * h * w {
        return Err(TrainError::Config {
            name: "data".into(),
            message: format!(
                "{} values for {} images, but the model takes {c}x{h}x{w} per image",
                data.pixels.len(),
                data.len()
            ),
        });
    }
    Ok(())
}

fn argmax(row: &[f32]) -> u8 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u8
}

/// Runs `work` on a thread of a rayon pool. The many small parallel sections of a training
/// step then fork and join among pool threads, instead of each handing work from the calling
/// thread to the pool and sleeping until it comes back.
pub(crate) fn on_thread_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    keep_freed_memory();
    if rayon::current_thread_index().is_some() {
        return work();
    }
    match training_pool(rayon::current_num_threads()) {
        Ok(pool) => pool.install(work),
        Err(_) => work(),
    }
}

/// A pool of `threads` threads for training, each flushing denormal floats to zero (MXCSR's
/// FTZ and DAZ bits, as TensorFlow runs). Adam's moments of units whose gradients stay zero decay
/// into denormals, and on Intel cores every operation on one takes a slow microcode assist:
/// without this a VGG-16 head epoch went from 27 s to 78 s over 10 epochs, and LeNet-5's from
/// 2.6 s to 3.2 s. Only values below 1.2e-38 change.
pub(crate) fn training_pool(
    threads: usize,
) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(|_| flush_denormals_on_this_thread())
        .build()
}

#[allow(deprecated)] // _mm_setcsr: the one way to set these bits without inline assembly
fn flush_denormals_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sets this thread's MXCSR flush-to-zero and denormals-are-zero bits; nothing else
    // changes.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
}

/// Tells glibc's allocator to keep freed memory for reuse instead of handing it back to the
/// system. A training step allocates and frees the same large buffers (im2col matrices,
/// activations, gradients) every time; above its default thresholds glibc maps each afresh and
/// the kernel zeroes every page again. Measured: the modern CNN trains 1.15x faster with this
/// (220-224 vs 192-196 images/s on 2 cores), at the same peak memory. Process-wide, set once when training or extraction first
/// runs; `FASHION_MNIST_KEEP_FREED_MEMORY=0` leaves glibc's defaults. No-op on other systems.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var("FASHION_MNIST_KEEP_FREED_MEMORY").as_deref() == Ok("0") {
                return;
            }
            // No mmap for large blocks (glibc caps M_MMAP_THRESHOLD at 32 MiB, below one
            // im2col matrix), and only trim the heap when 1 GiB at its top is free.
            // SAFETY: mallopt only changes the allocator's parameters; glibc serializes it with
            // allocations.
            unsafe {
                libc::mallopt(libc::M_MMAP_MAX, 0);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        });
    }
}

/// [`on_thread_pool`] for work on device `D`'s tensors. CPU tensors are `Send` but generic
/// code cannot say so for every device: a CUDA context belongs to the thread that made it, so
/// GPU work stays on the calling thread.
pub(crate) fn on_device_threads<D: ModelDevice, R>(work: impl FnOnce() -> R) -> R {
    if std::any::TypeId::of::<D>() != std::any::TypeId::of::<Cpu>() {
        return work();
    }
    struct AssertSend<T>(T);
    // SAFETY: only reached with D = Cpu, where what training and evaluation capture (CPU
    // tensors, prepared data, `Send` progress reporters) is Send; the calling thread blocks until the
    // work is done, so nothing is used from two threads at once.
    unsafe impl<T> Send for AssertSend<T> {}
    let work = AssertSend(work);
    on_thread_pool(move || {
        let work = work;
        AssertSend((work.0)())
    })
    .0
}

/// Trains a dense head on cached feature vectors: [`fit`], on the CPU's fast path (see
/// `head_fit`) when the head lives on the CPU with the custom ops.
pub fn fit_head<D: ModelDevice>(
    head: &mut crate::models::DenseHead<D>,
    train: &Prepared,
    validation: Option<&Prepared>,
    config: &TrainConfig,
    progress: &mut dyn Progress,
) -> Result<History, TrainError> {
    if config.augmentation.is_some() {
        return Err(TrainError::Config {
            name: "augmentation".into(),
            message: "shifts and flips images; a head trains on feature vectors".into(),
        });
    }
    let custom = crate::ops::cpu_ops() == crate::ops::CpuOps::Custom;
    let any: &mut dyn std::any::Any = head;
    match any.downcast_mut::<crate::models::DenseHead<Cpu>>() {
        // On the training pool, whose threads flush denormals (the kernels' gradients too).
        Some(cpu_head) if custom => on_device_threads::<Cpu, _>(|| {
            head_fit::fit_head(cpu_head, train, validation, config, progress)
        }),
        _ => {
            let head = any
                .downcast_mut::<crate::models::DenseHead<D>>()
                .expect("the head's own type");
            fit(head, train, validation, config, progress)
        }
    }
}

/// Trains `model` in place and returns its history. With early stopping that restores the best
/// weights, `model` ends with the best epoch's weights.
pub fn fit<M: ImageClassifier>(
    model: &mut M,
    train: &Prepared,
    validation: Option<&Prepared>,
    config: &TrainConfig,
    progress: &mut dyn Progress,
) -> Result<History, TrainError> {
    fit_augmented(model, &[train], validation, config, progress)
}

/// [`fit`] with precomputed augmentations: `train_variants` hold the same images in the same
/// order and with the same labels, transformed differently (e.g. original and mirrored); every
/// epoch, each image is drawn from one variant at random (seeded).
pub fn fit_augmented<M: ImageClassifier>(
    model: &mut M,
    train_variants: &[&Prepared],
    validation: Option<&Prepared>,
    config: &TrainConfig,
    progress: &mut dyn Progress,
) -> Result<History, TrainError> {
    on_device_threads::<M::Device, _>(|| {
        fit_here(model, train_variants, validation, config, progress, None)
    })
}

/// Where a resumable run keeps its state, and what determines the run.
#[derive(Clone, Debug)]
pub struct SavedState {
    /// The state file, rewritten (atomically) after every epoch.
    pub path: PathBuf,
    /// Everything the run depends on: a state saved under another key is refused.
    pub key: RunKey,
}

/// [`fit_augmented`] that can be stopped and started again: after every epoch it saves the
/// model, the optimizer and the history to `state.path`; when that file exists, training goes
/// on from the epoch it holds. `state.key` must determine the run (data, model, settings): a
/// state saved under another key is refused, as is one whose training settings or step count
/// do not fit `config`. Data order and augmentations are replayed from the seed, so they are
/// those of an uninterrupted run; dropout masks after a restart come from a generator seeded by
/// the seed and the epoch on the CPU (the GPU's own generator on a GPU), so a resumed run is
/// not bit-identical to an uninterrupted one where the model has dropout. With early stopping
/// nothing is saved or resumed (its best weights would have to be saved too). The file stays
/// after the last epoch; the caller removes it once the run's results are saved. A state that
/// cannot be saved (a full disk) is reported and training goes on.
pub fn fit_resumable<M: ImageClassifier>(
    model: &mut M,
    train_variants: &[&Prepared],
    validation: Option<&Prepared>,
    config: &TrainConfig,
    progress: &mut dyn Progress,
    state: &SavedState,
) -> Result<History, TrainError> {
    on_device_threads::<M::Device, _>(|| {
        fit_here(
            model,
            train_variants,
            validation,
            config,
            progress,
            Some(state).filter(|_| config.early_stopping.is_none()),
        )
    })
}

/// The random draws of one epoch: the new order of the training images (`order` is shuffled in
/// place), then which variant each image comes from and its augmentation.
fn draw_epoch(
    rng: &mut ChaCha8Rng,
    order: &mut [usize],
    variants: usize,
    augmentation: Option<&Augmentation>,
) -> (Vec<usize>, Vec<Transform>) {
    order.shuffle(rng);
    let n = order.len();
    let variant_of = if variants > 1 {
        (0..n).map(|_| rng.gen_range(0..variants)).collect()
    } else {
        Vec::new()
    };
    let transforms = match augmentation {
        Some(augmentation) => (0..n).map(|_| augmentation.draw(rng)).collect(),
        None => Vec::new(),
    };
    (variant_of, transforms)
}

/// Refuses a saved state that does not fit the run about to go on from it (its key should
/// have told already; this also guards callers whose key leaves settings out).
fn check_resumable(
    path: &std::path::Path,
    saved: &checkpoint::TrainingProgress,
    config: &TrainConfig,
    steps: usize,
) -> Result<(), TrainError> {
    let refuse = |message: String| {
        Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "{message}. Delete it to start the training over, or use another output directory"
            ),
        })
    };
    if let Some(train) = &saved.train {
        let differences = RunKey::new()
            .with("train", config)
            .differences(&RunKey::new().with("train", train));
        if !differences.is_empty() {
            return refuse(format!(
                "saved by a run with other training settings ({})",
                differences
                    .join("; ")
                    .replace("in the stored results", "in the saved state")
            ));
        }
    }
    let expected_steps = saved.epochs_done * steps;
    if saved.epochs_done > config.epochs
        || saved.history.epochs.len() != saved.epochs_done
        || usize::try_from(saved.optimizer_steps).ok() != Some(expected_steps)
    {
        return refuse(format!(
            "holds {} epochs ({} records, {} optimizer steps) where this run has {} epochs of {steps} steps",
            saved.epochs_done,
            saved.history.epochs.len(),
            saved.optimizer_steps,
            config.epochs
        ));
    }
    Ok(())
}

/// The dropout seed of a run restarted after `epochs_done` epochs.
fn restart_seed(seed: u64, epochs_done: usize) -> u64 {
    seed ^ (epochs_done as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn fit_here<M: ImageClassifier>(
    model: &mut M,
    train_variants: &[&Prepared],
    validation: Option<&Prepared>,
    config: &TrainConfig,
    progress: &mut dyn Progress,
    state: Option<&SavedState>,
) -> Result<History, TrainError> {
    config.validate_for(validation.is_some())?;
    if validation.is_some_and(|v| v.is_empty()) {
        return Err(TrainError::Config {
            name: "validation".into(),
            message: "the validation set holds no images (too few images for the split: use more, or a larger validation split)".into(),
        });
    }
    refresh_param_ids(model);
    let Some(&train) = train_variants.first() else {
        return Err(TrainError::Config {
            name: "data".into(),
            message: "no training images".into(),
        });
    };
    for variant in train_variants {
        check_input(model, variant)?;
        if variant.labels != train.labels {
            return Err(TrainError::Config {
                name: "data".into(),
                message: "augmented variants must hold the same images and labels".into(),
            });
        }
    }
    if let Some(v) = validation {
        check_input(model, v)?;
    }
    if train.is_empty() {
        return Err(TrainError::Config {
            name: "data".into(),
            message: "no training images".into(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut optimizer = Adam::new(config.learning_rate);
    let steps = train.len().div_ceil(config.batch_size);
    let mut history = History::default();
    let mut stopper = EarlyStopper::default();
    let mut first_loss: Option<f32> = None;
    let mut epochs_done = 0;
    if let Some(state) = state.filter(|s| s.path.exists()) {
        if let Some(saved) = checkpoint::read_training_progress(&state.path, &state.key)? {
            check_resumable(&state.path, &saved, config, steps)?;
        }
        let saved =
            checkpoint::load_training_state(&state.path, &state.key, model, &mut optimizer)?;
        progress.on_message(&format!(
            "resuming from {}: {} of {} epochs done",
            state.path.display(),
            saved.epochs_done,
            config.epochs
        ));
        epochs_done = saved.epochs_done;
        history = saved.history;
        first_loss = saved.first_loss;
        history.resumed_after_epochs.push(epochs_done);
        for _ in 0..epochs_done {
            draw_epoch(
                &mut rng,
                &mut order,
                train_variants.len(),
                config.augmentation.as_ref(),
            );
        }
    }
    // Seeds dropout masks, for models that have dropout (on the CPU).
    let dropout_seed = match epochs_done {
        0 => config.seed,
        done => restart_seed(config.seed, done),
    };
    let device = model_device(model)
        .ok_or_else(|| TrainError::Config {
            name: "model".into(),
            message: "has no parameters to train".into(),
        })?
        .for_training(dropout_seed);
    let shape = model.input_shape();

    for epoch in epochs_done + 1..=config.epochs {
        let started = Instant::now();
        progress.on_epoch_start(epoch, config.epochs, steps);
        let (variant_of, transforms) = draw_epoch(
            &mut rng,
            &mut order,
            train_variants.len(),
            config.augmentation.as_ref(),
        );
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (step, indices) in order.chunks(config.batch_size).enumerate() {
            optimizer.config.lr = config.schedule.rate(
                config.learning_rate,
                (epoch - 1) * steps + step,
                config.epochs * steps,
            );
            let x = batch_tensor(
                &device,
                train_variants,
                (&variant_of, &transforms),
                indices,
                shape,
            );
            let labels: Vec<u8> = indices.iter().map(|&i| train.labels[i]).collect();
            let targets = device.tensor_from_vec(one_hot(&labels), (indices.len(), NUM_CLASSES));
            // A fresh gradient store per step: dfdx cannot mark run-time-shaped parameters as
            // leaves from outside the crate, so intermediate gradients are dropped with it.
            let logits = model.forward(x.traced(Gradients::leaky()));
            let logit_values = logits.as_vec();
            let loss = cross_entropy_with_logits_loss(logits, targets);
            let loss_value = loss.as_vec()[0];
            check_loss(&mut first_loss, loss_value, (epoch, step + 1), config)?;
            let mut grads = loss.backward();
            optimizer
                .update(model, &mut grads)
                .map_err(|e| TrainError::Device(e.to_string()))?;
            model.after_step();

            loss_sum += loss_value as f64 * indices.len() as f64;
            seen += indices.len();
            correct += logit_values
                .chunks_exact(NUM_CLASSES)
                .zip(&labels)
                .filter(|(row, &label)| argmax(row) == label)
                .count();
            progress.on_batch(
                step + 1,
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
            );
        }
        // A diverged weight can hide behind a ReLU and leave the loss finite; check them all.
        if let Some(parameter) = first_non_finite_param(model) {
            return Err(TrainError::NonFiniteWeights {
                epoch,
                parameter,
                learning_rate: config.learning_rate,
            });
        }
        let scores = validation.map(|v| evaluate(model, v, 1000)).transpose()?;
        let record = EpochRecord::of(epoch, (loss_sum, correct, seen), scores.as_ref(), started);
        history.epochs.push(record.clone());
        if let Some(state) = state {
            let saved = checkpoint::TrainingProgress {
                key: state.key.clone(),
                epochs_done: epoch,
                optimizer_steps: optimizer.steps(),
                history: history.clone(),
                first_loss,
                train: Some(config.clone()),
            };
            // The run itself is fine: a restart would go on from the last state saved.
            if let Err(e) = checkpoint::save_training_state(&state.path, model, &optimizer, &saved)
            {
                progress.on_message(&format!(
                    "warning: the state after epoch {epoch} could not be saved ({e}); training goes on"
                ));
            }
        }
        progress.on_epoch_end(&record);
        if stopper.after_epoch(config, &record, || model.clone(), &mut history) {
            break;
        }
    }
    stopper.finish(config, &mut history, progress, |best| *model = best);
    Ok(history)
}

/// Stops a run whose batch loss is NaN or infinite, or exploded: above
/// [`EXPLODED_LOSS_FACTOR`] times the run's first loss (or chance level's, if larger).
pub(crate) fn check_loss(
    first_loss: &mut Option<f32>,
    loss: f32,
    (epoch, step): (usize, usize),
    config: &TrainConfig,
) -> Result<(), TrainError> {
    let reference = *first_loss.get_or_insert(loss);
    let limit = EXPLODED_LOSS_FACTOR * reference.max(std::f32::consts::LN_10);
    if loss.is_finite() && loss <= limit {
        return Ok(());
    }
    Err(TrainError::Diverged {
        epoch,
        step,
        value: loss,
        learning_rate: config.learning_rate,
    })
}

/// Early stopping's bookkeeping, shared by [`fit`] and the head fast path: the best epoch so
/// far with a snapshot of the weights (in whatever form the trainer keeps them).
pub(crate) struct EarlyStopper<S> {
    best: Option<(f64, usize, S)>,
}

impl<S> Default for EarlyStopper<S> {
    fn default() -> Self {
        EarlyStopper { best: None }
    }
}

impl<S> EarlyStopper<S> {
    /// Takes note of an epoch (a `snapshot` when it is the best so far); true when training
    /// stops here.
    pub(crate) fn after_epoch(
        &mut self,
        config: &TrainConfig,
        record: &EpochRecord,
        snapshot: impl FnOnce() -> S,
        history: &mut History,
    ) -> bool {
        let Some(stopping) = &config.early_stopping else {
            return false;
        };
        let value = stopping.monitor.value(record);
        let improved = self
            .best
            .as_ref()
            .is_none_or(|(best_value, _, _)| value < best_value - stopping.min_delta);
        if improved {
            self.best = Some((value, record.epoch, snapshot()));
        }
        let best_epoch = self.best.as_ref().map_or(record.epoch, |b| b.1);
        let stop = record.epoch - best_epoch >= stopping.patience && record.epoch < config.epochs;
        history.stopped_early |= stop;
        stop
    }

    /// After the last epoch: records the best epoch and, when asked to, `restore`s its weights.
    pub(crate) fn finish(
        self,
        config: &TrainConfig,
        history: &mut History,
        progress: &mut dyn Progress,
        restore: impl FnOnce(S),
    ) {
        let (Some(stopping), Some((_, best_epoch, best))) = (&config.early_stopping, self.best)
        else {
            return;
        };
        history.best_epoch = Some(best_epoch);
        if stopping.restore_best_weights && best_epoch != history.epochs.len() {
            restore(best);
            history.restored_best = true;
        }
        if history.stopped_early {
            progress.on_early_stop(best_epoch, history.restored_best);
        }
    }
}

impl EpochRecord {
    /// The record of `epoch` from the running sums (loss, correct, images seen) and the
    /// validation scores.
    pub(crate) fn of(
        epoch: usize,
        (loss_sum, correct, seen): (f64, usize, usize),
        validation: Option<&Evaluation>,
        started: Instant,
    ) -> Self {
        EpochRecord {
            epoch,
            loss: loss_sum / seen as f64,
            accuracy: correct as f64 / seen as f64,
            val_loss: validation.map(|e| e.loss),
            val_accuracy: validation.map(|e| e.accuracy),
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

struct Refresh;

impl<D: ModelDevice> crate::models::ParamVisitorMut<D> for Refresh {
    type Error = std::convert::Infallible;
    fn visit<S: Shape>(&mut self, _: &str, t: &mut Tensor<S, f32, D>) -> Result<(), Self::Error> {
        let values = t.as_vec();
        *t = t.device().tensor_from_vec(values, *t.shape());
        Ok(())
    }
}

/// Gives every parameter a fresh tensor id. dfdx keys gradients by ids from a global counter;
/// in an evcxr notebook every cell links its own copy of dfdx, whose counter starts again, so a
/// model built in one cell could share ids with the tensors training makes in another.
fn refresh_param_ids<M: ImageClassifier>(model: &mut M) {
    let Ok(()) = model.visit_params_mut(&mut Refresh);
}

struct FirstNonFinite(Option<String>);

impl<D: ModelDevice> crate::models::ParamVisitor<D> for FirstNonFinite {
    type Error = ();
    fn visit<S: Shape>(&mut self, name: &str, t: &Tensor<S, f32, D>) -> Result<(), ()> {
        if self.0.is_none() && t.as_vec().iter().any(|v| !v.is_finite()) {
            self.0 = Some(name.to_string());
        }
        Ok(())
    }
}

/// The name of the first parameter holding NaN or infinity, if any.
fn first_non_finite_param<M: ImageClassifier>(model: &M) -> Option<String> {
    let mut check = FirstNonFinite(None);
    let _ = model.visit_params(&mut check);
    check.0
}

/// Loss, accuracy, predictions and class probabilities of a model on a dataset.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    pub predicted: Vec<u8>,
    /// Softmax probabilities, 10 per image.
    pub probabilities: Vec<f32>,
}

impl Evaluation {
    pub fn confusion_matrix(&self, truth: &[u8]) -> ConfusionMatrix {
        ConfusionMatrix::new(truth, &self.predicted)
    }
}

/// Softmax probabilities (10 per image) for `pixels` holding whole images in the model's input
/// shape, computed in batches of `batch_size`.
pub fn predict_proba<M: ImageClassifier>(model: &M, pixels: &[f32], batch_size: usize) -> Vec<f32> {
    let Some(device) = model_device(model) else {
        return Vec::new();
    };
    let (c, h, w) = model.input_shape();
    let image_len = c * h * w;
    let mut out = Vec::with_capacity(pixels.len() / image_len * NUM_CLASSES);
    for chunk in pixels.chunks(batch_size.max(1) * image_len) {
        let n = chunk.len() / image_len;
        let x = device.images(chunk.to_vec(), (n, c, h, w));
        out.extend(model.forward(x).softmax::<Axis<1>>().as_vec());
    }
    out
}

/// Evaluates `model` on `data` (mean categorical cross-entropy and accuracy).
pub fn evaluate<M: ImageClassifier>(
    model: &M,
    data: &Prepared,
    batch_size: usize,
) -> Result<Evaluation, TrainError> {
    check_input(model, data)?;
    let probabilities =
        on_device_threads::<M::Device, _>(|| predict_proba(model, &data.pixels, batch_size));
    let mut loss = 0.0f64;
    let mut predicted = Vec::with_capacity(data.len());
    for (row, &label) in probabilities.chunks_exact(NUM_CLASSES).zip(&data.labels) {
        loss -= (row[label as usize].max(1e-7) as f64).ln();
        predicted.push(argmax(row));
    }
    let correct = predicted
        .iter()
        .zip(&data.labels)
        .filter(|(p, t)| p == t)
        .count();
    let n = data.len().max(1) as f64;
    Ok(Evaluation {
        loss: loss / n,
        accuracy: correct as f64 / n,
        predicted,
        probabilities,
    })
}
