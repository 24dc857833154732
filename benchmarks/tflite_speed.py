"""TFLite speed (issue 28): the same Keras model converted before and after static shapes.

For each model, each flavour (float32, dynamic range, full int8) is converted three ways from the
same weights and run on the same inputs:

- ``before``: what the pipeline did before issue 28, ``TFLiteConverter.from_saved_model`` of the
  SavedModel (a dynamic batch), builtin ops (``TFLITE_BUILTINS_INT8`` only for full int8);
- ``after``: the pipeline's conversion now, the Keras call traced with a static batch of 1
  (:func:`components.common.conversion.convert_float32` for float32, the Quantizer's
  :func:`components.quantizer.conversion.convert` for the others);
- ``tfmot`` (full int8 only): the TensorFlow Model Optimization guide's post-training recipe,
  ``from_keras_model(model)`` with ``Optimize.DEFAULT`` and a representative dataset (float
  fallback allowed). For float32 and dynamic range ``from_keras_model`` traces the same dynamic
  batch as ``before`` (the same graph, a few bytes apart) at 5x its conversion time, so it is
  left out.

Every flatbuffer is timed at batch 1 in the LiteRT interpreter (XNNPACK, as on a device) with one
thread and with two, interleaved in one process after warm-up
(:func:`components.common.measure.time_interleaved`); its XNNPACK delegation is measured
(:func:`components.common.delegation.measure_delegation`), its size raw and gzipped, and its eval
metric over the eval split. A conversion that fails (an LSTM with a dynamic batch keeps TensorList
ops) is recorded with the converter's reason.

The reference CNN also gets the demo's candidate, approximated as its prune 0.8 -> cluster 16
(zeros kept) copy, by hand with tfmot (:mod:`benchmarks.hand_recipe`, the demo's settings),
converted to full int8 both ways. The targets are computed from the JSON at render time
(:mod:`benchmarks.tflite_speed_report`).

Run on its own::

    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m benchmarks.tflite_speed --reference /tmp/ref \\
        --work /tmp/tflite-speed [--models reference_cnn,lstm_binary]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = (
    "reference_cnn",
    "mobilenet_v2_035_32",
    "mobilenet_v2_100_224",
    "mobilenet_block",
    "lstm_binary",
    "transformer_tokens",
)
FLAVOURS = ("float32", "dynamic_range", "full_int8")
QUANTIZER_MODES = {"float32": "none", "dynamic_range": "dynamic_range", "full_int8": "full_int8"}
WAYS = ("before", "after", "tfmot")
DEMO = "demo_candidate_int8"  # the reference CNN's pruned + clustered copy, full int8
CALIBRATION_SAMPLES = 100  # train examples calibrating full int8 (fewer for MobileNetV2 1.0)
THREADS = (1, 2)
# Timed rounds (one call to every flatbuffer of a model) per thread count: MAX_TIMED_RUNS, or
# as many as fit in TIMING_BUDGET_S (at least MIN_TIMED_RUNS), after a warm-up of a tenth of
# them within a fifth of the budget.
TIMING_BUDGET_S = 6.0
MIN_TIMED_RUNS, MAX_TIMED_RUNS, CHUNK = 20, 2000, 20
MOBILENETS = {
    # name: (alpha, size, training epochs (0: random weights, timing only), eval examples,
    # calibration samples)
    "mobilenet_v2_035_32": (0.35, 32, 5, None, CALIBRATION_SAMPLES),
    "mobilenet_v2_100_224": (1.0, 224, 0, 32, 32),
}
ZOO = {
    "mobilenet_block": "depthwise-separable blocks (tests/zoo.py)",
    "lstm_binary": "Embedding -> LSTM over int64 tokens (tests/zoo.py)",
    "transformer_tokens": "Embedding -> MultiHeadAttention block over int64 tokens (tests/zoo.py)",
}


def processor() -> dict:
    """The CPU's model name and the instruction sets int8 and float32 kernels care about."""
    name, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and name == "?":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    return {"model_name": name, "flags": {flag: flag in flags for flag in wanted}}


def failure_reason(error: Exception) -> str:
    """The converter's reason in one line: the ops it has no kernel for, and its last line."""
    from components.common import tflite

    text = str(error).strip()
    ops = tflite.unsupported_ops(text)
    last = (text.splitlines()[-1] if text else type(error).__name__).strip()
    prefix = f"ops without a kernel: {', '.join(ops)}; " if ops else ""
    return f"{type(error).__name__}: {prefix}{last[:300]}"


# ----------------------------------------------------------------------------- conversions


def convert_before(saved_model_dir: str, flavour: str, samples) -> bytes:
    """The pipeline's conversion before issue 28: the SavedModel's serving signature, whose
    batch is dynamic."""
    import tensorflow as tf

    from components.quantizer import conversion as quantizer_conversion

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if flavour != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if flavour == "full_int8":
        converter.representative_dataset = quantizer_conversion.representative_dataset(samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def convert_after(model, flavour: str, samples) -> bytes:
    """The pipeline's conversion now: the Keras call with a static batch of 1."""
    from components.common import conversion
    from components.quantizer import conversion as quantizer_conversion
    from components.quantizer.config import QuantizerConfig

    if flavour == "float32":
        return conversion.convert_float32(model, 1)[0]
    config = QuantizerConfig(mode=QUANTIZER_MODES[flavour])
    return quantizer_conversion.convert(model, config, samples, batch_size=1)[0]


def convert_tfmot(model, flavour: str, samples) -> bytes:
    """The TFMOT guide's post-training recipe: ``from_keras_model`` with ``Optimize.DEFAULT``
    (and a representative dataset for full int8)."""
    import tensorflow as tf

    from components.quantizer import conversion as quantizer_conversion

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if flavour != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if flavour == "full_int8":
        converter.representative_dataset = quantizer_conversion.representative_dataset(samples)
    return converter.convert()


def _convert(how, *args) -> dict:
    started = time.perf_counter()
    try:
        flatbuffer = how(*args)
    except Exception as e:  # noqa: BLE001 - a failed conversion is a result, not a crash
        return {"error": failure_reason(e), "convert_s": round(time.perf_counter() - started, 1)}
    return {"flatbuffer": flatbuffer, "convert_s": round(time.perf_counter() - started, 1)}


# ----------------------------------------------------------------------------- the models


def _flat_mobilenet(alpha: float, size: int):
    """benchmarks.mobilenet's MobileNetV2 behind a flat input and a Reshape, as Examples feed it."""
    import tf_keras

    from benchmarks.mobilenet import build_model

    flat = tf_keras.Input((size * size * 3,), name="image")
    image = tf_keras.layers.Reshape((size, size, 3), name="to_image")(flat)
    return tf_keras.Model(flat, build_model(alpha, size)(image), name=f"flat_mobilenet_{alpha}")


def prepare(name: str, reference_dir: str, work_dir: str) -> dict:
    """The Keras model, its SavedModel, calibration samples, eval inputs and labels, its task."""
    import numpy as np
    import tf_keras

    from components.common import metrics

    if name == "reference_cnn":
        from benchmarks.hand_recipe import load_split

        saved = os.path.join(reference_dir, "model")
        model = tf_keras.models.load_model(saved, compile=False)
        x_train, _ = load_split(os.path.join(reference_dir, "examples"), "train")
        x_eval, y_eval = load_split(os.path.join(reference_dir, "examples"), "eval")
        what = "the reference CNN (`tfxopt example-data`), flat 64-float input -> Reshape"
        task = metrics.Task("multiclass", (10,))
    elif name in MOBILENETS:
        from benchmarks.mobilenet import _images
        from pipelines import reference_data as ref

        alpha, size, epochs, eval_examples, samples = MOBILENETS[name]
        x_train, y_train, x_eval, y_eval = ref.digits_splits()
        x_eval, y_eval = x_eval[:eval_examples], y_eval[:eval_examples]
        x_train, x_eval = _images(x_train, size), _images(x_eval, size)
        tf_keras.utils.set_random_seed(0)
        model = _flat_mobilenet(alpha, size)
        if epochs:
            model.compile(tf_keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
            model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
        saved = os.path.join(work_dir, name, "model")
        model.save(saved, include_optimizer=False, save_format="tf")
        weights = f"trained {epochs} epochs on the digits" if epochs else "random weights"
        what = (
            f"MobileNetV2 {alpha} at {size}x{size}x3 (flat input -> Reshape, 10 classes), {weights}"
        )
        task = metrics.Task("multiclass", (10,))
    else:
        from components.common.examples import DataConfig, load_arrays
        from tests import zoo

        case = zoo.BUILDERS[name](os.path.join(work_dir, name))
        saved = case.model_dir
        model = tf_keras.models.load_model(saved, compile=False)
        x_train, _ = load_arrays(case.examples_dir, "train", DataConfig(), model)
        x_eval, y_eval = load_arrays(case.examples_dir, "eval", DataConfig(), model)
        what = ZOO[name]
        shape = tuple(int(d) for d in model.outputs[0].shape[1:])
        task = metrics.Task(case.task, shape)
    samples = MOBILENETS[name][4] if name in MOBILENETS else CALIBRATION_SAMPLES
    calibration = (
        tuple(a[:samples] for a in x_train) if isinstance(x_train, tuple) else x_train[:samples]
    )
    return {
        "model": model,
        "saved_model": saved,
        "calibration": calibration,
        "x_eval": x_eval,
        "y_eval": np.asarray(y_eval),
        "task": task,
        "what": what,
    }


def demo_candidate(reference_dir: str, work_dir: str):
    """The demo's chain on the reference CNN, by hand: prune 0.8 (conv1 kept) -> cluster 16
    (zeros kept), fine-tuned as the demo's steps are; returns (stripped model, SavedModel dir)."""
    import tf_keras

    from benchmarks.hand_recipe import SETTINGS, _cluster, _prune, load_split

    examples = os.path.join(reference_dir, "examples")
    train, evaluation = load_split(examples, "train"), load_split(examples, "eval")
    # A fresh copy: the pruning wrappers train the very layers they wrap.
    model = tf_keras.models.load_model(os.path.join(reference_dir, "model"), compile=False)
    pruned, _ = _prune(model, train, evaluation, SETTINGS)
    clustered, _ = _cluster(pruned, train, evaluation, SETTINGS)
    saved = os.path.join(work_dir, "demo_candidate", "model")
    clustered.save(saved, include_optimizer=False, save_format="tf")
    return clustered, saved


# ----------------------------------------------------------------------------- measuring


def class_ids(task, outputs):
    """Predicted class per example (argmax; a single sigmoid unit thresholded at 0.5)."""
    import numpy as np

    outputs = np.asarray(outputs).reshape(len(outputs), -1)
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return outputs.argmax(-1)


def agreement(task, outputs, reference) -> dict:
    """How far ``outputs`` are from ``reference``: examples with the same class, and the largest
    difference relative to max(1, |reference|), as the Quantizer's verification measures it."""
    import numpy as np

    from components.common import metrics

    a = metrics.comparable_outputs(task, outputs).reshape(len(outputs), -1)
    b = metrics.comparable_outputs(task, reference).reshape(len(reference), -1)
    diff = np.abs(a - b) / np.maximum(1.0, np.abs(b))
    return {
        "same_class": int((class_ids(task, a) == class_ids(task, b)).sum()),
        "examples": len(a),
        "max_diff": float(diff.max()),
    }


def _one_example(x):
    return tuple(a[:1] for a in x) if isinstance(x, tuple) else x[:1]


def measure_flatbuffer(flatbuffer: bytes, case: dict, keras_outputs) -> tuple[dict, object]:
    """Size, static batch, XNNPACK delegation and eval metric of one flatbuffer; returns (its
    record, its eval outputs)."""
    from components.common import conversion, delegation, measure, metrics, tflite

    plan = conversion.flatbuffer_plan(flatbuffer)
    d = delegation.measure_delegation(flatbuffer, num_threads=1)
    outputs = tflite.TFLiteModel(flatbuffer, num_threads=1).predict_each(case["x_eval"])
    record = {
        "bytes": len(flatbuffer),
        "gzip_bytes": measure.gzipped_bytes(flatbuffer),
        "batch_size": plan["batch_size"],
        "delegation": {
            key: d[key]
            for key in (
                "nodes",
                "delegated_nodes",
                "delegated_share",
                "partitions",
                "fallback_ops",
                "dynamic_tensors",
                "delegate_error",
                "reason",
            )
        },
        "metric": metrics.primary(metrics.summarize(case["task"], outputs, case["y_eval"])),
        "vs_keras": agreement(case["task"], outputs, keras_outputs),
    }
    return record, outputs


class TfLiteInterpreter:
    """The runtime the pipeline timed with before issue 28: ``tf.lite.Interpreter`` (TensorFlow
    2.16), which applies XNNPACK to no node of a graph with dynamic-sized tensors. Resets state
    tensors before each call, as the LiteRT runner does."""

    def __init__(self, flatbuffer: bytes, num_threads: int):
        import tensorflow as tf

        from components.common.conversion import state_tensors

        self.interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.stateful = state_tensors(flatbuffer) > 0

    def set_inputs(self, inputs) -> None:
        from components.common.tflite import cast_input

        arrays = list(inputs) if isinstance(inputs, tuple) else [inputs]
        details = self.interpreter.get_input_details()
        for detail, array in zip(details, arrays, strict=True):
            if list(detail["shape"]) != list(array.shape):
                self.interpreter.resize_tensor_input(detail["index"], list(array.shape))
        self.interpreter.allocate_tensors()
        for detail, array in zip(self.interpreter.get_input_details(), arrays, strict=True):
            self.interpreter.set_tensor(detail["index"], cast_input(array, detail))

    def invoke(self) -> None:
        if self.stateful:
            self.interpreter.reset_all_variables()
        self.interpreter.invoke()


def interleaved_within(fns: dict, runs: int, budget_s: float) -> dict:
    """:func:`components.common.measure.time_interleaved` in chunks of CHUNK rounds until ``runs``
    rounds or ``budget_s`` seconds (at least MIN_TIMED_RUNS rounds): on a loaded machine a
    multi-thread call waits for a descheduled worker thread now and then (tens of ms), and a fixed
    count of such calls would stretch the section by minutes."""
    import numpy as np

    from components.common import measure

    chunks: dict[str, list] = {k: [] for k in fns}
    done, started = 0, time.perf_counter()
    while done < runs and (done < MIN_TIMED_RUNS or time.perf_counter() - started < budget_s):
        n = min(CHUNK, runs - done)
        for key, values in measure.time_interleaved(fns, 0, n).items():
            chunks[key].append(values)
        done += n
    return {k: np.concatenate(v) for k, v in chunks.items()}


def time_flatbuffers(flatbuffers: dict[str, bytes], example, num_threads: int) -> dict:
    """p50/p95 (ms) of each flatbuffer at batch 1, interleaved in this process after warm-up:
    in the LiteRT interpreter, and the ``before`` and ``after`` ones in ``tf.lite.Interpreter`` too
    (``<key>/tf_lite``)."""
    from components.common import measure, tflite

    runners = {}
    for key, flatbuffer in flatbuffers.items():
        runner = tflite.TFLiteModel(flatbuffer, num_threads=num_threads)
        runner.set_inputs(example)
        runners[key] = runner
        if key.endswith(("/before", "/after")):
            old = TfLiteInterpreter(flatbuffer, num_threads)
            old.set_inputs(example)
            runners[f"{key}/tf_lite"] = old
    fns = {k: r.invoke for k, r in runners.items()}
    warmup = interleaved_within(fns, MAX_TIMED_RUNS // 10, TIMING_BUDGET_S / 5)
    samples = interleaved_within(fns, MAX_TIMED_RUNS, TIMING_BUDGET_S)
    runs, warmup = len(next(iter(samples.values()))), len(next(iter(warmup.values())))
    stats = {k: measure.summarize_ms(v) for k, v in samples.items()}
    return {
        "timed_runs": runs,
        "warmup_runs": warmup,
        "p50_ms": {k: round(s["p50_ms"], 5) for k, s in stats.items()},
        "p95_ms": {k: round(s["p95_ms"], 5) for k, s in stats.items()},
        "mean_ms": {k: round(s["mean_ms"], 5) for k, s in stats.items()},
    }


def run_model(name: str, reference_dir: str, work_dir: str) -> dict:
    """Every flavour of one model converted every way, measured, timed."""
    started = time.perf_counter()
    case = prepare(name, reference_dir, work_dir)
    model, task = case["model"], case["task"]
    keras_outputs = model.predict(case["x_eval"], batch_size=64, verbose=0)
    from components.common import metrics

    record = {
        "what": case["what"],
        "task": task.kind,
        "metric_name": task.metric,
        "eval_examples": len(case["y_eval"]),
        "calibration_samples": len(
            case["calibration"][0]
            if isinstance(case["calibration"], tuple)
            else case["calibration"]
        ),
        "keras_metric": metrics.primary(metrics.summarize(task, keras_outputs, case["y_eval"])),
        "prepare_s": round(time.perf_counter() - started, 1),
        "flatbuffers": {},
    }
    jobs = []  # (flavour, way, converter, arguments)
    for flavour in FLAVOURS:
        jobs.append((flavour, "before", convert_before, (case["saved_model"], flavour)))
        jobs.append((flavour, "after", convert_after, (model, flavour)))
    jobs.append(("full_int8", "tfmot", convert_tfmot, (model, "full_int8")))
    if name == "reference_cnn":
        candidate, candidate_dir = demo_candidate(reference_dir, work_dir)
        jobs.append((DEMO, "before", convert_before, (candidate_dir, "full_int8")))
        jobs.append((DEMO, "after", convert_after, (candidate, "full_int8")))
    flatbuffers, outputs = {}, {}
    for flavour, way, how, args in jobs:
        converted = _convert(how, *args, case["calibration"])
        entry = {"convert_s": converted["convert_s"]}
        if "error" in converted:
            entry["error"] = converted["error"]
        else:
            measured, outputs[(flavour, way)] = measure_flatbuffer(
                converted["flatbuffer"], case, keras_outputs
            )
            entry.update(measured)
            flatbuffers[f"{flavour}/{way}"] = converted["flatbuffer"]
        record["flatbuffers"].setdefault(flavour, {})[way] = entry
    for (flavour, way), out in outputs.items():
        if way != "before" and (flavour, "before") in outputs:
            entry = record["flatbuffers"][flavour][way]
            entry["vs_before"] = agreement(task, out, outputs[(flavour, "before")])
    example = _one_example(case["x_eval"])
    record["timing"] = {}
    for threads in THREADS:
        timing_started = time.perf_counter()
        timing = time_flatbuffers(flatbuffers, example, threads)
        record["timing"][str(threads)] = {k: timing[k] for k in ("timed_runs", "warmup_runs")}
        record["timing"][str(threads)]["wall_s"] = round(time.perf_counter() - timing_started, 1)
        for key, p50 in timing["p50_ms"].items():
            flavour, way, *runtime = key.split("/")
            entry = record["flatbuffers"][flavour][way]
            suffix = "_tf_lite" if runtime else ""
            entry[f"p50_ms_{threads}t{suffix}"] = p50
            entry[f"p95_ms_{threads}t{suffix}"] = timing["p95_ms"][key]
            entry[f"mean_ms_{threads}t{suffix}"] = timing["mean_ms"][key]
    record["wall_s"] = round(time.perf_counter() - started, 1)
    return record


def run(reference_dir: str, work_dir: str, models=MODELS) -> dict:
    """The section: the processor, the settings, one record per model (a failed model is
    recorded with its error beside the others)."""
    from importlib.metadata import version

    out = {
        "processor": processor(),
        "runtime": f"ai-edge-litert {version('ai-edge-litert')}",
        "settings": {
            "calibration_samples": CALIBRATION_SAMPLES,
            "threads": list(THREADS),
            "timing_budget_s": TIMING_BUDGET_S,
            "timed_runs": [MIN_TIMED_RUNS, MAX_TIMED_RUNS],
        },
        "models": {},
    }
    for name in models:
        load = round(os.getloadavg()[0], 2)
        print(f"tflite_speed: {name} ...", file=sys.stderr, flush=True)
        try:
            record = run_model(name, reference_dir, work_dir)
        except Exception as e:  # noqa: BLE001 - one failed model must not hide the others
            record = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
        record["load_average_1m"] = [load, round(os.getloadavg()[0], 2)]
        out["models"][name] = record
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="dir with examples/ and model/")
    parser.add_argument("--work", required=True)
    parser.add_argument("--models", help=f"comma-separated (default: all of {MODELS})")
    args = parser.parse_args(argv)
    models = tuple(args.models.split(",")) if args.models else MODELS
    print(json.dumps(run(os.path.abspath(args.reference), args.work, models), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
