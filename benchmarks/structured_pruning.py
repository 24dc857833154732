"""Structured pruning: FLOPs, TFLite latency and accuracy of a 50% channel cut (prints JSON).

Two models:

* the reference digits CNN (``--reference-dir``, as ``tfxopt example-data`` writes it): 50% of
  the filters of every conv and of the units of every dense layer but the classifier removed
  (l1 norm, per layer), fine-tuned on the train split, accuracy on the eval split;
* ``tf_keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(96, 96, 3))``
  with random weights, the same cut without fine-tuning (FLOPs and latency only).

Each pruned model and its baseline are converted to float32 TFLite and timed in this process,
interleaved (A B A B ...), batch 1, one thread, after warm-up.

Usage::

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/structured_pruning.py \
        --reference-dir /tmp/ref [--runs 2000] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import components  # noqa: E402,F401 - pins tf_keras
from components.common import measure, model_io, tflite  # noqa: E402
from components.common.examples import DataConfig, make_dataset  # noqa: E402
from components.pruner.structured import structured_prune  # noqa: E402
from components.pruner.structured_config import StructuredPruningConfig  # noqa: E402


def _tflite(model, directory: str) -> bytes:
    path = model_io.save_keras_model(model, directory)
    return tflite.convert_float32(path)


def time_pair(baseline, pruned, sample: np.ndarray, warmup: int, runs: int) -> dict:
    """p50/p90 latency (ms) of both models' float32 TFLite, interleaved, batch 1, one thread."""
    with tempfile.TemporaryDirectory() as tmp:
        flatbuffers = {
            "baseline": _tflite(baseline, os.path.join(tmp, "baseline")),
            "pruned": _tflite(pruned, os.path.join(tmp, "pruned")),
        }
    runners = {name: tflite.TFLiteModel(fb, num_threads=1) for name, fb in flatbuffers.items()}
    for runner in runners.values():
        runner.set_inputs(sample[:1])
    samples = measure.time_interleaved(
        {name: runner.invoke for name, runner in runners.items()}, warmup, runs
    )
    stats = {name: measure.summarize_ms(s) for name, s in samples.items()}
    return {
        "baseline_ms": {k: stats["baseline"][k] for k in ("p50_ms", "p90_ms", "mean_ms")},
        "pruned_ms": {k: stats["pruned"][k] for k in ("p50_ms", "p90_ms", "mean_ms")},
        "p50_ratio": stats["pruned"]["p50_ms"] / stats["baseline"]["p50_ms"],
        "runs": runs,
        "tflite_bytes": {name: len(fb) for name, fb in flatbuffers.items()},
    }


def _summary(report: dict) -> dict:
    keys = (
        "criterion",
        "scope",
        "target_fraction",
        "achieved_fraction",
        "parameters_before",
        "parameters_after",
        "parameters_ratio",
        "flops_before",
        "flops_after",
        "flops_ratio",
        "accuracy_before",
        "accuracy_before_fine_tuning",
        "accuracy_after",
        "wall_time_s",
    )
    out = {k: report[k] for k in keys}
    out["layers"] = {
        e["layer"]: [e["channels_before"], e["channels_after"]] for e in report["layers"]
    }
    out["skipped_layers"] = report["skipped_layers"]
    return out


def reference(reference_dir: str, epochs: int, warmup: int, runs: int) -> dict:
    """The digits CNN: 50% cut, fine-tuned, accuracy, FLOPs and latency."""
    model = model_io.load_keras_model(os.path.join(reference_dir, "model"))
    examples = os.path.join(reference_dir, "examples")
    config = StructuredPruningConfig.parse(
        {"target_fraction": 0.5, "criterion": "l1", "fine_tuning": {"epochs": epochs}}
    )
    data = DataConfig()
    train = make_dataset(
        examples, data.train_split, data, model, config.fine_tuning.batch_size, shuffle=True
    )
    evaluation = make_dataset(examples, data.eval_split, data, model, 256)
    pruned, report = structured_prune(model, train, evaluation, config)
    sample = next(iter(evaluation))[0].numpy()
    result = _summary(report)
    result["accuracy_drop_points"] = 100 * (report["accuracy_before"] - report["accuracy_after"])
    result["fine_tuning_epochs"] = epochs
    result["latency"] = time_pair(model, pruned, sample, warmup, runs)
    result["done_when"] = {
        "flops_ratio_le_0.35": report["flops_ratio"] <= 0.35,
        "p50_ratio_le_0.7": result["latency"]["p50_ratio"] <= 0.7,
        "accuracy_drop_le_1_point": result["accuracy_drop_points"] <= 1.0,
    }
    return result


def mobilenet(warmup: int, runs: int) -> dict:
    """MobileNetV2 alpha 0.35, 96x96, random weights: 50% cut, no fine-tuning."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(96, 96, 3))
    config = StructuredPruningConfig.parse(
        {"target_fraction": 0.5, "criterion": "l1", "fine_tuning": {"epochs": 0}}
    )
    pruned, report = structured_prune(model, None, None, config)
    sample = np.random.default_rng(0).random((1, 96, 96, 3), dtype=np.float32)
    result = _summary(report)
    result.pop("layers")
    result["latency"] = time_pair(model, pruned, sample, warmup, runs)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference-dir", default=os.environ.get("TFXOPT_REFERENCE_DIR"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--skip-mobilenet", action="store_true")
    args = parser.parse_args(argv)
    if not args.reference_dir:
        parser.error("--reference-dir (or TFXOPT_REFERENCE_DIR) is required")
    results = {
        "reference_digits_cnn": reference(args.reference_dir, args.epochs, args.warmup, args.runs)
    }
    if not args.skip_mobilenet:
        results["mobilenet_v2_035_96"] = mobilenet(args.warmup, args.runs)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
