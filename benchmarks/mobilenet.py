"""A real-size model through the pipeline: MobileNetV2, per-step costs, candidates, by-hand ratio.

The case of issue 20: a flat MobileNetV2 (``tf_keras.applications.MobileNetV2(weights=None)``
built on the input tensor, a pooled softmax head, 10 classes; no downloads) trained briefly on
scikit-learn's digits scaled up to ``size x size x 3``, through the local pipeline with a generic
config: prune 0.6, cluster 16, float32 / dynamic-range / full-int8 candidates, a 2-point gate,
a serving push. Each step's wall time is split into load / convert / work / save / measure
(:mod:`benchmarks.step_phases`); the rest of a step's time (the orchestrator: driver, ML
Metadata, publishing) is ``orchestration``.

The by-hand side (a fresh process, the same model, data, layers, schedule, epochs and
calibration samples, the same AutoGraph setting as the pipeline's fine-tuning) prunes, clusters
and converts to full int8 with tfmot and the TFLite converter, and converts the clustered model
once per PTQ mode (the "bare conversion" each Quantizer step is compared with: load the model,
convert, write the file).

Run on its own::

    TF_USE_LEGACY_KERAS=1 python -m benchmarks.mobilenet --work /tmp/mnv2 [--alpha 1.0 --size 224]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.hand_recipe import accuracy_of

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PTQ_MODES = {"float32": "none", "dynamic_range": "dynamic_range", "full_int8": "full_int8"}
CHAIN_STEPS = ("Pruner", "Clusterer", "Quantizer_full_int8")

# What both sides do. The 0.35 case is issue 20's; the 1.0 case is for timing (random weights).
CASES = {
    "mobilenet_v2_035_32": {
        "alpha": 0.35,
        "size": 32,
        "train_examples": None,  # all 1,437
        "eval_examples": None,  # all 360
        "train_epochs": 8,
        "fine_tune_epochs": 4,
        "batch_size": 32,
        "calibration_samples": 100,
    },
    "mobilenet_v2_100_224": {
        "alpha": 1.0,
        "size": 224,
        "train_examples": 64,
        "eval_examples": 64,
        "train_epochs": 0,  # random weights: timing only
        "fine_tune_epochs": 1,
        "batch_size": 16,
        "calibration_samples": 16,
    },
}
SETTINGS = {
    "target_sparsity": 0.6,
    "clusters": 16,
    "prune_learning_rate": 5e-4,
    "cluster_learning_rate": 1e-4,
    "seed": 0,
}


def build_model(alpha: float, size: int, classes: int = 10):
    """Flat MobileNetV2 (the backbone's layers on the input tensor) with a softmax head."""
    import tf_keras

    inputs = tf_keras.Input((size, size, 3), name="image")
    base = tf_keras.applications.MobileNetV2(
        input_tensor=inputs, alpha=alpha, include_top=False, weights=None
    )
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    outputs = tf_keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    for layer in base.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            # The applications' 0.999 needs thousands of steps before the moving statistics
            # (what inference uses) catch up; a few hundred steps here would leave them random.
            layer.momentum = 0.9
    return tf_keras.Model(inputs, outputs, name=f"mobilenetv2_{alpha}_{size}")


def _images(x, size: int):
    """8x8 digits (64 floats) -> size x size x 3, nearest-neighbour, flattened."""
    import numpy as np

    scale = -(-size // 8)
    big = np.kron(x.reshape(-1, 8, 8), np.ones((scale, scale), np.float32))[:, :size, :size]
    return np.repeat(big[..., None], 3, axis=-1).reshape(len(x), -1).astype(np.float32)


def make_inputs(work_dir: str, case: dict) -> dict:
    """Writes ``examples/`` and ``model/`` for a case (trained briefly when train_epochs > 0)."""
    import tf_keras

    from pipelines import reference_data as ref

    x_train, y_train, x_eval, y_eval = ref.digits_splits()
    x_train, y_train = x_train[: case["train_examples"]], y_train[: case["train_examples"]]
    x_eval, y_eval = x_eval[: case["eval_examples"]], y_eval[: case["eval_examples"]]
    size = case["size"]
    x_train, x_eval = _images(x_train, size), _images(x_eval, size)
    examples = os.path.join(work_dir, "examples")
    ref.write_examples(os.path.join(examples, "Split-train", ref.RECORD_FILE), x_train, y_train)
    ref.write_examples(os.path.join(examples, "Split-eval", ref.RECORD_FILE), x_eval, y_eval)
    tf_keras.utils.set_random_seed(SETTINGS["seed"])
    model = build_model(case["alpha"], size)
    model.compile(optimizer=tf_keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    started = time.perf_counter()
    if case["train_epochs"]:
        model.fit(
            x_train.reshape((-1, size, size, 3)), y_train, epochs=case["train_epochs"], verbose=0
        )
    train_s = time.perf_counter() - started
    predictions = model.predict(x_eval.reshape((-1, size, size, 3)), batch_size=64, verbose=0)
    model_dir = os.path.join(work_dir, "model")
    model.save(model_dir, include_optimizer=False, save_format="tf")
    return {
        "examples": examples,
        "model": model_dir,
        "parameters": int(model.count_params()),
        "layers": len(model.layers),
        "train_examples": int(len(y_train)),
        "eval_examples": int(len(y_eval)),
        "train_s": round(train_s, 1),
        "eval_accuracy": float((predictions.argmax(-1) == y_eval).mean()),
    }


def prune_schedule(case: dict) -> dict:
    """The pruning schedule both sides use: polynomial decay from 0 to the target over the first
    half of the fine-tuning steps, masks updated every ``frequency_steps`` (10, or fewer when the
    case has few steps), so the last half recovers at the target sparsity."""
    train = case["train_examples"] or len(_digits_train_labels())
    total = -(-train // case["batch_size"]) * case["fine_tune_epochs"]
    end = max(1, total // 2)
    frequency = max(1, min(10, end // 2))
    return {"begin_step": 0, "end_step": end - end % frequency, "frequency_steps": frequency}


def _digits_train_labels():
    from pipelines import reference_data as ref

    return ref.digits_splits()[1]


def pipeline_config(case: dict, serving_dir: str) -> dict:
    """The generic config of issue 20: prune 0.6, cluster 16, three PTQ candidates, the gate."""
    s = SETTINGS

    def fine_tuning(learning_rate):
        return {
            "epochs": case["fine_tune_epochs"],
            "learning_rate": learning_rate,
            "batch_size": case["batch_size"],
            "seed": s["seed"],
        }

    return {
        "pipeline_name": "bench-mobilenet",
        "enable_cache": False,
        "data": {"label_key": "label", "feature_keys": ["image"]},
        "profiler": {
            "warmup_runs": 5,
            "timed_runs": 50,
            "throughput_runs": 2,
            "measure_memory": False,
        },
        "pruner": {
            "target_sparsity": s["target_sparsity"],
            "schedule": {"kind": "polynomial_decay", **prune_schedule(case)},
            "fine_tuning": fine_tuning(s["prune_learning_rate"]),
        },
        "clusterer": {
            "number_of_clusters": s["clusters"],
            "fine_tuning": fine_tuning(s["cluster_learning_rate"]),
        },
        "quantization": [
            {"mode": mode, "name": name, "representative_samples": case["calibration_samples"]}
            if mode == "full_int8"
            else {"mode": mode, "name": name}
            for name, mode in PTQ_MODES.items()
        ],
        "evaluator": {
            "objective": "smallest",
            "rules": {"max_accuracy_drop_points": 2.0},
            "latency": {"warmup_runs": 10, "timed_runs": 100},
        },
        "pusher": {"model_name": "mobilenet", "serving": [{"base_directory": serving_dir}]},
    }


def run_pipeline_side(inputs: dict, case: dict, out_dir: str) -> dict:
    """Runs the pipeline with the phase recorder on; returns step times and candidates."""
    started = time.perf_counter()
    import components  # noqa: F401 - pins tf_keras
    from benchmarks import step_phases
    from pipelines.config import PipelineConfig
    from pipelines.local.runner import run_local

    recorder = step_phases.instrument()
    config = PipelineConfig.parse(pipeline_config(case, os.path.join(out_dir, "serving")))
    run = run_local(config, inputs["model"], inputs["examples"], out_dir)
    phases = recorder.as_dict()
    steps = {}
    for step in run.steps:
        split = phases.get(step.node_id, {})
        steps[step.node_id] = {
            "wall_s": round(step.duration_s, 3),
            **split,
            "orchestration": round(step.duration_s - sum(split.values()), 3),
        }
    return {
        "steps": steps,
        "total_s": round(time.perf_counter() - started, 3),
        "candidates": _candidates(run),
    }


def _candidates(run) -> dict:
    """:func:`candidates_from` the Evaluator's record of ``run``."""
    from components.common import properties

    [blessing] = run.outputs_of("Evaluator", "blessing") or [None]
    if blessing is None:
        return {}
    return candidates_from(properties.read_json(blessing.uri, "evaluation.json"))


def candidates_from(record: dict) -> dict:
    """Accuracy, size, latency and verdict per model, from an Evaluator record."""
    decision, models = record["decision"], {}
    for entry in [{**record["baseline"], "name": "baseline"}, *record["candidates"]]:
        latency = entry.get("latency_used") or entry.get("latency_measured") or {}
        if entry["name"] == "baseline":
            verdict = "baseline"
        elif entry["name"] == decision["selected"]:
            verdict = "selected" + (" (blessed)" if decision["blessed"] else "")
        else:
            verdict = (
                "eligible"
                if entry.get("eligible")
                else "; ".join(entry.get("rejected_because") or ["not judged"])
            )
        models[entry["name"]] = {
            "accuracy": (entry.get("accuracy") or {}).get("top1_accuracy"),
            "raw_bytes": (entry.get("size") or {}).get("raw_bytes"),
            "gzip_bytes": (entry.get("size") or {}).get("gzip_bytes"),
            "p50_ms": latency.get("p50_ms"),
            "p95_ms": latency.get("p95_ms"),
            "verdict": verdict,
        }
    return {"blessed": decision["blessed"], "selected": decision["selected"], "models": models}


def run_hand_side(inputs: dict, case: dict, out_dir: str) -> dict:
    """Prune -> cluster -> full int8 by hand, then each PTQ mode's bare conversion, timed."""
    started = time.perf_counter()
    # Imported here, all of them, so that import_s counts what the hand side imports.
    import numpy as np  # noqa: F401
    import tensorflow as tf  # noqa: F401
    import tensorflow_model_optimization as tfmot  # noqa: F401
    import tf_keras

    from components.common import legacy_keras

    legacy_keras.skip_autograph_for_tf_keras()  # as the pipeline's fine-tuning does
    timings = {"import_s": time.perf_counter() - started}
    t = time.perf_counter()
    shape = (-1, case["size"], case["size"], 3)
    train = _split(inputs["examples"], "train", shape)
    evaluation = _split(inputs["examples"], "eval", shape)
    model = tf_keras.models.load_model(inputs["model"], compile=False)
    timings["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    stripped, accuracy = _hand_prune(model, train, evaluation, case)
    timings["prune_s"] = time.perf_counter() - t
    t = time.perf_counter()
    final, accuracy["clustered"] = _hand_cluster(stripped, train, evaluation, case)
    timings["cluster_s"] = time.perf_counter() - t
    os.makedirs(out_dir, exist_ok=True)
    final_dir = os.path.join(out_dir, "clustered")
    final.save(final_dir, include_optimizer=False, save_format="tf")
    calibration = train[0][: case["calibration_samples"]]
    for name in PTQ_MODES:
        mode_timings, int8_accuracy = _hand_convert(
            final, final_dir, name, calibration, evaluation, out_dir
        )
        timings.update(mode_timings)
        if int8_accuracy is not None:
            accuracy["tflite_int8"] = int8_accuracy
    timings["total_s"] = time.perf_counter() - started
    return {
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "accuracy": accuracy,
    }


def _prunable():
    import tf_keras

    return (tf_keras.layers.Conv2D, tf_keras.layers.Dense)  # DepthwiseConv2D is a Conv2D


def _hand_fit(model, learning_rate: float, train, evaluation, case: dict, callbacks=()) -> None:
    import tf_keras

    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        *train,
        batch_size=case["batch_size"],
        epochs=case["fine_tune_epochs"],
        validation_data=evaluation,
        callbacks=list(callbacks),
        verbose=0,
    )


def _hand_prune(model, train, evaluation, case: dict):
    """(the stripped pruned model, {"baseline": accuracy, "pruned": accuracy})."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    s = SETTINGS
    prunable = _prunable()
    tf_keras.utils.set_random_seed(s["seed"])
    steps = prune_schedule(case)  # the pipeline's schedule, the toolkit's default power (3)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        0.0,
        s["target_sparsity"],
        begin_step=steps["begin_step"],
        end_step=steps["end_step"],
        frequency=steps["frequency_steps"],
    )
    accuracy = {"baseline": accuracy_of(model, evaluation)}
    pruned = tf_keras.models.clone_model(
        model,
        clone_function=lambda layer: (
            tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
            if isinstance(layer, prunable)
            else layer
        ),
    )
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    _hand_fit(pruned, s["prune_learning_rate"], train, evaluation, case, callbacks)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    accuracy["pruned"] = accuracy_of(stripped, evaluation)
    return stripped, accuracy


def _hand_cluster(model, train, evaluation, case: dict):
    """(the stripped clustered model, its accuracy); depthwise kernels are left unclustered."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    s = SETTINGS
    prunable = _prunable()
    tf_keras.utils.set_random_seed(s["seed"])
    clustering = tfmot.clustering.keras
    clustered = tf_keras.models.clone_model(
        model,
        clone_function=lambda layer: (
            clustering.cluster_weights(layer, number_of_clusters=s["clusters"])
            if isinstance(layer, prunable)
            and not isinstance(layer, tf_keras.layers.DepthwiseConv2D)
            else layer
        ),
    )
    _hand_fit(clustered, s["cluster_learning_rate"], train, evaluation, case)
    final = clustering.strip_clustering(clustered)
    return final, accuracy_of(final, evaluation)


def _hand_convert(final, final_dir: str, name: str, calibration, evaluation, out_dir: str):
    """One PTQ mode: the conversion of the model in memory (for full int8 also its accuracy,
    counted in ``quantize_s``), then the bare conversion a user would write: load the saved model,
    convert, write the file. Returns (timings, the int8 accuracy or None)."""
    import tf_keras

    timings, int8_accuracy = {}, None
    t = time.perf_counter()
    flatbuffer = _convert(final, name, calibration)
    with open(os.path.join(out_dir, f"{name}.tflite"), "wb") as f:
        f.write(flatbuffer)
    timings[f"convert_{name}_s"] = time.perf_counter() - t
    if name == "full_int8":
        int8_accuracy = _tflite_accuracy(flatbuffer, *evaluation)
        timings["quantize_s"] = time.perf_counter() - t
    t = time.perf_counter()
    loaded = tf_keras.models.load_model(final_dir, compile=False)
    with open(os.path.join(out_dir, f"{name}-bare.tflite"), "wb") as f:
        f.write(_convert(loaded, name, calibration))
    timings[f"bare_{name}_s"] = time.perf_counter() - t
    return timings, int8_accuracy


def _split(examples_dir: str, split: str, shape):
    import glob

    import numpy as np
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(examples_dir, f"Split-{split}", "*")))
    size = int(np.prod(shape[1:]))
    spec = {
        "image": tf.io.FixedLenFeature([size], tf.float32),
        "label": tf.io.FixedLenFeature([1], tf.int64),
    }
    xs, ys = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(256):
        parsed = tf.io.parse_example(batch, spec)
        xs.append(parsed["image"].numpy().reshape(shape))
        ys.append(parsed["label"].numpy()[:, 0])
    return np.concatenate(xs), np.concatenate(ys)


def _convert(model, name: str, calibration) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if name != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if name == "full_int8":
        converter.representative_dataset = lambda: (
            [calibration[i : i + 1]] for i in range(calibration.shape[0])
        )
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    return converter.convert()


def _tflite_accuracy(flatbuffer: bytes, x, y) -> float:
    from components.common import tflite

    predictions = tflite.TFLiteModel(flatbuffer).predict_each(x, batch_size=1)
    return float((predictions.argmax(-1) == y).mean())


def _side(side: str, case_name: str, work: str) -> dict:
    """Runs one side in a fresh interpreter; returns its JSON plus the process wall time."""
    command = [sys.executable, "-m", "benchmarks.mobilenet", "--side", side]
    command += ["--case", case_name, "--work", work]
    started = time.perf_counter()
    with open(os.path.join(work, f"{side}.log"), "w") as log:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=log, text=True, check=False, cwd=REPO
        )
    if done.returncode != 0:
        raise RuntimeError(f"{case_name}: the {side} side failed; see {work}/{side}.log")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.perf_counter() - started, 3)
    return result


def run_case(case_name: str, work: str) -> dict:
    """Inputs, then the pipeline and the by-hand side, each in a fresh process; the ratios."""
    os.makedirs(work, exist_ok=True)
    inputs = _side("inputs", case_name, work)
    with open(os.path.join(work, "inputs.json"), "w") as f:
        json.dump(inputs, f)
    load = [round(os.getloadavg()[0], 2)]
    pipeline = _side("pipeline", case_name, work)
    hand = _side("hand", case_name, work)
    load.append(round(os.getloadavg()[0], 2))
    steps, timings = pipeline["steps"], hand["timings_s"]
    chain = sum(steps[s]["wall_s"] for s in CHAIN_STEPS if s in steps)
    by_hand = sum(timings[k] for k in ("prune_s", "cluster_s", "quantize_s"))
    quantizer_vs_bare = {
        name: round(steps[f"Quantizer_{name}"]["wall_s"] / timings[f"bare_{name}_s"], 3)
        for name in PTQ_MODES
        if f"Quantizer_{name}" in steps
    }
    return {
        "case": {**CASES[case_name], **SETTINGS},
        "inputs": inputs,
        "steps": steps,
        "pipeline_total_s": pipeline["total_s"],
        "candidates": pipeline["candidates"],
        "hand": hand,
        "chain_s": {"pipeline": round(chain, 3), "hand": round(by_hand, 3)},
        "chain_ratio": round(chain / by_hand, 3),
        "chain_ratio_target": 1.3,
        "quantizer_vs_bare_conversion": quantizer_vs_bare,
        "quantizer_vs_bare_target": 2.0,
        "load_average_1m": load,
    }


def run(work_dir: str, cases=tuple(CASES)) -> dict:
    """Every case (``make bench``): the 0.35 model of issue 20, then MobileNetV2 1.0 at 224.

    A case that fails is recorded as ``{"error": ...}``; the others keep their results.
    """
    results = {}
    for name in cases:
        try:
            results[name] = run_case(name, os.path.join(work_dir, name))
        except Exception as e:  # noqa: BLE001 - one case's failure is that case's result
            results[name] = {"error": f"{type(e).__name__}: {e}"}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), default="mobilenet_v2_035_32")
    parser.add_argument("--side", choices=("inputs", "pipeline", "hand", "all"), required=True)
    parser.add_argument("--work", required=True, help="the case's directory")
    args = parser.parse_args(argv)
    case = CASES[args.case]
    if args.side == "inputs":
        result = make_inputs(args.work, case)
    elif args.side == "all":
        result = run_case(args.case, args.work)
    else:
        with open(os.path.join(args.work, "inputs.json")) as f:
            inputs = json.load(f)
        out = os.path.join(args.work, args.side)
        if args.side == "pipeline":
            result = run_pipeline_side(inputs, case, out)
        else:
            result = run_hand_side(inputs, case, out)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
