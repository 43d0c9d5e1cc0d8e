#!/usr/bin/env python3
"""Times the walkthrough's Keras transfer-learning pieces on this machine, beside
`fashion-mnist bench --backbone`: frozen-backbone feature extraction at 32x32x3 (weights=None:
the speed does not depend on the weight values, and no download is needed) and one epoch of
the walkthrough's VGG-16 head on 512-value feature vectors.

Prints `extract_images_per_second N` and `head_epoch_seconds EPOCH SECONDS`. Needs TensorFlow.
"""
import argparse
import os
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", choices=["vgg16", "resnet50"], required=True)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--head-vectors", type=int, default=48000)
    parser.add_argument("--head-epochs", type=int, default=1)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    from keras import layers

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(args.images, 32, 32, 3)).astype("float32")
    if args.backbone == "vgg16":
        base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    else:
        base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    base.trainable = False
    base.predict(x[:64], batch_size=64, verbose=0)  # warm-up
    started = time.perf_counter()
    base.predict(x, batch_size=64, verbose=0)
    print(f"extract_images_per_second {args.images / (time.perf_counter() - started):.1f}", flush=True)

    if args.backbone != "vgg16" or args.head_epochs == 0:
        return
    features = rng.normal(size=(args.head_vectors, 512)).astype("float32")
    labels = keras.utils.to_categorical(rng.integers(0, 10, size=args.head_vectors), 10)
    head = keras.Sequential(
        [keras.Input(shape=(512,))]
        + [layers.Dense(1024, activation="relu") for _ in range(3)]
        + [layers.Dropout(0.5)]
        + [layers.Dense(512, activation="relu") for _ in range(2)]
        + [layers.Dropout(0.4)]
        + [layers.Dense(256, activation="relu"), layers.Dense(64, activation="relu"), layers.Dense(64, activation="relu")]
        + [layers.Dropout(0.2), layers.Dense(10, activation="softmax")]
    )
    head.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            print(f"head_epoch_seconds {epoch + 1} {time.perf_counter() - self.started:.3f}", flush=True)

    head.fit(features, labels, batch_size=32, epochs=args.head_epochs, verbose=0, callbacks=[Timer()])


if __name__ == "__main__":
    main()
