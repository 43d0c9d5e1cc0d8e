//! VGG-16 without its classifier (Keras `VGG16(include_top=False)`): five blocks of 3x3 "same"
//! convolutions with ReLU, each ending in a 2x2 max-pool. 14,714,688 parameters. Layer names
//! are Keras' (`block1_conv1` ... `block5_conv3`).

use std::ops::RangeInclusive;

use dfdx::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::layers::Conv;
use super::{LayerSummary, ModelSummary, ParamVisitor, ParamVisitorMut, Parameters};
use crate::ops::channel_major::{self, ConvWeights};
use crate::ops::{cpu_ops, max_pool2d, CpuOps, DeviceChoice, InputGrad, ModelDevice, Tensor4};

/// (convolutions, filters) of each block.
const BLOCKS: [(usize, usize); 5] = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)];

#[derive(Clone, Debug)]
pub struct Vgg16<D: ModelDevice = Cpu> {
    /// The 13 convolutions in order.
    pub convs: Vec<Conv<D>>,
}

impl<D: ModelDevice> Vgg16<D> {
    /// Randomly initialized (Glorot uniform, zero biases), for tests and for loading weights into.
    pub fn new(device: &D, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut convs = Vec::new();
        let mut channels = 3;
        for (block, &(count, filters)) in BLOCKS.iter().enumerate() {
            for i in 1..=count {
                let name = format!("block{}_conv{i}", block + 1);
                convs.push(Conv::new(
                    device,
                    &mut rng,
                    name,
                    (channels, filters, 3),
                    1,
                    1,
                ));
                channels = filters;
            }
        }
        Vgg16 { convs }
    }

    /// The same network on `device`.
    pub fn to_device<D2: ModelDevice>(&self, device: &D2) -> Vgg16<D2> {
        super::moved_to(self, || Vgg16::new(device, 0))
    }

    /// The convolutions of block `block` (1-based).
    fn block(&self, block: usize) -> &[Conv<D>] {
        &self.convs[block_range(block)]
    }

    /// Channels a block outputs (1-based).
    pub fn block_channels(block: usize) -> usize {
        BLOCKS[block - 1].1
    }

    /// Runs blocks `blocks` (1-based, e.g. `1..=5` for the whole backbone) on `x`, which must be
    /// the input of the first of them. With a tape, gradients reach these blocks' weights;
    /// the input's own gradient is not computed.
    pub fn forward_blocks<T: Tape<f32, D>>(
        &self,
        x: Tensor4<T, D>,
        blocks: RangeInclusive<usize>,
    ) -> Tensor4<T, D> {
        forward_vgg_blocks(block_slices(&self.convs, blocks), x)
    }

    /// The whole backbone: `block5_pool` for an input (B, 3, H, W).
    pub fn forward(&self, x: Tensor4<NoneTape, D>) -> Tensor4<NoneTape, D> {
        self.forward_blocks(x, 1..=BLOCKS.len())
    }

    /// [`Self::forward`] with the device's tensor ops (batch-major; what a GPU runs).
    pub fn forward_with_tensor_ops(&self, x: Tensor4<NoneTape, D>) -> Tensor4<NoneTape, D> {
        forward_vgg_blocks_with_tensor_ops((1..=BLOCKS.len()).map(|b| self.block(b)), x)
    }

    /// Only the parameters of blocks `blocks`, e.g. to fine-tune the last block.
    pub fn blocks(&self, blocks: RangeInclusive<usize>) -> Vec<Conv<D>> {
        blocks.flat_map(|b| self.block(b).to_vec()).collect()
    }

    /// Keras-style summary for a `side` x `side` input.
    pub fn summary(&self, side: usize) -> ModelSummary {
        ModelSummary {
            name: "vgg16".into(),
            layers: vgg_block_rows((1..=BLOCKS.len()).map(|b| (b, self.block(b))), side),
            non_trainable_params: 0,
        }
    }
}

/// Where block `block` (1-based) sits among the 13 convolutions.
fn block_range(block: usize) -> std::ops::Range<usize> {
    let start: usize = BLOCKS[..block - 1].iter().map(|b| b.0).sum();
    start..start + BLOCKS[block - 1].0
}

/// The convolutions of blocks `blocks` (1-based), block by block.
fn block_slices<T>(convs: &[T], blocks: RangeInclusive<usize>) -> impl Iterator<Item = &[T]> {
    assert!(
        *blocks.start() >= 1 && *blocks.end() <= BLOCKS.len(),
        "VGG-16 has blocks 1..=5"
    );
    blocks.map(move |b| &convs[block_range(b)])
}

/// Runs VGG blocks (3x3 convolutions with ReLU, then a 2x2 max-pool) in order on `x`, the
/// first block's input. That input's gradient is never computed (images or frozen features).
/// Without a tape on the CPU (custom ops) this runs channel-major on plain buffers
/// ([`channel_major`]); otherwise with the device's tensor ops.
pub(crate) fn forward_vgg_blocks<'a, T: Tape<f32, D>, D: ModelDevice>(
    blocks: impl IntoIterator<Item = &'a [Conv<D>]>,
    x: Tensor4<T, D>,
) -> Tensor4<T, D> {
    if T::OWNS_TAPE || D::CHOICE != DeviceChoice::Cpu || cpu_ops() != CpuOps::Custom {
        return forward_vgg_blocks_with_tensor_ops(blocks, x);
    }
    let (x, tape) = x.split_tape();
    // Copied per call (as the tensor ops copy them too): the weights may have been trained
    // since the last one.
    let blocks: Vec<Vec<ConvWeights>> = blocks
        .into_iter()
        .map(|block| block.iter().map(Conv::plain_weights).collect())
        .collect();
    channel_major_blocks(blocks.iter().map(Vec::as_slice), x).put_tape(tape)
}

/// VGG blocks on plain buffers, channel-major (the CPU's inference path).
fn channel_major_blocks<'a, D: ModelDevice>(
    blocks: impl IntoIterator<Item = &'a [ConvWeights]>,
    x: Tensor4<NoneTape, D>,
) -> Tensor4<NoneTape, D> {
    let blocks: Vec<&[ConvWeights]> = blocks.into_iter().collect();
    let (y, shape) = channel_major::forward_batch_major(&x.as_vec(), *x.shape(), |mut y| {
        for block in &blocks {
            for conv in *block {
                y = channel_major::conv(&y, conv, true);
            }
            y = channel_major::max_pool(&y, 2, 2, 0);
        }
        y
    });
    x.device().tensor_from_vec(y, shape)
}

/// A frozen VGG-16's weights prepared once for the CPU's channel-major inference (plain
/// buffers, Winograd-transformed kernels): feature extraction over many batches.
#[derive(Debug)]
pub struct PreparedVgg16 {
    convs: Vec<ConvWeights>,
}

impl PreparedVgg16 {
    /// Prepared from `model`'s weights; None off the CPU or with the composite CPU ops.
    pub fn new<D: ModelDevice>(model: &Vgg16<D>) -> Option<Self> {
        (D::CHOICE == DeviceChoice::Cpu && cpu_ops() == CpuOps::Custom).then(|| PreparedVgg16 {
            convs: model
                .convs
                .iter()
                .map(|c| c.plain_weights().prepared())
                .collect(),
        })
    }

    /// As [`Vgg16::forward_blocks`] without a tape.
    pub fn forward_blocks<D: ModelDevice>(
        &self,
        x: Tensor4<NoneTape, D>,
        blocks: RangeInclusive<usize>,
    ) -> Tensor4<NoneTape, D> {
        channel_major_blocks(block_slices(&self.convs, blocks), x)
    }
}

/// [`forward_vgg_blocks`] with the device's tensor ops (batch-major; what a GPU runs).
pub(crate) fn forward_vgg_blocks_with_tensor_ops<'a, T: Tape<f32, D>, D: ModelDevice>(
    blocks: impl IntoIterator<Item = &'a [Conv<D>]>,
    mut x: Tensor4<T, D>,
) -> Tensor4<T, D> {
    let mut input_grad = InputGrad::Skip;
    for block in blocks {
        for conv in block {
            x = conv.forward(x, input_grad).relu();
            input_grad = InputGrad::Compute;
        }
        x = max_pool2d(x, 2, 2, 0);
    }
    x
}

/// Keras-style summary rows of VGG blocks given as (1-based block number, its convolutions),
/// the first taking a `side` x `side` input.
pub(crate) fn vgg_block_rows<'a, D: ModelDevice>(
    blocks: impl IntoIterator<Item = (usize, &'a [Conv<D>])>,
    mut side: usize,
) -> Vec<LayerSummary> {
    let mut layers = Vec::new();
    for (block, convs) in blocks {
        for conv in convs {
            layers.push(LayerSummary {
                name: conv.name.clone(),
                kind: "Conv2D".into(),
                output_shape: vec![side, side, conv.out_channels()],
                params: conv.param_count(),
            });
        }
        side /= 2;
        let channels = convs.last().map_or(0, |c| c.out_channels());
        layers.push(LayerSummary {
            name: format!("block{block}_pool"),
            kind: "MaxPooling2D".into(),
            output_shape: vec![side, side, channels],
            params: 0,
        });
    }
    layers
}

impl<D: ModelDevice> Parameters for Vgg16<D> {
    type Device = D;

    fn architecture(&self) -> &'static str {
        "vgg16"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    fn visit_params<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        self.convs.iter().try_for_each(|c| c.visit(visitor))
    }

    fn visit_params_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        self.convs.iter_mut().try_for_each(|c| c.visit_mut(visitor))
    }
}
