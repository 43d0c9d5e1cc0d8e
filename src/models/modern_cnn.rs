//! A small modern CNN from scratch (issue 16's "how far does a CNN from scratch go"): blocks of
//! two 3x3 convolutions, each followed by batch normalization and ReLU, then 2x2 max-pooling and
//! dropout; then a dense layer with ReLU and dropout, and the 10-way output. With the default
//! widths (32 and 64 channels, 128 dense units) 468,202 trainable parameters.

use dfdx::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::layers::{BatchNorm2d, Conv};
use super::lenet5::dense;
use super::{
    glorot_uniform, ImageClassifier, LayerSummary, ModelSummary, ParamVisitor, ParamVisitorMut,
    Parameters,
};
use crate::data::{IMAGE_SIDE, NUM_CLASSES};
use crate::ops::{flatten, max_pool2d, InputGrad, ModelDevice, Tensor2, Tensor4};

/// Settings of the architecture.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModernCnnConfig {
    /// Output channels of each block's two convolutions; each block halves the image side.
    pub block_channels: Vec<usize>,
    /// Width of the dense layer before the output.
    pub dense_units: usize,
    /// Dropout rate after each block's pooling.
    pub block_dropout: f32,
    /// Dropout rate after the dense layer.
    pub dense_dropout: f32,
}

impl Default for ModernCnnConfig {
    fn default() -> Self {
        ModernCnnConfig {
            block_channels: vec![32, 64],
            dense_units: 128,
            block_dropout: 0.1,
            dense_dropout: 0.3,
        }
    }
}

impl ModernCnnConfig {
    /// Refuses settings that cannot build a network on 28x28 images.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_channels.is_empty() || self.block_channels.contains(&0) {
            return Err("block_channels: need at least one block, each with channels > 0".into());
        }
        if IMAGE_SIDE >> self.block_channels.len() == 0 {
            return Err(format!(
                "block_channels: {} blocks halve a {IMAGE_SIDE}-pixel side to nothing",
                self.block_channels.len()
            ));
        }
        if self.dense_units == 0 {
            return Err("dense_units: must be at least 1".into());
        }
        for (name, rate) in [
            ("block_dropout", self.block_dropout),
            ("dense_dropout", self.dense_dropout),
        ] {
            if !(0.0..1.0).contains(&rate) {
                return Err(format!("{name}: must be in [0, 1), got {rate}"));
            }
        }
        Ok(())
    }

    /// Side of the feature maps after the last block.
    fn final_side(&self) -> usize {
        IMAGE_SIDE >> self.block_channels.len()
    }

    fn flattened(&self) -> usize {
        let side = self.final_side();
        self.block_channels.last().copied().unwrap_or(0) * side * side
    }
}

/// Weight of the old running averages at each step. Keras' 0.99 needs hundreds of steps before
/// the averages forget their initial values (short runs then evaluate badly); 0.9 is PyTorch's.
const BATCH_NORM_MOMENTUM: f32 = 0.9;

/// One block: conv-BN-ReLU, conv-BN-ReLU, max-pool 2, dropout.
#[derive(Clone, Debug)]
struct Block<D: ModelDevice> {
    convs: [(Conv<D>, BatchNorm2d<D>); 2],
}

/// The network's parameters. Dense kernels are stored (inputs, outputs), as Keras stores them.
#[derive(Clone, Debug)]
pub struct ModernCnn<D: ModelDevice = Cpu> {
    pub config: ModernCnnConfig,
    blocks: Vec<Block<D>>,
    pub dense1_weight: Tensor<(usize, usize), f32, D>,
    pub dense1_bias: Tensor<(usize,), f32, D>,
    pub dense2_weight: Tensor<(usize, usize), f32, D>,
    pub dense2_bias: Tensor<(usize,), f32, D>,
}

impl<D: ModelDevice> ModernCnn<D> {
    /// A freshly initialized network (Glorot-uniform kernels, zero biases, identity batch
    /// normalizations: Keras' defaults), drawn from `seed`. Panics on settings that
    /// [`ModernCnnConfig::validate`] refuses.
    pub fn new(device: &D, config: ModernCnnConfig, seed: u64) -> Self {
        if let Err(message) = config.validate() {
            panic!("ModernCnnConfig: {message}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut in_channels = 1;
        let mut blocks = Vec::new();
        for (b, &channels) in config.block_channels.iter().enumerate() {
            let mut layer = |i: usize, from: usize| {
                let name = format!("block{}_conv{}", b + 1, i + 1);
                let conv = Conv::new(device, &mut rng, &name, (from, channels, 3), 1, 1);
                let mut norm =
                    BatchNorm2d::new(device, format!("block{}_bn{}", b + 1, i + 1), channels);
                norm.momentum = BATCH_NORM_MOMENTUM;
                (conv, norm)
            };
            let first = layer(0, in_channels);
            let second = layer(1, channels);
            blocks.push(Block {
                convs: [first, second],
            });
            in_channels = channels;
        }
        let (inputs, units) = (config.flattened(), config.dense_units);
        let mut kernel2 = |i: usize, o: usize| {
            device.tensor_from_vec(glorot_uniform(&mut rng, i, o, i * o), (i, o))
        };
        let dense1_weight = kernel2(inputs, units);
        let dense2_weight = kernel2(units, NUM_CLASSES);
        ModernCnn {
            config,
            blocks,
            dense1_weight,
            dense1_bias: device.zeros_like(&(units,)),
            dense2_weight,
            dense2_bias: device.zeros_like(&(NUM_CLASSES,)),
        }
    }

    /// The same network on `device`.
    pub fn to_device<D2: ModelDevice>(&self, device: &D2) -> ModernCnn<D2> {
        super::moved_to(self, || ModernCnn::new(device, self.config.clone(), 0))
    }

    fn batch_norms(&mut self) -> impl Iterator<Item = &mut BatchNorm2d<D>> {
        self.blocks
            .iter_mut()
            .flat_map(|block| block.convs.iter_mut().map(|(_, norm)| norm))
    }
}

impl<D: ModelDevice> Parameters for ModernCnn<D> {
    type Device = D;

    fn architecture(&self) -> &'static str {
        "modern_cnn"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("plain struct")
    }

    fn visit_params<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        for block in &self.blocks {
            for (conv, norm) in &block.convs {
                conv.visit(visitor)?;
                norm.visit(visitor)?;
            }
        }
        visitor.visit("dense1.weight", &self.dense1_weight)?;
        visitor.visit("dense1.bias", &self.dense1_bias)?;
        visitor.visit("dense2.weight", &self.dense2_weight)?;
        visitor.visit("dense2.bias", &self.dense2_bias)
    }

    fn visit_params_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        for block in &mut self.blocks {
            for (conv, norm) in &mut block.convs {
                conv.visit_mut(visitor)?;
                norm.visit_mut(visitor)?;
            }
        }
        visitor.visit("dense1.weight", &mut self.dense1_weight)?;
        visitor.visit("dense1.bias", &mut self.dense1_bias)?;
        visitor.visit("dense2.weight", &mut self.dense2_weight)?;
        visitor.visit("dense2.bias", &mut self.dense2_bias)
    }
}

impl<D: ModelDevice> ImageClassifier for ModernCnn<D> {
    fn input_shape(&self) -> (usize, usize, usize) {
        (1, IMAGE_SIDE, IMAGE_SIDE)
    }

    fn forward<T: Tape<f32, D>>(&self, mut x: Tensor4<T, D>) -> Tensor2<T, D> {
        let training = T::OWNS_TAPE;
        for (b, block) in self.blocks.iter().enumerate() {
            for (i, (conv, norm)) in block.convs.iter().enumerate() {
                // The image itself needs no gradient.
                let input_grad = if b == 0 && i == 0 {
                    InputGrad::Skip
                } else {
                    InputGrad::Compute
                };
                x = if training {
                    norm.forward_relu(conv.forward(x, input_grad))
                } else {
                    // Inference: the running averages folded into the convolution (one pass).
                    norm.norm.fold_into(conv).forward(x, input_grad).relu()
                };
            }
            x = max_pool2d(x, 2, 2, 0);
            if training && self.config.block_dropout > 0.0 {
                x = x.dropout(self.config.block_dropout);
            }
        }
        let mut x = dense(flatten(x), &self.dense1_weight, &self.dense1_bias, true);
        if training && self.config.dense_dropout > 0.0 {
            x = x.dropout(self.config.dense_dropout);
        }
        dense(x, &self.dense2_weight, &self.dense2_bias, false)
    }

    fn summary(&self) -> ModelSummary {
        let layer = |name: String, kind: &str, shape: [usize; 3], params: usize| LayerSummary {
            name,
            kind: kind.into(),
            output_shape: shape.to_vec(),
            params,
        };
        let mut layers = Vec::new();
        let mut non_trainable = 0;
        let mut side = IMAGE_SIDE;
        for (b, block) in self.blocks.iter().enumerate() {
            let channels = self.config.block_channels[b];
            for (conv, norm) in &block.convs {
                layers.push(layer(
                    conv.name.clone(),
                    "Conv2D",
                    [side, side, channels],
                    conv.param_count(),
                ));
                layers.push(layer(
                    norm.norm.name.clone(),
                    "BatchNormalization",
                    [side, side, channels],
                    norm.norm.param_count(),
                ));
                non_trainable += norm.norm.param_count() - norm.param_count();
            }
            side /= 2;
            layers.push(layer(
                format!("block{}_pool", b + 1),
                "MaxPooling2D",
                [side, side, channels],
                0,
            ));
            layers.push(layer(
                format!("block{}_dropout", b + 1),
                "Dropout",
                [side, side, channels],
                0,
            ));
        }
        let units = self.config.dense_units;
        let flat = self.config.flattened();
        let rows = [
            ("flatten", "Flatten", flat, 0),
            ("dense", "Dense", units, flat * units + units),
            ("dense_dropout", "Dropout", units, 0),
            (
                "predictions",
                "Dense",
                NUM_CLASSES,
                units * NUM_CLASSES + NUM_CLASSES,
            ),
        ];
        for (name, kind, width, params) in rows {
            layers.push(LayerSummary {
                name: name.into(),
                kind: kind.into(),
                output_shape: vec![width],
                params,
            });
        }
        ModelSummary {
            name: "modern_cnn".into(),
            layers,
            non_trainable_params: non_trainable,
        }
    }

    fn param_count(&self) -> usize {
        self.summary().trainable_params()
    }

    fn after_step(&mut self) {
        self.batch_norms()
            .for_each(BatchNorm2d::apply_batch_statistics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Evaluation folds each batch normalization into its convolution; that equals normalizing
    /// the convolution's output with the running averages, up to rounding.
    #[test]
    fn inference_folds_batch_norm_into_the_convolutions() {
        let cpu = Cpu::default();
        let config = ModernCnnConfig {
            block_channels: vec![4, 8],
            dense_units: 16,
            ..ModernCnnConfig::default()
        };
        let mut model = ModernCnn::new(&cpu, config, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for norm in model.batch_norms() {
            let n = &mut norm.norm;
            let channels = n.gamma.shape().0;
            let mut draw = |lo: f32, hi: f32| -> Vec<f32> {
                (0..channels).map(|_| rng.gen_range(lo..hi)).collect()
            };
            n.gamma.copy_from(&draw(0.5, 1.5));
            n.beta.copy_from(&draw(-0.5, 0.5));
            n.moving_mean.copy_from(&draw(-0.3, 0.3));
            n.moving_variance.copy_from(&draw(0.2, 2.0));
        }
        let pixels: Vec<f32> = (0..2 * 784).map(|_| rng.gen_range(0.0..1.0)).collect();
        let x = cpu.tensor_from_vec(pixels, (2, 1, 28, 28));
        let folded = model.forward(x.clone()).as_vec();

        let mut h = x;
        for block in &model.blocks {
            for (i, (conv, norm)) in block.convs.iter().enumerate() {
                let grad = if i == 0 {
                    InputGrad::Skip
                } else {
                    InputGrad::Compute
                };
                h = norm.forward(conv.forward(h, grad)).relu();
            }
            h = max_pool2d(h, 2, 2, 0);
        }
        let h = dense(flatten(h), &model.dense1_weight, &model.dense1_bias, true);
        let unfolded = dense(h, &model.dense2_weight, &model.dense2_bias, false).as_vec();
        for (a, b) in folded.iter().zip(&unfolded) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn summary_counts_running_averages_as_non_trainable() {
        let model = ModernCnn::new(&Cpu::default(), ModernCnnConfig::default(), 0);
        let summary = model.summary();
        // 4 batch normalizations: 2 x (32 + 32 + 64 + 64) running values.
        assert_eq!(summary.non_trainable_params, 384);
        assert_eq!(summary.total_params(), super::super::param_count(&model));
        assert_eq!(model.param_count(), summary.total_params() - 384);
        assert!(ModernCnnConfig {
            block_channels: vec![8; 5],
            ..ModernCnnConfig::default()
        }
        .validate()
        .is_err());
    }
}
