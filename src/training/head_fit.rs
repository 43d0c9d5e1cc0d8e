//! The CPU fast path for training a dense head on cached features (the transfer stages' head
//! epochs). Parameters and Adam's moments stay packed in panels ([`PanelMatrix`]) for the
//! whole run, activations are stored feature-major (one row of `rows_pad` values per unit), and
//! every buffer is allocated once. A step per layer: the forward product split over the cores
//! by weight panels; backward, the input gradient split by input units, then the weight
//! gradient and Adam fused per panel (each weight read once from memory per pass). No sum is
//! split between threads, so runs repeat exactly. Same data order, loss, optimizer, early
//! stopping and divergence checks as [`super::fit`]; the dropout masks come from their own
//! seeded generator.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{
    argmax, check_input, check_loss, evaluate, EarlyStopper, EpochRecord, History, Progress,
    TrainConfig,
};
use crate::data::prepare::Prepared;
use crate::data::NUM_CLASSES;
use crate::error::TrainError;
use crate::models::{DenseHead, HeadLayer};
use crate::ops::dense::{AdamStep, Isa, PanelMatrix, PANEL};

/// Weights per task below which a layer's pass stays on one thread (the hand-off costs more).
const PARALLEL_WEIGHTS: usize = 1 << 15;
/// Input units per task of the input-gradient pass (its accumulator: this many x PANEL).
const INPUTS_PER_TASK: usize = 64;

/// Runs `run` on every task, spread over the pool's threads when the layer has `weights` enough
/// to pay for the hand-off.
fn run_tasks<I>(tasks: I, weights: usize, run: impl Fn(I::Item) + Sync + Send)
where
    I: Iterator + Send,
    I::Item: Send,
{
    if weights >= PARALLEL_WEIGHTS {
        tasks.par_bridge().for_each(run);
    } else {
        tasks.for_each(run);
    }
}

/// One dense layer's parameters (or Adam moments of the same shapes), bias padded to whole
/// panels.
#[derive(Clone)]
struct Layer {
    weight: PanelMatrix,
    bias: Vec<f32>,
}

impl Layer {
    fn zeros_like(&self) -> Layer {
        Layer {
            weight: PanelMatrix::zeros(self.weight.inputs, self.weight.units),
            bias: vec![0.0; self.bias.len()],
        }
    }

    /// (row-major weight, bias) as the head stores them.
    fn values(&self) -> (Vec<f32>, Vec<f32>) {
        (
            self.weight.to_row_major(),
            self.bias[..self.weight.units].to_vec(),
        )
    }
}

/// Activations and gradients of one step, feature-major: value (unit u, row r) at
/// `u * rows_pad + r`, `rows_pad` = the batch rounded up to whole tiles of PANEL rows.
struct Buffers {
    rows_pad: usize,
    /// Per layer: its input (after dropout).
    inputs: Vec<Vec<f32>>,
    /// Per layer: its output (after ReLU), padded units included.
    outputs: Vec<Vec<f32>>,
    /// Per layer: the scaled dropout mask on its input.
    masks: Vec<Vec<f32>>,
    /// The gradient at the current layer's output, feature-major and row-major (rows x padded
    /// units), and at its input.
    delta_t: Vec<f32>,
    delta: Vec<f32>,
    delta_in_t: Vec<f32>,
    logits: Vec<f32>,
    logits_delta: Vec<f32>,
}

/// The head's dense layers in order, each with the dropout rate applied to its input.
fn plan(head: &DenseHead) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut pending = 0.0;
    for layer in &head.config.layers {
        match *layer {
            HeadLayer::Dropout(rate) => pending = rate,
            HeadLayer::Dense(_) => {
                rates.push(pending);
                pending = 0.0;
            }
        }
    }
    rates
}

impl Buffers {
    fn new(layers: &[Layer], batch: usize) -> Self {
        let rows_pad = batch.div_ceil(PANEL) * PANEL;
        let widest = layers
            .iter()
            .map(|l| l.weight.padded_units().max(l.weight.inputs))
            .max()
            .unwrap_or(0);
        let per_unit = |n: usize| vec![0.0; n * rows_pad];
        Buffers {
            rows_pad,
            inputs: layers.iter().map(|l| per_unit(l.weight.inputs)).collect(),
            outputs: layers
                .iter()
                .map(|l| per_unit(l.weight.padded_units()))
                .collect(),
            masks: layers.iter().map(|l| per_unit(l.weight.inputs)).collect(),
            delta_t: per_unit(widest),
            delta: vec![0.0; widest * batch],
            delta_in_t: per_unit(widest),
            logits: vec![0.0; batch * NUM_CLASSES],
            logits_delta: Vec::new(),
        }
    }
}

/// `output = relu?(bias + weight^T input)` for every row tile, split over the cores by panels.
fn dense_forward(
    isa: Isa,
    layer: &Layer,
    input: &[f32],
    output: &mut [f32],
    rows_pad: usize,
    relu: bool,
) {
    let w = &layer.weight;
    let panel_len = w.inputs * PANEL;
    let run = |(p, out): (usize, &mut [f32])| {
        let mut acc = [0.0f32; PANEL * PANEL];
        let panel = &w.data[p * panel_len..(p + 1) * panel_len];
        for r0 in (0..rows_pad).step_by(PANEL) {
            for (t, row) in acc.chunks_exact_mut(PANEL).enumerate() {
                row.fill(layer.bias[p * PANEL + t]);
            }
            // acc[unit t][row l] += weight[input d][unit t] * input[input d][row r0 + l]
            isa.accumulate(
                PANEL,
                &mut acc,
                panel,
                (1, PANEL),
                &input[r0..],
                rows_pad,
                w.inputs,
            );
            for (t, row) in acc.chunks_exact(PANEL).enumerate() {
                let dst = &mut out[t * rows_pad + r0..t * rows_pad + r0 + PANEL];
                for (d, &v) in dst.iter_mut().zip(row) {
                    *d = if relu { v.max(0.0) } else { v };
                }
            }
        }
    };
    let chunks = output[..w.padded_units() * rows_pad].chunks_mut(PANEL * rows_pad);
    run_tasks(chunks.enumerate(), w.data.len(), run);
}

/// The gradient at the layer's input, feature-major, from the gradient at its output.
fn input_gradient(
    isa: Isa,
    layer: &Layer,
    delta_t: &[f32],
    delta_in_t: &mut [f32],
    rows_pad: usize,
) {
    let w = &layer.weight;
    let panel_len = w.inputs * PANEL;
    let run = |(chunk, out): (usize, &mut [f32])| {
        let first = chunk * INPUTS_PER_TASK;
        let count = out.len() / rows_pad;
        let mut acc = vec![0.0f32; count * PANEL];
        for r0 in (0..rows_pad).step_by(PANEL) {
            acc.fill(0.0);
            for p in 0..w.panels() {
                // acc[input t][row l] += weight[input t][unit d] * delta[unit d][row r0 + l]
                isa.accumulate(
                    count,
                    &mut acc,
                    &w.data[p * panel_len + first * PANEL..],
                    (PANEL, 1),
                    &delta_t[p * PANEL * rows_pad + r0..],
                    rows_pad,
                    PANEL,
                );
            }
            for (t, row) in acc.chunks_exact(PANEL).enumerate() {
                out[t * rows_pad + r0..t * rows_pad + r0 + PANEL].copy_from_slice(row);
            }
        }
    };
    let chunks = delta_in_t[..w.inputs * rows_pad].chunks_mut(INPUTS_PER_TASK * rows_pad);
    run_tasks(chunks.enumerate(), w.data.len(), run);
}

/// One panel's weights with Adam's first and second moments, and the panel's index.
type PanelTask<'a> = (usize, ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]));

/// The weight gradient (`input^T delta` over the batch's `rows`), applied with Adam panel by
/// panel as it is computed; then the bias.
#[allow(clippy::too_many_arguments)]
fn update_weights(
    isa: Isa,
    layer: &mut Layer,
    moments: &mut (Layer, Layer),
    input: &[f32],
    delta: &[f32],
    delta_t: &[f32],
    (rows, rows_pad): (usize, usize),
    adam: &AdamStep,
) {
    let (inputs, padded_units) = (layer.weight.inputs, layer.weight.padded_units());
    let panel_len = inputs * PANEL;
    let weights = layer.weight.data.len();
    let (m, v) = moments;
    let run = |(p, ((weight, m), v)): PanelTask| {
        let mut grad = vec![0.0f32; INPUTS_PER_TASK * PANEL];
        for i0 in (0..inputs).step_by(INPUTS_PER_TASK) {
            let count = INPUTS_PER_TASK.min(inputs - i0);
            let grad = &mut grad[..count * PANEL];
            grad.fill(0.0);
            // grad[input t][unit l] += input[input i0 + t][row d] * delta[row d][unit p * PANEL + l]
            isa.accumulate(
                count,
                grad,
                &input[i0 * rows_pad..],
                (rows_pad, 1),
                &delta[p * PANEL..],
                padded_units,
                rows,
            );
            let span = i0 * PANEL..(i0 + count) * PANEL;
            isa.adam(
                adam,
                &mut weight[span.clone()],
                grad,
                &mut m[span.clone()],
                &mut v[span],
            );
        }
    };
    let panels = layer
        .weight
        .data
        .chunks_mut(panel_len)
        .zip(m.weight.data.chunks_mut(panel_len))
        .zip(v.weight.data.chunks_mut(panel_len))
        .enumerate();
    run_tasks(panels, weights, run);
    let bias_grad: Vec<f32> = delta_t[..padded_units * rows_pad]
        .chunks_exact(rows_pad)
        .map(|unit| unit[..rows].iter().sum())
        .collect();
    isa.adam(adam, &mut layer.bias, &bias_grad, &mut m.bias, &mut v.bias);
}

/// Forward pass of `rows` images whose features are in `inputs[0]`; logits in the last output.
fn forward(
    isa: Isa,
    layers: &[Layer],
    rates: &[f64],
    buffers: &mut Buffers,
    rows: usize,
    rng: &mut ChaCha8Rng,
) {
    let rows_pad = buffers.rows_pad;
    let last = layers.len() - 1;
    for (i, layer) in layers.iter().enumerate() {
        let inputs = layer.weight.inputs;
        if i > 0 {
            buffers.inputs[i].copy_from_slice(&buffers.outputs[i - 1][..inputs * rows_pad]);
        }
        let rate = rates[i];
        if rate > 0.0 {
            let keep = 1.0 - rate;
            let scale = (1.0 / keep) as f32;
            let (mask, x) = (&mut buffers.masks[i], &mut buffers.inputs[i]);
            // Drawn row by row, as the row-major path did.
            for r in 0..rows {
                for u in 0..inputs {
                    let m = if rng.gen_bool(keep) { scale } else { 0.0 };
                    mask[u * rows_pad + r] = m;
                    x[u * rows_pad + r] *= m;
                }
            }
        }
        dense_forward(
            isa,
            layer,
            &buffers.inputs[i],
            &mut buffers.outputs[i],
            rows_pad,
            i < last,
        );
    }
}

/// Softmax cross-entropy of the logits against `labels`: (summed loss, correct), with the
/// gradient of the mean loss written to `delta`.
fn loss_and_delta(logits: &[f32], labels: &[u8], delta: &mut Vec<f32>) -> (f64, usize) {
    let rows = labels.len();
    delta.resize(rows * NUM_CLASSES, 0.0);
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for ((row, d), &label) in logits
        .chunks_exact(NUM_CLASSES)
        .zip(delta.chunks_exact_mut(NUM_CLASSES))
        .zip(labels)
    {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let log_sum = sum.ln() + max;
        loss += (log_sum - row[label as usize]) as f64;
        correct += usize::from(argmax(row) == label);
        for (j, (g, v)) in d.iter_mut().zip(row).enumerate() {
            let p = (v - log_sum).exp();
            *g = (p - f32::from(j == label as usize)) / rows as f32;
        }
    }
    (loss, correct)
}

/// Writes the gradient at a layer's output given feature-major in `delta_t` (`units` real
/// units of `padded_units`) also row-major into `delta`, padding zero.
fn transpose_delta(
    delta_t: &[f32],
    delta: &mut [f32],
    (rows, rows_pad): (usize, usize),
    padded_units: usize,
) {
    for (r, row) in delta[..rows * padded_units]
        .chunks_exact_mut(padded_units)
        .enumerate()
    {
        for (u, d) in row.iter_mut().enumerate() {
            *d = delta_t[u * rows_pad + r];
        }
    }
}

/// Backward pass and Adam step from the logits' gradient (row-major in `buffers.logits_delta`).
fn backward_and_update(
    isa: Isa,
    layers: &mut [Layer],
    moments: &mut [(Layer, Layer)],
    rates: &[f64],
    buffers: &mut Buffers,
    rows: usize,
    adam: &AdamStep,
) {
    let rows_pad = buffers.rows_pad;
    let last = layers.len() - 1;
    let padded = layers[last].weight.padded_units();
    buffers.delta_t[..padded * rows_pad].fill(0.0);
    for (r, row) in buffers.logits_delta.chunks_exact(NUM_CLASSES).enumerate() {
        for (u, &g) in row.iter().enumerate() {
            buffers.delta_t[u * rows_pad + r] = g;
        }
    }
    for i in (0..layers.len()).rev() {
        let padded_units = layers[i].weight.padded_units();
        transpose_delta(
            &buffers.delta_t,
            &mut buffers.delta,
            (rows, rows_pad),
            padded_units,
        );
        if i > 0 {
            // The gradient at this layer's input (with the weights before this step's update),
            // then through the dropout mask and the previous layer's ReLU.
            let inputs = layers[i].weight.inputs;
            input_gradient(
                isa,
                &layers[i],
                &buffers.delta_t,
                &mut buffers.delta_in_t,
                rows_pad,
            );
            let previous_out = &buffers.outputs[i - 1];
            let mask = &buffers.masks[i];
            for (j, g) in buffers.delta_in_t[..inputs * rows_pad]
                .iter_mut()
                .enumerate()
            {
                if rates[i] > 0.0 {
                    *g *= mask[j];
                }
                if previous_out[j] <= 0.0 {
                    *g = 0.0;
                }
            }
            let below_padded = layers[i - 1].weight.padded_units();
            buffers.delta_in_t[inputs * rows_pad..below_padded * rows_pad].fill(0.0);
        }
        update_weights(
            isa,
            &mut layers[i],
            &mut moments[i],
            &buffers.inputs[i],
            &buffers.delta,
            &buffers.delta_t,
            (rows, rows_pad),
            adam,
        );
        std::mem::swap(&mut buffers.delta_t, &mut buffers.delta_in_t);
    }
}

/// [`super::fit`] for a dense head on the CPU, on the fast path described above.
pub fn fit_head(
    head: &mut DenseHead,
    train: &Prepared,
    validation: Option<&Prepared>,
    config: &TrainConfig,
    progress: &mut dyn Progress,
) -> Result<History, TrainError> {
    config.validate_for(validation.is_some())?;
    let features = head.config.features;
    for data in std::iter::once(train).chain(validation) {
        check_input(head, data)?;
    }
    if train.is_empty() || validation.is_some_and(|v| v.is_empty()) {
        return Err(TrainError::Config {
            name: "data".into(),
            message: "no training or validation vectors".into(),
        });
    }
    let isa = Isa::detect();
    let rates = plan(head);
    let mut layers: Vec<Layer> = head
        .dense_values()
        .into_iter()
        .map(|(weight, bias, inputs, units)| {
            let weight = PanelMatrix::from_row_major(&weight, inputs, units);
            let mut bias = bias;
            bias.resize(weight.padded_units(), 0.0);
            Layer { weight, bias }
        })
        .collect();
    let mut moments: Vec<(Layer, Layer)> = layers
        .iter()
        .map(|l| (l.zeros_like(), l.zeros_like()))
        .collect();
    let store = |head: &mut DenseHead, layers: &[Layer]| {
        let values: Vec<(Vec<f32>, Vec<f32>)> = layers.iter().map(Layer::values).collect();
        head.set_dense_values(values.iter().map(|(w, b)| (&w[..], &b[..])));
    };
    let batch = config.batch_size;
    let mut buffers = Buffers::new(&layers, batch);
    let rows_pad = buffers.rows_pad;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut dropout_rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x0d40_90a7);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let steps = train.len().div_ceil(batch);
    let (mut history, mut first_loss, mut step_count) = (History::default(), None::<f32>, 0i32);
    let mut stopper = EarlyStopper::<Vec<Layer>>::default();
    let mut labels = Vec::with_capacity(batch);
    let last = layers.len() - 1;
    for epoch in 1..=config.epochs {
        let started = Instant::now();
        order.shuffle(&mut rng);
        progress.on_epoch_start(epoch, config.epochs, steps);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (step, indices) in order.chunks(batch).enumerate() {
            let rows = indices.len();
            let x = &mut buffers.inputs[0];
            for (r, &i) in indices.iter().enumerate() {
                for (u, &v) in train.pixels[i * features..(i + 1) * features]
                    .iter()
                    .enumerate()
                {
                    x[u * rows_pad + r] = v;
                }
            }
            labels.clear();
            labels.extend(indices.iter().map(|&i| train.labels[i]));
            forward(isa, &layers, &rates, &mut buffers, rows, &mut dropout_rng);
            let logits = &mut buffers.logits[..rows * NUM_CLASSES];
            for (r, row) in logits.chunks_exact_mut(NUM_CLASSES).enumerate() {
                for (u, v) in row.iter_mut().enumerate() {
                    *v = buffers.outputs[last][u * rows_pad + r];
                }
            }
            let (loss, right) = loss_and_delta(logits, &labels, &mut buffers.logits_delta);
            let loss_value = (loss / rows as f64) as f32;
            check_loss(&mut first_loss, loss_value, (epoch, step + 1), config)?;
            let lr = config.schedule.rate(
                config.learning_rate,
                (epoch - 1) * steps + step,
                config.epochs * steps,
            ) as f32;
            step_count += 1;
            let adam = AdamStep::new(step_count, lr);
            backward_and_update(
                isa,
                &mut layers,
                &mut moments,
                &rates,
                &mut buffers,
                rows,
                &adam,
            );
            loss_sum += loss;
            correct += right;
            seen += rows;
            progress.on_batch(
                step + 1,
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
            );
        }
        if let Some(i) = layers
            .iter()
            .position(|l| l.weight.data.iter().chain(&l.bias).any(|v| !v.is_finite()))
        {
            return Err(TrainError::NonFiniteWeights {
                epoch,
                parameter: format!("dense{}", i + 1),
                learning_rate: config.learning_rate,
            });
        }
        store(head, &layers);
        let scores = validation.map(|v| evaluate(head, v, 1000)).transpose()?;
        let record = EpochRecord::of(epoch, (loss_sum, correct, seen), scores.as_ref(), started);
        progress.on_epoch_end(&record);
        history.epochs.push(record.clone());
        if stopper.after_epoch(config, &record, || layers.clone(), &mut history) {
            break;
        }
    }
    stopper.finish(config, &mut history, progress, |best| store(head, &best));
    Ok(history)
}
