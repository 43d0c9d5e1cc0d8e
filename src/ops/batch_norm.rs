//! Batch normalization in training mode (Keras' `BatchNormalization` with `training=True`) as
//! a CPU op with autograd: per channel, the batch's mean and (biased) variance over the
//! images and positions normalize the activations, then `gamma` and `beta` scale and shift
//! them. The batch statistics come back too, for the running averages inference uses
//! ([`update_moving_statistics`]). Each channel is computed by one thread with f64 sums in a
//! fixed order, so results do not depend on scheduling.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::{accumulate_grad, contiguous_values, take_output_grad, Tensor1, Tensor4};

/// A batch's per-channel mean and biased variance.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStatistics {
    pub mean: Vec<f32>,
    pub variance: Vec<f32>,
}

/// The values of channel `c` of a (B, C, H, W) buffer, image by image.
fn channel(
    values: &[f32],
    c: usize,
    (channels, plane): (usize, usize),
) -> impl Iterator<Item = &f32> {
    values
        .chunks_exact(channels * plane)
        .flat_map(move |image| &image[c * plane..(c + 1) * plane])
}

/// `gamma * (x - mean) / sqrt(variance + epsilon) + beta` per channel of `x` (B, C, H, W),
/// with the batch's statistics, and those statistics.
pub fn cpu_batch_norm2d<T: Tape<f32, Cpu>>(
    x: Tensor4<T>,
    gamma: &Tensor1,
    beta: &Tensor1,
    epsilon: f32,
) -> (Tensor4<T>, BatchStatistics) {
    let shape @ (batch, channels, height, width) = *x.shape();
    assert_eq!(gamma.shape().0, channels, "one gamma per channel");
    assert_eq!(beta.shape().0, channels, "one beta per channel");
    assert!(
        batch * height * width > 0,
        "batch normalization of an empty batch"
    );
    let plane = height * width;
    let count = (batch * plane) as f64;
    let (x, mut tape) = x.split_tape();
    let device = x.device().clone();
    let xs = contiguous_values(&x);
    let (gammas, betas) = (contiguous_values(gamma), contiguous_values(beta));
    let layout = (channels, plane);
    // Per channel: mean, variance, 1/sqrt(variance + epsilon).
    let stats: Vec<(f64, f64, f32)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let mean = channel(&xs, c, layout).map(|&v| v as f64).sum::<f64>() / count;
            let variance = channel(&xs, c, layout)
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / count;
            (
                mean,
                variance,
                (1.0 / (variance + epsilon as f64).sqrt()) as f32,
            )
        })
        .collect();
    let mut normalized = vec![0.0f32; xs.len()];
    let mut ys = vec![0.0f32; xs.len()];
    for (i, ((n, y), &v)) in normalized.iter_mut().zip(&mut ys).zip(&xs).enumerate() {
        let c = (i / plane) % channels;
        let (mean, _, inv_std) = stats[c];
        *n = (v - mean as f32) * inv_std;
        *y = gammas[c] * *n + betas[c];
    }
    let statistics = BatchStatistics {
        mean: stats.iter().map(|s| s.0 as f32).collect(),
        variance: stats.iter().map(|s| s.1 as f32).collect(),
    };
    let out = device.tensor_from_vec(ys, shape);
    if T::OWNS_TAPE {
        let (x_ref, g_ref, b_ref, out_ref) = (x.clone(), gamma.clone(), beta.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let dy = take_output_grad(grads, &out_ref)?;
            // Per channel: sum(dy), sum(dy * normalized).
            let sums: Vec<(f64, f64)> = (0..channels)
                .into_par_iter()
                .map(|c| {
                    channel(&dy, c, layout)
                        .zip(channel(&normalized, c, layout))
                        .fold((0.0, 0.0), |(s, sn), (&g, &n)| {
                            (s + g as f64, sn + (g * n) as f64)
                        })
                })
                .collect();
            let mut dx = vec![0.0f32; dy.len()];
            for (i, d) in dx.iter_mut().enumerate() {
                let c = (i / plane) % channels;
                let (sum, sum_n) = sums[c];
                let scale = gammas[c] * stats[c].2 / count as f32;
                *d = scale * (count as f32 * dy[i] - sum as f32 - normalized[i] * sum_n as f32);
            }
            let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
            let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
            accumulate_grad(grads, &g_ref, &dgamma)?;
            accumulate_grad(grads, &b_ref, &dbeta)?;
            accumulate_grad(grads, &x_ref, &dx)?;
            Ok(())
        });
    }
    (out.put_tape(tape), statistics)
}

/// Keras' running averages: `moving = moving * momentum + batch * (1 - momentum)`, for the
/// mean and the (biased) variance (Keras' default momentum: 0.99).
pub fn update_moving_statistics(
    moving_mean: &mut [f32],
    moving_variance: &mut [f32],
    batch: &BatchStatistics,
    momentum: f32,
) {
    for (m, &b) in moving_mean.iter_mut().zip(&batch.mean) {
        *m = *m * momentum + b * (1.0 - momentum);
    }
    for (v, &b) in moving_variance.iter_mut().zip(&batch.variance) {
        *v = *v * momentum + b * (1.0 - momentum);
    }
}
