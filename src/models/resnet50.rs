//! ResNet-50 without its classifier (Keras `ResNet50(include_top=False)`): a 7x7/2 stem with
//! batch normalization and a 3x3/2 max-pool, then 3, 4, 6 and 3 bottleneck blocks
//! (1x1 -> 3x3 -> 1x1 convolutions, each followed by batch normalization, and a projection
//! shortcut in each stage's first block). 23,587,712 parameters. Layer names are Keras'
//! (`conv1_conv`, `conv2_block1_0_conv`, `conv2_block1_1_bn`, ...).
//!
//! Batch normalization runs in inference mode (moving statistics): the backbone is used frozen,
//! and for that the normalizations are folded into the convolutions ([`ResNet50::fold`]).

use dfdx::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::layers::{BatchNorm, Conv};
use super::{LayerSummary, ModelSummary, ParamVisitor, ParamVisitorMut, Parameters};
use std::sync::Arc;

use crate::ops::channel_major::{self, ChannelMajor, ConvWeights};
use crate::ops::{
    add_activations, cpu_ops, max_pool2d, CpuOps, DeviceChoice, InputGrad, ModelDevice, Tensor4,
};

/// (stage name, blocks, bottleneck filters, stride of the first block).
const STAGES: [(&str, usize, usize, usize); 4] = [
    ("conv2", 3, 64, 1),
    ("conv3", 4, 128, 2),
    ("conv4", 6, 256, 2),
    ("conv5", 3, 512, 2),
];
const EXPANSION: usize = 4;

/// Where two implementations of the same architecture differ.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResNet50Config {
    /// Keras puts a stage's stride on the block's first 1x1 convolution (false); torchvision's
    /// ResNet-50 (v1.5) puts it on the 3x3 convolution (true).
    pub stride_in_3x3: bool,
    /// Batch normalization epsilon: 1.001e-5 in Keras, 1e-5 in PyTorch.
    pub bn_epsilon: f32,
}

impl ResNet50Config {
    /// Keras' `keras.applications.ResNet50`.
    pub fn keras() -> Self {
        ResNet50Config {
            stride_in_3x3: false,
            bn_epsilon: 1.001e-5,
        }
    }

    /// torchvision's `resnet50`.
    pub fn torchvision() -> Self {
        ResNet50Config {
            stride_in_3x3: true,
            bn_epsilon: 1e-5,
        }
    }
}

impl Default for ResNet50Config {
    fn default() -> Self {
        Self::keras()
    }
}

/// A convolution followed by batch normalization.
#[derive(Clone, Debug)]
pub struct ConvBn<D: ModelDevice = Cpu> {
    pub conv: Conv<D>,
    pub bn: BatchNorm<D>,
}

impl<D: ModelDevice> ConvBn<D> {
    fn new(
        device: &D,
        rng: &mut impl rand::Rng,
        name: &str,
        shape: (usize, usize, usize),
        stride: usize,
        epsilon: f32,
    ) -> Self {
        let padding = shape.2 / 2;
        ConvBn {
            conv: Conv::new(device, rng, format!("{name}_conv"), shape, stride, padding),
            bn: BatchNorm::new(device, format!("{name}_bn"), shape.1, epsilon),
        }
    }

    fn visit<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        self.conv.visit(visitor)?;
        self.bn.visit(visitor)
    }

    fn visit_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        self.conv.visit_mut(visitor)?;
        self.bn.visit_mut(visitor)
    }

    fn fold(&self) -> Conv<D> {
        self.bn.fold_into(&self.conv)
    }
}

/// One bottleneck block, e.g. `conv3_block1`.
#[derive(Clone, Debug)]
pub struct Bottleneck<D: ModelDevice = Cpu> {
    pub name: String,
    /// `_0`: the 1x1 projection of the shortcut (first block of each stage only).
    pub shortcut: Option<ConvBn<D>>,
    /// `_1`, `_2`, `_3`: 1x1 reduce, 3x3, 1x1 expand.
    pub convs: [ConvBn<D>; 3],
}

#[derive(Clone, Debug)]
pub struct ResNet50<D: ModelDevice = Cpu> {
    pub config: ResNet50Config,
    /// `conv1_conv` + `conv1_bn`.
    pub stem: ConvBn<D>,
    pub blocks: Vec<Bottleneck<D>>,
}

impl<D: ModelDevice> ResNet50<D> {
    /// Randomly initialized convolutions and identity batch normalizations.
    pub fn new(device: &D, config: ResNet50Config, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let eps = config.bn_epsilon;
        let stem = ConvBn::new(device, &mut rng, "conv1", (3, 64, 7), 2, eps);
        let mut blocks = Vec::new();
        let mut channels = 64;
        for &(stage, count, filters, stage_stride) in &STAGES {
            for b in 1..=count {
                let name = format!("{stage}_block{b}");
                let stride = if b == 1 { stage_stride } else { 1 };
                let (stride_1x1, stride_3x3) = if config.stride_in_3x3 {
                    (1, stride)
                } else {
                    (stride, 1)
                };
                let out = filters * EXPANSION;
                let shortcut = (b == 1).then(|| {
                    ConvBn::new(
                        device,
                        &mut rng,
                        &format!("{name}_0"),
                        (channels, out, 1),
                        stride,
                        eps,
                    )
                });
                let convs = [
                    ConvBn::new(
                        device,
                        &mut rng,
                        &format!("{name}_1"),
                        (channels, filters, 1),
                        stride_1x1,
                        eps,
                    ),
                    ConvBn::new(
                        device,
                        &mut rng,
                        &format!("{name}_2"),
                        (filters, filters, 3),
                        stride_3x3,
                        eps,
                    ),
                    ConvBn::new(
                        device,
                        &mut rng,
                        &format!("{name}_3"),
                        (filters, out, 1),
                        1,
                        eps,
                    ),
                ];
                blocks.push(Bottleneck {
                    name,
                    shortcut,
                    convs,
                });
                channels = out;
            }
        }
        ResNet50 {
            config,
            stem,
            blocks,
        }
    }

    /// The same network on `device`.
    pub fn to_device<D2: ModelDevice>(&self, device: &D2) -> ResNet50<D2> {
        super::moved_to(self, || ResNet50::new(device, self.config, 0))
    }

    /// The network with every batch normalization folded into its convolution, for inference.
    pub fn fold(&self) -> FoldedResNet50<D> {
        FoldedResNet50 {
            stem: self.stem.fold(),
            blocks: self
                .blocks
                .iter()
                .map(|b| FoldedBlock {
                    shortcut: b.shortcut.as_ref().map(ConvBn::fold),
                    convs: [b.convs[0].fold(), b.convs[1].fold(), b.convs[2].fold()],
                })
                .collect(),
            plain: None,
        }
        .with_plain_weights_on_cpu()
    }

    /// Keras-style summary (convolutions, normalizations and block outputs) for a `side` x
    /// `side` input.
    pub fn summary(&self, side: usize) -> ModelSummary {
        let out = |size: usize, k: usize, s: usize, p: usize| (size + 2 * p - k) / s + 1;
        let mut layers = Vec::new();
        let mut push = |name: &str, kind: &str, size: usize, channels: usize, params: usize| {
            layers.push(LayerSummary {
                name: name.into(),
                kind: kind.into(),
                output_shape: vec![size, size, channels],
                params,
            })
        };
        let mut size = out(side, 7, 2, 3);
        push(
            &self.stem.conv.name,
            "Conv2D",
            size,
            64,
            self.stem.conv.param_count(),
        );
        push(
            &self.stem.bn.name,
            "BatchNormalization",
            size,
            64,
            self.stem.bn.param_count(),
        );
        size = out(size, 3, 2, 1);
        push("pool1_pool", "MaxPooling2D", size, 64, 0);
        for block in &self.blocks {
            let first = &block.shortcut.as_ref().unwrap_or(&block.convs[0]).conv;
            size = out(size, 1, first.stride, 0);
            let layers_of = block.shortcut.iter().chain(&block.convs);
            for ConvBn { conv, bn } in layers_of {
                let channels = conv.out_channels();
                push(&conv.name, "Conv2D", size, channels, conv.param_count());
                push(
                    &bn.name,
                    "BatchNormalization",
                    size,
                    channels,
                    bn.param_count(),
                );
            }
            let channels = block.convs[2].conv.out_channels();
            push(
                &format!("{}_out", block.name),
                "Activation",
                size,
                channels,
                0,
            );
        }
        ModelSummary {
            name: "resnet50".into(),
            layers,
            non_trainable_params: 0,
        }
    }
}

impl<D: ModelDevice> Parameters for ResNet50<D> {
    type Device = D;

    fn architecture(&self) -> &'static str {
        "resnet50"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(self.config).expect("plain struct")
    }

    fn visit_params<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        self.stem.visit(visitor)?;
        for block in &self.blocks {
            if let Some(shortcut) = &block.shortcut {
                shortcut.visit(visitor)?;
            }
            block.convs.iter().try_for_each(|c| c.visit(visitor))?;
        }
        Ok(())
    }

    fn visit_params_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        self.stem.visit_mut(visitor)?;
        for block in &mut self.blocks {
            if let Some(shortcut) = &mut block.shortcut {
                shortcut.visit_mut(visitor)?;
            }
            block
                .convs
                .iter_mut()
                .try_for_each(|c| c.visit_mut(visitor))?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct FoldedBlock<D: ModelDevice> {
    shortcut: Option<Conv<D>>,
    convs: [Conv<D>; 3],
}

/// ResNet-50 with batch normalization folded into the convolutions: inference only.
#[derive(Clone, Debug)]
pub struct FoldedResNet50<D: ModelDevice = Cpu> {
    stem: Conv<D>,
    blocks: Vec<FoldedBlock<D>>,
    /// On the CPU, the same weights as plain buffers for the channel-major forward pass.
    plain: Option<Arc<PlainResNet50>>,
}

#[derive(Debug)]
struct PlainResNet50 {
    stem: ConvWeights,
    /// (shortcut projection, the three convolutions) per block.
    blocks: Vec<(Option<ConvWeights>, [ConvWeights; 3])>,
}

impl PlainResNet50 {
    fn forward(&self, x: ChannelMajor) -> ChannelMajor {
        let x = channel_major::conv(&x, &self.stem, true);
        let mut x = channel_major::max_pool(&x, 3, 2, 1);
        for (shortcut, convs) in &self.blocks {
            let projected = shortcut.as_ref().map(|s| channel_major::conv(&x, s, false));
            let y = channel_major::conv(&x, &convs[0], true);
            let y = channel_major::conv(&y, &convs[1], true);
            let mut y = channel_major::conv(&y, &convs[2], false);
            channel_major::add_relu(&mut y, projected.as_ref().unwrap_or(&x));
            x = y;
        }
        x
    }
}

impl<D: ModelDevice> FoldedResNet50<D> {
    /// Adds the plain buffers on the CPU with the custom ops; which path runs is decided here,
    /// once, as for [`super::vgg16::PreparedVgg16`] (the composite ops would not use them).
    fn with_plain_weights_on_cpu(mut self) -> Self {
        if D::CHOICE == DeviceChoice::Cpu && cpu_ops() == CpuOps::Custom {
            self.plain = Some(Arc::new(PlainResNet50 {
                stem: self.stem.plain_weights().prepared(),
                blocks: self
                    .blocks
                    .iter()
                    .map(|b| {
                        (
                            b.shortcut.as_ref().map(|s| s.plain_weights().prepared()),
                            [
                                b.convs[0].plain_weights().prepared(),
                                b.convs[1].plain_weights().prepared(),
                                b.convs[2].plain_weights().prepared(),
                            ],
                        )
                    })
                    .collect(),
            }));
        }
        self
    }

    /// The device the weights live on.
    pub fn device(&self) -> D {
        self.stem.kernel.device().clone()
    }

    /// `conv5_block3_out` for an input (B, 3, H, W). On the CPU (custom ops when folded) in
    /// channel-major layout on plain buffers, otherwise with the device's tensor ops
    /// ([`Self::forward_with_tensor_ops`]).
    pub fn forward(&self, x: Tensor4<NoneTape, D>) -> Tensor4<NoneTape, D> {
        match &self.plain {
            Some(plain) => {
                let (y, shape) = channel_major::forward_batch_major(&x.as_vec(), *x.shape(), |x| {
                    plain.forward(x)
                });
                x.device().tensor_from_vec(y, shape)
            }
            _ => self.forward_with_tensor_ops(x),
        }
    }

    /// [`Self::forward`] with the device's tensor ops (batch-major; what a GPU runs).
    pub fn forward_with_tensor_ops(&self, x: Tensor4<NoneTape, D>) -> Tensor4<NoneTape, D> {
        let skip = InputGrad::Skip;
        let x = self.stem.forward(x, skip).relu();
        let mut x = max_pool2d(x, 3, 2, 1);
        for block in &self.blocks {
            let shortcut = match &block.shortcut {
                Some(projection) => projection.forward(x.clone(), skip),
                None => x.clone(),
            };
            let y = block.convs[0].forward(x, skip).relu();
            let y = block.convs[1].forward(y, skip).relu();
            let y = block.convs[2].forward(y, skip);
            x = add_activations(y, shortcut).relu();
        }
        x
    }
}
