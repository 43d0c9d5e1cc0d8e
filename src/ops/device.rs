//! The devices models run on: the CPU always, NVIDIA GPUs with the `cuda` feature.

use std::sync::atomic::{AtomicBool, Ordering};

use dfdx::prelude::*;

use super::Tensor4Shape;
use super::{composite, cpu_conv2d, cpu_max_pool2d, InputGrad, Tensor1, Tensor2, Tensor4};

/// A dfdx device with our convolution, pooling and layout helpers. Models, training and
/// feature extraction are generic over it. The provided methods are the device-generic
/// composition of dfdx ops ([`composite`]), which GPUs run; the CPU overrides them with its
/// custom ops.
pub trait ModelDevice: Device<f32> + 'static {
    /// The same device as a run-time choice.
    const CHOICE: DeviceChoice;

    /// See [`super::conv2d`].
    fn conv2d<T: Tape<f32, Self>>(
        x: Tensor4<T, Self>,
        weight: &Tensor4<NoneTape, Self>,
        bias: &Tensor1<NoneTape, Self>,
        stride: usize,
        padding: usize,
        input_grad: InputGrad,
    ) -> Tensor4<T, Self> {
        composite::conv2d(x, weight, bias, stride, padding, input_grad)
    }

    /// See [`super::max_pool2d`].
    fn max_pool2d<T: Tape<f32, Self>>(
        x: Tensor4<T, Self>,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Tensor4<T, Self> {
        composite::max_pool2d(x, kernel, stride, padding)
    }

    /// See [`super::flatten`].
    fn flatten<T: Tape<f32, Self>>(x: Tensor4<T, Self>) -> Tensor2<T, Self> {
        composite::flatten(x)
    }

    /// Batch normalization in training mode, with the batch's statistics (see
    /// [`super::cpu_batch_norm2d`]).
    fn batch_norm2d<T: Tape<f32, Self>>(
        x: Tensor4<T, Self>,
        gamma: &Tensor1<NoneTape, Self>,
        beta: &Tensor1<NoneTape, Self>,
        epsilon: f32,
    ) -> (Tensor4<T, Self>, super::BatchStatistics) {
        composite::batch_norm2d(x, gamma, beta, epsilon)
    }

    /// `relu(batch_norm2d(x))`, with the batch's statistics (see
    /// [`super::cpu_batch_norm_relu2d`]).
    fn batch_norm_relu2d<T: Tape<f32, Self>>(
        x: Tensor4<T, Self>,
        gamma: &Tensor1<NoneTape, Self>,
        beta: &Tensor1<NoneTape, Self>,
        epsilon: f32,
    ) -> (Tensor4<T, Self>, super::BatchStatistics) {
        composite::batch_norm_relu2d(x, gamma, beta, epsilon)
    }

    /// See [`super::add_activations`].
    fn add_activations(
        a: Tensor4<NoneTape, Self>,
        b: Tensor4<NoneTape, Self>,
    ) -> Tensor4<NoneTape, Self> {
        composite::add(a, b)
    }

    /// The values of a (B, C, H, W) activation in (B, C, H, W) order, on the host.
    fn activations_to_host(x: Tensor4<NoneTape, Self>) -> Vec<f32> {
        x.as_vec()
    }

    /// A batch of images given in (B, C, H, W) order, laid out the way this device's ops read
    /// fastest.
    fn images(&self, pixels: Vec<f32>, shape: Tensor4Shape) -> Tensor4<NoneTape, Self> {
        composite::images_batch_last(self, &pixels, shape)
    }

    /// The device a training run with `seed` uses: the same memory as `self`, with dropout
    /// masks drawn from `seed` where the device allows it (CPU).
    fn for_training(&self, seed: u64) -> Self;

    /// Overwrites a buffer of this device (e.g. an optimizer's moment) with `values` from the
    /// host (a resumed run's saved state); `values` has the buffer's length.
    fn write_from_host(
        buffer: &mut <Self as Storage<f32>>::Vec,
        values: &[f32],
    ) -> Result<(), String>;

    /// The device in words, for logs and result files.
    fn describe(&self) -> String;

    /// Images per forward pass when extracting frozen-backbone features (results do not depend
    /// on it).
    fn extraction_batch(&self) -> usize {
        64
    }
}

/// Which implementation the CPU uses for convolution and pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuOps {
    /// Custom ops (im2col + GEMM on threads): the fast and deterministic default.
    Custom,
    /// The device-generic composition of dfdx ops that GPUs run, for testing that path on
    /// machines without a GPU.
    Composite,
}

static CPU_COMPOSITE: AtomicBool = AtomicBool::new(false);

/// Chooses the CPU implementation for the whole process (tests of the GPU code path).
pub fn set_cpu_ops(ops: CpuOps) {
    CPU_COMPOSITE.store(ops == CpuOps::Composite, Ordering::SeqCst);
}

/// The CPU implementation in use.
pub fn cpu_ops() -> CpuOps {
    if CPU_COMPOSITE.load(Ordering::SeqCst) {
        CpuOps::Composite
    } else {
        CpuOps::Custom
    }
}

impl ModelDevice for Cpu {
    const CHOICE: DeviceChoice = DeviceChoice::Cpu;

    fn conv2d<T: Tape<f32, Self>>(
        x: Tensor4<T, Self>,
        weight: &Tensor4<NoneTape, Self>,
        bias: &Tensor1<NoneTape, Self>,
        stride: usize,
        padding: usize,
        input_grad: InputGrad,
    ) -> Tensor4<T, Self> {
        match cpu_ops() {
            CpuOps::Custom => cpu_conv2d(x, weight, bias, stride, padding, input_grad),
            CpuOps::Composite => composite::conv2d(x, weight, bias, stride, padding, input_grad),
        }
    }

    fn max_pool2d<T: Tape<f32, Self>>(
        x: Tensor4<T, Self>,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Tensor4<T, Self> {
        match cpu_ops() {
            CpuOps::Custom => cpu_max_pool2d(x, kernel, stride, padding),
            CpuOps::Composite => composite::max_pool2d(x, kernel, stride, padding),
        }
    }

    fn flatten<T: Tape<f32, Self>>(x: Tensor4<T, Self>) -> Tensor2<T, Self> {
        match cpu_ops() {
            CpuOps::Custom => {
                let (b, c, h, w) = *x.shape();
                x.reshape_like(&(b, c * h * w))
            }
            CpuOps::Composite => composite::flatten(x),
        }
    }

    fn batch_norm2d<T: Tape<f32, Self>>(
        x: Tensor4<T, Self>,
        gamma: &Tensor1,
        beta: &Tensor1,
        epsilon: f32,
    ) -> (Tensor4<T, Self>, super::BatchStatistics) {
        match cpu_ops() {
            CpuOps::Custom => super::cpu_batch_norm2d(x, gamma, beta, epsilon),
            CpuOps::Composite => composite::batch_norm2d(x, gamma, beta, epsilon),
        }
    }

    fn batch_norm_relu2d<T: Tape<f32, Self>>(
        x: Tensor4<T, Self>,
        gamma: &Tensor1,
        beta: &Tensor1,
        epsilon: f32,
    ) -> (Tensor4<T, Self>, super::BatchStatistics) {
        match cpu_ops() {
            CpuOps::Custom => super::cpu_batch_norm_relu2d(x, gamma, beta, epsilon),
            CpuOps::Composite => composite::batch_norm_relu2d(x, gamma, beta, epsilon),
        }
    }

    fn add_activations(a: Tensor4<NoneTape, Self>, b: Tensor4<NoneTape, Self>) -> Tensor4 {
        match cpu_ops() {
            CpuOps::Custom => a + b,
            CpuOps::Composite => composite::add(a, b),
        }
    }

    fn activations_to_host(x: Tensor4) -> Vec<f32> {
        match cpu_ops() {
            // Contiguous: one memory copy (`as_vec` walks an index per element).
            CpuOps::Custom => super::contiguous_values(&x),
            CpuOps::Composite => x.as_vec(),
        }
    }

    fn images(&self, pixels: Vec<f32>, shape: Tensor4Shape) -> Tensor4 {
        match cpu_ops() {
            CpuOps::Custom => self.tensor_from_vec(pixels, shape),
            CpuOps::Composite => composite::images_batch_last(self, &pixels, shape),
        }
    }

    fn for_training(&self, seed: u64) -> Self {
        Cpu::seed_from_u64(seed)
    }

    fn write_from_host(
        buffer: &mut <Self as Storage<f32>>::Vec,
        values: &[f32],
    ) -> Result<(), String> {
        buffer.copy_from_slice(values);
        Ok(())
    }

    fn describe(&self) -> String {
        let threads = rayon::current_num_threads();
        match cpu_ops() {
            CpuOps::Custom => format!("cpu ({threads} threads)"),
            CpuOps::Composite => format!("cpu ({threads} threads, composite ops)"),
        }
    }
}

#[cfg(feature = "cuda")]
impl ModelDevice for Cuda {
    const CHOICE: DeviceChoice = DeviceChoice::Cuda;

    fn for_training(&self, _seed: u64) -> Self {
        // A second `Cuda` would bring its own stream; tensors must stay on one. Dropout masks
        // on the GPU therefore come from the device's own generator.
        self.clone()
    }

    fn write_from_host(
        buffer: &mut <Self as Storage<f32>>::Vec,
        values: &[f32],
    ) -> Result<(), String> {
        let device = buffer.device();
        device
            .htod_sync_copy_into(values, &mut **buffer)
            .map_err(|e| driver_error_text(&e))
    }

    fn describe(&self) -> String {
        format!("cuda:{}", cuda_ordinal())
    }

    fn extraction_batch(&self) -> usize {
        // Larger batches amortize kernel launches; VGG-16's largest im2col matrix at 32x32 is
        // then about 600 MB.
        256
    }
}

/// A device named on the command line or in a notebook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            other => Err(DeviceError(format!(
                "unknown device {other:?}: use \"cpu\" or \"cuda\""
            ))),
        }
    }
}

impl DeviceChoice {
    /// Fails with a clear message when `cuda` is asked for but unavailable (no `cuda` feature
    /// in this build, no GPU, or no driver).
    pub fn check(self) -> Result<(), DeviceError> {
        crate::on_device!(self, _device => ())
    }

    /// The device in words, e.g. "cpu (2 threads)" or "cuda:0 (NVIDIA H200)".
    pub fn describe(self) -> Result<String, DeviceError> {
        crate::on_device!(self, device => device.describe())
    }

    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a device cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(pub String);

/// This thread's CUDA device (GPU `$FASHION_MNIST_CUDA_DEVICE`, default 0), created on first
/// use. One instance per thread keeps a thread's tensors on one CUDA stream (and a CUDA context
/// is bound to a thread); dfdx's `Cuda` cannot be shared between threads.
#[cfg(feature = "cuda")]
pub fn cuda_device() -> Result<Cuda, DeviceError> {
    thread_local! {
        static DEVICE: std::cell::OnceCell<Result<Cuda, DeviceError>> =
            const { std::cell::OnceCell::new() };
    }
    DEVICE.with(|device| {
        device
            .get_or_init(|| {
                let ordinal = cuda_ordinal();
                gpu_present(ordinal)?;
                Cuda::try_build(ordinal, 0).map_err(|e| no_usable_gpu(ordinal, cuda_error_text(&e)))
            })
            .clone()
    })
}

/// Asks the driver for GPU `ordinal` (dfdx's `Cuda::try_build` panics when there is none).
#[cfg(feature = "cuda")]
fn gpu_present(ordinal: usize) -> Result<(), DeviceError> {
    use cudarc::driver::result;
    let unusable = |what: String| no_usable_gpu(ordinal, what);
    result::init().map_err(|e| {
        unusable(format!(
            "the driver did not start ({})",
            driver_error_text(&e)
        ))
    })?;
    let count = result::device::get_count()
        .map_err(|e| unusable(format!("cannot count GPUs ({})", driver_error_text(&e))))?;
    if ordinal >= count.max(0) as usize {
        return Err(unusable(format!("the driver sees {count} GPU(s)")));
    }
    Ok(())
}

/// Why GPU `ordinal` cannot be used, with what the CUDA build needs.
#[cfg(feature = "cuda")]
fn no_usable_gpu(ordinal: usize, reason: String) -> DeviceError {
    DeviceError(format!(
        "no usable CUDA GPU {ordinal}: {reason}. The CUDA build needs an NVIDIA GPU, its driver \
         (libcuda.so.1; CUDA 13 needs driver 580 or newer) and the CUDA 13 libraries \
         libnvrtc.so.13, libcublas.so.13 and libcublasLt.so.13 on the library path \
         (LD_LIBRARY_PATH); see the README's GPU section"
    ))
}

/// A driver error in words.
#[cfg(feature = "cuda")]
fn driver_error_text(error: &cudarc::driver::result::DriverError) -> String {
    match error.error_string() {
        Ok(text) => format!("{:?}: {}", error.0, text.to_string_lossy()),
        Err(_) => format!("{:?}", error.0),
    }
}

/// A CUDA error in words. (cudarc's `Debug` for driver errors unwraps the driver's own error
/// text, which panics when the driver cannot give one.)
#[cfg(feature = "cuda")]
fn cuda_error_text(error: &dfdx::tensor::CudaError) -> String {
    match error {
        dfdx::tensor::CudaError::Driver(driver) => driver_error_text(driver),
        dfdx::tensor::CudaError::Blas(blas) => format!("cuBLAS {:?}", blas.0),
        dfdx::tensor::CudaError::Cpu(cpu) => format!("{cpu:?}"),
    }
}

/// The GPU to use: `$FASHION_MNIST_CUDA_DEVICE`, default 0.
#[cfg(feature = "cuda")]
fn cuda_ordinal() -> usize {
    std::env::var("FASHION_MNIST_CUDA_DEVICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The error for `cuda` in a build without the `cuda` feature.
#[doc(hidden)]
pub fn no_cuda_in_this_build() -> DeviceError {
    DeviceError(
        "this build has no CUDA support: build with `--features cuda` (see \
         scripts/build-cuda.sh and the README's GPU section), or use the CPU"
            .into(),
    )
}

/// `on_device!(choice, device => body)`: evaluates `body` with `device` bound to `&Cpu` or
/// `&Cuda` as `choice` says, giving `Result<_, DeviceError>`. The body is compiled once per
/// device type. For this package's own code only: the `cuda` feature is checked where the
/// macro is expanded.
#[doc(hidden)]
#[macro_export]
macro_rules! on_device {
    ($choice:expr, $device:ident => $body:expr) => {{
        match $choice {
            $crate::ops::DeviceChoice::Cpu => {
                let $device = &::dfdx::prelude::Cpu::default();
                Ok($body)
            }
            #[cfg(feature = "cuda")]
            $crate::ops::DeviceChoice::Cuda => match $crate::ops::cuda_device() {
                Ok(gpu) => {
                    let $device = &gpu;
                    Ok($body)
                }
                Err(e) => Err(e),
            },
            #[cfg(not(feature = "cuda"))]
            $crate::ops::DeviceChoice::Cuda => Err($crate::ops::no_cuda_in_this_build()),
        }
    }};
}
