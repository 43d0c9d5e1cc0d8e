//! The Adam optimizer over a model's named parameters, using dfdx's
//! own Adam kernel (`AdamConfig::try_update`) tensor by tensor.

use dfdx::prelude::*;

use crate::models::{ParamVisitorMut, Parameters};
use crate::ops::ModelDevice;

/// Adam, with Keras' defaults (learning rate 1e-3, betas 0.9/0.999, epsilon 1e-7).
pub struct Adam<D: ModelDevice = Cpu> {
    pub config: AdamConfig,
    step: i32,
    moment1: Gradients<f32, D>,
    moment2: Gradients<f32, D>,
}

impl<D: ModelDevice> Adam<D> {
    pub fn new(learning_rate: f64) -> Self {
        Adam {
            config: AdamConfig {
                lr: learning_rate,
                betas: [0.9, 0.999],
                eps: 1e-7,
                weight_decay: None,
            },
            step: 0,
            moment1: Gradients::leaky(),
            moment2: Gradients::leaky(),
        }
    }

    /// One update of every parameter of `model` from `grads`.
    pub fn update<M: Parameters<Device = D>>(
        &mut self,
        model: &mut M,
        grads: &mut Gradients<f32, D>,
    ) -> Result<(), D::Err> {
        self.step += 1;
        let mut visitor = AdamStep { adam: self, grads };
        model.visit_params_mut(&mut visitor)
    }
}

struct AdamStep<'a, D: ModelDevice> {
    adam: &'a mut Adam<D>,
    grads: &'a mut Gradients<f32, D>,
}

impl<D: ModelDevice> ParamVisitorMut<D> for AdamStep<'_, D> {
    type Error = D::Err;
    fn visit<S: Shape>(&mut self, _: &str, p: &mut Tensor<S, f32, D>) -> Result<(), D::Err> {
        let grad = self.grads.get_or_alloc_mut(p)?;
        let m = self.adam.moment1.get_or_alloc_mut(p)?;
        let v = self.adam.moment2.get_or_alloc_mut(p)?;
        self.adam.config.try_update(self.adam.step, p, m, v, grad)
    }
}
