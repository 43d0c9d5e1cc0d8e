#!/usr/bin/env python3
"""Writes tests/reference/batch_norm_keras.json: one training-mode forward and backward pass of
Keras' BatchNormalization (TensorFlow backend) on seeded random values, for tests/ops.rs.

Tensors are stored flat in our (B, C, H, W) order. Run: python3 scripts/batch_norm_reference.py
(needs TensorFlow; the committed file was made with TensorFlow 2.21 / Keras 3).
"""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
import keras

rng = np.random.default_rng(2026)
b, c, h, w = 4, 3, 5, 5
x = rng.normal(1.5, 2.0, size=(b, c, h, w)).astype("float32")
gamma = rng.uniform(0.5, 1.5, size=c).astype("float32")
beta = rng.normal(0, 0.5, size=c).astype("float32")
upstream = rng.normal(size=(b, c, h, w)).astype("float32")

layer = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99)
layer.build((b, h, w, c))
layer.gamma.assign(gamma)
layer.beta.assign(beta)
x_nhwc = tf.constant(np.transpose(x, (0, 2, 3, 1)))
up_nhwc = tf.constant(np.transpose(upstream, (0, 2, 3, 1)))
with tf.GradientTape() as tape:
    tape.watch(x_nhwc)
    y = layer(x_nhwc, training=True)
    loss = tf.reduce_sum(y * up_nhwc)
dx, dgamma, dbeta = tape.gradient(loss, [x_nhwc, layer.gamma, layer.beta])

nchw = lambda t: np.transpose(np.asarray(t), (0, 3, 1, 2)).reshape(-1).tolist()
out = {
    "shape": [b, c, h, w],
    "epsilon": 1e-3,
    "momentum": 0.99,
    "x": x.reshape(-1).tolist(),
    "gamma": gamma.tolist(),
    "beta": beta.tolist(),
    "upstream": upstream.reshape(-1).tolist(),
    "y": nchw(y),
    "dx": nchw(dx),
    "dgamma": np.asarray(dgamma).tolist(),
    "dbeta": np.asarray(dbeta).tolist(),
    "moving_mean": np.asarray(layer.moving_mean).tolist(),
    "moving_variance": np.asarray(layer.moving_variance).tolist(),
    "made_with": f"TensorFlow {tf.__version__}, Keras {keras.__version__}",
}
path = os.path.join(os.path.dirname(__file__), "..", "tests", "reference", "batch_norm_keras.json")
with open(path, "w") as f:
    json.dump(out, f)
print(f"wrote {path}")
