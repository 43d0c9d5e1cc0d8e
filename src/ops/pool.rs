//! 2-D max-pooling (NCHW, square window, stride, padding that never wins) as a dfdx custom op.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::{
    accumulate_grad, check_pool2d_args, contiguous_values, output_size, take_output_grad, Tensor4,
    PARALLEL_THRESHOLD,
};

/// Shapes of one pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dGeometry {
    pub in_height: usize,
    pub in_width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Pool2dGeometry {
    pub fn out_height(&self) -> usize {
        output_size(self.in_height, self.kernel, self.stride, self.padding)
    }

    pub fn out_width(&self) -> usize {
        output_size(self.in_width, self.kernel, self.stride, self.padding)
    }

    /// Pools one plane; `argmax` receives the input index each output took its value from.
    pub(super) fn pool_plane(&self, src: &[f32], dst: &mut [f32], argmax: &mut [u32]) {
        if self.kernel == 2 && self.stride == 2 && self.padding == 0 {
            return self.pool_plane_2x2(src, dst, argmax);
        }
        let (oh, ow) = (self.out_height(), self.out_width());
        for oy in 0..oh {
            let y0 = (oy * self.stride) as isize - self.padding as isize;
            let ys = y0.max(0) as usize..((y0 + self.kernel as isize) as usize).min(self.in_height);
            for ox in 0..ow {
                let x0 = (ox * self.stride) as isize - self.padding as isize;
                let xs =
                    x0.max(0) as usize..((x0 + self.kernel as isize) as usize).min(self.in_width);
                let mut best = f32::NEG_INFINITY;
                let mut best_index = ys.start * self.in_width + xs.start;
                for y in ys.clone() {
                    for x in xs.clone() {
                        let v = src[y * self.in_width + x];
                        // `>` keeps the first maximum; NaN propagates by winning once seen.
                        if v > best || v.is_nan() {
                            best = v;
                            best_index = y * self.in_width + x;
                            if v.is_nan() {
                                break;
                            }
                        }
                    }
                }
                dst[oy * ow + ox] = best;
                argmax[oy * ow + ox] = best_index as u32;
            }
        }
    }
}

impl Pool2dGeometry {
    /// The common 2x2 window with stride 2, without the general path's bounds logic.
    fn pool_plane_2x2(&self, src: &[f32], dst: &mut [f32], argmax: &mut [u32]) {
        let (ow, w) = (self.out_width(), self.in_width);
        let rows = dst.chunks_exact_mut(ow).zip(argmax.chunks_exact_mut(ow));
        for (oy, (dst_row, arg_row)) in rows.enumerate() {
            let top_start = 2 * oy * w;
            let top = &src[top_start..top_start + 2 * ow];
            let bottom = &src[top_start + w..top_start + w + 2 * ow];
            let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
            for (ox, ((t, b), (d, a))) in windows.zip(dst_row.iter_mut().zip(arg_row)).enumerate() {
                // `>` keeps the first maximum in row-major window order.
                let (top_max, top_at) = if t[1] > t[0] { (t[1], 1) } else { (t[0], 0) };
                let (bottom_max, bottom_at) = if b[1] > b[0] { (b[1], 1) } else { (b[0], 0) };
                let (best, at) = if bottom_max > top_max {
                    (bottom_max, w + bottom_at)
                } else {
                    (top_max, top_at)
                };
                *d = best;
                *a = (top_start + 2 * ox + at) as u32;
            }
        }
    }
}

/// Max-pooling of `x` (B, C, H, W) with a `kernel` x `kernel` window.
pub fn cpu_max_pool2d<T: Tape<f32, Cpu>>(
    x: Tensor4<T>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Tensor4<T> {
    check_pool2d_args(*x.shape(), kernel, stride, padding);
    let (batch, channels, in_height, in_width) = *x.shape();
    let geom = Pool2dGeometry {
        in_height,
        in_width,
        kernel,
        stride,
        padding,
    };
    let (x, mut tape) = x.split_tape();
    let device = x.device().clone();
    let input = contiguous_values(&x);
    let (in_plane, out_plane) = (in_height * in_width, geom.out_height() * geom.out_width());
    let planes = batch * channels;
    let mut output = vec![0.0f32; planes * out_plane];
    let mut argmax = vec![0u32; planes * out_plane];
    let planes_iter = input
        .par_chunks_exact(in_plane.max(1))
        .zip(output.par_chunks_exact_mut(out_plane.max(1)))
        .zip(argmax.par_chunks_exact_mut(out_plane.max(1)));
    // Small tensors: one task, so no other thread is woken.
    let min_planes = (PARALLEL_THRESHOLD / in_plane.max(1)).max(1);
    planes_iter
        .with_min_len(min_planes)
        .for_each(|((src, dst), arg)| geom.pool_plane(src, dst, arg));
    let out = device.tensor_from_vec(
        output,
        (batch, channels, geom.out_height(), geom.out_width()),
    );
    if T::OWNS_TAPE {
        let (x_ref, out_ref) = (x.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let grad_out = take_output_grad(grads, &out_ref)?;
            let mut grad_input = vec![0.0f32; planes * in_plane];
            grad_input
                .par_chunks_exact_mut(in_plane.max(1))
                .zip(grad_out.par_chunks_exact(out_plane.max(1)))
                .zip(argmax.par_chunks_exact(out_plane.max(1)))
                .with_min_len(min_planes)
                .for_each(|((dx, dy), arg)| {
                    for (g, &i) in dy.iter().zip(arg) {
                        dx[i as usize] += *g;
                    }
                });
            accumulate_grad(grads, &x_ref, &grad_input)
        });
    }
    out.put_tape(tape)
}
