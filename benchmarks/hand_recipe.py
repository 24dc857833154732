"""Prune 80% -> cluster 16 (sparsity kept) -> full int8, written by hand: the TensorFlow Model
Optimization tutorials' recipe, with nothing from this project.

It is the other side of the overhead benchmark (:mod:`benchmarks.overhead`): the same model, the
same data, the same epochs, schedule, learning rates, batch size, layers and calibration samples
as the pipeline's benchmark config, so the difference in wall time is what the pipeline costs
(ExampleGen, ML Metadata, artifacts written and read back between steps, the steps' own checks).

Like the tutorials, it checks accuracy after each stage (the pipeline's Pruner, Clusterer and
Quantizer do too) and writes the final flatbuffer; measuring latency and size is left to the
caller, which does it the same way for both sides.

Run on its own (one JSON line on stdout)::

    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m benchmarks.hand_recipe \\
        --reference reference-data --out /tmp/hand
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What both sides do (benchmarks.overhead builds the pipeline's config from the same numbers).
SETTINGS = {
    "target_sparsity": 0.8,
    "prune_exclude": ["conv1"],  # the first layer holds few weights and matters most
    "prune_epochs": 4,
    "prune_learning_rate": 3e-4,
    "prune_end_step": 90,  # 2 of the 4 epochs at 45 steps: the last 2 recover at 80%
    "prune_frequency": 10,
    "clusters": 16,
    "cluster_epochs": 2,
    "cluster_learning_rate": 1e-4,
    "batch_size": 32,
    "calibration_samples": 100,
    "seed": 0,
}


def load_split(examples_dir: str, split: str):
    """(images float32 [n, 64], labels int64 [n]) from gzipped TFRecords of tf.Example."""
    import numpy as np
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(examples_dir, f"Split-{split}", "*")))
    spec = {
        "image": tf.io.FixedLenFeature([64], tf.float32),
        "label": tf.io.FixedLenFeature([1], tf.int64),
    }
    xs, ys = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        parsed = tf.io.parse_example(batch, spec)
        xs.append(parsed["image"].numpy())
        ys.append(parsed["label"].numpy()[:, 0])
    return np.concatenate(xs), np.concatenate(ys)


def run(
    reference_dir: str, out_dir: str, settings: dict = SETTINGS, skip_keras_autograph=False
) -> dict:
    """Runs the recipe; returns timings, accuracies and the path of the int8 flatbuffer.

    Args:
      skip_keras_autograph: also tell AutoGraph to leave tf_keras' own code alone, as the
        pipeline's fine-tuning does (``components.common.legacy_keras.skip_autograph_for_tf_keras``):
        the tutorials do not, and their first ``fit`` in a process pays 20-30 s for it. With it,
        the two sides differ only in what the pipeline adds around the same work.
    """
    started = time.perf_counter()
    # Imported here, all of them, so that import_s counts what the recipe imports.
    import numpy as np  # noqa: F401
    import tensorflow as tf  # noqa: F401
    import tensorflow_model_optimization as tfmot  # noqa: F401
    import tf_keras

    if skip_keras_autograph:
        from tensorflow.python.autograph.core import config as autograph_config

        autograph_config.CONVERSION_RULES = (
            autograph_config.DoNotConvert("tf_keras"),
            *autograph_config.CONVERSION_RULES,
        )
    imported = time.perf_counter()
    train = load_split(os.path.join(reference_dir, "examples"), "train")
    evaluation = load_split(os.path.join(reference_dir, "examples"), "eval")
    model = tf_keras.models.load_model(os.path.join(reference_dir, "model"), compile=False)
    timings = {"import_s": imported - started, "load_s": time.perf_counter() - imported}
    t = time.perf_counter()
    stripped, accuracy = _prune(model, train, evaluation, settings)
    timings["prune_s"] = time.perf_counter() - t
    t = time.perf_counter()
    final, accuracy["clustered"] = _cluster(stripped, train, evaluation, settings)
    timings["cluster_s"] = time.perf_counter() - t
    t = time.perf_counter()
    path, accuracy["tflite_int8"] = _quantize(final, train[0], evaluation, settings, out_dir)
    timings["quantize_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    return {
        "tflite_path": path,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "accuracy": accuracy,
        "settings": dict(settings),
        "skip_keras_autograph": skip_keras_autograph,
    }


def _compile(model, learning_rate: float) -> None:
    import tf_keras

    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )


def accuracy_of(model, evaluation) -> float:
    """Top-1 accuracy of a tf_keras classifier on ``evaluation = (x, y)``."""
    import numpy as np

    x_eval, y_eval = evaluation
    return float(np.mean(np.argmax(model.predict(x_eval, batch_size=256, verbose=0), -1) == y_eval))


def _prune(model, train, evaluation, s: dict):
    """1. Prune: polynomial decay to 80% over the first two epochs, two more at 80%.

    Returns (the stripped pruned model, {"baseline": accuracy, "pruned": accuracy}).
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(s["seed"])
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=s["target_sparsity"],
        begin_step=0,
        end_step=s["prune_end_step"],
        frequency=s["prune_frequency"],
    )

    def prune(layer):
        if isinstance(layer, tf_keras.layers.Conv2D | tf_keras.layers.Dense) and (
            layer.name not in s["prune_exclude"]
        ):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    # As in the tutorials: the clone function returns the trained layers themselves (wrapped),
    # so the clone starts from the trained weights.
    pruned = tf_keras.models.clone_model(model, clone_function=prune)
    _compile(pruned, s["prune_learning_rate"])
    accuracy = {"baseline": accuracy_of(model, evaluation)}
    pruned.fit(
        *train,
        batch_size=s["batch_size"],
        epochs=s["prune_epochs"],
        validation_data=evaluation,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=0,
    )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    accuracy["pruned"] = accuracy_of(stripped, evaluation)
    return stripped, accuracy


def _cluster(model, train, evaluation, s: dict):
    """2. Cluster every Conv2D/Dense kernel to 16 values, zeros kept (sparsity-preserving).

    Returns (the stripped clustered model, its accuracy).
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(s["seed"])
    clustering = tfmot.clustering.keras

    def cluster(layer):
        if isinstance(layer, tf_keras.layers.Conv2D | tf_keras.layers.Dense):
            return clustering.cluster_weights(
                layer,
                number_of_clusters=s["clusters"],
                cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
                preserve_sparsity=True,
            )
        return layer

    clustered = tf_keras.models.clone_model(model, clone_function=cluster)
    _compile(clustered, s["cluster_learning_rate"])
    clustered.fit(
        *train,
        batch_size=s["batch_size"],
        epochs=s["cluster_epochs"],
        validation_data=evaluation,
        verbose=0,
    )
    final = clustering.strip_clustering(clustered)
    return final, accuracy_of(final, evaluation)


def _quantize(model, x_train, evaluation, s: dict, out_dir: str):
    """3. Full-integer quantization, float I/O, calibrated on the first 100 train examples.

    Returns (the flatbuffer's path, its accuracy in ``tf.lite.Interpreter``).
    """
    import numpy as np
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    calibration = x_train[: s["calibration_samples"]]

    def representative():
        for i in range(calibration.shape[0]):
            yield [calibration[i : i + 1]]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    flatbuffer = converter.convert()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model_int8.tflite")
    with open(path, "wb") as f:
        f.write(flatbuffer)
    interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x_eval, y_eval = evaluation
    correct = 0
    for i in range(x_eval.shape[0]):
        interpreter.set_tensor(inp["index"], x_eval[i : i + 1])
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out["index"])) == y_eval[i])
    return path, correct / x_eval.shape[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="dir with examples/ and model/")
    parser.add_argument("--out", required=True, help="where the int8 flatbuffer goes")
    parser.add_argument(
        "--skip-keras-autograph", action="store_true", help="as the pipeline's fine-tuning does"
    )
    args = parser.parse_args(argv)
    print(json.dumps(run(args.reference, args.out, skip_keras_autograph=args.skip_keras_autograph)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
