//! CPU inference on channel-major activations (C, B, H, W): the frozen backbones' forward pass
//! without a tape. In this layout a convolution over the whole batch is one GEMM whose output
//! already is the next layer's input: a 1x1 convolution reads its input as the GEMM operand
//! (no im2col copy), and nothing is regrouped between images. Plain buffers throughout: no
//! tensor copies of the weights or activations per layer.

use rayon::prelude::*;

use super::conv::Conv2dGeometry;
use super::matmul::{matmul, par_interleaved_matmuls, par_matmul_by_columns, MatRef};
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
    /// The kernel transformed for Winograd's 3x3 algorithm, when prepared in advance (frozen
    /// weights used for many batches); computed per call otherwise.
    pub winograd_kernel: Option<Vec<f32>>,
}

impl ConvWeights {
    /// With the Winograd transform of the kernel computed once, where it applies.
    pub fn prepared(mut self) -> Self {
        if self.kernel_size == 3 && self.stride == 1 && self.padding == 1 {
            self.winograd_kernel = Some(winograd_kernel(&self));
        }
        self
    }
}

/// Columns per thread below which the GEMM is split by output channels instead of columns.
const MIN_COLUMNS_PER_THREAD: usize = 64;

/// `conv(x) + bias`, then ReLU when `relu`: Winograd for 3x3/stride 1/padding 1 on planes of at
/// least 2x2 (on a 1x1 plane it would multiply 16 values for 1 output), im2col + GEMM otherwise.
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
    if w.kernel_size == 3 && w.stride == 1 && w.padding == 1 && x.height >= 2 && x.width >= 2 {
        return winograd_3x3(x, w, relu);
    }
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

/// Winograd's F(2x2, 3x3): a 3x3 convolution (stride 1, padding 1) as 16 products of
/// (O x C) by (C x tiles), one per point of the 4x4 transformed tile, each 2x2 output tile then
/// recovered by the inverse transform: 4 multiplications per output and input channel instead
/// of 9 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
fn winograd_3x3(x: &ChannelMajor, w: &ConvWeights, relu: bool) -> ChannelMajor {
    let (channels, out_channels) = (x.channels, w.out_channels);
    let (height, width) = (x.height, x.width);
    let (tiles_y, tiles_x) = (height.div_ceil(2), width.div_ceil(2));
    let image_tiles = tiles_y * tiles_x;
    let tiles = x.batch * image_tiles;

    let computed;
    let kernel: &[f32] = match &w.winograd_kernel {
        Some(prepared) => prepared,
        None => {
            computed = winograd_kernel(w);
            &computed
        }
    };

    // Input transform B^T d B of every 4x4 tile (tiles 2 apart, the padding as zeros), laid
    // out (C, 16, tiles); a row of tiles at a time, so the arithmetic runs along the row.
    let mut transformed = scratch::take(channels * 16 * tiles);
    let plane = height * width;
    let n = tiles_x;
    transformed
        .par_chunks_mut(16 * tiles)
        .zip(x.data.par_chunks(x.batch * plane))
        .for_each_init(
            || {
                (
                    vec![0.0f32; 16 * n],
                    vec![0.0f32; 16 * n],
                    vec![0.0f32; 2 * n + 2],
                )
            },
            |(d, rows, padded), (dst, channel)| {
                for (b, image) in channel.chunks_exact(plane).enumerate() {
                    for ty in 0..tiles_y {
                        // d[(r * 4 + q) * n + tx]: row r, column q of tile tx; `padded` is
                        // one input row with a zero before it and zeros after it.
                        for r in 0..4 {
                            let rows_of_r = &mut d[r * 4 * n..(r + 1) * 4 * n];
                            match (2 * ty + r).checked_sub(1).filter(|&y| y < height) {
                                None => rows_of_r.fill(0.0),
                                Some(y) => {
                                    padded.fill(0.0);
                                    padded[1..=width].copy_from_slice(&image[y * width..][..width]);
                                    for (q, out) in rows_of_r.chunks_exact_mut(n).enumerate() {
                                        for (v, &p) in
                                            out.iter_mut().zip(padded[q..].iter().step_by(2))
                                        {
                                            *v = p;
                                        }
                                    }
                                }
                            }
                        }
                        // B^T d (rows), then (B^T d) B (columns), along the row of tiles.
                        let (d0, rest) = d.split_at(4 * n);
                        let (d1, rest) = rest.split_at(4 * n);
                        let (d2, d3) = rest.split_at(4 * n);
                        let (r0, rest) = rows.split_at_mut(4 * n);
                        let (r1, rest) = rest.split_at_mut(4 * n);
                        let (r2, r3) = rest.split_at_mut(4 * n);
                        for k in 0..4 * n {
                            r0[k] = d0[k] - d2[k];
                            r1[k] = d1[k] + d2[k];
                            r2[k] = d2[k] - d1[k];
                            r3[k] = d1[k] - d3[k];
                        }
                        let t0 = b * image_tiles + ty * n;
                        for (r, v) in rows.chunks_exact(4 * n).enumerate() {
                            let (v0, v1, v2, v3) =
                                (&v[..n], &v[n..2 * n], &v[2 * n..3 * n], &v[3 * n..]);
                            let out = |q: usize| (r * 4 + q) * tiles + t0;
                            let o = out(0);
                            for ((dst, a), c) in dst[o..o + n].iter_mut().zip(v0).zip(v2) {
                                *dst = a - c;
                            }
                            let o = out(1);
                            for ((dst, a), c) in dst[o..o + n].iter_mut().zip(v1).zip(v2) {
                                *dst = a + c;
                            }
                            let o = out(2);
                            for ((dst, a), c) in dst[o..o + n].iter_mut().zip(v2).zip(v1) {
                                *dst = a - c;
                            }
                            let o = out(3);
                            for ((dst, a), c) in dst[o..o + n].iter_mut().zip(v1).zip(v3) {
                                *dst = a - c;
                            }
                        }
                    }
                }
            },
        );

    // The 16 products, laid out (O, 16, tiles).
    let mut products = scratch::take(out_channels * 16 * tiles);
    par_interleaved_matmuls(
        16,
        (out_channels, tiles, channels),
        &mut products,
        |point| MatRef {
            data: &kernel[point * channels..],
            row_stride: 16 * channels,
            col_stride: 1,
        },
        |point| MatRef {
            data: &transformed[point * tiles..],
            row_stride: 16 * tiles,
            col_stride: 1,
        },
    );

    // Output transform A^T m A, then bias and ReLU, into (O, B, H, W), a row of tiles at a time.
    let mut out = vec![0.0f32; out_channels * x.batch * plane];
    out.par_chunks_mut(x.batch * plane)
        .zip(products.par_chunks(16 * tiles))
        .zip(&w.bias)
        .for_each_init(
            || vec![0.0f32; 8 * n],
            |half, ((dst, m), &bias)| {
                let finish = |v: f32| if relu { (v + bias).max(0.0) } else { v + bias };
                for (b, image) in dst.chunks_exact_mut(plane).enumerate() {
                    for ty in 0..tiles_y {
                        let t0 = b * image_tiles + ty * n;
                        let row = |r: usize, q: usize| &m[(r * 4 + q) * tiles + t0..][..n];
                        // A^T m: half[(r * 4 + q) * n + tx] for r in 0..2.
                        let (top, bottom) = half.split_at_mut(4 * n);
                        for q in 0..4 {
                            let (m0, m1, m2, m3) = (row(0, q), row(1, q), row(2, q), row(3, q));
                            let (t, u) = (&mut top[q * n..][..n], &mut bottom[q * n..][..n]);
                            for k in 0..n {
                                t[k] = m0[k] + m1[k] + m2[k];
                                u[k] = m1[k] - m2[k] - m3[k];
                            }
                        }
                        for (r, h) in half.chunks_exact(4 * n).enumerate() {
                            let y = 2 * ty + r;
                            if y >= height {
                                continue;
                            }
                            let (h0, h1, h2, h3) =
                                (&h[..n], &h[n..2 * n], &h[2 * n..3 * n], &h[3 * n..]);
                            let out_row = &mut image[y * width..(y + 1) * width];
                            for (tx, pair) in out_row.chunks_mut(2).enumerate() {
                                pair[0] = finish(h0[tx] + h1[tx] + h2[tx]);
                                if let Some(second) = pair.get_mut(1) {
                                    *second = finish(h1[tx] - h2[tx] - h3[tx]);
                                }
                            }
                        }
                    }
                }
            },
        );
    scratch::give(transformed);
    scratch::give(products);
    ChannelMajor {
        data: out,
        channels: out_channels,
        batch: x.batch,
        height,
        width,
    }
}

/// The Winograd transform G g G^T of a 3x3 kernel (O, C, 3, 3), laid out (O, 16, C).
fn winograd_kernel(w: &ConvWeights) -> Vec<f32> {
    // Kernel transform G g G^T, laid out (O, 16, C).
    let (channels, out_channels) = (w.in_channels, w.out_channels);
    let mut kernel = vec![0.0f32; out_channels * 16 * channels];
    kernel
        .par_chunks_mut(16 * channels)
        .enumerate()
        .for_each(|(o, dst)| {
            for c in 0..channels {
                let g = &w.kernel[(o * channels + c) * 9..][..9];
                let mut rows = [[0.0f32; 3]; 4];
                for j in 0..3 {
                    let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                    rows[0][j] = g0;
                    rows[1][j] = 0.5 * (g0 + g1 + g2);
                    rows[2][j] = 0.5 * (g0 - g1 + g2);
                    rows[3][j] = g2;
                }
                for (r, h) in rows.iter().enumerate() {
                    let values = [
                        h[0],
                        0.5 * (h[0] + h[1] + h[2]),
                        0.5 * (h[0] - h[1] + h[2]),
                        h[2],
                    ];
                    for (q, v) in values.into_iter().enumerate() {
                        dst[(r * 4 + q) * channels + c] = v;
                    }
                }
            }
        });

    kernel
}

/// Input pixels (images x height x width) per channel-major pass at most: the whole-batch
/// buffers grow with the batch (VGG-16's first layer holds 2 x 16 x 64 values per 4 input
/// pixels), so larger batches go through in parts (a batch of 32 at 64x64, of 2 at 224x224).
const MAX_PIXELS_PER_PASS: usize = 32 * 64 * 64;

/// `forward` on a batch-major input (B, C, H, W), in parts of whole images when the batch is
/// large; returns the batch-major output and its shape.
pub fn forward_batch_major(
    input: &[f32],
    (batch, channels, height, width): (usize, usize, usize, usize),
    forward: impl Fn(ChannelMajor) -> ChannelMajor,
) -> (Vec<f32>, (usize, usize, usize, usize)) {
    let per_pass = (MAX_PIXELS_PER_PASS / (height * width).max(1)).clamp(1, batch.max(1));
    let image = channels * height * width;
    let mut output = Vec::new();
    let mut shape = (0, 0, 0, 0);
    for part in input.chunks((per_pass * image).max(1)) {
        let images = part.len() / image.max(1);
        let y = forward(ChannelMajor::from_batch_major(
            part,
            (images, channels, height, width),
        ));
        output.extend(y.to_batch_major());
        shape = (batch, y.channels, y.height, y.width);
    }
    (output, shape)
}
