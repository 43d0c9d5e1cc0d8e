//! Fine-tuning: VGG-16's last block trained together with the head, on cached block-4
//! features (blocks 1-4 stay frozen, so their output is computed once, like the features).

use dfdx::prelude::*;

use crate::models::layers::Conv;
use crate::models::{
    DenseHead, ImageClassifier, LayerSummary, ModelSummary, ParamVisitor, ParamVisitorMut,
    Parameters, Vgg16,
};
use crate::ops::{flatten, max_pool2d, InputGrad, ModelDevice, Tensor2, Tensor4};

/// VGG-16's block 5 (trainable) and a head, taking `block4_pool` features.
#[derive(Clone, Debug)]
pub struct Vgg16Block5WithHead<D: ModelDevice = Cpu> {
    pub block5: Vec<Conv<D>>,
    pub head: DenseHead<D>,
    /// (channels, height, width) of the block-4 features.
    pub input: (usize, usize, usize),
}

impl<D: ModelDevice> Vgg16Block5WithHead<D> {
    /// Starts from the backbone's block 5 and a (trained) head.
    pub fn new(backbone: &Vgg16<D>, head: DenseHead<D>, input: (usize, usize, usize)) -> Self {
        Vgg16Block5WithHead {
            block5: backbone.blocks(5..=5),
            head,
            input,
        }
    }

    fn block5_side(&self) -> usize {
        self.input.1 / 2
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

impl<D: ModelDevice> Parameters for Vgg16Block5WithHead<D> {
    type Device = D;

    fn architecture(&self) -> &'static str {
        "vgg16_block5_head"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::json!({ "head": self.head.config, "input": self.input })
    }

    fn visit_params<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        for conv in &self.block5 {
            conv.visit(visitor)?;
        }
        self.head.visit_params(&mut PrefixedRef(visitor))
    }

    fn visit_params_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        for conv in &mut self.block5 {
            conv.visit_mut(visitor)?;
        }
        self.head.visit_params_mut(&mut PrefixedMut(visitor))
    }
}

impl<D: ModelDevice> ImageClassifier for Vgg16Block5WithHead<D> {
    fn input_shape(&self) -> (usize, usize, usize) {
        self.input
    }

    fn forward<T: Tape<f32, D>>(&self, mut x: Tensor4<T, D>) -> Tensor2<T, D> {
        for (i, conv) in self.block5.iter().enumerate() {
            let input_grad = if i == 0 {
                InputGrad::Skip
            } else {
                InputGrad::Compute
            };
            x = conv.forward(x, input_grad).relu();
        }
        let x = max_pool2d(x, 2, 2, 0);
        self.head.forward_features(flatten(x))
    }

    fn summary(&self) -> ModelSummary {
        let side = self.block5_side();
        let mut layers: Vec<LayerSummary> = self
            .block5
            .iter()
            .map(|conv| LayerSummary {
                name: conv.name.clone(),
                kind: "Conv2D".into(),
                output_shape: vec![self.input.1, self.input.2, conv.out_channels()],
                params: conv.param_count(),
            })
            .collect();
        layers.push(LayerSummary {
            name: "block5_pool".into(),
            kind: "MaxPooling2D".into(),
            output_shape: vec![side, side, self.input.0],
            params: 0,
        });
        layers.extend(self.head.summary().layers);
        ModelSummary {
            name: "vgg16_block5_fine_tuned".into(),
            layers,
            non_trainable_params: 0,
        }
    }
}
