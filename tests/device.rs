//! Device tests: the code path GPUs run (convolution, pooling and flattening composed of dfdx's
//! device-generic ops, batch-last memory) against the CPU's custom ops, from single ops up to
//! LeNet-5 training and the ImageNet backbones.
//!
//! Every check is generic over the device. Without the `cuda` feature they run on the CPU with
//! the composite ops switched on; with it (on a machine with a GPU) they also run on CUDA:
//! `cargo test --release --features cuda --test device`.

use std::sync::Mutex;

use dfdx::prelude::*;
use fashion_mnist::data::prepare::{train_validation_split, Prepared};
use fashion_mnist::models::{LeNet5, LeNet5Config, ParamVisitor, ResNet50, Vgg16};
use fashion_mnist::ops::{
    conv2d, cpu_conv2d, cpu_max_pool2d, flatten, max_pool2d, set_cpu_ops, CpuOps, InputGrad,
    ModelDevice, Tensor1, Tensor4,
};
use fashion_mnist::training::{self, Silent, TrainConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::real_train_and_heldout;

/// The CPU implementation is a process-wide switch: tests that run on the CPU hold this lock.
static CPU_OPS: Mutex<()> = Mutex::new(());

/// Runs `check` on the CPU with the composite (GPU) code path switched on.
fn on_cpu_composite(check: impl FnOnce(&Cpu)) {
    let _guard = CPU_OPS.lock().unwrap_or_else(|e| e.into_inner());
    set_cpu_ops(CpuOps::Composite);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&Cpu::default())));
    set_cpu_ops(CpuOps::Custom);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `reference` on the CPU's custom ops (callers on the CPU already hold the lock).
fn on_cpu_custom<R>(reference: impl FnOnce(&Cpu) -> R) -> R {
    let previous = fashion_mnist::ops::cpu_ops();
    set_cpu_ops(CpuOps::Custom);
    let result = reference(&Cpu::default());
    set_cpu_ops(previous);
    result
}

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Largest |a - b| relative to the largest |b|.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
        / scale
}

fn assert_close(what: &str, got: &[f32], expected: &[f32], tolerance: f32) {
    let error = relative_error(got, expected);
    assert!(
        error <= tolerance,
        "{what}: relative error {error:e} > {tolerance:e}"
    );
}

/// (output, d_input, d_weight, d_bias) of `sum(conv(x) * upstream)`.
type ConvResult = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

/// One convolution's inputs.
struct ConvCase {
    shape: (usize, usize, usize, usize),
    x: Vec<f32>,
    w_shape: (usize, usize, usize, usize),
    w: Vec<f32>,
    b: Vec<f32>,
    upstream: Vec<f32>,
}

type Traced<D> = Tensor4<OwnedTape<f32, D>, D>;

/// Runs `conv` on `case` on `device` (input uploaded in plain or batch-last memory order).
fn run_conv<D: ModelDevice>(
    device: &D,
    case: &ConvCase,
    batch_last_input: bool,
    conv: impl Fn(Traced<D>, &Tensor4<NoneTape, D>, &Tensor1<NoneTape, D>) -> Traced<D>,
) -> ConvResult {
    let input: Tensor4<NoneTape, D> = if batch_last_input {
        device.images(case.x.clone(), case.shape)
    } else {
        device.tensor_from_vec(case.x.clone(), case.shape)
    };
    let weight: Tensor4<NoneTape, D> = device.tensor_from_vec(case.w.clone(), case.w_shape);
    let bias: Tensor1<NoneTape, D> = device.tensor_from_vec(case.b.clone(), (case.b.len(),));
    let out = conv(input.clone().traced(Gradients::leaky()), &weight, &bias);
    let values = out.as_vec();
    let up: Tensor4<NoneTape, D> = device.tensor_from_vec(case.upstream.clone(), *out.shape());
    let grads = (out * up).sum().backward();
    (
        values,
        grads.get(&input).as_vec(),
        grads.get(&weight).as_vec(),
        grads.get(&bias).as_vec(),
    )
}

fn check_conv2d<D: ModelDevice>(device: &D) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // (batch, channels, side, filters, kernel, stride, padding)
    let cases = [
        (3, 1, 28, 6, 5, 1, 0),
        (2, 6, 12, 16, 5, 1, 0),
        (2, 3, 9, 4, 3, 1, 1),
        (2, 3, 9, 4, 3, 2, 1),
        (1, 4, 8, 5, 1, 1, 0),
        (2, 4, 8, 5, 1, 2, 0),
        (2, 3, 16, 8, 7, 2, 3),
        (3, 2, 5, 3, 5, 1, 2),
    ];
    for (batch, channels, side, filters, kernel, stride, padding) in cases {
        let out_side = (side + 2 * padding - kernel) / stride + 1;
        let case = ConvCase {
            shape: (batch, channels, side, side),
            x: random(&mut rng, batch * channels * side * side),
            w_shape: (filters, channels, kernel, kernel),
            w: random(&mut rng, filters * channels * kernel * kernel),
            b: random(&mut rng, filters),
            upstream: random(&mut rng, batch * filters * out_side * out_side),
        };
        let expected = run_conv(&Cpu::default(), &case, false, |x, w, b| {
            cpu_conv2d(x, w, b, stride, padding, InputGrad::Compute)
        });
        for batch_last in [false, true] {
            let got = run_conv(device, &case, batch_last, |x, w, b| {
                conv2d(x, w, b, stride, padding, InputGrad::Compute)
            });
            let label = format!(
                "conv {batch}x{channels}x{side}x{side} -> {filters} k{kernel} s{stride} p{padding} \
                 (batch-last input: {batch_last})"
            );
            assert_close(&format!("{label}: output"), &got.0, &expected.0, 1e-5);
            assert_close(&format!("{label}: input grad"), &got.1, &expected.1, 1e-5);
            assert_close(&format!("{label}: weight grad"), &got.2, &expected.2, 1e-5);
            assert_close(&format!("{label}: bias grad"), &got.3, &expected.3, 1e-5);
        }
    }
}

fn check_max_pool2d<D: ModelDevice>(device: &D) {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // (batch, channels, side, kernel, stride, padding); random values have no ties.
    let cases = [
        (3, 6, 24, 2, 2, 0),
        (2, 16, 8, 2, 2, 0),
        (2, 3, 7, 2, 2, 0),
        (2, 4, 16, 3, 2, 1),
        (2, 2, 9, 3, 1, 1),
    ];
    for (batch, channels, side, kernel, stride, padding) in cases {
        let shape = (batch, channels, side, side);
        let x = random(&mut rng, batch * channels * side * side);
        let out_side = (side + 2 * padding - kernel) / stride + 1;
        let upstream = random(&mut rng, batch * channels * out_side * out_side);

        let cpu = Cpu::default();
        let input: Tensor4 = cpu.tensor_from_vec(x.clone(), shape);
        let out = cpu_max_pool2d(
            input.clone().traced(Gradients::leaky()),
            kernel,
            stride,
            padding,
        );
        let expected = out.as_vec();
        let up: Tensor4 = cpu.tensor_from_vec(upstream.clone(), *out.shape());
        let expected_grad = grads_of_input(&input, (out * up).sum().backward());

        for batch_last in [false, true] {
            let input: Tensor4<NoneTape, D> = if batch_last {
                device.images(x.clone(), shape)
            } else {
                device.tensor_from_vec(x.clone(), shape)
            };
            let out = max_pool2d(
                input.clone().traced(Gradients::leaky()),
                kernel,
                stride,
                padding,
            );
            let got = out.as_vec();
            let up: Tensor4<NoneTape, D> = device.tensor_from_vec(upstream.clone(), *out.shape());
            let grads = (out * up).sum().backward();
            let case = format!(
                "pool {batch}x{channels}x{side}x{side} k{kernel} s{stride} p{padding} \
                 (batch-last input: {batch_last})"
            );
            assert_eq!(got, expected, "{case}: output");
            assert_eq!(
                grads.get(&input).as_vec(),
                expected_grad,
                "{case}: input grad"
            );
        }
    }
}

fn grads_of_input(input: &Tensor4, grads: Gradients<f32, Cpu>) -> Vec<f32> {
    grads.get(input).as_vec()
}

fn check_flatten<D: ModelDevice>(device: &D) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let shape = (3, 4, 5, 6);
    let x = random(&mut rng, 3 * 4 * 5 * 6);
    for batch_last in [false, true] {
        let input: Tensor4<NoneTape, D> = if batch_last {
            device.images(x.clone(), shape)
        } else {
            device.tensor_from_vec(x.clone(), shape)
        };
        let flat = flatten(input);
        assert_eq!(*flat.shape(), (3, 120));
        assert_eq!(flat.as_vec(), x, "flatten keeps (C, H, W) order per image");
    }
}

struct Values(Vec<f32>);
impl<D: ModelDevice> ParamVisitor<D> for Values {
    type Error = ();
    fn visit<S: Shape>(&mut self, _: &str, t: &Tensor<S, f32, D>) -> Result<(), ()> {
        self.0.extend(t.as_vec());
        Ok(())
    }
}

fn param_values<M: fashion_mnist::models::Parameters>(model: &M) -> Vec<f32> {
    let mut values = Values(Vec::new());
    model.visit_params(&mut values).unwrap();
    values.0
}

/// LeNet-5 on `device`: the same initial weights and logits as on the CPU, one epoch of training
/// that follows the CPU's up to rounding, and learning well above chance on held-out images.
fn check_lenet5_training<D: ModelDevice>(
    device: &D,
    reference_on_cpu: impl Fn(&mut dyn FnMut(&Cpu)),
) {
    let (train, heldout) = real_train_and_heldout();
    let all = Prepared::from_dataset(&train);
    let split = train_validation_split(&all.labels, 0.2, 42, false);
    let (train, validation) = (all.subset(&split.train), all.subset(&split.validation));
    let heldout = Prepared::from_dataset(&heldout);
    let config = TrainConfig {
        epochs: 1,
        batch_size: 32,
        learning_rate: 1e-3,
        seed: 5,
        early_stopping: None,
        ..TrainConfig::default()
    };

    let mut cpu_logits = Vec::new();
    let mut cpu_history = None;
    let mut cpu_weights = Vec::new();
    reference_on_cpu(&mut |cpu: &Cpu| {
        let mut model = LeNet5::new(cpu, LeNet5Config::default(), 3);
        cpu_logits = training::predict_proba(&model, &heldout.pixels[..64 * 784], 64);
        cpu_history = Some(
            training::fit(&mut model, &train, Some(&validation), &config, &mut Silent).unwrap(),
        );
        cpu_weights = param_values(&model);
    });

    let mut model = LeNet5::new(device, LeNet5Config::default(), 3);
    let logits = training::predict_proba(&model, &heldout.pixels[..64 * 784], 64);
    assert_close(
        "LeNet-5 probabilities before training",
        &logits,
        &cpu_logits,
        1e-5,
    );
    let history =
        training::fit(&mut model, &train, Some(&validation), &config, &mut Silent).unwrap();
    let cpu_history = cpu_history.unwrap();
    let (loss, cpu_loss) = (history.epochs[0].loss, cpu_history.epochs[0].loss);
    assert!(
        (loss - cpu_loss).abs() < 1e-3 * cpu_loss,
        "epoch-1 training loss {loss} vs {cpu_loss} on the CPU"
    );
    // Adam turns rounding-sized differences of near-zero gradients into full steps, so the
    // weights drift apart element by element; what they compute must not.
    let (accuracy, cpu_accuracy) = (
        history.epochs[0].val_accuracy.unwrap(),
        cpu_history.epochs[0].val_accuracy.unwrap(),
    );
    assert!(
        (accuracy - cpu_accuracy).abs() <= 0.02,
        "epoch-1 validation accuracy {accuracy} vs {cpu_accuracy} on the CPU"
    );
    assert_eq!(param_values(&model).len(), cpu_weights.len());

    let config = TrainConfig {
        epochs: 2,
        ..config
    };
    training::fit(&mut model, &train, Some(&validation), &config, &mut Silent).unwrap();
    let evaluation = training::evaluate(&model, &heldout, 500).unwrap();
    let chance = 0.1;
    let floor = if train.len() >= 3000 { 0.7 } else { 0.3 };
    assert!(
        evaluation.accuracy > floor,
        "held-out accuracy {} after 3 epochs (chance {chance}, needed {floor})",
        evaluation.accuracy
    );
}

/// Random-init VGG-16 and folded ResNet-50 give the CPU's outputs on `device`.
fn check_backbones<D: ModelDevice>(device: &D, reference_on_cpu: impl Fn(&mut dyn FnMut(&Cpu))) {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let shape = (2, 3, 32, 32);
    let x: Vec<f32> = random(&mut rng, 2 * 3 * 32 * 32);
    let (mut vgg_expected, mut resnet_expected) = (Vec::new(), Vec::new());
    reference_on_cpu(&mut |cpu: &Cpu| {
        let input: Tensor4 = cpu.tensor_from_vec(x.clone(), shape);
        vgg_expected = Vgg16::new(cpu, 1).forward(input.clone()).as_vec();
        resnet_expected = ResNet50::new(cpu, Default::default(), 1)
            .fold()
            .forward(input)
            .as_vec();
    });
    let input = device.images(x.clone(), shape);
    let vgg = Vgg16::new(device, 1).forward(input.clone());
    assert_eq!(*vgg.shape(), (2, 512, 1, 1));
    assert_close("VGG-16 block5_pool", &vgg.as_vec(), &vgg_expected, 1e-4);
    let resnet = ResNet50::new(device, Default::default(), 1)
        .fold()
        .forward(input);
    assert_eq!(*resnet.shape(), (2, 2048, 1, 1));
    assert_close(
        "ResNet-50 conv5_block3_out",
        &resnet.as_vec(),
        &resnet_expected,
        1e-4,
    );
}

fn cpu_reference_under_lock(run: &mut dyn FnMut(&Cpu)) {
    // The caller holds CPU_OPS (on_cpu_composite).
    on_cpu_custom(|cpu| run(cpu));
}

#[test]
fn composite_conv2d_matches_the_cpu_op_on_the_cpu() {
    on_cpu_composite(check_conv2d);
}

#[test]
fn composite_max_pool2d_matches_the_cpu_op_on_the_cpu() {
    on_cpu_composite(check_max_pool2d);
}

#[test]
fn composite_flatten_keeps_feature_order_on_the_cpu() {
    on_cpu_composite(check_flatten);
}

#[test]
fn lenet5_trains_through_the_composite_ops_on_the_cpu() {
    on_cpu_composite(|cpu| check_lenet5_training(cpu, cpu_reference_under_lock));
}

#[test]
fn backbones_run_through_the_composite_ops_on_the_cpu() {
    on_cpu_composite(|cpu| check_backbones(cpu, cpu_reference_under_lock));
}

/// The same checks on the GPU (needs an NVIDIA GPU and the CUDA libraries at run time).
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use fashion_mnist::ops::cuda_device;

    fn gpu() -> dfdx::prelude::Cuda {
        cuda_device().unwrap_or_else(|e| panic!("{e}"))
    }

    fn cpu_reference(run: &mut dyn FnMut(&Cpu)) {
        let _guard = CPU_OPS.lock().unwrap_or_else(|e| e.into_inner());
        on_cpu_custom(|cpu| run(cpu));
    }

    #[test]
    fn conv2d_matches_the_cpu_on_cuda() {
        check_conv2d(&gpu());
    }

    #[test]
    fn max_pool2d_matches_the_cpu_on_cuda() {
        check_max_pool2d(&gpu());
    }

    #[test]
    fn flatten_keeps_feature_order_on_cuda() {
        check_flatten(&gpu());
    }

    #[test]
    fn lenet5_trains_on_cuda() {
        check_lenet5_training(&gpu(), cpu_reference);
    }

    #[test]
    fn backbones_run_on_cuda() {
        check_backbones(&gpu(), cpu_reference);
    }
}
