//! 2-D convolution (NCHW, square kernel, stride, zero padding) as a dfdx custom op.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::matmul::{matmul, MatRef};
use super::{accumulate_grad, contiguous_values, output_size, take_output_grad, Tensor1, Tensor4};

/// Whether the backward pass computes the gradient of the convolution's input. The first layer
/// of a network skips it: nothing upstream needs it, and it costs as much as the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputGrad {
    Compute,
    Skip,
}

/// Shapes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2dGeometry {
    pub fn out_height(&self) -> usize {
        output_size(self.in_height, self.kernel, self.stride, self.padding)
    }

    pub fn out_width(&self) -> usize {
        output_size(self.in_width, self.kernel, self.stride, self.padding)
    }

    /// Rows of the im2col matrix: in_channels * kernel * kernel.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    /// Output positions per image (columns of the im2col matrix).
    pub fn out_plane(&self) -> usize {
        self.out_height() * self.out_width()
    }

    fn in_image(&self) -> usize {
        self.in_channels * self.in_height * self.in_width
    }

    fn out_image(&self) -> usize {
        self.out_channels * self.out_plane()
    }

    /// A 1x1 convolution with stride 1 and no padding reads its input as the im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }

    /// The source pixel index along one axis, or None when it falls into the padding.
    #[inline]
    fn source(&self, out: usize, k: usize, size: usize) -> Option<usize> {
        let pos = (out * self.stride + k) as isize - self.padding as isize;
        (pos >= 0 && (pos as usize) < size).then_some(pos as usize)
    }

    /// Unfolds one image (C, H, W) into `cols` (C*K*K, OH*OW).
    fn im2col(&self, image: &[f32], cols: &mut [f32]) {
        let (k, oh, ow) = (self.kernel, self.out_height(), self.out_width());
        let plane = self.in_height * self.in_width;
        for c in 0..self.in_channels {
            let channel = &image[c * plane..(c + 1) * plane];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    let dst = &mut cols[row * oh * ow..(row + 1) * oh * ow];
                    for oy in 0..oh {
                        let dst_row = &mut dst[oy * ow..(oy + 1) * ow];
                        let Some(iy) = self.source(oy, ky, self.in_height) else {
                            dst_row.fill(0.0);
                            continue;
                        };
                        let src_row = &channel[iy * self.in_width..(iy + 1) * self.in_width];
                        if self.stride == 1 {
                            // Contiguous run of valid columns, zeros on either side.
                            let first = self.padding.saturating_sub(kx).min(ow);
                            let last = (self.in_width + self.padding)
                                .saturating_sub(kx)
                                .clamp(first, ow);
                            dst_row[..first].fill(0.0);
                            let start = first + kx - self.padding;
                            dst_row[first..last]
                                .copy_from_slice(&src_row[start..start + last - first]);
                            dst_row[last..].fill(0.0);
                        } else {
                            for (ox, d) in dst_row.iter_mut().enumerate() {
                                *d = self
                                    .source(ox, kx, self.in_width)
                                    .map_or(0.0, |ix| src_row[ix]);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Folds `cols` (C*K*K, OH*OW) back into one image's gradient (C, H, W), adding overlaps.
    fn col2im_add(&self, cols: &[f32], image: &mut [f32]) {
        let (k, oh, ow) = (self.kernel, self.out_height(), self.out_width());
        let plane = self.in_height * self.in_width;
        for c in 0..self.in_channels {
            let channel = &mut image[c * plane..(c + 1) * plane];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    let src = &cols[row * oh * ow..(row + 1) * oh * ow];
                    for oy in 0..oh {
                        let Some(iy) = self.source(oy, ky, self.in_height) else {
                            continue;
                        };
                        let dst_row = &mut channel[iy * self.in_width..(iy + 1) * self.in_width];
                        let src_row = &src[oy * ow..(oy + 1) * ow];
                        if self.stride == 1 {
                            // The same contiguous run of valid columns as in `im2col`.
                            let first = self.padding.saturating_sub(kx).min(ow);
                            let last = (self.in_width + self.padding)
                                .saturating_sub(kx)
                                .clamp(first, ow);
                            let start = first + kx - self.padding;
                            let run = &mut dst_row[start..start + last - first];
                            for (d, s) in run.iter_mut().zip(&src_row[first..last]) {
                                *d += *s;
                            }
                        } else {
                            for (ox, s) in src_row.iter().enumerate() {
                                if let Some(ix) = self.source(ox, kx, self.in_width) {
                                    dst_row[ix] += *s;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Images per partial weight-gradient sum. Fixed (not tied to the thread count) so the
/// summation order, and therefore the result, never changes.
const WEIGHT_GRAD_CHUNK: usize = 8;

/// `y = conv2d(x, weight) + bias` for `x` (B, C, H, W), `weight` (O, C, K, K), `bias` (O,).
pub fn conv2d<T: Tape<f32, Cpu>>(
    x: Tensor4<T>,
    weight: &Tensor4,
    bias: &Tensor1,
    stride: usize,
    padding: usize,
    input_grad: InputGrad,
) -> Tensor4<T> {
    let (batch, in_channels, in_height, in_width) = *x.shape();
    let (out_channels, w_in, kernel, kernel_w) = *weight.shape();
    assert_eq!(
        w_in, in_channels,
        "conv2d: weight expects {w_in} input channels, got {in_channels}"
    );
    assert_eq!(kernel, kernel_w, "conv2d: only square kernels");
    assert_eq!(bias.shape().0, out_channels, "conv2d: bias length");
    assert!(stride >= 1, "conv2d: stride must be at least 1");
    assert!(
        in_height + 2 * padding >= kernel && in_width + 2 * padding >= kernel,
        "conv2d: kernel {kernel} larger than the padded {in_height}x{in_width} input"
    );
    let geom = Conv2dGeometry {
        batch,
        in_channels,
        in_height,
        in_width,
        out_channels,
        kernel,
        stride,
        padding,
    };
    let (x, mut tape) = x.split_tape();
    let device = x.device().clone();
    let input = contiguous_values(&x);
    let weights = contiguous_values(weight);
    let biases = contiguous_values(bias);
    let (patch, plane) = (geom.patch_len(), geom.out_plane());

    let mut output = vec![0.0f32; batch * geom.out_image()];
    let keep_cols = T::OWNS_TAPE && !geom.is_pointwise();
    let mut saved_cols = if keep_cols {
        vec![0.0f32; batch * patch * plane]
    } else {
        Vec::new()
    };
    let forward_one = |image: &[f32], cols: &mut [f32], out: &mut [f32]| {
        let cols: &[f32] = if geom.is_pointwise() {
            image
        } else {
            geom.im2col(image, cols);
            cols
        };
        for (o, row) in out.chunks_exact_mut(plane).enumerate() {
            row.fill(biases[o]);
        }
        matmul(
            out_channels,
            plane,
            patch,
            out,
            true,
            MatRef::row_major(&weights, patch),
            MatRef::row_major(cols, plane),
        );
    };
    let images = input.par_chunks_exact(geom.in_image().max(1));
    let outs = output.par_chunks_exact_mut(geom.out_image().max(1));
    if keep_cols {
        images
            .zip(outs)
            .zip(saved_cols.par_chunks_exact_mut(patch * plane))
            .for_each(|((image, out), cols)| forward_one(image, cols, out));
    } else {
        let scratch = if geom.is_pointwise() {
            0
        } else {
            patch * plane
        };
        images.zip(outs).for_each_init(
            || vec![0.0f32; scratch],
            |cols, (image, out)| forward_one(image, cols, out),
        );
    }
    let out = device.tensor_from_vec(
        output,
        (batch, out_channels, geom.out_height(), geom.out_width()),
    );

    if T::OWNS_TAPE {
        let (x_ref, w_ref, b_ref, out_ref) = (x.clone(), weight.clone(), bias.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let grad_out = take_output_grad(grads, &out_ref)?;
            let cols_of = |b: usize| -> &[f32] {
                if geom.is_pointwise() {
                    &input[b * geom.in_image()..(b + 1) * geom.in_image()]
                } else {
                    &saved_cols[b * patch * plane..(b + 1) * patch * plane]
                }
            };

            let mut grad_bias = vec![0.0f32; out_channels];
            for image in grad_out.chunks_exact(geom.out_image()) {
                for (o, row) in image.chunks_exact(plane).enumerate() {
                    grad_bias[o] += row.iter().sum::<f32>();
                }
            }

            // dW = sum_b dY_b (O x P) * cols_b^T (P x CKK), in fixed chunks, summed in order.
            let partials: Vec<Vec<f32>> = (0..batch.div_ceil(WEIGHT_GRAD_CHUNK))
                .into_par_iter()
                .map(|chunk| {
                    let mut partial = vec![0.0f32; out_channels * patch];
                    let end = ((chunk + 1) * WEIGHT_GRAD_CHUNK).min(batch);
                    for b in chunk * WEIGHT_GRAD_CHUNK..end {
                        let dy = &grad_out[b * geom.out_image()..(b + 1) * geom.out_image()];
                        matmul(
                            out_channels,
                            patch,
                            plane,
                            &mut partial,
                            true,
                            MatRef::row_major(dy, plane),
                            MatRef::transposed(cols_of(b), plane),
                        );
                    }
                    partial
                })
                .collect();
            let mut grad_weight = vec![0.0f32; out_channels * patch];
            for partial in &partials {
                for (g, p) in grad_weight.iter_mut().zip(partial) {
                    *g += *p;
                }
            }
            accumulate_grad(grads, &w_ref, &grad_weight)?;
            accumulate_grad(grads, &b_ref, &grad_bias)?;

            if input_grad == InputGrad::Compute {
                // dX_b = col2im(W^T (CKK x O) * dY_b (O x P)).
                let mut grad_input = vec![0.0f32; batch * geom.in_image()];
                let scratch = if geom.is_pointwise() {
                    0
                } else {
                    patch * plane
                };
                grad_input
                    .par_chunks_exact_mut(geom.in_image())
                    .zip(grad_out.par_chunks_exact(geom.out_image()))
                    .for_each_init(
                        || vec![0.0f32; scratch],
                        |dcols, (dx, dy)| {
                            let w_t = MatRef::transposed(&weights, patch);
                            let dy = MatRef::row_major(dy, plane);
                            if geom.is_pointwise() {
                                matmul(patch, plane, out_channels, dx, false, w_t, dy);
                            } else {
                                matmul(patch, plane, out_channels, dcols, false, w_t, dy);
                                geom.col2im_add(dcols, dx);
                            }
                        },
                    );
                accumulate_grad(grads, &x_ref, &grad_input)?;
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}
