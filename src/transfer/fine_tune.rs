//! Fine-tuning: VGG-16 from one block on, trained together with the head. From block 5 it
//! runs on cached block-4 features (blocks 1-4 stay frozen, so their output is computed once,
//! like the features); from block 1 it is the whole network trained end to end on images.

use dfdx::prelude::*;

use crate::models::layers::Conv;
use crate::models::vgg16::{forward_vgg_blocks, vgg_block_rows};
use crate::models::{
    DenseHead, ImageClassifier, ModelSummary, ParamVisitor, ParamVisitorMut, Parameters, Vgg16,
};
use crate::ops::{flatten, ModelDevice, Tensor2, Tensor4};

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
}
