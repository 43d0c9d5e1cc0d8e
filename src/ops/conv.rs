//! 2-D convolution (NCHW, square kernel, stride, zero padding) as a dfdx custom op.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::matmul::{matmul, MatRef};
use super::scratch;
use super::{
    accumulate_grad, check_conv2d_args, contiguous_values, output_size, take_output_grad, Tensor1,
    Tensor4,
};

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
    pub(super) fn source(&self, out: usize, k: usize, size: usize) -> Option<usize> {
        let pos = (out * self.stride + k) as isize - self.padding as isize;
        (pos >= 0 && (pos as usize) < size).then_some(pos as usize)
    }

    /// Unfolds one image (C, H, W) into `cols` (C*K*K rows of OH*OW values, `row_stride`
    /// apart: several images of a group sit side by side in one matrix).
    fn im2col(&self, image: &[f32], cols: &mut [f32], row_stride: usize) {
        let plane = self.in_height * self.in_width;
        let rows = self.kernel * self.kernel;
        for (c, channel) in image.chunks_exact(plane).enumerate() {
            self.im2col_channel(channel, &mut cols[c * rows * row_stride..], row_stride);
        }
    }

    /// Unfolds one channel (H, W) into `cols` (K*K rows of OH*OW values, `row_stride` apart).
    pub(super) fn im2col_channel(&self, channel: &[f32], cols: &mut [f32], row_stride: usize) {
        let (k, oh, ow) = (self.kernel, self.out_height(), self.out_width());
        for ky in 0..k {
            for kx in 0..k {
                let row = ky * k + kx;
                let dst = &mut cols[row * row_stride..row * row_stride + oh * ow];
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
                        dst_row[first..last].copy_from_slice(&src_row[start..start + last - first]);
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

    /// Folds `cols` (C*K*K rows of OH*OW values, `row_stride` apart) back into one image's
    /// gradient (C, H, W), adding overlaps.
    fn col2im_add(&self, cols: &[f32], image: &mut [f32], row_stride: usize) {
        let (k, oh, ow) = (self.kernel, self.out_height(), self.out_width());
        let plane = self.in_height * self.in_width;
        for c in 0..self.in_channels {
            let channel = &mut image[c * plane..(c + 1) * plane];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    let src = &cols[row * row_stride..row * row_stride + oh * ow];
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

/// Columns a group's GEMM should have at least: below that, a layer with a small output plane
/// (deep layers of VGG-16 and ResNet-50) re-reads its whole kernel for a handful of columns.
const GROUP_COLUMNS: usize = 256;
/// At most this many images per group, so a batch still splits into groups for the threads.
/// Both limits are fixed (not tied to the thread count): the summation order of the weight
/// gradient, and therefore the result, never changes.
const MAX_GROUP_IMAGES: usize = 16;

impl Conv2dGeometry {
    /// Images whose im2col matrices sit side by side in one GEMM.
    fn group_images(&self) -> usize {
        GROUP_COLUMNS
            .div_ceil(self.out_plane().max(1))
            .clamp(1, MAX_GROUP_IMAGES)
            .min(self.batch.max(1))
    }

    /// Writes the im2col matrix of `images` (whole images, one group) into `cols`
    /// (C*K*K, n*OH*OW). A pointwise convolution's matrix is its input, interleaved.
    fn group_cols(&self, images: &[f32], cols: &mut [f32]) {
        let n = images.len() / self.in_image();
        let plane = self.out_plane();
        for (i, image) in images.chunks_exact(self.in_image()).enumerate() {
            let cols = &mut cols[i * plane..];
            if self.is_pointwise() {
                for (c, channel) in image.chunks_exact(plane).enumerate() {
                    cols[c * n * plane..c * n * plane + plane].copy_from_slice(channel);
                }
            } else {
                self.im2col(image, cols, n * plane);
            }
        }
    }
}

/// Moves a group's (O, n*P) matrix into n images of (O, P).
fn ungroup(group: &[f32], images: &mut [f32], channels: usize, plane: usize) {
    let n = images.len() / (channels * plane).max(1);
    for (i, image) in images.chunks_exact_mut(channels * plane).enumerate() {
        for (o, row) in image.chunks_exact_mut(plane).enumerate() {
            row.copy_from_slice(&group[(o * n + i) * plane..(o * n + i + 1) * plane]);
        }
    }
}

/// Moves n images of (O, P) into a group's (O, n*P) matrix.
fn to_group(images: &[f32], group: &mut [f32], channels: usize, plane: usize) {
    let n = images.len() / (channels * plane).max(1);
    for (i, image) in images.chunks_exact(channels * plane).enumerate() {
        for (o, row) in image.chunks_exact(plane).enumerate() {
            group[(o * n + i) * plane..(o * n + i + 1) * plane].copy_from_slice(row);
        }
    }
}

/// `y = conv2d(x, weight) + bias` for `x` (B, C, H, W), `weight` (O, C, K, K), `bias` (O,).
pub fn cpu_conv2d<T: Tape<f32, Cpu>>(
    x: Tensor4<T>,
    weight: &Tensor4,
    bias: &Tensor1,
    stride: usize,
    padding: usize,
    input_grad: InputGrad,
) -> Tensor4<T> {
    check_conv2d_args(*x.shape(), *weight.shape(), bias.shape().0, stride, padding);
    let (batch, in_channels, in_height, in_width) = *x.shape();
    let (out_channels, _, kernel, _) = *weight.shape();
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
    let group = geom.group_images();
    // A pointwise convolution on single images reads its input as the im2col matrix.
    let cols_are_input = geom.is_pointwise() && group == 1;
    let group_in = group * geom.in_image();
    let group_out = group * geom.out_image();

    let mut output = vec![0.0f32; batch * geom.out_image()];
    let keep_cols = T::OWNS_TAPE && !geom.is_pointwise();
    // Every element is written by im2col before it is read: a reused buffer will do.
    let mut saved_cols = if keep_cols {
        scratch::take(batch * patch * plane)
    } else {
        Vec::new()
    };
    // One group: fill `cols` (unless the input serves), GEMM into `gemm_out`, then spread it
    // over the images' outputs.
    let forward_group =
        |images: &[f32], cols: &mut [f32], gemm_out: &mut [f32], out: &mut [f32]| {
            let n = images.len() / geom.in_image();
            let cols: &[f32] = if cols_are_input {
                images
            } else {
                geom.group_cols(images, &mut cols[..patch * n * plane]);
                &cols[..patch * n * plane]
            };
            let single = n == 1;
            let dst = if single {
                &mut *out
            } else {
                &mut gemm_out[..out_channels * n * plane]
            };
            for (o, row) in dst.chunks_exact_mut(n * plane).enumerate() {
                row.fill(biases[o]);
            }
            matmul(
                out_channels,
                n * plane,
                patch,
                dst,
                true,
                MatRef::row_major(&weights, patch),
                MatRef::row_major(cols, n * plane),
            );
            if !single {
                ungroup(gemm_out, out, out_channels, plane);
            }
        };
    let groups = input.par_chunks(group_in.max(1));
    let outs = output.par_chunks_mut(group_out.max(1));
    // Per-thread buffers (both are overwritten before they are read).
    let gemm_out_len = if group == 1 { 0 } else { group_out };
    if keep_cols {
        groups
            .zip(outs)
            .zip(saved_cols.par_chunks_mut(group * patch * plane))
            .for_each(|((images, out), cols)| {
                let mut gemm_out = scratch::take(gemm_out_len);
                forward_group(images, cols, &mut gemm_out, out);
                scratch::give(gemm_out);
            });
    } else {
        let cols_len = if cols_are_input {
            0
        } else {
            group * patch * plane
        };
        groups.zip(outs).for_each(|(images, out)| {
            let (mut cols, mut gemm_out) = (scratch::take(cols_len), scratch::take(gemm_out_len));
            forward_group(images, &mut cols, &mut gemm_out, out);
            scratch::give(cols);
            scratch::give(gemm_out);
        });
    }
    let out = device.tensor_from_vec(
        output,
        (batch, out_channels, geom.out_height(), geom.out_width()),
    );

    if T::OWNS_TAPE {
        let (x_ref, w_ref, b_ref, out_ref) = (x.clone(), weight.clone(), bias.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let grad_out = take_output_grad(grads, &out_ref)?;

            let mut grad_bias = vec![0.0f32; out_channels];
            for image in grad_out.chunks_exact(geom.out_image()) {
                for (o, row) in image.chunks_exact(plane).enumerate() {
                    grad_bias[o] += row.iter().sum::<f32>();
                }
            }

            // Per group: dY (O x nP) gathered from the images, then
            // dW_g = dY * cols^T and dcols = W^T * dY (folded back into dX).
            let group_count = batch.div_ceil(group);
            let mut grad_input = if input_grad == InputGrad::Compute {
                vec![0.0f32; batch * geom.in_image()]
            } else {
                Vec::new()
            };
            let mut dx_groups: Vec<&mut [f32]> = grad_input.chunks_mut(group_in.max(1)).collect();
            dx_groups.resize_with(group_count, Default::default);
            let partials: Vec<Vec<f32>> = dx_groups
                .into_par_iter()
                .enumerate()
                .map(|(g, dx)| {
                    let first = g * group;
                    let n = group.min(batch - first);
                    let dy_images =
                        &grad_out[first * geom.out_image()..(first + n) * geom.out_image()];
                    let mut dy_group = Vec::new();
                    let dy: &[f32] = if n == 1 {
                        dy_images
                    } else {
                        dy_group = scratch::take(out_channels * n * plane);
                        to_group(dy_images, &mut dy_group, out_channels, plane);
                        &dy_group
                    };
                    let images = &input[first * geom.in_image()..(first + n) * geom.in_image()];
                    let mut built = Vec::new();
                    let cols: &[f32] = if cols_are_input {
                        images
                    } else if geom.is_pointwise() {
                        built = scratch::take(patch * n * plane);
                        geom.group_cols(images, &mut built);
                        &built
                    } else {
                        let start = first * patch * plane;
                        &saved_cols[start..start + patch * n * plane]
                    };
                    let mut partial = vec![0.0f32; out_channels * patch];
                    matmul(
                        out_channels,
                        patch,
                        n * plane,
                        &mut partial,
                        false,
                        MatRef::row_major(dy, n * plane),
                        MatRef::transposed(cols, n * plane),
                    );
                    if input_grad == InputGrad::Compute {
                        let w_t = MatRef::transposed(&weights, patch);
                        let dy = MatRef::row_major(dy, n * plane);
                        if cols_are_input {
                            matmul(patch, plane, out_channels, dx, false, w_t, dy);
                        } else {
                            let mut dcols = scratch::take(patch * n * plane);
                            matmul(patch, n * plane, out_channels, &mut dcols, false, w_t, dy);
                            for (i, dx) in dx.chunks_exact_mut(geom.in_image()).enumerate() {
                                let dcols = &dcols[i * plane..];
                                if geom.is_pointwise() {
                                    for (c, channel) in dx.chunks_exact_mut(plane).enumerate() {
                                        let src = &dcols[c * n * plane..c * n * plane + plane];
                                        channel.copy_from_slice(src);
                                    }
                                } else {
                                    geom.col2im_add(dcols, dx, n * plane);
                                }
                            }
                            scratch::give(dcols);
                        }
                    }
                    scratch::give(dy_group);
                    scratch::give(built);
                    partial
                })
                .collect();
            scratch::give(saved_cols);
            let mut grad_weight = vec![0.0f32; out_channels * patch];
            for partial in &partials {
                for (g, p) in grad_weight.iter_mut().zip(partial) {
                    *g += *p;
                }
            }
            accumulate_grad(grads, &w_ref, &grad_weight)?;
            accumulate_grad(grads, &b_ref, &grad_bias)?;
            if input_grad == InputGrad::Compute {
                accumulate_grad(grads, &x_ref, &grad_input)?;
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}
