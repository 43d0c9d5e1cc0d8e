//! Convolution and max-pooling with autograd for dfdx 0.13 on stable Rust, on the CPU and
//! (feature `cuda`) on NVIDIA GPUs.
//!
//! dfdx compiles its own conv/pool ops only with its `nightly` feature, which does not build on
//! stable. On the CPU these are custom ops registered on dfdx's public tape API: the forward
//! pass runs im2col + GEMM (the `gemm` crate) over images in parallel, and the backward pass
//! computes weight, bias and input gradients and accumulates them into dfdx's `Gradients`.
//! Every reduction runs in a fixed order, so CPU results do not depend on thread scheduling
//! (training is deterministic for a given seed). On other devices the same ops are composed of
//! dfdx's public device-generic ops ([`composite`]). Tensors are (B, C, H, W) to callers on
//! every device; [`ModelDevice`] picks the implementation.

mod batch_norm;
pub mod channel_major;
pub mod composite;
mod conv;
pub mod dense;
mod device;
mod matmul;
mod pool;
mod scratch;

pub use batch_norm::{
    cpu_batch_norm2d, cpu_batch_norm_relu2d, update_moving_statistics, BatchStatistics,
};
pub use conv::{cpu_conv2d, Conv2dGeometry, InputGrad};
#[cfg(feature = "cuda")]
pub use device::cuda_device;
#[doc(hidden)]
pub use device::no_cuda_in_this_build;
pub use device::{cpu_ops, set_cpu_ops, CpuOps, DeviceChoice, DeviceError, ModelDevice};
pub use matmul::{par_matmul_by_columns, MatRef};
pub use pool::{cpu_max_pool2d, Pool2dGeometry};

use dfdx::prelude::*;

/// The shape of a 4-D activation: (batch, channels, height, width).
pub type Tensor4Shape = (usize, usize, usize, usize);
/// A 4-D activation tensor (batch, channels, height, width), on the CPU unless `D` says.
pub type Tensor4<T = NoneTape, D = Cpu> = Tensor<Tensor4Shape, f32, D, T>;
/// A 1-D tensor (bias).
pub type Tensor1<T = NoneTape, D = Cpu> = Tensor<(usize,), f32, D, T>;
/// A 2-D tensor (batch, features).
pub type Tensor2<T = NoneTape, D = Cpu> = Tensor<(usize, usize), f32, D, T>;

/// `conv2d(x, weight) + bias` for `x` (B, C, H, W), `weight` (O, C, K, K), `bias` (O,), on
/// whichever device the tensors live.
pub fn conv2d<D: ModelDevice, T: Tape<f32, D>>(
    x: Tensor4<T, D>,
    weight: &Tensor4<NoneTape, D>,
    bias: &Tensor1<NoneTape, D>,
    stride: usize,
    padding: usize,
    input_grad: InputGrad,
) -> Tensor4<T, D> {
    D::conv2d(x, weight, bias, stride, padding, input_grad)
}

/// Batch normalization in training mode of `x` (B, C, H, W): per channel, the batch's mean and
/// biased variance normalize it, `gamma` and `beta` scale and shift it; with those statistics
/// (for [`update_moving_statistics`]). On whichever device the tensors live.
pub fn batch_norm2d<D: ModelDevice, T: Tape<f32, D>>(
    x: Tensor4<T, D>,
    gamma: &Tensor1<NoneTape, D>,
    beta: &Tensor1<NoneTape, D>,
    epsilon: f32,
) -> (Tensor4<T, D>, BatchStatistics) {
    D::batch_norm2d(x, gamma, beta, epsilon)
}

/// `relu(batch_norm2d(x))` in training mode, in one pass where the device has a fused op (the
/// CPU), with the batch's statistics.
pub fn batch_norm_relu2d<D: ModelDevice, T: Tape<f32, D>>(
    x: Tensor4<T, D>,
    gamma: &Tensor1<NoneTape, D>,
    beta: &Tensor1<NoneTape, D>,
    epsilon: f32,
) -> (Tensor4<T, D>, BatchStatistics) {
    D::batch_norm_relu2d(x, gamma, beta, epsilon)
}

/// Max-pooling of `x` (B, C, H, W) with a square window, on whichever device `x` lives.
pub fn max_pool2d<D: ModelDevice, T: Tape<f32, D>>(
    x: Tensor4<T, D>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Tensor4<T, D> {
    D::max_pool2d(x, kernel, stride, padding)
}

/// (B, C, H, W) -> (B, C*H*W), features in (C, H, W) order.
pub fn flatten<D: ModelDevice, T: Tape<f32, D>>(x: Tensor4<T, D>) -> Tensor2<T, D> {
    D::flatten(x)
}

/// `a + b` for two activations of the same shape (residual connections of frozen backbones).
pub fn add_activations<D: ModelDevice>(
    a: Tensor4<NoneTape, D>,
    b: Tensor4<NoneTape, D>,
) -> Tensor4<NoneTape, D> {
    D::add_activations(a, b)
}

/// Panics with the reason when a convolution's shapes do not fit together (both
/// implementations check the same things).
fn check_conv2d_args(
    input: Tensor4Shape,
    weight: Tensor4Shape,
    bias_len: usize,
    stride: usize,
    padding: usize,
) {
    let (_, in_channels, in_height, in_width) = input;
    let (out_channels, w_in, kernel, kernel_w) = weight;
    assert_eq!(
        w_in, in_channels,
        "conv2d: weight expects {w_in} input channels, got {in_channels}"
    );
    assert_eq!(kernel, kernel_w, "conv2d: only square kernels");
    assert_eq!(bias_len, out_channels, "conv2d: bias length");
    assert!(stride >= 1, "conv2d: stride must be at least 1");
    assert!(
        in_height + 2 * padding >= kernel && in_width + 2 * padding >= kernel,
        "conv2d: kernel {kernel} larger than the padded {in_height}x{in_width} input"
    );
}

/// Panics with the reason when a pooling window does not fit its input.
fn check_pool2d_args(input: Tensor4Shape, kernel: usize, stride: usize, padding: usize) {
    let (_, _, in_height, in_width) = input;
    assert!(
        stride >= 1 && kernel >= 1,
        "max_pool2d: kernel and stride must be at least 1"
    );
    assert!(
        padding < kernel,
        "max_pool2d: padding must be smaller than the window"
    );
    assert!(
        in_height + 2 * padding >= kernel && in_width + 2 * padding >= kernel,
        "max_pool2d: window larger than the input"
    );
}

/// Positions a window of `kernel` takes along an axis of `input` with `stride` and `padding`.
fn output_size(input: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (input + 2 * padding - kernel) / stride + 1
}

/// Work (elements) below which an op runs on the calling thread: waking the thread pool costs
/// more than it saves on small tensors.
const PARALLEL_THRESHOLD: usize = 1 << 15;

/// The tensor's values in row-major order. dfdx's `as_vec` walks an index iterator element by
/// element; this makes the tensor contiguous (free when it already is) and copies memory.
fn contiguous_values<S: Shape>(tensor: &Tensor<S, f32, Cpu>) -> Vec<f32> {
    let shape = *tensor.shape();
    let contiguous = tensor.clone().reshape_like(&shape);
    let mut values = vec![0.0; shape.num_elements()];
    contiguous.copy_into(&mut values);
    values
}

/// Adds `src` into the gradient of `tensor`, allocating it when absent.
fn accumulate_grad<S: Shape, T>(
    grads: &mut Gradients<f32, Cpu>,
    tensor: &Tensor<S, f32, Cpu, T>,
    src: &[f32],
) -> Result<(), CpuError> {
    let dst = grads.get_or_alloc_mut(tensor)?;
    // A mismatch means two tensors share an id (see `training::fit`); never add silently.
    assert_eq!(dst.len(), src.len(), "gradient buffer of another tensor");
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
    Ok(())
}

/// Takes the gradient of an op's output out of `grads` (it is not needed after the op that
/// produced the tensor has run its backward pass, which is the last use on the tape).
fn take_output_grad<S: Shape, T>(
    grads: &mut Gradients<f32, Cpu>,
    output: &Tensor<S, f32, Cpu, T>,
) -> Result<Vec<f32>, CpuError> {
    let numel = output.shape().num_elements();
    let grad = grads.get_or_alloc_mut(output)?;
    let taken = std::mem::take(&mut **grad);
    assert_eq!(taken.len(), numel, "gradient buffer of another tensor");
    Ok(taken)
}
