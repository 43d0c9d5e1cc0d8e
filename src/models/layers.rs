//! Building blocks: a named convolution layer and a named batch normalization in inference
//! mode (the ImageNet backbones, with Keras' layer names so weights map one to one), and a
//! batch normalization that trains ([`BatchNorm2d`]).

use dfdx::prelude::*;

use super::{ParamVisitor, ParamVisitorMut};
use crate::ops::channel_major::ConvWeights;
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
    /// The weights as plain host buffers, for the CPU's channel-major inference.
    pub fn plain_weights(&self) -> ConvWeights {
        let (out_channels, in_channels, kernel_size, _) = *self.kernel.shape();
        ConvWeights {
            kernel: self.kernel.as_vec(),
            bias: self.bias.as_vec(),
            out_channels,
            in_channels,
            kernel_size,
            stride: self.stride,
            padding: self.padding,
            winograd_kernel: None,
        }
    }

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

    /// `gamma / sqrt(moving_variance + epsilon)` per channel.
    pub fn scales(&self) -> Vec<f32> {
        let (gamma, variance) = (self.gamma.as_vec(), self.moving_variance.as_vec());
        gamma
            .iter()
            .zip(&variance)
            .map(|(g, v)| g / (v + self.epsilon).sqrt())
            .collect()
    }

    /// Folds this normalization into the convolution before it: one convolution computing
    /// `bn(conv(x))`. Exact in real arithmetic; in f32 it differs by rounding only.
    pub fn fold_into(&self, conv: &Conv<D>) -> Conv<D> {
        let (beta, mean) = (self.beta.as_vec(), self.moving_mean.as_vec());
        let scale = self.scales();
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

/// Batch normalization that trains (Keras' `BatchNormalization`): with a tape, each channel is
/// normalized by the batch's statistics and `gamma`/`beta` learn; the batch's statistics are
/// kept until [`Self::apply_batch_statistics`] (called after each optimizer step through
/// `ImageClassifier::after_step`) folds them into the running averages with `momentum`.
/// Without a tape (evaluation, prediction) the running averages normalize.
#[derive(Debug)]
pub struct BatchNorm2d<D: ModelDevice = Cpu> {
    /// gamma, beta, the running averages and epsilon (the inference-mode layer's fields).
    pub norm: BatchNorm<D>,
    pub momentum: f32,
    /// The last training batch's statistics, not yet folded in.
    pending: std::sync::Mutex<Option<crate::ops::BatchStatistics>>,
}

impl<D: ModelDevice> Clone for BatchNorm2d<D> {
    fn clone(&self) -> Self {
        BatchNorm2d {
            norm: self.norm.clone(),
            momentum: self.momentum,
            pending: std::sync::Mutex::new(None),
        }
    }
}

impl<D: ModelDevice> BatchNorm2d<D> {
    /// Keras' defaults: gamma 1, beta 0, running mean 0 and variance 1, epsilon 1e-3,
    /// momentum 0.99.
    pub fn new(device: &D, name: impl Into<String>, channels: usize) -> Self {
        BatchNorm2d {
            norm: BatchNorm::new(device, name, channels, 1e-3),
            momentum: 0.99,
            pending: std::sync::Mutex::new(None),
        }
    }

    /// A training layer that starts from an inference-mode one (a pretrained backbone's):
    /// its gamma, beta, running averages and epsilon, the averages updated with `momentum`.
    pub fn from_inference(norm: BatchNorm<D>, momentum: f32) -> Self {
        BatchNorm2d {
            norm,
            momentum,
            pending: std::sync::Mutex::new(None),
        }
    }

    pub fn forward<T: Tape<f32, D>>(&self, x: Tensor4<T, D>) -> Tensor4<T, D> {
        let n = &self.norm;
        if T::OWNS_TAPE {
            let (y, statistics) = crate::ops::batch_norm2d(x, &n.gamma, &n.beta, n.epsilon);
            self.keep_for_after_step(statistics);
            return y;
        }
        // Inference: one scale and shift per channel from the running averages.
        let (beta, mean) = (n.beta.as_vec(), n.moving_mean.as_vec());
        let scale = n.scales();
        let shift: Vec<f32> = beta
            .iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        let shape = *x.shape();
        let device = n.gamma.device();
        let channels = (shape.1,);
        let scale = device.tensor_from_vec(scale, channels);
        let shift = device.tensor_from_vec(shift, channels);
        x * scale.broadcast_like::<_, Axes3<0, 2, 3>>(&shape)
            + shift.broadcast_like::<_, Axes3<0, 2, 3>>(&shape)
    }

    /// `relu(forward(x))`; in training one fused pass where the device has one.
    pub fn forward_relu<T: Tape<f32, D>>(&self, x: Tensor4<T, D>) -> Tensor4<T, D> {
        let n = &self.norm;
        if T::OWNS_TAPE {
            let (y, statistics) = crate::ops::batch_norm_relu2d(x, &n.gamma, &n.beta, n.epsilon);
            self.keep_for_after_step(statistics);
            return y;
        }
        self.forward(x).relu()
    }

    /// The training batch's statistics, for [`Self::apply_batch_statistics`].
    fn keep_for_after_step(&self, statistics: crate::ops::BatchStatistics) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(statistics);
    }

    /// Folds the last training batch's statistics into the running averages (in place: the
    /// tensors keep their ids, so an optimizer's state for them stays one entry).
    pub fn apply_batch_statistics(&mut self) {
        let Some(batch) = self
            .pending
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let n = &mut self.norm;
        let (mut mean, mut variance) = (n.moving_mean.as_vec(), n.moving_variance.as_vec());
        crate::ops::update_moving_statistics(&mut mean, &mut variance, &batch, self.momentum);
        n.moving_mean.copy_from(&mean);
        n.moving_variance.copy_from(&variance);
    }

    /// gamma and beta (the running averages are not trained).
    pub fn param_count(&self) -> usize {
        2 * self.norm.gamma.shape().0
    }

    pub fn visit<V: ParamVisitor<D>>(&self, visitor: &mut V) -> Result<(), V::Error> {
        self.norm.visit(visitor)
    }

    pub fn visit_mut<V: ParamVisitorMut<D>>(&mut self, visitor: &mut V) -> Result<(), V::Error> {
        self.norm.visit_mut(visitor)
    }
}
