//! Conv2d and max-pool: forward values and input/weight/bias gradients against naive f64 loops.

use dfdx::prelude::*;
use fashion_mnist::ops::{conv2d, max_pool2d, InputGrad, Tensor1, Tensor4};
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
