//! Convolution, max-pooling and flattening built only from dfdx's public, device-generic ops
//! (`gather`, `matmul`, `max`, `permute`, `reshape`), so they run on every dfdx device,
//! CUDA included, with dfdx's own autograd.
//!
//! Layout: tensors are (B, C, H, W) to the caller, but the activations these ops produce keep
//! their memory in (C, H, W, B) order (a permuted view). Then im2col is one `gather` along the
//! first axis of the contiguous (C*H*W, B) matrix with an index computed once per geometry,
//! and the convolution is one `matmul` whose (O, OH*OW*B) result is already the next layer's
//! memory order: no transposing copies between layers. Inputs in plain (B, C, H, W) memory
//! also work (the first `reshape` then copies); [`images_batch_last`] uploads a batch in the
//! fast order.
//!
//! Padding never needs a concatenation: padded positions gather any valid element and a 0/1
//! mask (convolution) or a -inf offset (pooling) overrides it.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;

use dfdx::prelude::*;

use super::{output_size, InputGrad, Tensor1, Tensor2, Tensor4, Tensor4Shape};

/// Which tensors a cached gather index belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum IndexKind {
    ConvPatches,
    ConvMask,
    PoolWindows,
    PoolOffsets,
}

/// (kind, channels, height, width, kernel, stride, padding)
type IndexKey = (IndexKind, usize, usize, usize, usize, usize, usize);

thread_local! {
    static INDEX_CACHE: RefCell<HashMap<(TypeId, IndexKey), Box<dyn Any>>> =
        RefCell::new(HashMap::new());
}

/// A tensor built once per thread, device type and geometry, then shared (gather indices and
/// masks live on the device; rebuilding them every batch would upload them every batch).
fn cached<D, E, S>(
    device: &D,
    key: IndexKey,
    shape: S,
    build: impl FnOnce() -> Vec<E>,
) -> Tensor<S, E, D>
where
    D: Device<f32> + TensorFromVec<E> + 'static,
    E: Unit,
    S: Shape + 'static,
{
    let type_key = (TypeId::of::<Tensor<S, E, D>>(), key);
    let found = INDEX_CACHE.with(|cache| {
        cache
            .borrow()
            .get(&type_key)
            .and_then(|t| t.downcast_ref::<Tensor<S, E, D>>().cloned())
    });
    if let Some(tensor) = found {
        return tensor;
    }
    let tensor = device.tensor_from_vec(build(), shape);
    INDEX_CACHE.with(|cache| {
        cache
            .borrow_mut()
            .insert(type_key, Box::new(tensor.clone()))
    });
    tensor
}

/// The contiguous (C*H*W, B) matrix of a (B, C, H, W) batch: free when its memory is in
/// (C, H, W, B) order, a copy otherwise.
fn batch_last<D: Device<f32>, T: Tape<f32, D>>(x: Tensor4<T, D>) -> Tensor2<T, D> {
    let (b, c, h, w) = *x.shape();
    x.permute::<Tensor4Shape, Axes4<1, 2, 3, 0>>()
        .reshape_like(&(c * h * w, b))
}

/// The (B, C, H, W) view of a (C*H*W, B) matrix (no copy).
fn batch_first<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor2<T, D>,
    (c, h, w): (usize, usize, usize),
) -> Tensor4<T, D> {
    let b = x.shape().1;
    x.reshape_like(&(c, h, w, b))
        .permute::<Tensor4Shape, Axes4<3, 0, 1, 2>>()
}

/// Uploads `pixels` holding `shape.0` images in (B, C, H, W) order as a tensor whose memory is
/// in (C, H, W, B) order, the order the ops of this module read without copying.
pub fn images_batch_last<D: Device<f32>>(
    device: &D,
    pixels: &[f32],
    shape: (usize, usize, usize, usize),
) -> Tensor4<NoneTape, D> {
    let (b, c, h, w) = shape;
    let image = c * h * w;
    assert_eq!(pixels.len(), b * image, "images_batch_last: pixel count");
    let mut transposed = vec![0.0f32; pixels.len()];
    for (i, values) in pixels.chunks_exact(image.max(1)).enumerate() {
        for (p, v) in values.iter().enumerate() {
            transposed[p * b + i] = *v;
        }
    }
    device
        .tensor_from_vec(transposed, (c, h, w, b))
        .permute::<Tensor4Shape, Axes4<3, 0, 1, 2>>()
}

/// `y = conv2d(x, weight) + bias` for `x` (B, C, H, W), `weight` (O, C, K, K), `bias` (O,),
/// square kernel, zero padding. With [`InputGrad::Skip`] the input gets no gradient (first
/// layer).
pub fn conv2d<D: Device<f32> + 'static, T: Tape<f32, D>>(
    x: Tensor4<T, D>,
    weight: &Tensor4<NoneTape, D>,
    bias: &Tensor1<NoneTape, D>,
    stride: usize,
    padding: usize,
    input_grad: InputGrad,
) -> Tensor4<T, D> {
    super::check_conv2d_args(*x.shape(), *weight.shape(), bias.shape().0, stride, padding);
    let (_, c, h, w) = *x.shape();
    let (o, _, k, _) = *weight.shape();
    let (oh, ow) = (
        output_size(h, k, stride, padding),
        output_size(w, k, stride, padding),
    );
    let device = x.device().clone();
    let rows = c * k * k * oh * ow;
    let key = (IndexKind::ConvPatches, c, h, w, k, stride, padding);
    let geometry = Windows {
        channels: c,
        height: h,
        width: w,
        kernel: k,
        stride,
        padding,
    };
    let index = cached(&device, key, (rows,), || geometry.conv_index().0);
    let x = batch_last(x);
    let b = x.shape().1;
    let (x, tape) = x.split_tape();
    let (x, weight) = if input_grad == InputGrad::Skip {
        (x.retaped::<T>(), weight.clone().put_tape(tape))
    } else {
        (x.put_tape(tape), weight.retaped::<T>())
    };
    let mut cols: Tensor2<T, D> = x.gather(index);
    if padding > 0 {
        let key = (IndexKind::ConvMask, c, h, w, k, stride, padding);
        let mask: Tensor1<NoneTape, D> = cached(&device, key, (rows,), || geometry.conv_index().1);
        cols = cols * mask.broadcast_like::<_, Axis<1>>(&(rows, b));
    }
    let cols = cols.reshape_like(&(c * k * k, oh * ow * b));
    let y = weight.reshape_like(&(o, c * k * k)).matmul(cols);
    let y = y + bias
        .retaped::<T>()
        .broadcast_like::<_, Axis<1>>(&(o, oh * ow * b));
    batch_first(y.reshape_like(&(o * oh * ow, b)), (o, oh, ow))
}

/// Square windows of `kernel` over a (C, H, W) input with `stride` and zero `padding`.
struct Windows {
    channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Windows {
    fn out(&self) -> (usize, usize) {
        (
            output_size(self.height, self.kernel, self.stride, self.padding),
            output_size(self.width, self.kernel, self.stride, self.padding),
        )
    }

    /// The row of the (C*H*W, B) matrix that window (oy, ox) reads at offset (ky, kx) of
    /// channel `ch`, or None in the padding.
    fn source(
        &self,
        ch: usize,
        (oy, ox): (usize, usize),
        (ky, kx): (usize, usize),
    ) -> Option<usize> {
        let y = (oy * self.stride + ky) as isize - self.padding as isize;
        let x = (ox * self.stride + kx) as isize - self.padding as isize;
        let inside = y >= 0 && x >= 0 && (y as usize) < self.height && (x as usize) < self.width;
        inside.then(|| (ch * self.height + y as usize) * self.width + x as usize)
    }

    /// Gather rows (padding points at row 0) and per-row values `inside` / `outside`, in the
    /// order `positions` yields (channel, output position, kernel offset).
    fn index(
        &self,
        positions: impl Iterator<Item = (usize, (usize, usize), (usize, usize))>,
        inside: f32,
        outside: f32,
    ) -> (Vec<usize>, Vec<f32>) {
        positions
            .map(|(ch, out, offset)| match self.source(ch, out, offset) {
                Some(row) => (row, inside),
                None => (0, outside),
            })
            .unzip()
    }

    fn grid(rows: usize, cols: usize) -> impl Iterator<Item = (usize, usize)> + Clone {
        (0..rows).flat_map(move |r| (0..cols).map(move |c| (r, c)))
    }

    /// im2col order (c, ky, kx, oy, ox); 1.0 inside the image, 0.0 in the padding.
    fn conv_index(&self) -> (Vec<usize>, Vec<f32>) {
        let (oh, ow) = self.out();
        let k = self.kernel;
        let positions = (0..self.channels).flat_map(move |ch| {
            Self::grid(k, k)
                .flat_map(move |offset| Self::grid(oh, ow).map(move |out| (ch, out, offset)))
        });
        self.index(positions, 1.0, 0.0)
    }

    /// Pooling order (c, oy, ox, ky, kx); 0 inside, -inf in the padding (never the maximum).
    fn pool_index(&self) -> (Vec<usize>, Vec<f32>) {
        let (oh, ow) = self.out();
        let k = self.kernel;
        let positions = (0..self.channels).flat_map(move |ch| {
            Self::grid(oh, ow)
                .flat_map(move |out| Self::grid(k, k).map(move |offset| (ch, out, offset)))
        });
        self.index(positions, 0.0, f32::NEG_INFINITY)
    }
}

/// Max-pooling of `x` (B, C, H, W) with a square window; padded positions never win.
pub fn max_pool2d<D: Device<f32> + 'static, T: Tape<f32, D>>(
    x: Tensor4<T, D>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Tensor4<T, D> {
    super::check_pool2d_args(*x.shape(), kernel, stride, padding);
    let (_, c, h, w) = *x.shape();
    let (oh, ow) = (
        output_size(h, kernel, stride, padding),
        output_size(w, kernel, stride, padding),
    );
    let x = batch_last(x);
    let b = x.shape().1;
    if kernel == 2 && stride == 2 && padding == 0 && h % 2 == 0 && w % 2 == 0 {
        // Non-overlapping 2x2 windows are two axes of a reshape.
        let pooled = x
            .reshape_like(&(c * oh, 2usize, ow, 2usize, b))
            .max::<(usize, usize, usize), Axes2<1, 3>>();
        return batch_first(pooled.reshape_like(&(c * oh * ow, b)), (c, oh, ow));
    }
    let device = x.device().clone();
    let area = kernel * kernel;
    let rows = c * oh * ow * area;
    let key = (IndexKind::PoolWindows, c, h, w, kernel, stride, padding);
    let geometry = Windows {
        channels: c,
        height: h,
        width: w,
        kernel,
        stride,
        padding,
    };
    let index = cached(&device, key, (rows,), || geometry.pool_index().0);
    let mut windows: Tensor2<T, D> = x.gather(index);
    if padding > 0 {
        let key = (IndexKind::PoolOffsets, c, h, w, kernel, stride, padding);
        let offsets: Tensor1<NoneTape, D> =
            cached(&device, key, (rows,), || geometry.pool_index().1);
        windows = windows + offsets.broadcast_like::<_, Axis<1>>(&(rows, b));
    }
    let pooled = windows
        .reshape_like(&(c * oh * ow, area, b))
        .max::<(usize, usize), Axis<1>>();
    batch_first(pooled, (c, oh, ow))
}

/// (B, C, H, W) -> (B, C*H*W) in (C, H, W) feature order: a transposed view of the (C*H*W, B)
/// matrix, which `matmul` reads without copying.
pub fn flatten<D: Device<f32>, T: Tape<f32, D>>(x: Tensor4<T, D>) -> Tensor2<T, D> {
    batch_last(x).permute::<(usize, usize), Axes2<1, 0>>()
}

/// `a + b` for two activations of the same shape, keeping the (C, H, W, B) memory order (dfdx's
/// elementwise ops write plain row-major results, which the next layer would have to copy).
pub fn add<D: Device<f32>>(
    a: Tensor4<NoneTape, D>,
    b: Tensor4<NoneTape, D>,
) -> Tensor4<NoneTape, D> {
    let (_, c, h, w) = *a.shape();
    batch_first(batch_last(a) + batch_last(b), (c, h, w))
}

/// Training-mode batch normalization of `x` (B, C, H, W) from dfdx's ops (what GPUs run; see
/// `cpu_batch_norm2d`), and the batch's statistics.
pub fn batch_norm2d<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor4<T, D>,
    gamma: &Tensor1<NoneTape, D>,
    beta: &Tensor1<NoneTape, D>,
    epsilon: f32,
) -> (Tensor4<T, D>, super::BatchStatistics) {
    let (b, c, h, w) = *x.shape();
    let n = h * w * b;
    // One row per channel: (C, H*W*B).
    let rows = batch_last(x).reshape_like(&(c, n));
    let plain = rows.retaped::<NoneTape>();
    let mean = plain.clone().mean::<(usize,), Axis<1>>();
    let centered = plain - mean.clone().broadcast_like::<_, Axis<1>>(&(c, n));
    let variance = centered.square().mean::<(usize,), Axis<1>>();
    let statistics = super::BatchStatistics {
        mean: mean.as_vec(),
        variance: variance.as_vec(),
    };
    let y = rows.normalize::<Axis<1>>(epsilon as f64)
        * gamma.retaped::<T>().broadcast_like::<_, Axis<1>>(&(c, n))
        + beta.retaped::<T>().broadcast_like::<_, Axis<1>>(&(c, n));
    (
        batch_first(y.reshape_like(&(c * h * w, b)), (c, h, w)),
        statistics,
    )
}

/// `relu(batch_norm2d(x))` from dfdx's ops (what GPUs run; see `cpu_batch_norm_relu2d`).
pub fn batch_norm_relu2d<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor4<T, D>,
    gamma: &Tensor1<NoneTape, D>,
    beta: &Tensor1<NoneTape, D>,
    epsilon: f32,
) -> (Tensor4<T, D>, super::BatchStatistics) {
    let (y, statistics) = batch_norm2d(x, gamma, beta, epsilon);
    (y.relu(), statistics)
}
