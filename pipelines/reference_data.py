"""Reference inputs, written deterministically and offline: scikit-learn's bundled digits as TFX
Examples, and a small float32 tf_keras CNN trained on them (the "new checkpoint").

The demo, the tests and the benchmarks use them; the pipeline takes any model and Examples.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

EVAL_FRACTION = 0.2
SEED = 0
IMAGE_KEY = "image"
LABEL_KEY = "label"
COMPLETE_MARKER = ".complete"
RECORD_FILE = "data_tfrecord-00000-of-00001.gz"


def digits_splits(seed: int = SEED):
    """(x_train, y_train, x_eval, y_eval): 64 floats in [0, 1] per image, stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval = train_test_split(
        x, y, test_size=EVAL_FRACTION, random_state=seed, stratify=y
    )
    return x_train, y_train, x_eval, y_eval


def write_examples(path: str, x: np.ndarray, y: np.ndarray) -> None:
    """Writes (x, y) as one gzipped TFRecord file of tf.Example (``image`` floats, ``label`` int64)."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for features, label in zip(x, y, strict=True):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        IMAGE_KEY: tf.train.Feature(
                            float_list=tf.train.FloatList(value=features.tolist())
                        ),
                        LABEL_KEY: tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[int(label)])
                        ),
                    }
                )
            )
            writer.write(example.SerializeToString(deterministic=True))


def build_digits_cnn(num_classes: int = 10, width: int = 1):
    """The reference CNN: 64 inputs reshaped to 8x8x1, three convolutions, a dense head, softmax."""
    import tf_keras

    layers = tf_keras.layers
    return tf_keras.Sequential(
        [
            layers.Input(shape=(64,), name="image"),
            layers.Reshape((8, 8, 1)),
            layers.Conv2D(32 * width, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(64 * width, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(64 * width, 3, padding="same", activation="relu", name="conv3"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(),
            layers.Dense(128 * width, activation="relu", name="dense1"),
            layers.Dropout(0.3),
            layers.Dense(num_classes, activation="softmax", name="predictions"),
        ],
        name="digits_cnn",
    )


# Training epochs of the reference CNN (over the shifted copies too: 5 x 1,437 images an epoch).
EPOCHS = 15


def shifted_copies(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) plus four copies of every 8x8 image moved by one pixel up, down, left and right.

    Handwritten digits are not centred to the pixel; the shifted copies teach the CNN that, and
    make its accuracy robust to the small numeric differences between processors (oneDNN and
    XNNPACK take other code paths with AVX2, AVX-512 or VNNI, so the trained weights differ).
    """
    images = x.reshape(-1, 8, 8)
    xs, ys = [x], [y]
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        moved = np.zeros_like(images)
        moved[:, max(dy, 0) : 8 + min(dy, 0), max(dx, 0) : 8 + min(dx, 0)] = images[
            :, max(-dy, 0) : 8 + min(-dy, 0), max(-dx, 0) : 8 + min(-dx, 0)
        ]
        xs.append(moved.reshape(-1, 64))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def train_reference_model(x_train, y_train, x_eval, y_eval, epochs: int = EPOCHS, seed: int = SEED):
    """Trains the reference CNN deterministically; returns (model, eval accuracy).

    The recipe (one-pixel shifted copies, Adam with a cosine-decayed learning rate) reaches
    0.99-1.0 eval accuracy whichever instruction set TensorFlow's kernels use (README), so
    the reference bar holds on every x86-64 processor with a margin.
    """
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    # Op determinism is process-wide and changes which kernels later training in this process
    # uses (a pipeline run in the same process would fine-tune to different weights than the
    # same run in a fresh process): switch it back off unless the caller had it on.
    from tensorflow.python.framework import config as tf_config  # is_/disable_ are not exported

    was_deterministic = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        x_fit, y_fit = shifted_copies(x_train, y_train)
        batch_size = 32
        steps = -(-len(y_fit) // batch_size) * epochs
        model = build_digits_cnn()
        model.compile(
            optimizer=tf_keras.optimizers.Adam(
                tf_keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=max(1, steps))
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        model.fit(x_fit, y_fit, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
        _, accuracy = model.evaluate(x_eval, y_eval, verbose=0)
    finally:
        if not was_deterministic:
            tf_config.disable_op_determinism()
    return model, float(accuracy)


def write_reference_data(out_dir: str, epochs: int = EPOCHS) -> dict:
    """Writes ``out_dir/examples`` (TFX Examples) and ``out_dir/model`` (SavedModel); returns facts.

    Re-running gives the same examples and the same trained weights (seeded, deterministic ops).
    """
    x_train, y_train, x_eval, y_eval = digits_splits()
    examples = os.path.join(out_dir, "examples")
    model_dir = os.path.join(out_dir, "model")
    for path in (examples, model_dir):
        if os.path.exists(path):
            shutil.rmtree(path)
    marker = os.path.join(out_dir, COMPLETE_MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    write_examples(os.path.join(examples, "Split-train", RECORD_FILE), x_train, y_train)
    write_examples(os.path.join(examples, "Split-eval", RECORD_FILE), x_eval, y_eval)
    model, accuracy = train_reference_model(x_train, y_train, x_eval, y_eval, epochs=epochs)
    model.save(model_dir, include_optimizer=False, save_format="tf")
    facts = {
        "examples": examples,
        "model": model_dir,
        "train_examples": int(len(y_train)),
        "eval_examples": int(len(y_eval)),
        "eval_accuracy": accuracy,
        "parameters": int(model.count_params()),
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(facts, f, indent=2)
    open(marker, "w").close()
    return facts
