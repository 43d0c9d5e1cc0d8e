//! CPU inference on channel-major activations (C, B, H, W): the frozen backbones' forward pass
//! without a tape. In this layout a convolution over the whole batch is one GEMM whose output
//! already is the next layer's input: a 1x1 convolution reads its input as the GEMM operand
//! (no im2col copy), and nothing is regrouped between images. Plain buffers throughout: no
//! tensor copies of the weights or activations per layer.

use rayon::prelude::*;

use super::conv::Conv2dGeometry;
use super::matmul::{matmul, par_matmul_by_columns, MatRef};
use super::pool::Pool2dGeometry;
use super::scratch;

/// Activations (C, B, H, W), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelMajor {
    pub data: Vec<f32>,
    pub channels: usize,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

impl ChannelMajor {
    /// From a batch-major (B, C, H, W) buffer.
    pub fn from_batch_major(
        data: &[f32],
        (batch, channels, height, width): (usize, usize, usize, usize),
    ) -> Self {
        let plane = height * width;
        assert_eq!(
            data.len(),
            batch * channels * plane,
            "buffer and shape disagree"
        );
        let mut out = vec![0.0; data.len()];
        swap_outer_axes(data, &mut out, batch, channels, plane);
        ChannelMajor {
            data: out,
            channels,
            batch,
            height,
            width,
        }
    }

    /// The same activations batch-major (B, C, H, W).
    pub fn to_batch_major(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.data.len()];
        let plane = self.height * self.width;
        swap_outer_axes(&self.data, &mut out, self.channels, self.batch, plane);
        out
    }

    fn plane(&self) -> usize {
        self.height * self.width
    }
}

/// (A, B, P) -> (B, A, P).
fn swap_outer_axes(src: &[f32], dst: &mut [f32], a: usize, b: usize, plane: usize) {
    dst.par_chunks_mut((a * plane).max(1))
        .enumerate()
        .for_each(|(j, out)| {
            for (i, row) in out.chunks_exact_mut(plane.max(1)).enumerate() {
                row.copy_from_slice(&src[(i * b + j) * plane..][..plane]);
            }
        });
}

/// A convolution's weights as plain buffers: kernel (O, C, K, K) and bias (O,).
#[derive(Clone, Debug)]
pub struct ConvWeights {
    pub kernel: Vec<f32>,
    pub bias: Vec<f32>,
    pub out_channels: usize,
    pub in_channels: usize,
    pub kernel_size: usize,
    pub stride: usize,
    pub padding: usize,
}

/// Columns per thread below which the GEMM is split by output channels instead of columns.
const MIN_COLUMNS_PER_THREAD: usize = 64;

/// `conv(x) + bias`, then ReLU when `relu`.
pub fn conv(x: &ChannelMajor, w: &ConvWeights, relu: bool) -> ChannelMajor {
    assert_eq!(
        x.channels, w.in_channels,
        "input channels and kernel disagree"
    );
    let geom = Conv2dGeometry {
        batch: x.batch,
        in_channels: x.channels,
        in_height: x.height,
        in_width: x.width,
        out_channels: w.out_channels,
        kernel: w.kernel_size,
        stride: w.stride,
        padding: w.padding,
    };
    let (plane, patch) = (geom.out_plane(), geom.patch_len());
    let columns = x.batch * plane;
    let pointwise = w.kernel_size == 1 && w.stride == 1 && w.padding == 0;
    let mut cols = Vec::new();
    if !pointwise {
        // Rows c*K*K.. of the im2col matrix come from channel c of every image, gathered
        // through one index table (the planes here are small: per-row copies cost more).
        cols = scratch::take(patch * columns);
        let kernel_rows = w.kernel_size * w.kernel_size;
        let in_plane = x.plane();
        let sources = gather_table(&geom);
        cols.par_chunks_mut(kernel_rows * columns)
            .zip(x.data.par_chunks(x.batch * in_plane))
            .for_each_init(
                || vec![0.0f32; in_plane + 1],
                |padded, (rows, channel)| {
                    for (i, image) in channel.chunks_exact(in_plane).enumerate() {
                        // The last element stands for every position in the padding.
                        padded[..in_plane].copy_from_slice(image);
                        padded[in_plane] = 0.0;
                        for (row, table) in sources.chunks_exact(plane).enumerate() {
                            let dst = &mut rows[row * columns + i * plane..][..plane];
                            for (d, &src) in dst.iter_mut().zip(table) {
                                *d = padded[src as usize];
                            }
                        }
                    }
                },
            );
    }
    let rhs: &[f32] = if pointwise { &x.data } else { &cols };
    let mut out = vec![0.0f32; w.out_channels * columns];
    let lhs = MatRef::row_major(&w.kernel, patch);
    let threads = rayon::current_num_threads().max(1);
    if columns >= MIN_COLUMNS_PER_THREAD * threads {
        out.par_chunks_mut(columns)
            .zip(&w.bias)
            .for_each(|(row, &b)| row.fill(b));
        par_matmul_by_columns((w.out_channels, columns, patch), &mut out, true, lhs, |c| {
            MatRef {
                data: &rhs[c..],
                row_stride: columns,
                col_stride: 1,
            }
        });
        if relu {
            out.par_chunks_mut(1 << 14).for_each(relu_in_place);
        }
    } else {
        // Few columns (small planes): split by output channels, so each thread reads only its
        // rows of the kernel.
        let rows = w.out_channels.div_ceil(threads).div_ceil(8) * 8;
        let rhs = MatRef::row_major(rhs, columns);
        out.par_chunks_mut(rows * columns)
            .enumerate()
            .for_each(|(block, dst)| {
                let first = block * rows;
                for (row, &b) in dst.chunks_exact_mut(columns).zip(&w.bias[first..]) {
                    row.fill(b);
                }
                let lhs = MatRef {
                    data: &w.kernel[first * patch..],
                    ..lhs
                };
                matmul(dst.len() / columns, columns, patch, dst, true, lhs, rhs);
                if relu {
                    relu_in_place(dst);
                }
            });
    }
    if !pointwise {
        scratch::give(cols);
    }
    ChannelMajor {
        data: out,
        channels: w.out_channels,
        batch: x.batch,
        height: geom.out_height(),
        width: geom.out_width(),
    }
}

/// Max-pooling of every plane.
pub fn max_pool(x: &ChannelMajor, kernel: usize, stride: usize, padding: usize) -> ChannelMajor {
    let geom = Pool2dGeometry {
        in_height: x.height,
        in_width: x.width,
        kernel,
        stride,
        padding,
    };
    let out_plane = geom.out_height() * geom.out_width();
    let planes = x.channels * x.batch;
    let mut out = vec![0.0f32; planes * out_plane];
    out.par_chunks_mut(out_plane.max(1))
        .zip(x.data.par_chunks(x.plane().max(1)))
        .for_each_init(
            || vec![0u32; out_plane],
            |argmax, (dst, src)| geom.pool_plane(src, dst, argmax),
        );
    ChannelMajor {
        data: out,
        channels: x.channels,
        batch: x.batch,
        height: geom.out_height(),
        width: geom.out_width(),
    }
}

/// `y = relu(y + shortcut)`, in place.
pub fn add_relu(y: &mut ChannelMajor, shortcut: &ChannelMajor) {
    assert_eq!(
        y.data.len(),
        shortcut.data.len(),
        "residual shapes disagree"
    );
    y.data
        .par_chunks_mut(1 << 14)
        .zip(shortcut.data.par_chunks(1 << 14))
        .for_each(|(a, b)| {
            for (a, b) in a.iter_mut().zip(b) {
                *a = (*a + *b).max(0.0);
            }
        });
}

fn relu_in_place(values: &mut [f32]) {
    for v in values {
        *v = v.max(0.0);
    }
}

/// For each kernel offset (K*K rows) and output position (OH*OW), the input position it reads,
/// or H*W where that falls into the zero padding.
fn gather_table(geom: &Conv2dGeometry) -> Vec<u32> {
    let (k, oh, ow) = (geom.kernel, geom.out_height(), geom.out_width());
    let padding = (geom.in_height * geom.in_width) as u32;
    let mut table = Vec::with_capacity(k * k * oh * ow);
    for ky in 0..k {
        for kx in 0..k {
            for oy in 0..oh {
                for ox in 0..ow {
                    let y = geom.source(oy, ky, geom.in_height);
                    let x = geom.source(ox, kx, geom.in_width);
                    table.push(match (y, x) {
                        (Some(y), Some(x)) => (y * geom.in_width + x) as u32,
                        _ => padding,
                    });
                }
            }
        }
    }
    table
}
