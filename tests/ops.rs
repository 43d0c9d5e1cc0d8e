//! Conv2d and max-pool: forward values and input/weight/bias gradients against naive f64 loops.

use dfdx::prelude::*;
use fashion_mnist::ops::{conv2d, max_pool2d, BatchStatistics, InputGrad, Tensor1, Tensor4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

struct Case {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    filters: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// Naive conv: returns (output, d_input, d_weight, d_bias) for loss = sum(output * upstream).
#[allow(clippy::type_complexity)]
fn naive_conv(
    c: &Case,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    upstream: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let oh = (c.height + 2 * c.padding - c.kernel) / c.stride + 1;
    let ow = (c.width + 2 * c.padding - c.kernel) / c.stride + 1;
    let mut out = vec![0.0f64; c.batch * c.filters * oh * ow];
    let mut dx = vec![0.0f64; x.len()];
    let mut dw = vec![0.0f64; w.len()];
    let mut db = vec![0.0f64; b.len()];
    for n in 0..c.batch {
        for o in 0..c.filters {
            for oy in 0..oh {
                for ox in 0..ow {
                    let oi = ((n * c.filters + o) * oh + oy) * ow + ox;
                    let g = upstream[oi] as f64;
                    let mut acc = b[o] as f64;
                    db[o] += g;
                    for ch in 0..c.channels {
                        for ky in 0..c.kernel {
                            for kx in 0..c.kernel {
                                let iy = (oy * c.stride + ky) as isize - c.padding as isize;
                                let ix = (ox * c.stride + kx) as isize - c.padding as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= c.height as isize
                                    || ix >= c.width as isize
                                {
                                    continue;
                                }
                                let xi = ((n * c.channels + ch) * c.height + iy as usize) * c.width
                                    + ix as usize;
                                let wi = ((o * c.channels + ch) * c.kernel + ky) * c.kernel + kx;
                                acc += x[xi] as f64 * w[wi] as f64;
                                dx[xi] += g * w[wi] as f64;
                                dw[wi] += g * x[xi] as f64;
                            }
                        }
                    }
                    out[oi] = acc;
                }
            }
        }
    }
    (out, dx, dw, db)
}

fn assert_close(name: &str, ours: &[f32], reference: &[f64], tolerance: f64) {
    assert_eq!(ours.len(), reference.len(), "{name}: length");
    let scale = reference.iter().map(|v| v.abs()).fold(1e-6, f64::max);
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        let err = (*a as f64 - b).abs() / scale;
        assert!(
            err <= tolerance,
            "{name}[{i}]: ours {a}, reference {b}, relative error {err:e}"
        );
    }
}

fn check_conv(c: Case) {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x_data = random(&mut rng, c.batch * c.channels * c.height * c.width);
    let w_data = random(&mut rng, c.filters * c.channels * c.kernel * c.kernel);
    let b_data = random(&mut rng, c.filters);
    let x: Tensor4 = dev.tensor_from_vec(x_data.clone(), (c.batch, c.channels, c.height, c.width));
    let w: Tensor4 =
        dev.tensor_from_vec(w_data.clone(), (c.filters, c.channels, c.kernel, c.kernel));
    let b: Tensor1 = dev.tensor_from_vec(b_data.clone(), (c.filters,));

    let out = conv2d(
        x.leaky_trace(),
        &w,
        &b,
        c.stride,
        c.padding,
        InputGrad::Compute,
    );
    let shape = *out.shape();
    // Inference (no tape) computes the same values.
    let inference = conv2d(x.clone(), &w, &b, c.stride, c.padding, InputGrad::Compute).as_vec();
    let upstream_data = random(&mut rng, shape.num_elements());
    let upstream: Tensor4 = dev.tensor_from_vec(upstream_data.clone(), shape);
    let out_values = out.as_vec();
    let grads = (out * upstream).sum().backward();

    let (r_out, r_dx, r_dw, r_db) = naive_conv(&c, &x_data, &w_data, &b_data, &upstream_data);
    let tag = format!(
        "k{} s{} p{} {}x{}x{}x{} -> {}",
        c.kernel, c.stride, c.padding, c.batch, c.channels, c.height, c.width, c.filters
    );
    assert_close(&format!("{tag} output"), &out_values, &r_out, 1e-5);
    assert_close(&format!("{tag} inference output"), &inference, &r_out, 1e-5);
    assert_close(
        &format!("{tag} d_input"),
        &grads.get(&x).as_vec(),
        &r_dx,
        1e-5,
    );
    assert_close(
        &format!("{tag} d_weight"),
        &grads.get(&w).as_vec(),
        &r_dw,
        1e-5,
    );
    assert_close(
        &format!("{tag} d_bias"),
        &grads.get(&b).as_vec(),
        &r_db,
        1e-5,
    );
}

#[test]
fn conv2d_matches_naive_reference_across_strides_paddings_and_kernels() {
    for kernel in [1, 3, 5] {
        for stride in [1, 2] {
            for padding in [0, 1, 2] {
                check_conv(Case {
                    batch: 3,
                    channels: 2,
                    height: 9,
                    width: 8,
                    filters: 4,
                    kernel,
                    stride,
                    padding,
                });
            }
        }
    }
}

#[test]
fn conv2d_small_planes_grouped_into_one_gemm_match_reference() {
    // Small output planes put several images side by side in one GEMM (groups of up to 16,
    // the last one partial); pointwise convolutions take the same path.
    for (kernel, stride, padding, height) in
        [(3, 1, 1, 2), (3, 2, 1, 4), (1, 1, 0, 1), (1, 2, 0, 3)]
    {
        check_conv(Case {
            batch: 37,
            channels: 5,
            height,
            width: height,
            filters: 7,
            kernel,
            stride,
            padding,
        });
    }
}

#[test]
fn conv2d_3x3_matches_reference_with_many_channels_and_odd_planes() {
    // VGG-like layers: rounding must stay small over many channels, on odd planes too.
    for (height, width) in [(9, 9), (8, 11), (12, 8)] {
        check_conv(Case {
            batch: 5,
            channels: 64,
            height,
            width,
            filters: 24,
            kernel: 3,
            stride: 1,
            padding: 1,
        });
    }
}

#[test]
fn conv2d_lenet_shapes_match_reference() {
    check_conv(Case {
        batch: 2,
        channels: 1,
        height: 28,
        width: 28,
        filters: 6,
        kernel: 5,
        stride: 1,
        padding: 0,
    });
    check_conv(Case {
        batch: 9, // more than one weight-gradient chunk
        channels: 6,
        height: 12,
        width: 12,
        filters: 16,
        kernel: 5,
        stride: 1,
        padding: 0,
    });
}

#[test]
fn conv2d_skipping_the_input_gradient_leaves_it_untouched() {
    let dev = Cpu::default();
    let x: Tensor4 = dev.tensor_from_vec(vec![1.0; 2 * 16], (2, 1, 4, 4));
    let w: Tensor4 = dev.tensor_from_vec(vec![0.5; 9], (1, 1, 3, 3));
    let b: Tensor1 = dev.tensor_from_vec(vec![0.0], (1,));
    let out = conv2d(x.leaky_trace(), &w, &b, 1, 0, InputGrad::Skip);
    let mut grads = out.sum().backward();
    assert!(grads
        .get_or_alloc_mut(&x)
        .unwrap()
        .iter()
        .all(|&g| g == 0.0));
    // Each weight sees 4 output positions x 2 images of value 1.
    assert!(grads.get(&w).as_vec().iter().all(|&g| g == 8.0));
}

fn naive_max_pool(
    x: &[f32],
    (b, c, h, w): (usize, usize, usize, usize),
    k: usize,
    s: usize,
    p: usize,
    upstream: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let oh = (h + 2 * p - k) / s + 1;
    let ow = (w + 2 * p - k) / s + 1;
    let mut out = vec![0.0; b * c * oh * ow];
    let mut dx = vec![0.0; x.len()];
    for plane in 0..b * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = (f32::NEG_INFINITY, 0);
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        let ix = (ox * s + kx) as isize - p as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let i = plane * h * w + iy as usize * w + ix as usize;
                        if x[i] > best.0 {
                            best = (x[i], i);
                        }
                    }
                }
                let oi = plane * oh * ow + oy * ow + ox;
                out[oi] = best.0 as f64;
                dx[best.1] += upstream[oi] as f64;
            }
        }
    }
    (out, dx)
}

#[test]
fn max_pool2d_matches_naive_reference() {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (k, s, p, h, w) in [
        (2, 2, 0, 8, 8),
        (2, 2, 0, 24, 24),
        (2, 2, 0, 9, 7),
        (3, 2, 1, 9, 7),
        (3, 1, 1, 5, 5),
        (2, 1, 0, 5, 6),
    ] {
        let shape = (2, 3, h, w);
        let x_data = random(&mut rng, shape.num_elements());
        let x: Tensor4 = dev.tensor_from_vec(x_data.clone(), shape);
        let out = max_pool2d(x.leaky_trace(), k, s, p);
        let out_shape = *out.shape();
        let upstream_data = random(&mut rng, out_shape.num_elements());
        let upstream: Tensor4 = dev.tensor_from_vec(upstream_data.clone(), out_shape);
        let out_values = out.as_vec();
        let grads = (out * upstream).sum().backward();
        let (r_out, r_dx) = naive_max_pool(&x_data, shape, k, s, p, &upstream_data);
        assert_close(
            &format!("pool k{k} s{s} p{p} output"),
            &out_values,
            &r_out,
            0.0,
        );
        assert_close(
            &format!("pool k{k} s{s} p{p} d_input"),
            &grads.get(&x).as_vec(),
            &r_dx,
            1e-6,
        );
    }
}

/// Training-mode batch normalization and the gradients of `sum(y * upstream)`, in f64.
#[allow(clippy::type_complexity)]
fn naive_batch_norm(
    (b, c, plane): (usize, usize, usize),
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    upstream: &[f32],
    epsilon: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let index = |n: usize, ch: usize, p: usize| (n * c + ch) * plane + p;
    let count = (b * plane) as f64;
    let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let (mut dgamma, mut dbeta, mut variances) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let values: Vec<(usize, f64)> = (0..b)
            .flat_map(|n| (0..plane).map(move |p| index(n, ch, p)))
            .map(|i| (i, x[i] as f64))
            .collect();
        let mean = values.iter().map(|v| v.1).sum::<f64>() / count;
        let variance = values.iter().map(|v| (v.1 - mean).powi(2)).sum::<f64>() / count;
        variances[ch] = variance;
        let inv_std = 1.0 / (variance + epsilon).sqrt();
        let g = gamma[ch] as f64;
        for &(i, v) in &values {
            let n = (v - mean) * inv_std;
            y[i] = g * n + beta[ch] as f64;
            dgamma[ch] += upstream[i] as f64 * n;
            dbeta[ch] += upstream[i] as f64;
        }
        // dL/dx_i = g * inv_std / N * (N dy_i - sum(dy) - n_i * sum(dy * n)).
        for &(i, v) in &values {
            let n = (v - mean) * inv_std;
            dx[i] = g * inv_std / count * (count * upstream[i] as f64 - dbeta[ch] - n * dgamma[ch]);
        }
    }
    (y, dx, dgamma, dbeta, variances)
}

#[test]
fn batch_norm_in_training_mode_matches_a_naive_reference() {
    use fashion_mnist::ops::cpu_batch_norm2d;
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (b, c, h, w) in [(2, 3, 4, 5), (1, 2, 1, 1), (8, 4, 3, 3)] {
        let x_data: Vec<f32> = random(&mut rng, b * c * h * w)
            .iter()
            .map(|v| 3.0 * v + 1.0)
            .collect();
        let gamma_data = random(&mut rng, c);
        let beta_data = random(&mut rng, c);
        let upstream_data = random(&mut rng, b * c * h * w);
        let x: Tensor4 = dev.tensor_from_vec(x_data.clone(), (b, c, h, w));
        let gamma: Tensor1 = dev.tensor_from_vec(gamma_data.clone(), (c,));
        let beta: Tensor1 = dev.tensor_from_vec(beta_data.clone(), (c,));
        let (y, stats) = cpu_batch_norm2d(x.leaky_trace(), &gamma, &beta, 1e-3);
        let upstream: Tensor4 = dev.tensor_from_vec(upstream_data.clone(), (b, c, h, w));
        let values = y.as_vec();
        let grads = (y * upstream).sum().backward();
        let (r_y, r_dx, r_dg, r_db, r_var) = naive_batch_norm(
            (b, c, h * w),
            &x_data,
            &gamma_data,
            &beta_data,
            &upstream_data,
            1e-3,
        );
        let tag = format!("{b}x{c}x{h}x{w}");
        assert_close(&format!("{tag} output"), &values, &r_y, 1e-5);
        assert_close(
            &format!("{tag} d_input"),
            &grads.get(&x).as_vec(),
            &r_dx,
            1e-4,
        );
        assert_close(
            &format!("{tag} d_gamma"),
            &grads.get(&gamma).as_vec(),
            &r_dg,
            1e-5,
        );
        assert_close(
            &format!("{tag} d_beta"),
            &grads.get(&beta).as_vec(),
            &r_db,
            1e-5,
        );
        assert_close(&format!("{tag} variance"), &stats.variance, &r_var, 1e-5);
    }
}

#[test]
fn batch_norm_matches_keras_forward_backward_and_running_averages() {
    use fashion_mnist::ops::{cpu_batch_norm2d, update_moving_statistics};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/batch_norm_keras.json"
    );
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let floats = |name: &str| -> Vec<f32> {
        reference[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let wide = |name: &str| -> Vec<f64> { floats(name).iter().map(|&v| v as f64).collect() };
    let shape: Vec<usize> = reference["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let shape = (shape[0], shape[1], shape[2], shape[3]);
    let dev = Cpu::default();
    let x: Tensor4 = dev.tensor_from_vec(floats("x"), shape);
    let gamma: Tensor1 = dev.tensor_from_vec(floats("gamma"), (shape.1,));
    let beta: Tensor1 = dev.tensor_from_vec(floats("beta"), (shape.1,));
    let epsilon = reference["epsilon"].as_f64().unwrap() as f32;
    let (y, stats) = cpu_batch_norm2d(x.leaky_trace(), &gamma, &beta, epsilon);
    let upstream: Tensor4 = dev.tensor_from_vec(floats("upstream"), shape);
    let values = y.as_vec();
    let grads = (y * upstream).sum().backward();
    assert_close("keras y", &values, &wide("y"), 1e-5);
    assert_close("keras dx", &grads.get(&x).as_vec(), &wide("dx"), 1e-4);
    assert_close(
        "keras dgamma",
        &grads.get(&gamma).as_vec(),
        &wide("dgamma"),
        1e-5,
    );
    assert_close(
        "keras dbeta",
        &grads.get(&beta).as_vec(),
        &wide("dbeta"),
        1e-5,
    );
    // Keras starts from mean 0, variance 1.
    let (mut mean, mut variance) = (vec![0.0f32; shape.1], vec![1.0f32; shape.1]);
    let momentum = reference["momentum"].as_f64().unwrap() as f32;
    update_moving_statistics(&mut mean, &mut variance, &stats, momentum);
    assert_close("keras moving_mean", &mean, &wide("moving_mean"), 1e-5);
    assert_close(
        "keras moving_variance",
        &variance,
        &wide("moving_variance"),
        1e-5,
    );
}

/// What a batch normalization op gives on one input: output, statistics, and the gradients of
/// `sum(y * upstream)` for the input, gamma and beta.
type BatchNormRun = (Vec<f32>, BatchStatistics, Vec<f32>, Vec<f32>, Vec<f32>);

/// The per-channel inputs of a batch normalization test, and how to run an op on them.
struct BatchNormCase {
    shape: (usize, usize, usize, usize),
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    upstream: Vec<f32>,
}

impl BatchNormCase {
    fn run(
        &self,
        op: impl Fn(
            Tensor4<OwnedTape<f32, Cpu>>,
            &Tensor1,
            &Tensor1,
        ) -> (Tensor4<OwnedTape<f32, Cpu>>, BatchStatistics),
    ) -> BatchNormRun {
        let dev = Cpu::default();
        let channels = (self.shape.1,);
        let x: Tensor4 = dev.tensor_from_vec(self.x.clone(), self.shape);
        let gamma: Tensor1 = dev.tensor_from_vec(self.gamma.clone(), channels);
        let beta: Tensor1 = dev.tensor_from_vec(self.beta.clone(), channels);
        let (y, stats) = op(x.leaky_trace(), &gamma, &beta);
        let upstream: Tensor4 = dev.tensor_from_vec(self.upstream.clone(), self.shape);
        let values = y.as_vec();
        let grads = (y * upstream).sum().backward();
        let g = |t: &Tensor1| grads.get(t).as_vec();
        (values, stats, grads.get(&x).as_vec(), g(&gamma), g(&beta))
    }
}

fn wide(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&x| x as f64).collect()
}

/// The composition of dfdx ops GPUs run gives what the CPU op gives: values, statistics and
/// gradients.
#[test]
fn batch_norm_composition_of_dfdx_ops_matches_the_cpu_op() {
    use fashion_mnist::ops::{composite, cpu_batch_norm2d};
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let n = 3 * 4 * 5 * 2;
    let case = BatchNormCase {
        shape: (3, 4, 5, 2),
        x: random(&mut rng, n).iter().map(|v| 2.0 * v - 0.5).collect(),
        gamma: random(&mut rng, 4),
        beta: random(&mut rng, 4),
        upstream: random(&mut rng, n),
    };
    let (y, stats, dx, dg, db) = case.run(|x, g, b| cpu_batch_norm2d(x, g, b, 1e-3));
    let (cy, cstats, cdx, cdg, cdb) = case.run(|x, g, b| composite::batch_norm2d(x, g, b, 1e-3));
    assert_close("composite output", &cy, &wide(&y), 1e-5);
    assert_close("composite mean", &cstats.mean, &wide(&stats.mean), 1e-5);
    assert_close(
        "composite variance",
        &cstats.variance,
        &wide(&stats.variance),
        1e-5,
    );
    assert_close("composite d_input", &cdx, &wide(&dx), 1e-4);
    assert_close("composite d_gamma", &cdg, &wide(&dg), 1e-5);
    assert_close("composite d_beta", &cdb, &wide(&db), 1e-5);
}

/// The fused batch normalization + ReLU gives what the two ops give one after the other:
/// values, statistics and gradients (about half of the activations are negative, so the mask
/// matters).
#[test]
fn fused_batch_norm_relu_matches_batch_norm_then_relu() {
    use fashion_mnist::ops::{cpu_batch_norm2d, cpu_batch_norm_relu2d};
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let n = 4 * 3 * 6 * 5;
    let case = BatchNormCase {
        shape: (4, 3, 6, 5),
        x: random(&mut rng, n).iter().map(|v| 2.0 * v + 0.3).collect(),
        gamma: random(&mut rng, 3),
        // Small shifts, so that about half of the normalized values are negative.
        beta: random(&mut rng, 3).iter().map(|v| 0.1 * v).collect(),
        upstream: random(&mut rng, n),
    };
    let (y, stats, dx, dg, db) = case.run(|x, g, b| {
        let (y, stats) = cpu_batch_norm2d(x, g, b, 1e-3);
        (y.relu(), stats)
    });
    let zeros = y.iter().filter(|&&v| v == 0.0).count();
    assert!(zeros > n / 5 && zeros < 4 * n / 5, "{zeros} of {n} clipped");
    let (fy, fstats, fdx, fdg, fdb) = case.run(|x, g, b| cpu_batch_norm_relu2d(x, g, b, 1e-3));
    assert_close("fused output", &fy, &wide(&y), 1e-5);
    assert_eq!(fstats, stats, "statistics");
    assert_close("fused d_input", &fdx, &wide(&dx), 1e-4);
    assert_close("fused d_gamma", &fdg, &wide(&dg), 1e-5);
    assert_close("fused d_beta", &fdb, &wide(&db), 1e-5);
}
