//! Models: the walkthrough's LeNet-5 (and its tunable "modified" variant), a Keras-like
//! summary table, and the parameter-collection plumbing dfdx's optimizers need.

mod head;
pub mod layers;
mod lenet5;
mod resnet50;
mod summary;
mod vgg16;

pub use head::{DenseHead, HeadConfig, HeadLayer};
pub use lenet5::{LeNet5, LeNet5Config};
pub use resnet50::{FoldedResNet50, ResNet50, ResNet50Config};
pub use summary::{LayerSummary, ModelSummary};
pub use vgg16::Vgg16;

use dfdx::prelude::*;

use crate::ops::{Tensor2, Tensor4};

/// A set of named parameter tensors with an architecture name: what checkpoints save and load,
/// and what optimizers walk.
pub trait Parameters {
    /// Architecture name recorded in checkpoints (e.g. `lenet5`).
    fn architecture(&self) -> &'static str;
    /// Settings that, with the architecture, rebuild the same shapes (stored in checkpoints).
    fn config_json(&self) -> serde_json::Value;
    /// Calls `visitor` with every parameter and its name, in a fixed order.
    fn visit_params<V: ParamVisitor>(&self, visitor: &mut V) -> Result<(), V::Error>;
    /// Same, with mutable access (optimizers, checkpoint loading).
    fn visit_params_mut<V: ParamVisitorMut>(&mut self, visitor: &mut V) -> Result<(), V::Error>;
}

/// A network that maps a batch of images (B, C, H, W) to class logits (B, classes), whose
/// parameters are all trainable.
pub trait ImageClassifier: Parameters + Clone + Send + Sync {
    /// (channels, height, width) of one input image.
    fn input_shape(&self) -> (usize, usize, usize);
    /// Logits for a batch; records the backward pass (and applies dropout, where the model
    /// has it) when `x` carries a tape.
    fn forward<T: Tape<f32, Cpu>>(&self, x: Tensor4<T>) -> Tensor2<T>;
    /// Keras-style summary table.
    fn summary(&self) -> ModelSummary;
    /// Number of trainable parameters.
    fn param_count(&self) -> usize {
        self.summary().total_params()
    }
}

/// Sees each named parameter tensor of a model. (dfdx's own `TensorCollection` cannot describe
/// tensors with run-time shapes from outside dfdx, so the models expose their parameters here.)
pub trait ParamVisitor {
    type Error;
    fn visit<S: Shape>(
        &mut self,
        name: &str,
        tensor: &Tensor<S, f32, Cpu>,
    ) -> Result<(), Self::Error>;
}

/// Like [`ParamVisitor`], with mutable access.
pub trait ParamVisitorMut {
    type Error;
    fn visit<S: Shape>(
        &mut self,
        name: &str,
        tensor: &mut Tensor<S, f32, Cpu>,
    ) -> Result<(), Self::Error>;
}

/// Number of values in all of `model`'s parameters.
pub fn param_count<P: Parameters>(model: &P) -> usize {
    struct Count(usize);
    impl ParamVisitor for Count {
        type Error = std::convert::Infallible;
        fn visit<S: Shape>(&mut self, _: &str, t: &Tensor<S, f32, Cpu>) -> Result<(), Self::Error> {
            self.0 += t.shape().num_elements();
            Ok(())
        }
    }
    let mut count = Count(0);
    let Ok(()) = model.visit_params(&mut count);
    count.0
}

/// Glorot (Xavier) uniform initialization, Keras' default for Conv2D and Dense kernels.
pub(crate) fn glorot_uniform(
    rng: &mut impl rand::Rng,
    fan_in: usize,
    fan_out: usize,
    len: usize,
) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    (0..len).map(|_| rng.gen_range(-limit..limit)).collect()
}
