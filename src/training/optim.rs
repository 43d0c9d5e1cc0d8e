//! The Adam optimizer over a model's named parameters, using dfdx's
//! own Adam kernel (`AdamConfig::try_update`) tensor by tensor.

use dfdx::prelude::*;

use crate::models::{ParamVisitor, ParamVisitorMut, Parameters};
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

    /// Updates made so far (Adam's bias correction depends on it).
    pub fn steps(&self) -> i32 {
        self.step
    }

    /// Host copies of both moments of every parameter of `model`, by name, for a resumable
    /// run's saved state (zeros before the first update).
    pub fn moments<M: Parameters<Device = D>>(&self, model: &M) -> Vec<ParamMoments> {
        let mut collect = CollectMoments {
            adam: self,
            moments: Vec::new(),
        };
        let Ok(()) = model.visit_params(&mut collect);
        collect.moments
    }

    /// Continues from a saved state: `steps` updates made, and the moments of `model`'s
    /// parameters (matched by name; every parameter must have its moments, of its size).
    pub fn restore<M: Parameters<Device = D>>(
        &mut self,
        model: &M,
        steps: i32,
        moments: &[ParamMoments],
    ) -> Result<(), String> {
        let mut restore = RestoreMoments {
            adam: self,
            by_name: moments.iter().map(|m| (m.name.as_str(), m)).collect(),
            problems: Vec::new(),
        };
        let Ok(()) = model.visit_params(&mut restore);
        if !restore.problems.is_empty() {
            return Err(restore.problems.join("; "));
        }
        self.step = steps;
        Ok(())
    }
}

/// Adam's first and second moments of one parameter, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamMoments {
    pub name: String,
    pub first: Vec<f32>,
    pub second: Vec<f32>,
}

struct CollectMoments<'a, D: ModelDevice> {
    adam: &'a Adam<D>,
    moments: Vec<ParamMoments>,
}

impl<D: ModelDevice> ParamVisitor<D> for CollectMoments<'_, D> {
    type Error = std::convert::Infallible;
    fn visit<S: Shape>(&mut self, name: &str, p: &Tensor<S, f32, D>) -> Result<(), Self::Error> {
        // Every update visits every parameter: after the first, all have moments.
        let host = |moments: &Gradients<f32, D>| {
            if self.adam.step > 0 {
                moments.get(p).as_vec()
            } else {
                vec![0.0; p.shape().num_elements()]
            }
        };
        self.moments.push(ParamMoments {
            name: name.to_string(),
            first: host(&self.adam.moment1),
            second: host(&self.adam.moment2),
        });
        Ok(())
    }
}

struct RestoreMoments<'a, D: ModelDevice> {
    adam: &'a mut Adam<D>,
    by_name: std::collections::HashMap<&'a str, &'a ParamMoments>,
    problems: Vec<String>,
}

impl<D: ModelDevice> ParamVisitor<D> for RestoreMoments<'_, D> {
    type Error = std::convert::Infallible;
    fn visit<S: Shape>(&mut self, name: &str, p: &Tensor<S, f32, D>) -> Result<(), Self::Error> {
        let len = p.shape().num_elements();
        let Some(saved) = self.by_name.get(name) else {
            self.problems.push(format!("no moments for {name}"));
            return Ok(());
        };
        if saved.first.len() != len || saved.second.len() != len {
            self.problems.push(format!(
                "moments of {name} hold {} and {} values, the parameter {len}",
                saved.first.len(),
                saved.second.len()
            ));
            return Ok(());
        }
        for (moments, values) in [
            (&mut self.adam.moment1, &saved.first),
            (&mut self.adam.moment2, &saved.second),
        ] {
            let written = match moments.get_or_alloc_mut(p) {
                Ok(buffer) => D::write_from_host(buffer, values),
                Err(e) => Err(format!("{e:?}")),
            };
            if let Err(e) = written {
                self.problems.push(format!("{name}: {e}"));
            }
        }
        Ok(())
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
