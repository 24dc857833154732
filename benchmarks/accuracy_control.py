"""Accuracy control (issue 29): each candidate without and with it, on a few zoo models and on
MobileNetV2 0.35 (32x32, trained briefly on scikit-learn's digits, as :mod:`benchmarks.mobilenet`
builds it).

Per model, two candidates, each without and with ``accuracy_control`` (budget: 1 point, or 5% more
MAE for regression, the default recipe's gate):

- ``int8``: full int8 of the model as it is (the Quantizer; control keeps layers in float);
- ``pruned80``: magnitude pruning to 80% (the Pruner, fine-tuned; control leaves layers dense),
  then full int8 of the result (the drop is the flatbuffer's against the input model).

Recorded per candidate: the task's metric drop against the input model (points, or the relative
MAE increase), the flatbuffer's bytes (raw and gzipped: pruned zeros shrink only the latter), its
batch-1 p50 in the LiteRT interpreter (one thread,
after warm-up), the layers spared, the evaluations spent, and whether the gate's accuracy rule
(the same budget) would pass it. A candidate the step rejects is recorded with its reason.

Run on its own::

    TF_USE_LEGACY_KERAS=1 python -m benchmarks.accuracy_control --work /tmp/ac
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ZOO_MODELS = (
    "mobilenet_block",
    "tiny_layers",
    "text_embedding",
    "binary_sigmoid",
    "regression_linear",
)
MOBILENET = "mobilenet_v2_035_32"
BUDGET_POINTS = 1.0
BUDGET_RELATIVE = 0.05
PRUNE = {"target_sparsity": 0.8, "fine_tuning": {"epochs": 3}}
TIMED_RUNS = 200


def _control(task_kind: str, evaluations: int) -> dict:
    if task_kind == "regression":
        return {"max_relative_error_increase": BUDGET_RELATIVE, "max_evaluations": evaluations}
    return {"max_drop_points": BUDGET_POINTS, "max_evaluations": evaluations}


def _p50_ms(flatbuffer: bytes, example) -> float:
    import numpy as np

    from components.common import measure, tflite

    runner = tflite.TFLiteModel(flatbuffer)
    samples = measure.time_calls(lambda: runner.predict(example), 20, TIMED_RUNS)
    return float(np.percentile(samples, 50))


def _quantized(model_dir, examples, data, exclude, control, task_kind):
    """(record, flatbuffer) of full int8 of the model at ``model_dir``; (failure, None) when the
    step rejects it."""
    import tf_keras

    from components.common.errors import TfxOptError
    from components.quantizer import quantizer
    from components.quantizer.config import QuantizerConfig

    config = {"mode": "full_int8", "exclude_layers": list(exclude)}
    if control:
        config["accuracy_control"] = _control(task_kind, 12)
    model = tf_keras.models.load_model(model_dir, compile=False)
    try:
        result = quantizer.quantize(model, examples, data, QuantizerConfig(**config))
    except TfxOptError as e:
        return {"rejected": f"{getattr(e, 'step', 'error')}: {str(e)[:300]}"}, None
    return result.record, result.flatbuffer


def _entry(task, base_metric, record, flatbuffer, example, spared, evaluations, started) -> dict:
    from components.common import sensitivity

    if flatbuffer is None:
        return {**record, "wall_s": round(time.perf_counter() - started, 1)}
    drop = sensitivity.drop(task, base_metric, record["metric_after"])
    budget = BUDGET_RELATIVE if task.kind == "regression" else BUDGET_POINTS
    return {
        "metric_before": base_metric,
        "metric_after": record["metric_after"],
        "drop": drop,
        "within_rule": drop is not None and drop <= budget + 1e-9,
        "tflite_bytes": len(flatbuffer),
        "tflite_gzip_bytes": record["tflite"]["gzip_bytes"],
        "p50_ms": _p50_ms(flatbuffer, example),
        "spared": spared,
        "evaluations": evaluations,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def run_model(
    name: str, model_dir: str, examples: str, work: str, exclude=(), label_key: str = "label"
) -> dict:
    """Both candidates, without and with accuracy control, for one model."""
    import tf_keras

    from components.common import examples as examples_lib
    from components.common.examples import DataConfig
    from components.pruner import pruner
    from components.pruner.config import PrunerConfig

    data = DataConfig(label_key=label_key)
    model = tf_keras.models.load_model(model_dir, compile=False)
    task = examples_lib.resolve_task(examples, data, model)
    x, _ = examples_lib.load_arrays(examples, data.eval_split, data, model, limit=1)
    out: dict = {"task": task.kind, "metric": task.metric}
    for controlled in (False, True):
        key = "with" if controlled else "without"
        started = time.perf_counter()
        record, flatbuffer = _quantized(model_dir, examples, data, exclude, controlled, task.kind)
        ac = record.get("accuracy_control") or {}
        out.setdefault("int8", {})[key] = _entry(
            task,
            record.get("metric_before"),
            record,
            flatbuffer,
            x,
            ac.get("spared", []),
            ac.get("evaluations_used") if controlled else None,
            started,
        )
        started = time.perf_counter()
        config = {**PRUNE}
        if controlled:
            config["accuracy_control"] = _control(task.kind, 3)
        pruned_dir = os.path.join(work, f"{name}_pruned_{key}")
        prune_record = pruner.run(model_dir, examples, pruned_dir, PrunerConfig(**config), data)
        pac = prune_record.get("accuracy_control") or {}
        pruned_model = os.path.join(pruned_dir, "Format-Serving")
        record, flatbuffer = _quantized(
            pruned_model, examples, data, exclude, controlled, task.kind
        )
        qac = record.get("accuracy_control") or {}
        base = prune_record["metric_before"]
        out.setdefault("pruned80", {})[key] = {
            **_entry(
                task,
                base,
                record,
                flatbuffer,
                x,
                [*pac.get("spared", []), *qac.get("spared", [])],
                pac.get("evaluations_used", 1) + qac.get("evaluations_used", 1)
                if controlled
                else None,
                started,
            ),
            "pruned_metric": prune_record["metric_after"],
            "model_sparsity": prune_record["model_sparsity"],
        }
    return out


def run(work_dir: str, zoo_models=ZOO_MODELS, mobilenet: bool = True) -> dict:
    """The section: one entry per model."""
    from components.common import legacy_keras
    from tests import zoo

    legacy_keras.skip_autograph_for_tf_keras()
    models = {}
    for name in zoo_models:
        case = zoo.BUILDERS[name](os.path.join(work_dir, name))
        label_key = case.config.get("data", {}).get("label_key", "label")
        models[name] = run_model(
            name, case.model_dir, case.examples_dir, work_dir, case.int8_exclude, label_key
        )
    if mobilenet:
        from benchmarks import mobilenet as mobilenet_bench

        inputs = mobilenet_bench.make_inputs(
            os.path.join(work_dir, MOBILENET), mobilenet_bench.CASES[MOBILENET]
        )
        models[MOBILENET] = {
            **run_model(MOBILENET, inputs["model"], inputs["examples"], work_dir),
            "trained": f"{mobilenet_bench.CASES[MOBILENET]['train_epochs']} epochs on digits",
        }
    return {
        "budget": {"points": BUDGET_POINTS, "relative_mae": BUDGET_RELATIVE},
        "pruning": PRUNE,
        "models": models,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--no-mobilenet", action="store_true")
    parser.add_argument("--models", default=",".join(ZOO_MODELS))
    args = parser.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    models = tuple(m for m in args.models.split(",") if m)
    print(json.dumps(run(args.work, models, not args.no_mobilenet), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
