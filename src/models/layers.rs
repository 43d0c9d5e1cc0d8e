//! Building blocks of the ImageNet backbones: a named convolution layer and a named batch
//! normalization in inference mode, both with Keras' layer names so weights map one to one.

use dfdx::prelude::*;

use super::{ParamVisitor, ParamVisitorMut};
use crate::ops::{conv2d, InputGrad, ModelDevice, Tensor1, Tensor4};

/// A 2-D convolution with bias, square kernel stored (out, in, k, k).
#[derive(Clone, Debug)]
pub struct Conv<D: ModelDevice = Cpu> {
    /// Keras layer name, e.g. `block1_conv1`; parameters are `NAME.kernel` and `NAME.bias`.
    pub name: String,
    pub kernel: Tensor4<NoneTape, D>,
    pub bias: Tensor1<NoneTape, D>,
    pub stride: usize,
    pub padding: usize,
}

impl<D: ModelDevice> Conv<D> {
    /// Glorot-uniform kernel and zero bias (Keras' defaults), drawn from `rng`.
    pub fn new(
        device: &D,
        rng: &mut impl rand::Rng,
        name: impl Into<String>,
        (in_channels, out_channels, kernel): (usize, usize, usize),
        stride: usize,
        padding: usize,
    ) -> Self {
        let area = kernel * kernel;
        let values = super::glorot_uniform(
            rng,
            in_channels * area,
            out_channels * area,
            out_channels * in_channels * area,
        );
        Conv {
            name: name.into(),
            kernel: device.tensor_from_vec(values, (out_channels, in_channels, kernel, kernel)),
            bias: device.zeros_like(&(out_channels,)),
            stride,
            padding,
        }
    }

    pub fn forward<T: Tape<f32, D>>(
        &self,
        x: Tensor4<T, D>,
        input_grad: InputGrad,
    ) -> Tensor4<T, D> {
        conv2d(
            x,
            &self.kernel,
            &self.bias,
            self.stride,
            self.padding,
            input_grad,
        )
    }

    pub fn out_channels(&self) -> usize {
        self.kernel.shape().0
    }

    pub fn param_count(&self) -> usize {
        self.kernel.shape().num_elements() + self.bias.shape().0
    }

    pub fn visit<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        visitor.visit(&format!("{}.kernel", self.name), &self.kernel)?;
        visitor.visit(&format!("{}.bias", self.name), &self.bias)
    }

    pub fn visit_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        visitor.visit(&format!("{}.kernel", self.name), &mut self.kernel)?;
        visitor.visit(&format!("{}.bias", self.name), &mut self.bias)
    }
}

/// Batch normalization with frozen statistics (inference mode):
/// `gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta`, per channel.
#[derive(Clone, Debug)]
pub struct BatchNorm<D: ModelDevice = Cpu> {
    /// Keras layer name, e.g. `conv1_bn`.
    pub name: String,
    pub gamma: Tensor1<NoneTape, D>,
    pub beta: Tensor1<NoneTape, D>,
    pub moving_mean: Tensor1<NoneTape, D>,
    pub moving_variance: Tensor1<NoneTape, D>,
    pub epsilon: f32,
}

impl<D: ModelDevice> BatchNorm<D> {
    /// The identity: gamma 1, beta 0, mean 0, variance 1 (Keras' initial values).
    pub fn new(device: &D, name: impl Into<String>, channels: usize, epsilon: f32) -> Self {
        BatchNorm {
            name: name.into(),
            gamma: device.ones_like(&(channels,)),
            beta: device.zeros_like(&(channels,)),
            moving_mean: device.zeros_like(&(channels,)),
            moving_variance: device.ones_like(&(channels,)),
            epsilon,
        }
    }

    pub fn param_count(&self) -> usize {
        4 * self.gamma.shape().0
    }

    /// Folds this normalization into the convolution before it: one convolution computing
    /// `bn(conv(x))`. Exact in real arithmetic; in f32 it differs by rounding only.
    pub fn fold_into(&self, conv: &Conv<D>) -> Conv<D> {
        let (gamma, beta) = (self.gamma.as_vec(), self.beta.as_vec());
        let (mean, variance) = (self.moving_mean.as_vec(), self.moving_variance.as_vec());
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&variance)
            .map(|(g, v)| g / (v + self.epsilon).sqrt())
            .collect();
        let mut kernel = conv.kernel.as_vec();
        let per_output = kernel.len() / scale.len();
        for (weights, s) in kernel.chunks_exact_mut(per_output).zip(&scale) {
            weights.iter_mut().for_each(|w| *w *= s);
        }
        let bias: Vec<f32> = conv
            .bias
            .as_vec()
            .iter()
            .enumerate()
            .map(|(o, b)| (b - mean[o]) * scale[o] + beta[o])
            .collect();
        let device = conv.kernel.device();
        Conv {
            name: conv.name.clone(),
            kernel: device.tensor_from_vec(kernel, *conv.kernel.shape()),
            bias: device.tensor_from_vec(bias, *conv.bias.shape()),
            stride: conv.stride,
            padding: conv.padding,
        }
    }

    pub fn visit<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        visitor.visit(&format!("{}.gamma", self.name), &self.gamma)?;
        visitor.visit(&format!("{}.beta", self.name), &self.beta)?;
        visitor.visit(&format!("{}.moving_mean", self.name), &self.moving_mean)?;
        visitor.visit(
            &format!("{}.moving_variance", self.name),
            &self.moving_variance,
        )
    }

    pub fn visit_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        visitor.visit(&format!("{}.gamma", self.name), &mut self.gamma)?;
        visitor.visit(&format!("{}.beta", self.name), &mut self.beta)?;
        visitor.visit(&format!("{}.moving_mean", self.name), &mut self.moving_mean)?;
        visitor.visit(
            &format!("{}.moving_variance", self.name),
            &mut self.moving_variance,
        )
    }
}
