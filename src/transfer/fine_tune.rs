//! Fine-tuning: VGG-16 from one block on, trained together with the head. From block 5 it
//! runs on cached block-4 features (blocks 1-4 stay frozen, so their output is computed once,
//! like the features); from block 1 it is the whole network trained end to end on images.

use dfdx::prelude::*;

use crate::models::layers::Conv;
use crate::models::{
    DenseHead, ImageClassifier, LayerSummary, ModelSummary, ParamVisitor, ParamVisitorMut,
    Parameters, Vgg16,
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

    fn forward<T: Tape<f32, D>>(&self, mut x: Tensor4<T, D>) -> Tensor2<T, D> {
        // The input (images or frozen features) needs no gradient.
        let mut input_grad = InputGrad::Skip;
        for block in &self.blocks {
            for conv in block {
                x = conv.forward(x, input_grad).relu();
                input_grad = InputGrad::Compute;
            }
            x = max_pool2d(x, 2, 2, 0);
        }
        self.head.forward_features(flatten(x))
    }

    fn summary(&self) -> ModelSummary {
        let mut side = self.input.1;
        let mut layers = Vec::new();
        for (block, convs) in (self.first_block..).zip(&self.blocks) {
            let mut channels = self.input.0;
            for conv in convs {
                channels = conv.out_channels();
                layers.push(LayerSummary {
                    name: conv.name.clone(),
                    kind: "Conv2D".into(),
                    output_shape: vec![side, side, channels],
                    params: conv.param_count(),
                });
            }
            side /= 2;
            layers.push(LayerSummary {
                name: format!("block{block}_pool"),
                kind: "MaxPooling2D".into(),
                output_shape: vec![side, side, channels],
                params: 0,
            });
        }
        layers.extend(self.head.summary().layers);
        ModelSummary {
            name: match self.first_block {
                1 => "vgg16_fine_tuned_end_to_end".into(),
                b => {
                    if b == 5 {
                        "vgg16_block5_fine_tuned".into()
                    } else {
                        format!("vgg16_blocks{b}to5_fine_tuned")
                    }
                }
            },
            layers,
            non_trainable_params: 0,
        }
    }
}
