"""Profiling a model on plain paths (no TFX here): size, parameters, compute, latency, memory, accuracy."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from components.common import delegation, measure, model_io, tflite
from components.common import examples as examples_lib
from components.common import flops as flops_lib
from components.common import metrics as metrics_lib
from components.common import weights as weights_lib
from components.common.errors import MeasurementError
from components.common.examples import DataConfig
from components.profiler.config import ProfilerConfig

log = logging.getLogger(__name__)


def _sample_inputs(model, eval_x, batch: int):
    """A batch of real eval inputs when there are some, else zeros of the model's input shapes
    and dtypes (token ids stay integers)."""
    if eval_x is not None:
        arrays = eval_x if isinstance(eval_x, tuple) else (eval_x,)
        reps = int(np.ceil(batch / arrays[0].shape[0]))
        picked = tuple(np.concatenate([a] * reps)[:batch] for a in arrays)
    else:
        specs = examples_lib.input_specs(model)
        dtypes = examples_lib.input_dtypes(model)
        picked = tuple(
            np.zeros([batch, *shape], dtype)
            for (_, shape), dtype in zip(specs, dtypes, strict=True)
        )
    return picked if len(picked) > 1 else picked[0]


def _serving_fn(saved_model_dir: str, model, raw_records=None):
    """The SavedModel's serving signature (what TF Serving runs) and a feed builder for it: model
    inputs as they are, or as serialized tf.Examples for a signature that parses them, or raw
    eval examples (``raw_records()``) for one that parses raw features for a Transform graph."""
    from components.common import signatures

    loaded = model_io.load_saved_model(saved_model_dir)
    fn = loaded.signatures["serving_default"]
    feeds = signatures.serving_feeder(fn, model)
    if feeds is None and raw_records is not None:
        feeds = signatures.serving_feeder(fn, model, raw_records=raw_records())
    if feeds is None:
        raise MeasurementError(
            f"the serving signature of {saved_model_dir!r} takes inputs the profiler cannot "
            "build from the model's inputs (neither the model's call nor a tf.Example parse) "
            "and no raw examples were given (data.raw_examples)",
            detail="serving signature not timed: unknown inputs",
        )
    return loaded, fn, feeds


def _memory(kind: str, path: str, config: ProfilerConfig) -> dict:
    """Runs the memory probe in a fresh interpreter process."""
    cmd = [
        sys.executable,
        "-m",
        "components.profiler.memory_probe",
        "--kind",
        kind,
        "--path",
        path,
        "--num-threads",
        str(config.num_threads),
    ]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def accuracy_record(task, keras_pred, tflite_pred, labels, split: str) -> dict:
    """The task's metrics of the SavedModel and the TFLite flavour on the eval split.

    ``saved_model``/``tflite`` hold the primary metric (named by ``metric``); a multiclass model
    keeps the ``*_top1`` names and per-example correctness older readers use.
    """
    saved = metrics_lib.summarize(task, keras_pred, labels)
    lite = metrics_lib.summarize(task, tflite_pred, labels)
    record = {
        "split": split,
        "examples": int(labels.shape[0]),
        "task": task.kind,
        "metric": task.metric,
        "saved_model": metrics_lib.primary(saved),
        "tflite": metrics_lib.primary(lite),
        "saved_model_metrics": saved,
        "tflite_metrics": lite,
    }
    if task.kind == "multiclass":
        record["saved_model_top1"] = record["saved_model"]
        record["tflite_top1"] = record["tflite"]
        record["correct_tflite"] = (np.argmax(tflite_pred, -1) == labels).astype(int).tolist()
    return record


def _runner(flatbuffer: bytes, num_threads: int) -> tflite.TFLiteModel:
    """The flatbuffer loaded in the LiteRT interpreter (the runtime devices use).

    Raises:
      MeasurementError: it does not load (this model cannot be measured).
    """
    try:
        return tflite.TFLiteModel(flatbuffer, num_threads=num_threads)
    except (ValueError, RuntimeError) as e:
        raise MeasurementError(
            f"the TFLite flatbuffer ({len(flatbuffer)} bytes) does not load in "
            f"the LiteRT interpreter: {e}",
            detail=f"the flatbuffer does not load: {str(e).strip()[:160]}",
        ) from None


def _invoke_once(runner: tflite.TFLiteModel) -> None:
    try:
        runner.invoke()
    except (ValueError, RuntimeError) as e:
        raise MeasurementError(
            f"the TFLite flatbuffer does not run on a batch-1 input: {e}",
            detail=f"the flatbuffer does not run: {str(e).strip()[:160]}",
        ) from None


def prepare(model_uri: str, examples_uri: str | None, data: DataConfig):
    """Cheap checks and loads before any heavy work: returns (saved_model_dir, keras model or None).

    Raises:
      ModelInputError / DataError: naming the path or key that is wrong.
    """
    saved_model_dir = model_io.validate_saved_model(model_uri, require_keras=False)
    keras_model = None
    if os.path.exists(os.path.join(saved_model_dir, model_io.KERAS_METADATA_PB)):
        keras_model = model_io.load_keras_model(model_uri, shared=True)  # read only
    task = None
    if examples_uri is not None and keras_model is not None:
        task = examples_lib.resolve_mapping(examples_uri, data.eval_split, data, keras_model).task
    return saved_model_dir, keras_model, task


def profile_model(
    model_uri: str,
    examples_uri: str | None,
    data: DataConfig,
    config: ProfilerConfig,
    work_dir: str | None = None,
) -> dict:
    """Profiles the model of an artifact (SavedModel, plus its TFLite flavour when it has one).

    Returns:
      The full record (JSON-serializable): sizes, parameters, compute, latency, memory, accuracy.
    Raises:
      ModelInputError / DataError: the model or the Examples are unusable (cheap checks first).
      ConversionError / MeasurementError: the model cannot be converted to TFLite, or its
        flatbuffer does not load or run.
    """
    started = time.time()
    saved_model_dir, keras_model, task = prepare(model_uri, examples_uri, data)
    record: dict = {"model_uri": model_uri, "config": config.model_dump()}
    flatbuffer, tflite_file, record["tflite_inputs"] = _flatbuffer(
        model_uri, saved_model_dir, data.tflite_batch_size
    )
    record["sizes"] = _sizes(saved_model_dir, flatbuffer, tflite_file)
    runner = _runner(flatbuffer, config.num_threads)  # a flatbuffer that cannot run fails first
    record.update(_weights_and_compute(flatbuffer, keras_model, config))
    eval_x = eval_y = None
    if examples_uri is not None and keras_model is not None:
        eval_x, eval_y = examples_lib.load_arrays(
            examples_uri, data.eval_split, data, keras_model, limit=config.max_eval_examples
        )
    record["tflite_io"] = {"input_dtype": runner.input_dtype, "output_dtype": runner.output_dtype}
    record["delegation"] = _delegation(flatbuffer, config.num_threads)
    raw_records = None
    if examples_uri is not None:
        from components.common import signatures

        def raw_records():
            return signatures.serving_records(examples_uri, data)

    record["latency"] = _latency(runner, saved_model_dir, keras_model, eval_x, config, raw_records)
    if config.measure_memory:
        record["memory"] = _memory_record(
            flatbuffer, tflite_file, saved_model_dir, config, work_dir
        )
    if eval_y is not None:
        keras_pred = keras_model.predict(eval_x, batch_size=256, verbose=0)
        tflite_pred = runner.predict_each(eval_x, batch_size=1)
        record["accuracy"] = accuracy_record(
            task, np.asarray(keras_pred), tflite_pred, eval_y, data.eval_split
        )
    record["wall_time_s"] = time.time() - started
    return record


def _flatbuffer(model_uri: str, saved_model_dir: str, batch_size: int | None):
    """(flatbuffer, its file, its input plan): the artifact's own TFLite flavour (e.g. quantized),
    else a float32 conversion of the model's call with a static batch of ``batch_size`` (no file).
    """
    from components.common import conversion

    existing = model_io.tflite_path(model_uri)
    if existing:
        with open(existing, "rb") as f:
            flatbuffer = f.read()
        try:
            plan = conversion.flatbuffer_plan(flatbuffer)
        except (ValueError, RuntimeError) as e:  # unreadable: the runner's load says so next
            plan = {"error": str(e)[:200]}
        return flatbuffer, existing, plan
    flatbuffer, plan = tflite.convert_float32_planned(saved_model_dir, batch_size)
    return flatbuffer, None, plan


def _sizes(saved_model_dir: str, flatbuffer: bytes, tflite_file: str | None) -> dict:
    return {
        "saved_model_bytes": measure.dir_bytes(saved_model_dir),
        "saved_model_gzip_bytes": measure.gzipped_dir_bytes(saved_model_dir),
        "tflite_bytes": len(flatbuffer),
        "tflite_gzip_bytes": measure.gzipped_bytes(flatbuffer),
        "tflite_source": "artifact" if tflite_file else "float32 conversion",
    }


def _weights_and_compute(flatbuffer: bytes, keras_model, config: ProfilerConfig) -> dict:
    """The record's ``tflite_weights``, ``parameters`` and ``compute``: parameters and FLOPs from
    the tf_keras model when there is one, else parameters from the flatbuffer's weights."""
    tflite_weights = [
        weights_lib.tensor_stats(w["name"], w["values"])
        for w in tflite.flatbuffer_weights(flatbuffer)
    ]
    out: dict = {"tflite_weights": {"summary": weights_lib.summarize(tflite_weights)}}
    if keras_model is None:
        out["parameters"] = {**weights_lib.summarize(tflite_weights), "per_tensor": tflite_weights}
        out["compute"] = {"note": "not a tf_keras model: FLOPs not counted"}
        return out
    stats = weights_lib.keras_weight_stats(keras_model)
    kernels = weights_lib.kernel_stats(stats)
    out["parameters"] = {
        **weights_lib.summarize(stats),
        "kernels": weights_lib.summarize(kernels),
        "per_tensor": stats,
    }
    compute = flops_lib.model_flops(keras_model)
    compute["hot_layers"] = flops_lib.hot_layers(compute, config.top_layers)
    out["compute"] = compute
    return out


def _latency(
    runner: tflite.TFLiteModel,
    saved_model_dir: str,
    keras_model,
    eval_x,
    config: ProfilerConfig,
    raw_records=None,
) -> dict:
    """Batch-1 latency of the flatbuffer with ``num_threads`` and with several threads (timed
    interleaved), and of the SavedModel's serving signature when the model is a tf_keras model;
    then the throughput of both at ``throughput_batch_size``."""
    one = _sample_inputs(keras_model, eval_x, 1) if keras_model is not None else None
    if one is None:
        one = tuple(np.zeros(d["shape"][1:], np.float32)[None] for d in runner.input_details)
        one = one if len(one) > 1 else one[0]
    runner.set_inputs(one)
    _invoke_once(runner)
    latency = _tflite_batch1(runner, one, config)
    if keras_model is None:
        latency["throughput"] = {"batch_size": config.throughput_batch_size}
        return latency
    # The loaded SavedModel must outlive its serving function: keep it until the end.
    loaded, serving_fn, feeds = _serving_fn(saved_model_dir, keras_model, raw_records)
    batch1 = feeds(one)
    sm_ms = measure.time_calls(lambda: serving_fn(**batch1), config.warmup_runs, config.timed_runs)
    latency["saved_model_batch1"] = measure.summarize_ms(sm_ms)
    latency["throughput"] = _throughput(runner, serving_fn, feeds, keras_model, eval_x, config)
    del loaded
    return latency


def multi_thread_count(config: ProfilerConfig) -> int:
    """Threads of the multi-thread latency: the configured count, else the CPUs we may use."""
    return config.multi_thread_threads or measure.available_cpus()


def _tflite_batch1(runner: tflite.TFLiteModel, one, config: ProfilerConfig) -> dict:
    """``tflite_batch1`` (``num_threads``) and ``tflite_batch1_multi_thread``: the same input,
    timed interleaved after warm-up, so their ratio is fair; each says its thread count."""
    threads = multi_thread_count(config)
    calls = {"single": runner.invoke}
    multi = None
    if threads != config.num_threads:
        multi = _runner(runner.flatbuffer, threads)
        multi.set_inputs(one)
        _invoke_once(multi)
        calls["multi"] = multi.invoke
    samples = measure.time_interleaved(calls, config.warmup_runs, config.timed_runs)
    single = measure.summarize_ms(samples["single"])
    single["num_threads"] = config.num_threads
    single["samples_ms"] = [round(float(v), 5) for v in samples["single"]]
    latency = {"tflite_batch1": single}
    if multi is None:
        latency["tflite_batch1_multi_thread"] = {
            "num_threads": threads,
            "note": f"not timed: {threads} thread(s), as the latency above",
        }
    else:
        latency["tflite_batch1_multi_thread"] = {
            **measure.summarize_ms(samples["multi"]),
            "num_threads": threads,
        }
    return latency


def _delegation(flatbuffer: bytes, num_threads: int) -> dict:
    """How much of the graph XNNPACK takes (:mod:`components.common.delegation`); a failure to
    tell is recorded, not raised (the flatbuffer itself has loaded and run)."""
    try:
        return delegation.measure_delegation(flatbuffer, num_threads)
    except Exception as e:  # noqa: BLE001 - a record, not a gate
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def _throughput(runner, serving_fn, feeds, keras_model, eval_x, config: ProfilerConfig) -> dict:
    """Examples per second of the flatbuffer and the serving signature at one batch size."""
    batch = config.throughput_batch_size
    throughput = {"batch_size": batch}
    many = _sample_inputs(keras_model, eval_x, batch)
    try:
        if runner.static_batch is None:
            runner.set_inputs(many)
            call = runner.invoke
        else:  # a static batch runs the batch in chunks of it, as a device would
            throughput["tflite_static_batch"] = runner.static_batch

            def call():
                return runner.predict(many)

        ms = measure.time_calls(call, 2, config.throughput_runs)
        throughput["tflite_examples_per_s"] = float(batch / (np.median(ms) / 1e3))
    except (ValueError, RuntimeError) as e:
        throughput["tflite_error"] = str(e)[:200]
    feed = feeds(many)
    ms = measure.time_calls(lambda: serving_fn(**feed), 2, config.throughput_runs)
    throughput["saved_model_examples_per_s"] = float(batch / (np.median(ms) / 1e3))
    return throughput


def _memory_record(
    flatbuffer: bytes,
    tflite_file: str | None,
    saved_model_dir: str,
    config: ProfilerConfig,
    work_dir: str | None,
) -> dict:
    """Peak memory of loading and running each flavour, each in a fresh process."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        if tflite_file is None:
            tflite_file = os.path.join(tmp, "model.tflite")
            with open(tflite_file, "wb") as f:
                f.write(flatbuffer)
        return {
            "tflite": _memory("tflite", tflite_file, config),
            "saved_model": _memory("saved_model", saved_model_dir, config),
        }


def key_numbers(record: dict) -> dict:
    """The figures stored as custom properties on the ModelProfile artifact.

    A profile marked failed (see :mod:`components.common.candidate`) has only its failure.
    """
    if record.get("failed"):
        return {"failed": 1, "failure_step": record.get("step"), "note": record.get("note")}
    sizes = record["sizes"]
    params = record.get("parameters", {})
    lat = record["latency"]["tflite_batch1"]
    out = {
        "saved_model_bytes": sizes["saved_model_bytes"],
        "saved_model_gzip_bytes": sizes["saved_model_gzip_bytes"],
        "tflite_bytes": sizes["tflite_bytes"],
        "tflite_gzip_bytes": sizes["tflite_gzip_bytes"],
        "total_parameters": params.get("total_parameters"),
        "nonzero_parameters": params.get("nonzero_parameters"),
        "sparsity": params.get("sparsity"),
        "kernel_sparsity": params.get("kernels", {}).get("sparsity"),
        "max_unique_values": params.get("kernels", {}).get("max_unique_values"),
        "flops_per_example": record.get("compute", {}).get("flops_per_example"),
        "tflite_input_dtype": record["tflite_io"]["input_dtype"],
        "tflite_static_batch": (record.get("tflite_inputs") or {}).get("batch_size"),
        "latency_mean_ms": lat["mean_ms"],
        "latency_p50_ms": lat["p50_ms"],
        "latency_p90_ms": lat["p90_ms"],
        "latency_p95_ms": lat["p95_ms"],
        "latency_p99_ms": lat["p99_ms"],
        "latency_num_threads": lat.get("num_threads"),
        "saved_model_latency_p50_ms": record["latency"].get("saved_model_batch1", {}).get("p50_ms"),
        "tflite_throughput_eps": record["latency"]["throughput"].get("tflite_examples_per_s"),
    }
    multi = record["latency"].get("tflite_batch1_multi_thread") or {}
    if "p50_ms" in multi:
        out["multi_thread_latency_p50_ms"] = multi["p50_ms"]
        out["multi_thread_num_threads"] = multi["num_threads"]
    out.update(delegation_numbers(record.get("delegation")))
    memory = record.get("memory", {})
    for kind in ("tflite", "saved_model"):
        if "peak_rss_bytes" in memory.get(kind, {}):
            out[f"{kind}_peak_rss_bytes"] = memory[kind]["peak_rss_bytes"]
            out[f"{kind}_model_peak_rss_bytes"] = memory[kind]["model_peak_rss_bytes"]
    if "accuracy" in record:
        acc = record["accuracy"]
        saved = acc.get("saved_model", acc.get("saved_model_top1"))
        lite = acc.get("tflite", acc.get("tflite_top1"))
        out["task"] = acc.get("task", "multiclass")
        out["metric"] = acc.get("metric", "top1_accuracy")
        out["metric_value"] = saved
        out["tflite_metric_value"] = lite
        if metrics_lib.is_accuracy(out["metric"]):
            out["accuracy"] = saved
            out["tflite_accuracy"] = lite
        out["eval_examples"] = acc["examples"]
    return out


def delegation_numbers(record: dict | None) -> dict:
    """The delegation record's key numbers: XNNPACK's share of the nodes, its partitions and how
    many nodes run on the default kernels."""
    if not record or "delegated_share" not in record:
        return {}
    return {
        "xnnpack_delegated_share": record["delegated_share"],
        "xnnpack_partitions": record["partitions"],
        "xnnpack_fallback_nodes": sum(record["fallback_ops"].values()),
    }
