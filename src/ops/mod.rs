//! Convolution and max-pooling with autograd for dfdx 0.13 on stable Rust.
//!
//! dfdx compiles its own conv/pool ops only with its `nightly` feature, which does not build on
//! stable, so these are custom ops registered on dfdx's public tape API: the forward pass runs
//! im2col + GEMM (the `gemm` crate, as dfdx uses) over images in parallel, and the backward pass
//! computes weight, bias and input gradients and accumulates them into dfdx's `Gradients`.
//! Layout is NCHW with runtime dimensions. Every reduction runs in a fixed order, so results do
//! not depend on thread scheduling (training is deterministic for a given seed).

mod conv;
mod matmul;
mod pool;

pub use conv::{conv2d, Conv2dGeometry, InputGrad};
pub use pool::{max_pool2d, Pool2dGeometry};

use dfdx::prelude::*;

/// A 4-D activation tensor (batch, channels, height, width) on the CPU.
pub type Tensor4<T = NoneTape> = Tensor<(usize, usize, usize, usize), f32, Cpu, T>;
/// A 1-D tensor (bias) on the CPU.
pub type Tensor1<T = NoneTape> = Tensor<(usize,), f32, Cpu, T>;
/// A 2-D tensor (batch, features) on the CPU.
pub type Tensor2<T = NoneTape> = Tensor<(usize, usize), f32, Cpu, T>;

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
