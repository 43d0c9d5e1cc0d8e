#!/usr/bin/env python3
"""Times the walkthrough's Keras LeNet-5 on the same images as `fashion-mnist bench`.

Prints one line per epoch: `epoch_seconds EPOCH SECONDS`. Needs TensorFlow (pip install
tensorflow-cpu) and numpy. Reads the original IDX files (.gz or raw) from --data.
"""
import argparse
import os
import time

from idx_files import find, read_idx


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=48000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    from keras import layers

    images = read_idx(find(args.data, "train-images-idx3-ubyte"))[: args.images]
    labels = read_idx(find(args.data, "train-labels-idx1-ubyte"))[: args.images]
    x = (images.astype("float32") / 255.0).reshape(-1, 28, 28, 1)
    y = keras.utils.to_categorical(labels, 10)

    # The walkthrough's LeNet-5, compiled as it compiles it.
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(6, (5, 5), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(16, (5, 5), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(120, activation="relu"),
            layers.Dense(84, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            print(f"epoch_seconds {epoch + 1} {time.perf_counter() - self.started:.3f}", flush=True)

    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=[EpochTimer()])


if __name__ == "__main__":
    main()
