//! LeNet-5 as the walkthrough builds it in Keras: Conv 6@5x5 ReLU, max-pool 2, Conv 16@5x5
//! ReLU, max-pool 2, Flatten (256), Dense 120 ReLU, Dense 84 ReLU, Dense 10 (softmax in the
//! loss). 44,426 parameters. The "modified LeNet-5" of the tuning step only changes the first
//! dense layer's width, which is a run-time setting here.

use dfdx::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{
    glorot_uniform, ImageClassifier, LayerSummary, ModelSummary, ParamVisitor, ParamVisitorMut,
    Parameters,
};
use crate::data::{IMAGE_SIDE, NUM_CLASSES};
use crate::ops::{conv2d, flatten, max_pool2d, InputGrad, ModelDevice, Tensor2, Tensor4};

/// Settings of the architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeNet5Config {
    /// Width of the first dense layer: 120 in LeNet-5, 64-128 in the walkthrough's search.
    pub dense1_units: usize,
}

impl Default for LeNet5Config {
    fn default() -> Self {
        LeNet5Config { dense1_units: 120 }
    }
}

const CONV1_FILTERS: usize = 6;
const CONV2_FILTERS: usize = 16;
const KERNEL: usize = 5;
const DENSE2_UNITS: usize = 84;
/// 16 channels x 4 x 4 after the second pooling.
const FLATTENED: usize = CONV2_FILTERS * 4 * 4;

/// LeNet-5 parameters. Dense kernels are stored (inputs, outputs), as Keras stores them.
#[derive(Clone, Debug)]
pub struct LeNet5<D: ModelDevice = Cpu> {
    pub config: LeNet5Config,
    pub conv1_weight: Tensor<(usize, usize, usize, usize), f32, D>,
    pub conv1_bias: Tensor<(usize,), f32, D>,
    pub conv2_weight: Tensor<(usize, usize, usize, usize), f32, D>,
    pub conv2_bias: Tensor<(usize,), f32, D>,
    pub dense1_weight: Tensor<(usize, usize), f32, D>,
    pub dense1_bias: Tensor<(usize,), f32, D>,
    pub dense2_weight: Tensor<(usize, usize), f32, D>,
    pub dense2_bias: Tensor<(usize,), f32, D>,
    pub dense3_weight: Tensor<(usize, usize), f32, D>,
    pub dense3_bias: Tensor<(usize,), f32, D>,
}

impl<D: ModelDevice> LeNet5<D> {
    /// A freshly initialized network: Glorot-uniform kernels and zero biases (Keras' defaults),
    /// drawn from `seed` (the same values on every device).
    pub fn new(device: &D, config: LeNet5Config, seed: u64) -> Self {
        assert!(config.dense1_units > 0, "dense1_units must be positive");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let u1 = config.dense1_units;
        let mut kernel4 = |o: usize, i: usize| {
            let fan_in = i * KERNEL * KERNEL;
            let fan_out = o * KERNEL * KERNEL;
            device.tensor_from_vec(
                glorot_uniform(&mut rng, fan_in, fan_out, o * fan_in),
                (o, i, KERNEL, KERNEL),
            )
        };
        let conv1_weight = kernel4(CONV1_FILTERS, 1);
        let conv2_weight = kernel4(CONV2_FILTERS, CONV1_FILTERS);
        let mut kernel2 = |i: usize, o: usize| {
            device.tensor_from_vec(glorot_uniform(&mut rng, i, o, i * o), (i, o))
        };
        let dense1_weight = kernel2(FLATTENED, u1);
        let dense2_weight = kernel2(u1, DENSE2_UNITS);
        let dense3_weight = kernel2(DENSE2_UNITS, NUM_CLASSES);
        let zeros = |n: usize| device.zeros_like(&(n,));
        LeNet5 {
            config,
            conv1_weight,
            conv1_bias: zeros(CONV1_FILTERS),
            conv2_weight,
            conv2_bias: zeros(CONV2_FILTERS),
            dense1_weight,
            dense1_bias: zeros(u1),
            dense2_weight,
            dense2_bias: zeros(DENSE2_UNITS),
            dense3_weight,
            dense3_bias: zeros(NUM_CLASSES),
        }
    }
}

impl<D: ModelDevice> LeNet5<D> {
    /// The same network on `device`.
    pub fn to_device<D2: ModelDevice>(&self, device: &D2) -> LeNet5<D2> {
        super::moved_to(self, || LeNet5::new(device, self.config, 0))
    }
}

/// `relu(x W + b)` or `x W + b` for a (batch, inputs) tensor.
pub(crate) fn dense<D: ModelDevice, T: Tape<f32, D>>(
    x: Tensor2<T, D>,
    weight: &Tensor<(usize, usize), f32, D>,
    bias: &Tensor<(usize,), f32, D>,
    relu: bool,
) -> Tensor2<T, D> {
    let batch = x.shape().0;
    let units = weight.shape().1;
    let y = x.matmul(weight.retaped::<T>())
        + bias
            .retaped::<T>()
            .broadcast_like::<_, Axis<0>>(&(batch, units));
    if relu {
        y.relu()
    } else {
        y
    }
}

impl<D: ModelDevice> Parameters for LeNet5<D> {
    type Device = D;

    fn architecture(&self) -> &'static str {
        "lenet5"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(self.config).expect("plain struct")
    }

    fn visit_params<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        visit_lenet5_params!(self, visitor, &)
    }

    fn visit_params_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        visit_lenet5_params!(self, visitor, &mut)
    }
}

impl<D: ModelDevice> ImageClassifier for LeNet5<D> {
    fn input_shape(&self) -> (usize, usize, usize) {
        (1, IMAGE_SIDE, IMAGE_SIDE)
    }

    fn forward<T: Tape<f32, D>>(&self, x: Tensor4<T, D>) -> Tensor2<T, D> {
        let x = conv2d(
            x,
            &self.conv1_weight,
            &self.conv1_bias,
            1,
            0,
            InputGrad::Skip,
        )
        .relu();
        let x = max_pool2d(x, 2, 2, 0);
        let x = conv2d(
            x,
            &self.conv2_weight,
            &self.conv2_bias,
            1,
            0,
            InputGrad::Compute,
        )
        .relu();
        let x = max_pool2d(x, 2, 2, 0);
        let x = flatten(x);
        debug_assert_eq!(x.shape().1, FLATTENED);
        let x = dense(x, &self.dense1_weight, &self.dense1_bias, true);
        let x = dense(x, &self.dense2_weight, &self.dense2_bias, true);
        dense(x, &self.dense3_weight, &self.dense3_bias, false)
    }

    fn summary(&self) -> ModelSummary {
        let u1 = self.config.dense1_units;
        let layer = |name: &str, kind: &str, shape: &[usize], params: usize| LayerSummary {
            name: name.into(),
            kind: kind.into(),
            output_shape: shape.to_vec(),
            params,
        };
        let conv = |i: usize, o: usize| i * o * KERNEL * KERNEL + o;
        ModelSummary {
            name: if u1 == 120 {
                "lenet5"
            } else {
                "lenet5_modified"
            }
            .into(),
            layers: vec![
                layer(
                    "conv2d",
                    "Conv2D",
                    &[24, 24, CONV1_FILTERS],
                    conv(1, CONV1_FILTERS),
                ),
                layer("max_pooling2d", "MaxPooling2D", &[12, 12, CONV1_FILTERS], 0),
                layer(
                    "conv2d_1",
                    "Conv2D",
                    &[8, 8, CONV2_FILTERS],
                    conv(CONV1_FILTERS, CONV2_FILTERS),
                ),
                layer("max_pooling2d_1", "MaxPooling2D", &[4, 4, CONV2_FILTERS], 0),
                layer("flatten", "Flatten", &[FLATTENED], 0),
                layer("dense", "Dense", &[u1], FLATTENED * u1 + u1),
                layer(
                    "dense_1",
                    "Dense",
                    &[DENSE2_UNITS],
                    u1 * DENSE2_UNITS + DENSE2_UNITS,
                ),
                layer(
                    "dense_2",
                    "Dense",
                    &[NUM_CLASSES],
                    DENSE2_UNITS * NUM_CLASSES + NUM_CLASSES,
                ),
            ],
            non_trainable_params: 0,
        }
    }
}

/// Calls `$visitor.visit(name, tensor)` for every parameter, by shared or mutable reference.
macro_rules! visit_lenet5_params {
    ($model:ident, $visitor:ident, $($reference:tt)+) => {{
        $visitor.visit("conv1.weight", $($reference)+ $model.conv1_weight)?;
        $visitor.visit("conv1.bias", $($reference)+ $model.conv1_bias)?;
        $visitor.visit("conv2.weight", $($reference)+ $model.conv2_weight)?;
        $visitor.visit("conv2.bias", $($reference)+ $model.conv2_bias)?;
        $visitor.visit("dense1.weight", $($reference)+ $model.dense1_weight)?;
        $visitor.visit("dense1.bias", $($reference)+ $model.dense1_bias)?;
        $visitor.visit("dense2.weight", $($reference)+ $model.dense2_weight)?;
        $visitor.visit("dense2.bias", $($reference)+ $model.dense2_bias)?;
        $visitor.visit("dense3.weight", $($reference)+ $model.dense3_weight)?;
        $visitor.visit("dense3.bias", $($reference)+ $model.dense3_bias)?;
        Ok(())
    }};
}
use visit_lenet5_params;
