"""Every quantization mode side by side on the reference digits model (a benchmark, not a test).

Run ``python -m components.quantizer.benchmark --reference DIR --out DIR``. It prunes the
reference model to 80 % sparsity and clusters it to 16 clusters with sparsity preserved (with
tfmot directly, as the Pruner and Clusterer do), then runs the Quantizer core for every mode on
the inputs it is meant for, and times every flatbuffer at batch 1, interleaved in one process.
Prints a markdown table and writes ``benchmark.json`` and the flatbuffers under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import components  # noqa: F401 - pins tf_keras before TensorFlow loads
from components.common import examples as examples_lib
from components.common import measure, model_io, tflite
from components.common import metrics as metrics_lib
from components.common.examples import DataConfig
from components.quantizer import quantizer
from components.quantizer.config import QuantizerConfig

# (input, mode): plain modes on the trained model, the collaborative ones on the inputs they keep.
RUNS = [
    ("baseline", "none"),
    ("baseline", "dynamic_range"),
    ("baseline", "float16"),
    ("baseline", "full_int8"),
    ("baseline", "int16x8"),
    ("baseline", "qat"),
    ("pruned", "none"),
    ("pruned", "full_int8"),
    ("pruned", "qat"),
    ("pruned", "pqat"),
    ("clustered", "none"),
    ("clustered", "full_int8"),
    ("clustered", "qat"),
    ("clustered", "cqat"),
    ("clustered", "pcqat"),
]


def _compile(model, learning_rate: float) -> None:
    import tf_keras

    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def prune(model, x, y, sparsity: float, epochs: int, learning_rate: float):
    """Magnitude pruning to ``sparsity`` (polynomial schedule over 2/3 of the steps), stripped."""
    import tensorflow_model_optimization as tfmot

    steps = int(np.ceil(len(x) / 32)) * epochs
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=2 * steps // 3
    )
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    _compile(wrapped, learning_rate)
    wrapped.fit(
        x,
        y,
        epochs=epochs,
        batch_size=32,
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    return tfmot.sparsity.keras.strip_pruning(wrapped)


def cluster(model, x, y, clusters: int, epochs: int, learning_rate: float):
    """Weight clustering with the zeros kept (``preserve_sparsity``), stripped."""
    import tensorflow_model_optimization as tfmot

    clustering = tfmot.clustering.keras
    wrapped = clustering.cluster_weights(
        model,
        number_of_clusters=clusters,
        cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
        preserve_sparsity=True,
    )
    _compile(wrapped, learning_rate)
    wrapped.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return clustering.strip_clustering(wrapped)


def _save_and_reload(model, path: str):
    # A fresh load: tfmot wrappers share layer objects with their input, and the Quantizer
    # reads its input from an artifact anyway.
    import tf_keras

    model.save(path, include_optimizer=False, save_format="tf")
    return tf_keras.models.load_model(path, compile=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="dir with examples/ and model/")
    parser.add_argument("--out", required=True)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--prune-epochs", type=int, default=10)
    parser.add_argument("--cluster-epochs", type=int, default=5)
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--timed-runs", type=int, default=500)
    parser.add_argument("--modes", nargs="*", help="only these input:mode pairs")
    args = parser.parse_args(argv)

    import tf_keras

    os.makedirs(args.out, exist_ok=True)
    examples = os.path.join(args.reference, "examples")
    data = DataConfig()
    baseline = model_io.load_keras_model(os.path.join(args.reference, "model"))
    x, y = examples_lib.load_arrays(examples, data.train_split, data, baseline)
    eval_x, eval_y = examples_lib.load_arrays(examples, data.eval_split, data, baseline)

    task = examples_lib.resolve_task(examples, data, baseline)

    def eval_accuracy(model) -> float:
        return metrics_lib.primary(
            metrics_lib.summarize(task, model.predict(eval_x, verbose=0), eval_y)
        )

    prep = {"baseline": {"accuracy": eval_accuracy(baseline)}}
    paths = {
        "baseline": os.path.join(args.reference, "model"),
        "pruned": os.path.join(args.out, "pruned"),
        "clustered": os.path.join(args.out, "clustered"),
    }
    started = time.time()
    tf_keras.utils.set_random_seed(0)
    pruned = prune(
        model_io.load_keras_model(paths["baseline"]), x, y, args.sparsity, args.prune_epochs, 5e-4
    )
    pruned = _save_and_reload(pruned, paths["pruned"])
    prep["pruned"] = {"accuracy": eval_accuracy(pruned), "s": time.time() - started}
    started = time.time()
    clustered = cluster(pruned, x, y, args.clusters, args.cluster_epochs, 1e-4)
    clustered = _save_and_reload(clustered, paths["clustered"])
    prep["clustered"] = {"accuracy": eval_accuracy(clustered), "s": time.time() - started}
    print("inputs:", json.dumps(prep), flush=True)

    fine_tuning = {"epochs": args.qat_epochs, "learning_rate": 1e-4}
    results, runners = {}, {}
    wanted = set(args.modes or [])
    for source, mode in RUNS:
        key = f"{source}:{mode}"
        if wanted and key not in wanted:
            continue
        config = QuantizerConfig(mode=mode, fine_tuning=fine_tuning)
        model = tf_keras.models.load_model(paths[source], compile=False)
        result = quantizer.quantize(model, examples, data, config)
        with open(os.path.join(args.out, f"{source}_{mode}.tflite"), "wb") as f:
            f.write(result.flatbuffer)
        numbers = quantizer.key_numbers(result.record)
        numbers["wall_time_s"] = result.record["wall_time_s"]
        results[key] = numbers
        runners[key] = tflite.TFLiteModel(result.flatbuffer, num_threads=1)
        print(key, json.dumps({k: numbers[k] for k in ("tflite_gzip_bytes", "accuracy")}))

    one = eval_x[:1]
    for runner in runners.values():
        runner.set_inputs(one)
    samples = measure.time_interleaved(
        {k: r.invoke for k, r in runners.items()}, warmup_runs=50, timed_runs=args.timed_runs
    )
    for key, ms in samples.items():
        results[key]["latency"] = measure.summarize_ms(ms)

    reference_gzip = results.get("baseline:none", {}).get("tflite_gzip_bytes")
    reference_accuracy = prep["baseline"]["accuracy"]
    print()
    print(
        "| input | mode | bytes | gzip bytes | gzip vs float32 | eval acc | drop (pt) | "
        "kernel sparsity | max values/channel | p50 ms | p90 ms | I/O |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, n in results.items():
        source, mode = key.split(":")
        ratio = f"{reference_gzip / n['tflite_gzip_bytes']:.1f}x" if reference_gzip else "-"
        print(
            f"| {source} | {mode} | {n['tflite_bytes']:,} | {n['tflite_gzip_bytes']:,} | {ratio} | "
            f"{n['accuracy']:.4f} | {100 * (reference_accuracy - n['accuracy']):+.2f} | "
            f"{n['input_kernel_sparsity']:.3f} -> {n['tflite_kernel_sparsity']:.3f} | "
            f"{n['tflite_max_unique_per_channel']} | {n['latency']['p50_ms']:.4f} | "
            f"{n['latency']['p90_ms']:.4f} | {n['input_dtype']}/{n['output_dtype']} |"
        )
    with open(os.path.join(args.out, "benchmark.json"), "w") as f:
        json.dump({"inputs": prep, "results": results}, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
