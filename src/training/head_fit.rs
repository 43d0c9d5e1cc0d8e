//! The CPU fast path for training a dense head on cached features (the transfer stages' head
//! epochs): parameters, activations, gradients and Adam's moments live in buffers allocated
//! once and reused every step; each product is one GEMM split over the cores by output
//! columns (no sum is split between threads, so runs repeat exactly); ReLU, dropout, softmax
//! cross-entropy and Adam are fused loops. Same data order, loss, optimizer, early stopping
//! and divergence checks as [`super::fit`]; the dropout masks come from their own seeded
//! generator.

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
use crate::ops::par_matmul_by_columns;
use crate::ops::MatRef;

/// One dense layer's parameters and Adam moments.
#[derive(Clone)]
struct Layer {
    inputs: usize,
    units: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// What the forward pass keeps for the backward pass, per dense layer: its input (after
/// dropout) and its output (after ReLU); per dropout, its scaled mask.
struct Buffers {
    inputs: Vec<Vec<f32>>,
    outputs: Vec<Vec<f32>>,
    masks: Vec<Vec<f32>>,
    grad_weight: Vec<Vec<f32>>,
    grad_bias: Vec<Vec<f32>>,
    delta: Vec<f32>,
    delta_in: Vec<f32>,
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

/// Adam (dfdx's formula, Keras' defaults) over `params`, in parallel chunks.
fn adam(params: &mut [f32], grads: &[f32], moments: &mut Moments, step: i32, lr: f32) {
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-7f32);
    let (c1, c2) = ((1.0 - b1.powi(step)).recip(), (1.0 - b2.powi(step)).recip());
    const CHUNK: usize = 1 << 14;
    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(
            moments
                .m
                .par_chunks_mut(CHUNK)
                .zip(moments.v.par_chunks_mut(CHUNK)),
        )
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let g = g[i];
                m[i] = m[i] * b1 + g * (1.0 - b1);
                v[i] = v[i] * b2 + g * g * (1.0 - b2);
                p[i] -= lr * (m[i] * c1) / ((v[i] * c2).sqrt() + eps);
            }
        });
}

impl Buffers {
    fn new(layers: &[Layer], batch: usize) -> Self {
        Buffers {
            inputs: layers.iter().map(|l| vec![0.0; batch * l.inputs]).collect(),
            outputs: layers.iter().map(|l| vec![0.0; batch * l.units]).collect(),
            masks: layers.iter().map(|l| vec![0.0; batch * l.inputs]).collect(),
            grad_weight: layers
                .iter()
                .map(|l| vec![0.0; l.inputs * l.units])
                .collect(),
            grad_bias: layers.iter().map(|l| vec![0.0; l.units]).collect(),
            delta: Vec::new(),
            delta_in: Vec::new(),
        }
    }
}

/// Forward pass of `rows` images whose features are in `inputs[0]`; logits in the last output.
fn forward(
    layers: &[Layer],
    rates: &[f64],
    buffers: &mut Buffers,
    rows: usize,
    rng: &mut ChaCha8Rng,
) {
    let last = layers.len() - 1;
    for (i, layer) in layers.iter().enumerate() {
        if i > 0 {
            buffers.inputs[i][..rows * layer.inputs]
                .copy_from_slice(&buffers.outputs[i - 1][..rows * layer.inputs]);
        }
        let rate = rates[i];
        if rate > 0.0 {
            let keep = 1.0 - rate;
            let scale = (1.0 / keep) as f32;
            let mask = &mut buffers.masks[i][..rows * layer.inputs];
            for (m, x) in mask
                .iter_mut()
                .zip(&mut buffers.inputs[i][..rows * layer.inputs])
            {
                *m = if rng.gen_bool(keep) { scale } else { 0.0 };
                *x *= *m;
            }
        }
        let out = &mut buffers.outputs[i][..rows * layer.units];
        for row in out.chunks_exact_mut(layer.units) {
            row.copy_from_slice(&layer.bias);
        }
        par_matmul_by_columns(
            (rows, layer.units, layer.inputs),
            out,
            true,
            MatRef::row_major(&buffers.inputs[i], layer.inputs),
            |c| MatRef::row_major(&layer.weight[c..], layer.units),
        );
        if i < last {
            for v in out.iter_mut() {
                *v = v.max(0.0);
            }
        }
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

/// Backward pass from `buffers.delta` (gradient at the logits) into every layer's gradients.
fn backward(layers: &[Layer], rates: &[f64], buffers: &mut Buffers, rows: usize) {
    for i in (0..layers.len()).rev() {
        let layer = &layers[i];
        let delta = &buffers.delta[..rows * layer.units];
        let db = &mut buffers.grad_bias[i];
        db.fill(0.0);
        for row in delta.chunks_exact(layer.units) {
            for (d, g) in db.iter_mut().zip(row) {
                *d += *g;
            }
        }
        let x = &buffers.inputs[i][..rows * layer.inputs];
        par_matmul_by_columns(
            (layer.inputs, layer.units, rows),
            &mut buffers.grad_weight[i],
            false,
            MatRef::transposed(x, layer.inputs),
            |c| MatRef::row_major(&delta[c..], layer.units),
        );
        if i == 0 {
            break;
        }
        // The gradient at this layer's input, then through the dropout mask and the previous
        // layer's ReLU.
        buffers.delta_in.resize(rows * layer.inputs, 0.0);
        let delta_view = MatRef::row_major(delta, layer.units);
        par_matmul_by_columns(
            (rows, layer.inputs, layer.units),
            &mut buffers.delta_in,
            false,
            delta_view,
            |c| MatRef::transposed(&layer.weight[c * layer.units..], layer.units),
        );
        let previous_out = &buffers.outputs[i - 1][..rows * layer.inputs];
        let mask = &buffers.masks[i][..rows * layer.inputs];
        for (j, g) in buffers.delta_in.iter_mut().enumerate() {
            if rates[i] > 0.0 {
                *g *= mask[j];
            }
            if previous_out[j] <= 0.0 {
                *g = 0.0;
            }
        }
        std::mem::swap(&mut buffers.delta, &mut buffers.delta_in);
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
    let rates = plan(head);
    let mut layers: Vec<Layer> = head
        .dense_values()
        .into_iter()
        .map(|(weight, bias, inputs, units)| Layer {
            inputs,
            units,
            weight,
            bias,
        })
        .collect();
    let mut moments: Vec<(Moments, Moments)> = layers
        .iter()
        .map(|l| {
            let zeros = |n: usize| Moments {
                m: vec![0.0; n],
                v: vec![0.0; n],
            };
            (zeros(l.weight.len()), zeros(l.bias.len()))
        })
        .collect();
    let batch = config.batch_size;
    let mut buffers = Buffers::new(&layers, batch);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut dropout_rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x0d40_90a7);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let steps = train.len().div_ceil(batch);
    let (mut history, mut first_loss, mut step_count) = (History::default(), None::<f32>, 0i32);
    let mut stopper = EarlyStopper::<Vec<Layer>>::default();
    let mut labels = Vec::with_capacity(batch);
    for epoch in 1..=config.epochs {
        let started = Instant::now();
        order.shuffle(&mut rng);
        progress.on_epoch_start(epoch, config.epochs, steps);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (step, indices) in order.chunks(batch).enumerate() {
            let rows = indices.len();
            for (r, &i) in indices.iter().enumerate() {
                buffers.inputs[0][r * features..(r + 1) * features]
                    .copy_from_slice(&train.pixels[i * features..(i + 1) * features]);
            }
            labels.clear();
            labels.extend(indices.iter().map(|&i| train.labels[i]));
            forward(&layers, &rates, &mut buffers, rows, &mut dropout_rng);
            let logits = &buffers.outputs[layers.len() - 1][..rows * NUM_CLASSES];
            let (loss, right) = loss_and_delta(logits, &labels, &mut buffers.delta);
            let loss_value = (loss / rows as f64) as f32;
            check_loss(&mut first_loss, loss_value, (epoch, step + 1), config)?;
            backward(&layers, &rates, &mut buffers, rows);
            let lr = config.schedule.rate(
                config.learning_rate,
                (epoch - 1) * steps + step,
                config.epochs * steps,
            ) as f32;
            step_count += 1;
            for (i, layer) in layers.iter_mut().enumerate() {
                let (mw, mb) = &mut moments[i];
                adam(
                    &mut layer.weight,
                    &buffers.grad_weight[i],
                    mw,
                    step_count,
                    lr,
                );
                adam(&mut layer.bias, &buffers.grad_bias[i], mb, step_count, lr);
            }
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
            .position(|l| l.weight.iter().chain(&l.bias).any(|v| !v.is_finite()))
        {
            return Err(TrainError::NonFiniteWeights {
                epoch,
                parameter: format!("dense{}", i + 1),
                learning_rate: config.learning_rate,
            });
        }
        head.set_dense_values(layers.iter().map(|l| (&l.weight[..], &l.bias[..])));
        let scores = validation.map(|v| evaluate(head, v, 1000)).transpose()?;
        let record = EpochRecord::of(epoch, (loss_sum, correct, seen), scores.as_ref(), started);
        progress.on_epoch_end(&record);
        history.epochs.push(record.clone());
        if stopper.after_epoch(config, &record, || layers.clone(), &mut history) {
            break;
        }
    }
    stopper.finish(config, &mut history, progress, |best| {
        head.set_dense_values(best.iter().map(|l| (&l.weight[..], &l.bias[..])));
    });
    Ok(history)
}
