//! Fine-tuning: VGG-16 from one block on, trained together with the head. From block 5 it
//! runs on cached block-4 features (blocks 1-4 stay frozen, so their output is computed once,
//! like the features); from block 1 it is the whole network trained end to end on images.
//! ResNet-50 is fine-tuned end to end only, its batch normalizations in training mode.

use dfdx::prelude::*;

use crate::models::layers::{BatchNorm2d, Conv};
use crate::models::resnet50::{Bottleneck, ConvBn};
use crate::models::vgg16::{forward_vgg_blocks, vgg_block_rows};
use crate::models::{
    DenseHead, ImageClassifier, ModelSummary, ParamVisitor, ParamVisitorMut, Parameters, ResNet50,
    ResNet50Config, Vgg16,
};
use crate::ops::{flatten, max_pool2d, InputGrad, ModelDevice, Tensor2, Tensor4};

/// VGG-16's blocks `first_block..=5` (trainable) and a head. The input is what block
/// `first_block` takes: `block{first_block - 1}_pool` features, or images for block 1.
#[derive(Clone, Debug)]
pub struct Vgg16FineTuned<D: ModelDevice = Cpu> {
    /// The trained blocks' convolutions, one list per block.
    pub blocks: Vec<Vec<Conv<D>>>,
    pub first_block: usize,
    pub head: DenseHead<D>,
    /// (channels, height, width) of the input.
    pub input: (usize, usize, usize),
}

impl<D: ModelDevice> Vgg16FineTuned<D> {
    /// Starts from the backbone's blocks `first_block..=5` and a (trained) head.
    pub fn new(
        backbone: &Vgg16<D>,
        head: DenseHead<D>,
        first_block: usize,
        input: (usize, usize, usize),
    ) -> Self {
        assert!((1..=5).contains(&first_block), "VGG-16 has blocks 1..=5");
        Vgg16FineTuned {
            blocks: (first_block..=5).map(|b| backbone.blocks(b..=b)).collect(),
            first_block,
            head,
            input,
        }
    }

    fn convs(&self) -> impl Iterator<Item = &Conv<D>> {
        self.blocks.iter().flatten()
    }
}

/// Names the head's parameters `head.NAME` beside block 5's.
struct PrefixedRef<'a, V>(&'a mut V);

impl<D: ModelDevice, V: ParamVisitor<D>> ParamVisitor<D> for PrefixedRef<'_, V> {
    type Error = V::Error;
    fn visit<S: Shape>(&mut self, name: &str, t: &Tensor<S, f32, D>) -> Result<(), V::Error> {
        self.0.visit(&format!("head.{name}"), t)
    }
}

struct PrefixedMut<'a, V>(&'a mut V);

impl<D: ModelDevice, V: ParamVisitorMut<D>> ParamVisitorMut<D> for PrefixedMut<'_, V> {
    type Error = V::Error;
    fn visit<S: Shape>(&mut self, name: &str, t: &mut Tensor<S, f32, D>) -> Result<(), V::Error> {
        self.0.visit(&format!("head.{name}"), t)
    }
}

impl<D: ModelDevice> Parameters for Vgg16FineTuned<D> {
    type Device = D;

    fn architecture(&self) -> &'static str {
        match self.first_block {
            1 => "vgg16_all_blocks_head",
            5 => "vgg16_block5_head",
            _ => "vgg16_last_blocks_head",
        }
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "head": self.head.config,
            "input": self.input,
            "first_block": self.first_block,
        })
    }

    fn visit_params<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        for conv in self.convs() {
            conv.visit(visitor)?;
        }
        self.head.visit_params(&mut PrefixedRef(visitor))
    }

    fn visit_params_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        for conv in self.blocks.iter_mut().flatten() {
            conv.visit_mut(visitor)?;
        }
        self.head.visit_params_mut(&mut PrefixedMut(visitor))
    }
}

impl<D: ModelDevice> ImageClassifier for Vgg16FineTuned<D> {
    fn input_shape(&self) -> (usize, usize, usize) {
        self.input
    }

    fn forward<T: Tape<f32, D>>(&self, x: Tensor4<T, D>) -> Tensor2<T, D> {
        let features = forward_vgg_blocks(self.blocks.iter().map(Vec::as_slice), x);
        self.head.forward_features(flatten(features))
    }

    fn summary(&self) -> ModelSummary {
        let blocks = (self.first_block..).zip(self.blocks.iter().map(Vec::as_slice));
        let mut layers = vgg_block_rows(blocks, self.input.1);
        layers.extend(self.head.summary().layers);
        ModelSummary {
            name: match self.first_block {
                1 => "vgg16_fine_tuned_end_to_end".into(),
                5 => "vgg16_block5_fine_tuned".into(),
                b => format!("vgg16_blocks{b}to5_fine_tuned"),
            },
            layers,
            non_trainable_params: 0,
        }
    }
}

/// Keras' `BatchNormalization` momentum, which ResNet-50's layers keep when they train.
const RESNET50_BATCH_NORM_MOMENTUM: f32 = 0.99;

/// A ResNet-50 convolution and its batch normalization, the normalization training.
#[derive(Clone, Debug)]
struct TrainingConvBn<D: ModelDevice> {
    conv: Conv<D>,
    norm: BatchNorm2d<D>,
}

impl<D: ModelDevice> TrainingConvBn<D> {
    fn from_backbone(layer: &ConvBn<D>) -> Self {
        TrainingConvBn {
            conv: layer.conv.clone(),
            norm: BatchNorm2d::from_inference(layer.bn.clone(), RESNET50_BATCH_NORM_MOMENTUM),
        }
    }

    fn as_backbone(&self) -> ConvBn<D> {
        ConvBn {
            conv: self.conv.clone(),
            bn: self.norm.norm.clone(),
        }
    }

    fn forward<T: Tape<f32, D>>(
        &self,
        x: Tensor4<T, D>,
        input_grad: InputGrad,
        relu: bool,
    ) -> Tensor4<T, D> {
        let y = self.conv.forward(x, input_grad);
        if relu {
            self.norm.forward_relu(y)
        } else {
            self.norm.forward(y)
        }
    }
}

#[derive(Clone, Debug)]
struct TrainingBottleneck<D: ModelDevice> {
    name: String,
    shortcut: Option<TrainingConvBn<D>>,
    convs: [TrainingConvBn<D>; 3],
}

/// ResNet-50 and a head trained together on images, every layer trainable: the convolutions
/// and the normalizations' gamma and beta learn; the normalizations use the batch's statistics
/// and fold them into their running averages, which evaluation uses (Keras' behaviour with
/// `trainable = True` and `training=True`).
#[derive(Clone, Debug)]
pub struct ResNet50FineTuned<D: ModelDevice = Cpu> {
    config: ResNet50Config,
    stem: TrainingConvBn<D>,
    blocks: Vec<TrainingBottleneck<D>>,
    pub head: DenseHead<D>,
    /// (3, side, side).
    pub input: (usize, usize, usize),
}

impl<D: ModelDevice> ResNet50FineTuned<D> {
    /// Starts from the backbone's weights and running averages and a (trained) head; the
    /// backbone itself is left as it is.
    pub fn new(backbone: &ResNet50<D>, head: DenseHead<D>, side: usize) -> Self {
        ResNet50FineTuned {
            config: backbone.config,
            stem: TrainingConvBn::from_backbone(&backbone.stem),
            blocks: backbone
                .blocks
                .iter()
                .map(|b| TrainingBottleneck {
                    name: b.name.clone(),
                    shortcut: b.shortcut.as_ref().map(TrainingConvBn::from_backbone),
                    convs: b.convs.each_ref().map(TrainingConvBn::from_backbone),
                })
                .collect(),
            head,
            input: (3, side, side),
        }
    }

    /// Every normalization's running averages follow the batches' statistics with `momentum`
    /// instead of Keras' 0.99 (short runs, where 0.99 would leave them near their start).
    pub fn with_batch_norm_momentum(mut self, momentum: f32) -> Self {
        self.layers_mut().for_each(|l| l.norm.momentum = momentum);
        self
    }

    /// The backbone as it is now (weights and running averages), in inference form.
    pub fn backbone(&self) -> ResNet50<D> {
        ResNet50 {
            config: self.config,
            stem: self.stem.as_backbone(),
            blocks: self
                .blocks
                .iter()
                .map(|b| Bottleneck {
                    name: b.name.clone(),
                    shortcut: b.shortcut.as_ref().map(TrainingConvBn::as_backbone),
                    convs: b.convs.each_ref().map(TrainingConvBn::as_backbone),
                })
                .collect(),
        }
    }

    fn layers(&self) -> impl Iterator<Item = &TrainingConvBn<D>> {
        std::iter::once(&self.stem).chain(
            self.blocks
                .iter()
                .flat_map(|b| b.shortcut.iter().chain(b.convs.iter())),
        )
    }

    fn layers_mut(&mut self) -> impl Iterator<Item = &mut TrainingConvBn<D>> {
        std::iter::once(&mut self.stem).chain(
            self.blocks
                .iter_mut()
                .flat_map(|b| b.shortcut.iter_mut().chain(b.convs.iter_mut())),
        )
    }

    /// `conv5_block3_out` with a tape: batch statistics, every layer's gradient.
    fn forward_training<T: Tape<f32, D>>(&self, x: Tensor4<T, D>) -> Tensor4<T, D> {
        // The images themselves need no gradient.
        let x = self.stem.forward(x, InputGrad::Skip, true);
        let mut x = max_pool2d(x, 3, 2, 1);
        for block in &self.blocks {
            // Both branches start from `x`; their gradients add up in its buffer.
            let shortcut = match &block.shortcut {
                Some(projection) => {
                    projection.forward(x.with_empty_tape(), InputGrad::Compute, false)
                }
                None => x.with_empty_tape(),
            };
            let y = block.convs[0].forward(x, InputGrad::Compute, true);
            let y = block.convs[1].forward(y, InputGrad::Compute, true);
            let y = block.convs[2].forward(y, InputGrad::Compute, false);
            x = (y + shortcut).relu();
        }
        x
    }
}

impl<D: ModelDevice> Parameters for ResNet50FineTuned<D> {
    type Device = D;

    fn architecture(&self) -> &'static str {
        "resnet50_all_layers_head"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "head": self.head.config,
            "input": self.input,
            "resnet50": self.config,
        })
    }

    fn visit_params<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        for layer in self.layers() {
            layer.conv.visit(visitor)?;
            layer.norm.visit(visitor)?;
        }
        self.head.visit_params(&mut PrefixedRef(visitor))
    }

    fn visit_params_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        for layer in self.layers_mut() {
            layer.conv.visit_mut(visitor)?;
            layer.norm.visit_mut(visitor)?;
        }
        self.head.visit_params_mut(&mut PrefixedMut(visitor))
    }
}

impl<D: ModelDevice> ImageClassifier for ResNet50FineTuned<D> {
    fn input_shape(&self) -> (usize, usize, usize) {
        self.input
    }

    fn forward<T: Tape<f32, D>>(&self, x: Tensor4<T, D>) -> Tensor2<T, D> {
        let features = if T::OWNS_TAPE {
            self.forward_training(x)
        } else {
            // Inference: the running averages folded into the convolutions, as extraction
            // runs (without a tape `T` is `NoneTape`, so retaping loses nothing).
            let folded = self.backbone().fold();
            folded.forward(x.retaped::<NoneTape>()).retaped::<T>()
        };
        // The walkthrough's head: global average pooling, then its dense layers.
        let pooled = features.mean::<(usize, usize), Axes2<2, 3>>();
        self.head.forward_features(pooled)
    }

    fn summary(&self) -> ModelSummary {
        let mut summary = self.backbone().summary(self.input.1);
        summary.name = "resnet50_fine_tuned_end_to_end".into();
        // The running averages are not trained.
        summary.non_trainable_params = self
            .layers()
            .map(|l| l.norm.norm.param_count() - l.norm.param_count())
            .sum();
        summary.layers.extend(self.head.summary().layers);
        summary
    }

    fn param_count(&self) -> usize {
        self.summary().trainable_params()
    }

    fn after_step(&mut self) {
        self.layers_mut()
            .for_each(|l| l.norm.apply_batch_statistics());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::prepare::Prepared;
    use crate::models::HeadConfig;
    use crate::training::{fit, Silent, TrainConfig};

    #[test]
    fn end_to_end_training_moves_block_1_and_leaves_the_backbone_it_came_from() {
        let device = Cpu::default();
        let vgg = Vgg16::new(&device, 1);
        let head = DenseHead::new(&device, HeadConfig::walkthrough_vgg16(512), 2);
        let block5 = Vgg16FineTuned::new(&vgg, head.clone(), 5, (512, 2, 2));
        assert_eq!(block5.param_count(), head.param_count() + 3 * 2_359_808);
        let mut all = Vgg16FineTuned::new(&vgg, head.clone(), 1, (3, 32, 32));
        assert_eq!(all.param_count(), head.param_count() + 14_714_688);
        assert_eq!(all.summary().trainable_params(), all.param_count());

        let images = 8;
        let data = Prepared {
            pixels: (0..images * 3 * 32 * 32)
                .map(|i| ((i * 37) % 255) as f32 - 120.0)
                .collect(),
            labels: (0..images as u8).map(|i| i % 10).collect(),
        };
        let before = all.blocks[0][0].kernel.as_vec();
        let config = TrainConfig {
            epochs: 1,
            batch_size: 4,
            learning_rate: 1e-4,
            ..TrainConfig::default()
        };
        fit(&mut all, &data, None, &config, &mut Silent).unwrap();
        let after = all.blocks[0][0].kernel.as_vec();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(
            moved > before.len() / 2,
            "{moved} of {} block1_conv1 weights moved",
            before.len()
        );
        assert_eq!(
            vgg.blocks(1..=1)[0].kernel.as_vec(),
            before,
            "the backbone is a copy"
        );
    }
    #[test]
    fn resnet50_end_to_end_learns_and_updates_its_running_averages_not_the_backbones() {
        let device = Cpu::default();
        let resnet = ResNet50::new(&device, ResNet50Config::keras(), 3);
        let head = DenseHead::new(&device, HeadConfig::walkthrough_resnet50(2048), 4);
        // 18 steps: with Keras' momentum (0.99) the running averages would still be mostly
        // their initial values, and inference-mode evaluation meaningless.
        let mut model =
            ResNet50FineTuned::new(&resnet, head.clone(), 32).with_batch_norm_momentum(0.6);
        let summary = model.summary();
        // 23,587,712 backbone parameters, 53,120 of them running averages.
        assert_eq!(summary.non_trainable_params, 53_120);
        assert_eq!(
            model.param_count(),
            23_587_712 - 53_120 + head.param_count()
        );

        // Two classes a network tells apart easily: bright top half or bright bottom half,
        // with noise; the held-out images are new draws.
        let make = |count: usize, seed: u64| {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut pixels = Vec::with_capacity(count * 3 * 32 * 32);
            let mut labels = Vec::with_capacity(count);
            for i in 0..count {
                let label = (i % 2) as u8;
                for _channel in 0..3 {
                    for row in 0..32 {
                        let bright = (row < 16) == (label == 0);
                        for _col in 0..32 {
                            let base = if bright { 60.0 } else { -60.0 };
                            pixels.push(base + rng.gen_range(-40.0..40.0));
                        }
                    }
                }
                labels.push(label);
            }
            Prepared { pixels, labels }
        };
        let (train, held_out) = (make(96, 5), make(64, 6));
        let stem_before = model.stem.conv.kernel.as_vec();
        let mean_before = resnet.stem.bn.moving_mean.as_vec();
        let config = TrainConfig {
            epochs: 3,
            batch_size: 16,
            learning_rate: 1e-3,
            ..TrainConfig::default()
        };
        fit(&mut model, &train, None, &config, &mut Silent).unwrap();
        let moved = stem_before
            .iter()
            .zip(&model.stem.conv.kernel.as_vec())
            .filter(|(a, b)| a != b)
            .count();
        assert!(moved > stem_before.len() / 2, "{moved} stem weights moved");
        let running_mean = model.stem.norm.norm.moving_mean.as_vec();
        assert!(
            running_mean.iter().any(|m| m.abs() > 1e-3),
            "running mean unchanged"
        );
        assert_eq!(resnet.stem.bn.moving_mean.as_vec(), mean_before);
        assert_eq!(
            resnet.stem.conv.kernel.as_vec(),
            stem_before,
            "the backbone is a copy"
        );

        let accuracy = crate::training::evaluate(&model, &held_out, 32)
            .unwrap()
            .accuracy;
        assert!(accuracy > 0.8, "held-out accuracy {accuracy}");
    }
    /// The training-mode loss of `model` on a batch, and its gradients.
    fn loss_and_grads(
        model: &ResNet50FineTuned,
        pixels: &[f32],
        labels: &[usize],
    ) -> (f32, Gradients<f32, Cpu>) {
        let device = Cpu::default();
        let n = labels.len();
        let x = device.tensor_from_vec(pixels.to_vec(), (n, 3, 32, 32));
        let mut one_hot = vec![0.0; n * 10];
        labels
            .iter()
            .enumerate()
            .for_each(|(i, &l)| one_hot[i * 10 + l] = 1.0);
        let targets = device.tensor_from_vec(one_hot, (n, 10));
        let loss =
            cross_entropy_with_logits_loss(model.forward(x.traced(Gradients::leaky())), targets);
        let value = loss.as_vec()[0];
        (value, loss.backward())
    }

    #[test]
    fn resnet50_gradients_through_every_residual_sum_match_finite_differences() {
        let device = Cpu::default();
        let resnet = ResNet50::new(&device, ResNet50Config::keras(), 7);
        let head = DenseHead::new(&device, HeadConfig::walkthrough_resnet50(2048), 8);
        let model = ResNet50FineTuned::new(&resnet, head, 32);
        let labels: Vec<usize> = (0..16).map(|i| (i * 7) % 10).collect();
        let pixels: Vec<f32> = (0..labels.len() * 3 * 32 * 32)
            .map(|i| (((i * 7919) % 251) as f32 - 125.0) / 125.0)
            .collect();
        let (_, grads) = loss_and_grads(&model, &pixels, &labels);
        // The stem sits below all 16 residual sums, the projection beside the first one: a
        // gradient lost on either branch of a sum shows in both.
        type Pick = fn(&mut ResNet50FineTuned) -> &mut Conv<Cpu>;
        let picks: [(&str, Pick); 2] = [
            ("conv1_conv", |m| &mut m.stem.conv),
            ("conv2_block1_0_conv", |m| {
                &mut m.blocks[0].shortcut.as_mut().unwrap().conv
            }),
        ];
        for (name, pick) in picks {
            let mut probe = model.clone();
            let kernel = pick(&mut probe).kernel.clone();
            let g = grads.get(&kernel).as_vec();
            let norm = g.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(norm > 0.0, "{name}: no gradient");
            // Along the gradient the loss changes at |g| per unit step. A random ResNet-50 is
            // far from smooth: steps that change the loss by more than ~1% leave the linear
            // regime, much smaller ones drown in f32 rounding.
            let step = 5e-3 / norm;
            let loss_at = |sign: f32| {
                let mut moved = model.clone();
                let values: Vec<f32> = kernel
                    .as_vec()
                    .iter()
                    .zip(&g)
                    .map(|(w, d)| w + sign * step * d / norm)
                    .collect();
                pick(&mut moved).kernel = device.tensor_from_vec(values, *kernel.shape());
                loss_and_grads(&moved, &pixels, &labels).0
            };
            let numeric = (loss_at(1.0) - loss_at(-1.0)) / (2.0 * step);
            let relative = (numeric - norm).abs() / norm;
            assert!(
                relative < 0.03,
                "{name}: |g| {norm}, finite difference {numeric}"
            );
        }
    }
}
