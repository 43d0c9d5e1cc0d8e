//! Batch normalization in training mode (Keras' `BatchNormalization` with `training=True`) as
//! a CPU op with autograd: per channel, the batch's mean and (biased) variance over the
//! images and positions normalize the activations, then `gamma` and `beta` scale and shift
//! them, optionally followed by a ReLU in the same pass (one op instead of two: no separate
//! activation buffer, mask or gradient). The batch statistics come back too, for the running
//! averages inference uses ([`update_moving_statistics`]). Sums run per channel plane in a
//! fixed order (f32 within a plane, f64 across planes), so results do not depend on
//! scheduling.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::{accumulate_grad, contiguous_values, take_output_grad, Tensor1, Tensor4};

/// A batch's per-channel mean and biased variance.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStatistics {
    pub mean: Vec<f32>,
    pub variance: Vec<f32>,
}

/// The planes of channel `c` of a (B, C, H, W) buffer, image by image.
fn planes(
    values: &[f32],
    c: usize,
    (channels, plane): (usize, usize),
) -> impl Iterator<Item = &[f32]> {
    values
        .chunks_exact(channels * plane)
        .map(move |image| &image[c * plane..(c + 1) * plane])
}

/// Calls `f(channel, dst_plane, src_plane)` for every image's channel planes of two (B, C, H, W)
/// buffers, images in parallel.
fn for_each_plane(
    dst: &mut [f32],
    src: &[f32],
    (channels, plane): (usize, usize),
    f: impl Fn(usize, &mut [f32], &[f32]) + Sync,
) {
    let image = channels * plane;
    dst.par_chunks_mut(image)
        .zip(src.par_chunks(image))
        .for_each(|(dst_image, src_image)| {
            for (c, (d, s)) in dst_image
                .chunks_exact_mut(plane)
                .zip(src_image.chunks_exact(plane))
                .enumerate()
            {
                f(c, d, s);
            }
        });
}

/// `gamma * (x - mean) / sqrt(variance + epsilon) + beta` per channel of `x` (B, C, H, W),
/// with the batch's statistics, and those statistics.
pub fn cpu_batch_norm2d<T: Tape<f32, Cpu>>(
    x: Tensor4<T>,
    gamma: &Tensor1,
    beta: &Tensor1,
    epsilon: f32,
) -> (Tensor4<T>, BatchStatistics) {
    batch_norm(x, gamma, beta, epsilon, false)
}

/// `relu(batch_norm2d(x))` in one pass (see [`cpu_batch_norm2d`]).
pub fn cpu_batch_norm_relu2d<T: Tape<f32, Cpu>>(
    x: Tensor4<T>,
    gamma: &Tensor1,
    beta: &Tensor1,
    epsilon: f32,
) -> (Tensor4<T>, BatchStatistics) {
    batch_norm(x, gamma, beta, epsilon, true)
}

fn batch_norm<T: Tape<f32, Cpu>>(
    x: Tensor4<T>,
    gamma: &Tensor1,
    beta: &Tensor1,
    epsilon: f32,
    relu: bool,
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
    let stats: Vec<(f32, f64, f32)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = planes(&xs, c, layout)
                .map(|p| p.iter().sum::<f32>() as f64)
                .sum();
            let mean = (sum / count) as f32;
            let squares: f64 = planes(&xs, c, layout)
                .map(|p| p.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() as f64)
                .sum();
            let variance = squares / count;
            let inv_std = (1.0 / (variance + epsilon as f64).sqrt()) as f32;
            (mean, variance, inv_std)
        })
        .collect();
    // y = x * scale + shift per channel.
    let affine: Vec<(f32, f32)> = stats
        .iter()
        .zip(gammas.iter().zip(betas.iter()))
        .map(|(&(mean, _, inv_std), (&g, &b))| (g * inv_std, b - mean * g * inv_std))
        .collect();
    let mut ys = vec![0.0f32; xs.len()];
    for_each_plane(&mut ys, &xs, layout, |c, y_plane, x_plane| {
        let (scale, shift) = affine[c];
        for (y, &v) in y_plane.iter_mut().zip(x_plane) {
            let z = v * scale + shift;
            *y = if relu { z.max(0.0) } else { z };
        }
    });
    let statistics = BatchStatistics {
        mean: stats.iter().map(|s| s.0).collect(),
        variance: stats.iter().map(|s| s.1 as f32).collect(),
    };
    let out = device.tensor_from_vec(ys, shape);
    if T::OWNS_TAPE {
        let (x_ref, g_ref, b_ref, out_ref) = (x.clone(), gamma.clone(), beta.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let mut dy = take_output_grad(grads, &out_ref)?;
            if relu {
                // The ReLU passes gradient only where its output was positive (recomputed from
                // the input: cheaper than copying the output back).
                for_each_plane(&mut dy, &xs, layout, |c, d_plane, x_plane| {
                    let (scale, shift) = affine[c];
                    for (d, &v) in d_plane.iter_mut().zip(x_plane) {
                        if v * scale + shift <= 0.0 {
                            *d = 0.0;
                        }
                    }
                });
            }
            // Per channel: sum(dy), sum(dy * normalized).
            let sums: Vec<(f64, f64)> = (0..channels)
                .into_par_iter()
                .map(|c| {
                    let (mean, _, inv_std) = stats[c];
                    planes(&dy, c, layout).zip(planes(&xs, c, layout)).fold(
                        (0.0, 0.0),
                        |(s, sn), (g, v)| {
                            let (ps, psn) =
                                g.iter().zip(v).fold((0.0f32, 0.0f32), |(a, b), (&g, &v)| {
                                    (a + g, b + g * (v - mean) * inv_std)
                                });
                            (s + ps as f64, sn + psn as f64)
                        },
                    )
                })
                .collect();
            // dx = gamma * inv_std / n * (n * dy - sum(dy) - normalized * sum(dy * normalized)),
            // computed in place of dy (each element reads only its own dy).
            let means: Vec<(f32, f32)> = sums
                .iter()
                .map(|&(sum, sum_n)| ((sum / count) as f32, (sum_n / count) as f32))
                .collect();
            let mut dx = dy;
            for_each_plane(&mut dx, &xs, layout, |c, d_plane, x_plane| {
                let (mean, _, inv_std) = stats[c];
                let scale = gammas[c] * inv_std;
                let (mean_dy, mean_dyn) = means[c];
                for (d, &v) in d_plane.iter_mut().zip(x_plane) {
                    let normalized = (v - mean) * inv_std;
                    *d = scale * (*d - mean_dy - normalized * mean_dyn);
                }
            });
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
