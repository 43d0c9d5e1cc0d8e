//! Classification heads that sit on a frozen backbone's features: a stack of dense layers with
//! dropout, as the walkthrough put on VGG-16 and ResNet-50.

use dfdx::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::lenet5::dense;
use super::{
    glorot_uniform, ImageClassifier, LayerSummary, ModelSummary, ParamVisitor, ParamVisitorMut,
    Parameters,
};
use crate::data::NUM_CLASSES;
use crate::ops::{flatten, ModelDevice, Tensor2, Tensor4};

/// One layer of a head. The last `Dense` is the output layer (no ReLU, softmax in the loss).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadLayer {
    /// Dense with ReLU (or the output layer when last).
    Dense(usize),
    /// Dropout with this drop probability, active only while training.
    Dropout(f64),
}

/// The layers of a head and the feature size it takes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeadConfig {
    /// Name in summaries and checkpoints, e.g. `vgg16_head`.
    pub name: String,
    pub features: usize,
    pub layers: Vec<HeadLayer>,
}

impl HeadConfig {
    /// The walkthrough's head on VGG-16: Flatten, Dense 1024 x3, Dropout 0.5, Dense 512 x2,
    /// Dropout 0.4, Dense 256, 64, 64, Dropout 0.2, Dense 10.
    pub fn walkthrough_vgg16(features: usize) -> Self {
        use HeadLayer::{Dense, Dropout};
        HeadConfig {
            name: "vgg16_head".into(),
            features,
            layers: vec![
                Dense(1024),
                Dense(1024),
                Dense(1024),
                Dropout(0.5),
                Dense(512),
                Dense(512),
                Dropout(0.4),
                Dense(256),
                Dense(64),
                Dense(64),
                Dropout(0.2),
                Dense(NUM_CLASSES),
            ],
        }
    }

    /// The walkthrough's head on ResNet-50: global average pooling, Dense 10. The pooling is
    /// parameter-free, so it happens on the features (`Features::global_average_pooled`) and
    /// in the end-to-end model; this head takes the pooled channels.
    pub fn walkthrough_resnet50(features: usize) -> Self {
        HeadConfig {
            name: "resnet50_head".into(),
            features,
            layers: vec![HeadLayer::Dense(NUM_CLASSES)],
        }
    }
}

#[derive(Clone, Debug)]
struct DenseParams<D: ModelDevice> {
    weight: Tensor<(usize, usize), f32, D>,
    bias: Tensor<(usize,), f32, D>,
}

/// A head: its input is a batch of feature vectors shaped (B, features, 1, 1).
#[derive(Clone, Debug)]
pub struct DenseHead<D: ModelDevice = Cpu> {
    pub config: HeadConfig,
    dense: Vec<DenseParams<D>>,
}

impl<D: ModelDevice> DenseHead<D> {
    /// Glorot-uniform kernels and zero biases, drawn from `seed`.
    pub fn new(device: &D, config: HeadConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut inputs = config.features;
        let mut dense = Vec::new();
        for layer in &config.layers {
            if let HeadLayer::Dense(units) = *layer {
                let weight = device.tensor_from_vec(
                    glorot_uniform(&mut rng, inputs, units, inputs * units),
                    (inputs, units),
                );
                dense.push(DenseParams {
                    weight,
                    bias: device.zeros_like(&(units,)),
                });
                inputs = units;
            }
        }
        assert!(
            matches!(config.layers.last(), Some(HeadLayer::Dense(NUM_CLASSES))),
            "a head ends with a Dense({NUM_CLASSES}) output layer"
        );
        DenseHead { config, dense }
    }

    /// Logits for a batch of feature vectors (B, features).
    pub fn forward_features<T: Tape<f32, D>>(&self, mut x: Tensor2<T, D>) -> Tensor2<T, D> {
        let training = T::OWNS_TAPE;
        let mut params = self.dense.iter().enumerate();
        for layer in &self.config.layers {
            match *layer {
                HeadLayer::Dense(_) => {
                    let (i, p) = params.next().expect("one parameter set per dense layer");
                    x = dense(x, &p.weight, &p.bias, i + 1 < self.dense.len());
                }
                HeadLayer::Dropout(rate) if training && rate > 0.0 => x = x.dropout(rate),
                HeadLayer::Dropout(_) => {}
            }
        }
        x
    }
}

impl DenseHead<Cpu> {
    /// Every dense layer's weight (inputs x units, row-major) and bias, with its sizes.
    pub(crate) fn dense_values(&self) -> Vec<(Vec<f32>, Vec<f32>, usize, usize)> {
        self.dense
            .iter()
            .map(|p| {
                let (inputs, units) = *p.weight.shape();
                (p.weight.as_vec(), p.bias.as_vec(), inputs, units)
            })
            .collect()
    }

    /// Replaces every dense layer's weight and bias (in the order of [`Self::dense_values`]).
    pub(crate) fn set_dense_values<'a>(
        &mut self,
        values: impl Iterator<Item = (&'a [f32], &'a [f32])>,
    ) {
        for (p, (weight, bias)) in self.dense.iter_mut().zip(values) {
            let device = p.weight.device().clone();
            p.weight = device.tensor_from_vec(weight.to_vec(), *p.weight.shape());
            p.bias = device.tensor_from_vec(bias.to_vec(), *p.bias.shape());
        }
    }
}

impl<D: ModelDevice> Parameters for DenseHead<D> {
    type Device = D;

    fn architecture(&self) -> &'static str {
        "dense_head"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("plain struct")
    }

    fn visit_params<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        for (i, p) in self.dense.iter().enumerate() {
            visitor.visit(&format!("dense{}.weight", i + 1), &p.weight)?;
            visitor.visit(&format!("dense{}.bias", i + 1), &p.bias)?;
        }
        Ok(())
    }

    fn visit_params_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        for (i, p) in self.dense.iter_mut().enumerate() {
            visitor.visit(&format!("dense{}.weight", i + 1), &mut p.weight)?;
            visitor.visit(&format!("dense{}.bias", i + 1), &mut p.bias)?;
        }
        Ok(())
    }
}

impl<D: ModelDevice> ImageClassifier for DenseHead<D> {
    fn input_shape(&self) -> (usize, usize, usize) {
        (self.config.features, 1, 1)
    }

    fn forward<T: Tape<f32, D>>(&self, x: Tensor4<T, D>) -> Tensor2<T, D> {
        self.forward_features(flatten(x))
    }

    fn summary(&self) -> ModelSummary {
        let mut layers = Vec::new();
        let (mut inputs, mut dense, mut dropout) = (self.config.features, 0, 0);
        let suffix = |n: usize| {
            if n == 0 {
                String::new()
            } else {
                format!("_{n}")
            }
        };
        for layer in &self.config.layers {
            match *layer {
                HeadLayer::Dense(units) => {
                    layers.push(LayerSummary {
                        name: format!("dense{}", suffix(dense)),
                        kind: "Dense".into(),
                        output_shape: vec![units],
                        params: inputs * units + units,
                    });
                    dense += 1;
                    inputs = units;
                }
                HeadLayer::Dropout(_) => {
                    layers.push(LayerSummary {
                        name: format!("dropout{}", suffix(dropout)),
                        kind: "Dropout".into(),
                        output_shape: vec![inputs],
                        params: 0,
                    });
                    dropout += 1;
                }
            }
        }
        ModelSummary {
            name: self.config.name.clone(),
            layers,
            non_trainable_params: 0,
        }
    }
}
