//! Models: the walkthrough's LeNet-5 (and its tunable "modified" variant), a Keras-like
//! summary table, and the parameter-collection plumbing dfdx's optimizers need.

mod head;
pub mod layers;
mod lenet5;
mod modern_cnn;
pub(crate) mod resnet50;
mod summary;
pub(crate) mod vgg16;

pub use head::{DenseHead, HeadConfig, HeadLayer};
pub use lenet5::{LeNet5, LeNet5Config};
pub use modern_cnn::{ModernCnn, ModernCnnConfig};
pub use resnet50::{FoldedResNet50, ResNet50, ResNet50Config};
pub use summary::{LayerSummary, ModelSummary};
pub use vgg16::{PreparedVgg16, Vgg16};

use dfdx::prelude::*;

use crate::ops::{ModelDevice, Tensor2, Tensor4};

/// A set of named parameter tensors with an architecture name: what checkpoints save and load,
/// and what optimizers walk.
pub trait Parameters {
    /// The device the parameters live on.
    type Device: ModelDevice;
    /// Architecture name recorded in checkpoints (e.g. `lenet5`).
    fn architecture(&self) -> &'static str;
    /// Settings that, with the architecture, rebuild the same shapes (stored in checkpoints).
    fn config_json(&self) -> serde_json::Value;
    /// Calls `visitor` with every parameter and its name, in a fixed order.
    fn visit_params<V: ParamVisitor<Self::Device>>(&self, visitor: &mut V) -> Result<(), V::Error>;
    /// Same, with mutable access (optimizers, checkpoint loading).
    fn visit_params_mut<V: ParamVisitorMut<Self::Device>>(
        &mut self,
        visitor: &mut V,
    ) -> Result<(), V::Error>;
}

/// A network that maps a batch of images (B, C, H, W) to class logits (B, classes), whose
/// parameters are all trainable.
pub trait ImageClassifier: Parameters + Clone {
    /// (channels, height, width) of one input image.
    fn input_shape(&self) -> (usize, usize, usize);
    /// Logits for a batch; records the backward pass (and applies dropout, where the model
    /// has it) when `x` carries a tape.
    fn forward<T: Tape<f32, Self::Device>>(
        &self,
        x: Tensor4<T, Self::Device>,
    ) -> Tensor2<T, Self::Device>;
    /// Keras-style summary table.
    fn summary(&self) -> ModelSummary;
    /// Number of trainable parameters.
    fn param_count(&self) -> usize {
        self.summary().total_params()
    }
    /// Called by `fit` after every optimizer step: layers that keep running statistics
    /// (batch normalization) fold in the last training batch's. Nothing by default.
    fn after_step(&mut self) {}
}

/// A model kept on the CPU that can train on another device: rebuilt there, and its trained
/// weights brought back.
pub trait MovableClassifier: ImageClassifier<Device = Cpu> + 'static {
    /// The same architecture on device `D`.
    type On<D: ModelDevice>: ImageClassifier<Device = D> + 'static;
    /// A copy on `device` (this model itself when `device` is the CPU).
    fn moved_to_device<D: ModelDevice>(&self, device: &D) -> Self::On<D>;
    /// `model`'s weights back on the CPU.
    fn back_to_cpu<D: ModelDevice>(model: &Self::On<D>) -> Self;
}

impl MovableClassifier for LeNet5 {
    type On<D: ModelDevice> = LeNet5<D>;
    fn moved_to_device<D: ModelDevice>(&self, device: &D) -> LeNet5<D> {
        self.to_device(device)
    }
    fn back_to_cpu<D: ModelDevice>(model: &LeNet5<D>) -> Self {
        model.to_device(&Cpu::default())
    }
}

impl MovableClassifier for ModernCnn {
    type On<D: ModelDevice> = ModernCnn<D>;
    fn moved_to_device<D: ModelDevice>(&self, device: &D) -> ModernCnn<D> {
        self.to_device(device)
    }
    fn back_to_cpu<D: ModelDevice>(model: &ModernCnn<D>) -> Self {
        model.to_device(&Cpu::default())
    }
}

/// Sees each named parameter tensor of a model. (dfdx's own `TensorCollection` cannot describe
/// tensors with run-time shapes from outside dfdx, so the models expose their parameters here.)
pub trait ParamVisitor<D: ModelDevice = Cpu> {
    type Error;
    fn visit<S: Shape>(
        &mut self,
        name: &str,
        tensor: &Tensor<S, f32, D>,
    ) -> Result<(), Self::Error>;
}

/// Like [`ParamVisitor`], with mutable access.
pub trait ParamVisitorMut<D: ModelDevice = Cpu> {
    type Error;
    fn visit<S: Shape>(
        &mut self,
        name: &str,
        tensor: &mut Tensor<S, f32, D>,
    ) -> Result<(), Self::Error>;
}

/// Number of values in all of `model`'s parameters.
pub fn param_count<P: Parameters>(model: &P) -> usize {
    struct Count(usize);
    impl<D: ModelDevice> ParamVisitor<D> for Count {
        type Error = std::convert::Infallible;
        fn visit<S: Shape>(&mut self, _: &str, t: &Tensor<S, f32, D>) -> Result<(), Self::Error> {
            self.0 += t.shape().num_elements();
            Ok(())
        }
    }
    let mut count = Count(0);
    let Ok(()) = model.visit_params(&mut count);
    count.0
}

/// The device `model`'s parameters live on (None for a model without parameters).
pub fn model_device<P: Parameters>(model: &P) -> Option<P::Device> {
    struct First<D>(Option<D>);
    impl<D: ModelDevice> ParamVisitor<D> for First<D> {
        type Error = ();
        fn visit<S: Shape>(&mut self, _: &str, t: &Tensor<S, f32, D>) -> Result<(), ()> {
            self.0 = Some(t.device().clone());
            Err(())
        }
    }
    let mut first = First(None);
    let _ = model.visit_params(&mut first);
    first.0
}

/// `model` on another device type: `empty()` builds the same architecture there and every
/// parameter is copied in. When `model` already lives on that device type it is cloned instead
/// (its tensors are shared, nothing is initialized or copied).
pub(crate) fn moved_to<A, B>(model: &A, empty: impl FnOnce() -> B) -> B
where
    A: Parameters + Clone + 'static,
    B: Parameters + Clone + 'static,
{
    if let Some(same) = (model as &dyn std::any::Any).downcast_ref::<B>() {
        return same.clone();
    }
    let mut copy = empty();
    copy_params(model, &mut copy);
    copy
}

/// Copies every parameter of `from` into the parameter of the same name in `to` (another
/// device, same architecture). Panics on a missing name or a shape mismatch: both models must
/// have been built with the same settings.
pub fn copy_params<A: Parameters, B: Parameters>(from: &A, to: &mut B) {
    struct Collect(std::collections::HashMap<String, Vec<f32>>);
    impl<D: ModelDevice> ParamVisitor<D> for Collect {
        type Error = std::convert::Infallible;
        fn visit<S: Shape>(
            &mut self,
            name: &str,
            t: &Tensor<S, f32, D>,
        ) -> Result<(), Self::Error> {
            self.0.insert(name.to_string(), t.as_vec());
            Ok(())
        }
    }
    struct Fill(std::collections::HashMap<String, Vec<f32>>);
    impl<D: ModelDevice> ParamVisitorMut<D> for Fill {
        type Error = std::convert::Infallible;
        fn visit<S: Shape>(
            &mut self,
            name: &str,
            t: &mut Tensor<S, f32, D>,
        ) -> Result<(), Self::Error> {
            let values = self
                .0
                .remove(name)
                .unwrap_or_else(|| panic!("copy_params: no parameter {name} in the source"));
            assert_eq!(
                values.len(),
                t.shape().num_elements(),
                "copy_params: {name} has another shape"
            );
            t.copy_from(&values);
            Ok(())
        }
    }
    let mut collected = Collect(Default::default());
    let Ok(()) = from.visit_params(&mut collected);
    let mut fill = Fill(collected.0);
    let Ok(()) = to.visit_params_mut(&mut fill);
    assert!(
        fill.0.is_empty(),
        "copy_params: the target lacks {:?}",
        fill.0.keys().collect::<Vec<_>>()
    );
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
