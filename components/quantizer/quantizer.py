"""Quantizing a tf_keras model to a verified TFLite flatbuffer, on plain objects (no TFX here).

Post-training modes convert the model as it is; QAT modes first fine-tune a fake-quant copy
(``tfmot.quantization.keras``), with the collaborative schemes keeping the input's sparsity
and/or clusters. Every flatbuffer is checked before it is returned: it loads in the LiteRT
interpreter (the runtime devices use), runs one eval example and agrees with the Keras model it
came from.

The SavedModel that travels beside the flatbuffer is the input model (post-training modes) or,
for QAT modes, the input architecture carrying the QAT-learned float weights: plain tf_keras
layers that TF Serving runs at float speed and that any later step loads without tfmot (the
fake-quant ranges live in the flatbuffer, which is the deployable). See ``serving_model``.

This module checks the inputs and runs the whole quantization; :mod:`.conversion` converts and
verifies, :mod:`.qat` builds and trains the fake-quant model.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from components.common import (
    artifact_output,
    measure,
    model_io,
    optimization,
    sensitivity,
    signatures,
    tflite,
    training,
)
from components.common import examples as examples_lib
from components.common import metrics as metrics_lib
from components.common import weights as weights_lib
from components.common.errors import (
    ConfigError,
    DataError,
    ModelInputError,
)
from components.common.examples import DataConfig
from components.common.keys import (
    FINE_TUNING_EPOCHS,
    FINE_TUNING_WALL_TIME_S,
    OPTIMIZATION,
    QUANTIZATION_RECORD_FILE,
)
from components.quantizer import conversion, qat
from components.quantizer import flatbuffer as fb_lib
from components.quantizer.config import (
    CALIBRATED_MODES,
    CLUSTER_PRESERVING_MODES,
    DEFAULT_REPRESENTATIVE_SAMPLES,
    INTEGER_MODES,
    QAT_MODES,
    SELECTIVE_MODES,
    SPARSE_MODES,
    SPARSITY_PRESERVING_MODES,
    QuantizerConfig,
)

log = logging.getLogger(__name__)

SERVING_INPUT = "input model"
SERVING_QAT_WEIGHTS = "float model with QAT-learned weights"
SERVING_QAT_MODEL = "QAT Keras model"


@dataclass
class QuantizedModel:
    """A verified flatbuffer, the Keras model to save beside it, and the full record."""

    flatbuffer: bytes
    serving_model: object
    record: dict = field(default_factory=dict)
    # A SavedModel directory holding ``serving_model`` as it is (written by one of our steps,
    # so without optimizer state): ``write`` copies it instead of saving the model again.
    serving_source: str | None = None
    # The input's serving signatures, rebuilt around ``serving_model`` when it is saved anew.
    interface: object = None


# --------------------------------------------------------------------------- checks (cheap)


def _kernel_report(model) -> tuple[list[dict], dict]:
    kernels = weights_lib.kernel_stats(weights_lib.keras_weight_stats(model))
    return kernels, weights_lib.summarize(kernels)


def _is_clustered(kernel: dict, max_values: int) -> bool:
    # Zeros are pruning's, not clustering's, and a small float kernel has few distinct values
    # just by being small: count the distinct non-zero values and require clustering to have at
    # least halved them.
    distinct = kernel["unique_values"] - (1 if kernel["nonzero"] < kernel["count"] else 0)
    return distinct <= max_values and distinct <= kernel["nonzero"] / 2


def _check_layers(model, config: QuantizerConfig) -> None:
    """Every ``exclude_layers`` entry names a layer that computes something (a fused op's joined
    name, ``conv2d+batch_normalization+re_lu`` as records give it, names each of its layers).
    The converted flatbuffer is checked again before it is re-quantized: an entry no op comes
    from is refused there (:func:`components.quantizer.selective.check_excluded`)."""
    layer_map = fb_lib.LayerMap.of(model)
    names = list(layer_map.names)
    usable = [n for n in names if n not in layer_map.opless]
    joined = [e for e in config.exclude_layers if fb_lib.JOIN in e]
    if joined and config.mode in QAT_MODES:
        raise ConfigError(
            f"quantizer.exclude_layers: {joined} join layer names with {fb_lib.JOIN!r} (a fused "
            f"op's name); mode {config.mode!r} excludes single layers: list them one by one "
            f"(layers: {usable})."
        )
    unknown = [
        e for e in config.exclude_layers if any(p not in names for p in e.split(fb_lib.JOIN))
    ]
    if unknown:
        raise ConfigError(
            f"quantizer.exclude_layers names {unknown}, not layers of the model; layers that "
            f"can stay in float: {usable}."
        )
    opless = [
        e for e in config.exclude_layers if all(p in layer_map.opless for p in e.split(fb_lib.JOIN))
    ]
    if opless:
        raise ConfigError(
            f"quantizer.exclude_layers names {opless}, layer(s) with nothing to compute at "
            f"inference (no op to keep in float); layers that can stay in float: {usable}."
        )


def check_inputs(model, examples_uri: str, data: DataConfig, config: QuantizerConfig) -> dict:
    """Every check that needs no training or conversion.

    Returns:
      The input's kernel statistics and the calibration sample size.

    Raises:
      ConfigError / ModelInputError / DataError: naming the field, layer or split at fault.
    """
    mapping = examples_lib.resolve_mapping(examples_uri, data.eval_split, data, model)
    _check_layers(model, config)
    sensitivity.check_fits(config.accuracy_control, getattr(mapping, "task", None), "quantizer")
    kernels, summary = _kernel_report(model)
    mode = config.mode
    if mode in SPARSITY_PRESERVING_MODES and summary["sparsity"] < config.min_input_sparsity:
        raise ModelInputError(
            f"mode {mode!r} keeps the sparsity of a pruned model, but the input's kernels are "
            f"only {summary['sparsity']:.1%} zeros (quantizer.min_input_sparsity is "
            f"{config.min_input_sparsity:.0%}). Prune the model first (Pruner), or use "
            f"{_dense_alternative(mode)}."
        )
    if mode in CLUSTER_PRESERVING_MODES:
        clustered = [k for k in kernels if _is_clustered(k, config.max_cluster_values)]
        if not clustered:
            seen = ", ".join(f"{k['name']}: {k['unique_values']}" for k in kernels[:6])
            raise ModelInputError(
                f"mode {mode!r} keeps the clusters of a clustered model, but no kernel of the "
                f"input is clustered (distinct values per kernel: {seen}; a clustered kernel has "
                f"at most quantizer.max_cluster_values={config.max_cluster_values} distinct "
                "non-zero values). Cluster the model first (Clusterer), or use "
                f"{'pqat' if mode == 'pcqat' else 'qat'}."
            )
    if mode in QAT_MODES:
        examples_lib.resolve_mapping(examples_uri, data.train_split, data, model)
        qat.check_support(model, config)
        float_outputs = [n for n in model.output_names if n in config.exclude_layers]
        if config.integer_only_io and float_outputs:
            # The QAT converter keeps a float output when a float layer produces it.
            raise ModelInputError(
                f"mode {mode!r}: integer_only_io cannot hold while output layer(s) "
                f"{float_outputs} stay in float (quantizer.exclude_layers). Drop one or the other."
            )
    calibration = 0
    if mode in CALIBRATED_MODES:
        available = examples_lib.count_examples(examples_uri, data.train_split)
        wanted = config.representative_samples
        if wanted is not None and wanted > available:
            raise DataError(
                f"quantizer.representative_samples is {wanted} but split "
                f"{data.train_split!r} of the Examples at {examples_uri!r} has only {available} "
                f"examples: set representative_samples <= {available}."
            )
        calibration = wanted or min(DEFAULT_REPRESENTATIVE_SAMPLES, available)
    return {"kernels": summary, "per_kernel": kernels, "calibration_samples": calibration}


def _dense_alternative(mode: str) -> str:
    return {"pcqat": "cqat", "pqat": "qat"}.get(mode) or SPARSE_MODES[mode]


# --------------------------------------------------------------------------- the whole run


def _metric(task, predictions, labels) -> float | None:
    return metrics_lib.primary(metrics_lib.summarize(task, predictions, labels))


def _predict(model, inputs, batch_size: int = 256) -> np.ndarray:
    """Eager batched inference: for a few hundred examples, cheaper than tracing ``predict``."""
    arrays = inputs if isinstance(inputs, tuple) else (inputs,)
    outputs = []
    for start in range(0, arrays[0].shape[0], batch_size):
        part = [a[start : start + batch_size] for a in arrays]
        outputs.append(np.asarray(model(part if len(part) > 1 else part[0], training=False)))
    return np.concatenate(outputs)


def quantize(model, examples_uri: str, data: DataConfig, config: QuantizerConfig, model_uri=None):
    """Quantizes ``model`` (a tf_keras model; not changed) as ``config.mode`` says.

    Returns:
      A :class:`QuantizedModel`: the verified flatbuffer, the Keras model for ``Format-Serving``
      and the record (sizes, I/O types, float ops, verification, accuracy, kernel statistics).
    Raises:
      ConfigError / ModelInputError / DataError: before heavy work, naming what is wrong.
      ConversionVerificationError: when the flatbuffer fails verification (nothing is returned).
    """
    started = time.time()
    mode = config.mode
    facts = check_inputs(model, examples_uri, data, config)
    task = examples_lib.resolve_task(examples_uri, data, model)
    record: dict = {
        "mode": mode,
        "task": task.to_dict(),
        "config": config.model_dump(),
        "input": facts["kernels"],
        "input_kernels": facts["per_kernel"],
    }

    samples = None
    if mode in CALIBRATED_MODES:
        samples, _ = examples_lib.load_arrays(
            examples_uri, data.train_split, data, model, limit=facts["calibration_samples"]
        )
    record["calibration_samples"] = 0 if samples is None else int(_length(samples))

    reference, serving, serving_kind = model, model, SERVING_INPUT
    if mode in QAT_MODES:
        args = training.compile_args(task, model_uri, data.module_file)
        reference, record["fine_tuning"] = qat.train(model, examples_uri, data, config, args)
        serving = qat.float_model_with_qat_weights(model, reference)
        serving_kind = SERVING_QAT_WEIGHTS
        if serving is None:  # an architecture QAT rewrote: keep the QAT model itself
            serving, serving_kind = reference, SERVING_QAT_MODEL
    record["serving_model"] = serving_kind

    # Post-training modes convert the input model's call, QAT modes the model they trained; both
    # with a static input signature (data.tflite_batch_size) where the model allows one.
    converted_at = time.time()
    requantizer = None
    if config.mode in SELECTIVE_MODES and (config.layer_sensitivity or config.accuracy_control):
        first, plan, requantizer = conversion.convert_selective(
            reference, config, samples, data.tflite_batch_size
        )
        if isinstance(requantizer, str):  # the debugger cannot take it: no per-layer errors
            record["layer_sensitivity"] = {"error": requantizer}
            flatbuffer, requantizer = first, None
        else:
            flatbuffer = requantizer.flatbuffer(config.exclude_layers)
    else:
        flatbuffer, plan = conversion.convert(reference, config, samples, data.tflite_batch_size)
    record["conversion_s"] = time.time() - converted_at
    _runner(flatbuffer)  # a flatbuffer the runtime cannot load is a broken conversion
    record["converted_from"] = "keras_call"
    record["tflite_inputs"] = plan.to_dict()
    layer_names = fb_lib.LayerMap.of(model)

    eval_x, eval_y = examples_lib.load_arrays(
        examples_uri, data.eval_split, data, model, limit=config.max_eval_examples
    )
    reference_pred = _predict(reference, eval_x)
    input_pred = reference_pred if reference is model else _predict(model, eval_x)
    before = _metric(task, input_pred, eval_y)
    tflite_pred = None
    if requantizer is not None:
        flatbuffer, tflite_pred, config = _selective(
            requantizer, flatbuffer, config, task, before, eval_x, eval_y, record
        )
    ops = fb_lib.operators(flatbuffer, layer_names)
    conversion.check_integer_ops(ops, config)
    conversion.check_integer_io(flatbuffer, config)

    runner = _runner(flatbuffer)
    if tflite_pred is None:
        tflite_pred = _run_flatbuffer(runner, eval_x)
    after = _metric(task, tflite_pred, eval_y)
    try:
        record["verification"] = conversion.verify(
            tflite_pred,
            reference_pred,
            task,
            config.limits,
            runner.output_dtype,
            config.integer_only_io,
        )
    except conversion.ConversionVerificationError as e:
        # What the gate would have seen, so a reader can tell a broken conversion from a
        # model that only loses a little.
        raise conversion.ConversionVerificationError(
            f"{e} Its {metrics_lib.metric_label(task.metric)} on the eval split: "
            f"{_shown(after)} (the Keras model's: {_shown(before)}).",
            detail=e.detail,
        ) from None
    record["tflite"] = {
        "bytes": len(flatbuffer),
        "gzip_bytes": measure.gzipped_bytes(flatbuffer),
        "input": conversion.io_details(runner.input_details[0]),
        "output": conversion.io_details(runner.output_details[0]),
    }
    record["operators"] = ops
    record["float_ops"] = [fb_lib.describe(op) for op in fb_lib.float_ops(ops)]
    record["conversion_ops"] = len(fb_lib.activation_conversions(ops))

    # The task's metric of the input (before) and of the flatbuffer (after), as every
    # model-in/model-out step records it; metric_worse_by is in the metric's own direction.
    record.update(optimization.metric_fields(task, before, after))
    record["eval_split"], record["eval_examples"] = data.eval_split, int(eval_y.shape[0])
    if serving is not model:
        record["serving_metric"] = _metric(task, _predict(serving, eval_x), eval_y)

    tflite_kernels = fb_lib.kernels(flatbuffer)
    record["tflite_kernels"] = {
        **fb_lib.kernel_summary(tflite_kernels),
        "per_kernel": tflite_kernels,
    }
    record["notes"] = _notes(record, config)
    for note in record["notes"]:
        log.warning("quantizer[%s]: %s", mode, note)
    record["wall_time_s"] = time.time() - started
    return QuantizedModel(flatbuffer=flatbuffer, serving_model=serving, record=record)


def _shown(value) -> str:
    return "unknown" if value is None else f"{value:.4g}"


def _runner(flatbuffer: bytes):
    try:
        return tflite.TFLiteModel(flatbuffer)
    except (ValueError, RuntimeError) as e:
        raise conversion.ConversionVerificationError(
            f"the converted flatbuffer does not load in the LiteRT interpreter: {e}",
            detail=f"the flatbuffer does not load: {str(e)[:160]}",
        ) from None


def _run_flatbuffer(runner, eval_x) -> np.ndarray:
    """The flatbuffer's outputs on the eval examples, one example at a time as a device runs."""
    try:
        return runner.predict_each(eval_x, batch_size=1)
    except (ValueError, RuntimeError) as e:
        raise conversion.ConversionVerificationError(
            f"the converted flatbuffer does not run: {e}",
            detail=f"the flatbuffer does not run: {str(e)[:160]}",
        ) from None


def _selective(requantizer, flatbuffer, config, task, before, eval_x, eval_y, record):
    """Per-layer errors, what sparing the worst layers recovers, and accuracy control.

    Returns:
      (the flatbuffer to keep, its eval outputs, the config with the layers kept in float added
      to ``exclude_layers``).
    """
    excluded = fb_lib.split_names(config.exclude_layers)
    errors = [e for e in requantizer.layer_errors() if not excluded & set(e["layers"])]
    plain_pred = _run_flatbuffer(_runner(flatbuffer), eval_x)
    plain = _metric(task, plain_pred, eval_y)

    def evaluate(spared):
        candidate = requantizer.flatbuffer([*config.exclude_layers, *spared])
        pred = _run_flatbuffer(_runner(candidate), eval_x)
        float_ops = fb_lib.float_ops(fb_lib.operators(candidate, requantizer.layer_names))
        return _metric(task, pred, eval_y), (candidate, pred), {"float_ops": len(float_ops)}

    scores = {e["layer"]: e["rmse_over_scale"] or 0.0 for e in errors}
    control = config.accuracy_control
    if control is None:
        probes = _probe_layers(task, before, plain, errors, evaluate)
        record["layer_sensitivity"] = {
            "method": "tflite_quantization_debugger",
            "metric": task.metric,
            "drop_unit": sensitivity.unit(task),
            "candidate_drop": sensitivity.drop(task, before, plain),
            "layers": _with_probes(errors, probes),
        }
        return flatbuffer, plain_pred, config
    result = sensitivity.search(
        task=task,
        before=before,
        control=control,
        layers=[e["layer"] for e in errors],
        evaluate=evaluate,
        first=(plain, (flatbuffer, plain_pred), {"float_ops": 0}),
        scores=scores,
        what="layers kept in float",
    )
    probes = {
        r["layer"]: {"metric_kept_float": r.get("metric_alone"), "recovered": r.get("recovered")}
        for r in result.ranking
        if "metric_alone" in r
    }
    record["layer_sensitivity"] = {
        "method": "tflite_quantization_debugger",
        "metric": task.metric,
        "drop_unit": sensitivity.unit(task),
        "candidate_drop": result.evaluations[0].drop,
        "layers": _with_probes(errors, probes),
    }
    record["accuracy_control"] = sensitivity.record(result, task, control, "layers kept in float")
    for entry in record["accuracy_control"]["evaluations"]:
        log.info("quantizer accuracy control: %s", entry)
    if not result.within_budget:
        raise sensitivity.reject(result, task, control, "layers kept in float")
    kept, pred = result.state
    spared = result.spared
    if spared:
        config = config.model_copy(update={"exclude_layers": [*config.exclude_layers, *spared]})
    return kept, pred, config


#: Layers whose recovery is measured when the flatbuffer loses metric (no accuracy control).
SENSITIVITY_PROBES = 3


def _probe_layers(task, before, plain, errors, evaluate) -> dict:
    """What keeping each of the worst few layers alone in float recovers, when anything was lost."""
    lost = sensitivity.drop(task, before, plain)
    if lost is None or lost <= 0:
        return {}
    probes = {}
    for entry in errors[:SENSITIVITY_PROBES]:
        metric, _, _ = evaluate([entry["layer"]])
        after = sensitivity.drop(task, before, metric)
        probes[entry["layer"]] = {
            "metric_kept_float": metric,
            "recovered": None if after is None else lost - after,
        }
    return probes


def _with_probes(errors: list[dict], probes: dict) -> list[dict]:
    return [{**e, **probes.get(e["layer"], {})} for e in errors]


def _length(samples) -> int:
    return (samples[0] if isinstance(samples, tuple) else samples).shape[0]


def _notes(record: dict, config: QuantizerConfig) -> list[str]:
    """What a reader must know: optimisations lost, float ops in an integer model."""
    notes = []
    before = record["input"]["sparsity"]
    after = record["tflite_kernels"]["kernel_sparsity"]
    if before >= config.min_input_sparsity and after < before - 0.01:
        keep = "pqat" if config.mode in ("qat", "cqat") else "a sparsity-preserving mode"
        notes.append(
            f"sparsity lost: the input's kernels were {before:.1%} zeros, the flatbuffer's are "
            f"{after:.1%} ({keep} keeps them)."
        )
    clustered = [k for k in record["input_kernels"] if _is_clustered(k, config.max_cluster_values)]
    kept = record["tflite_kernels"]["max_unique_per_channel"]
    # Compared with every input kernel, so a layer left unclustered never raises a false alarm.
    most = max((k["unique_values"] for k in record["input_kernels"]), default=0)
    if clustered and kept > most:
        notes.append(
            f"clusters lost: the input's kernels held at most {most} distinct values, "
            f"the flatbuffer's hold up to {kept} per channel (cqat or pcqat keeps them)."
        )
    if config.mode in SPARSE_MODES and not record["tflite_kernels"]["sparse_encoded_kernels"]:
        notes.append(
            f"mode {config.mode!r}: the converter stored no kernel sparse (it does so only where "
            "that saves space), so the flatbuffer is the dense mode's."
        )
    if record["float_ops"] and config.mode in INTEGER_MODES:
        notes.append(
            f"{len(record['float_ops'])} op(s) left in float by exclude_layers: "
            f"{', '.join(record['float_ops'][:10])}; the model dequantizes around them."
        )
    return notes


def quantize_uri(model_uri: str, examples_uri: str, data: DataConfig, config: QuantizerConfig):
    """:func:`quantize` for the model of an artifact (or a plain SavedModel path)."""
    # Post-training modes only read the model: the branches share one load of it.
    model = model_io.load_keras_model(model_uri, shared=config.mode not in QAT_MODES)
    result = quantize(model, examples_uri, data, config, model_uri=model_uri)
    source = model_io.serving_model_dir(model_uri)
    # The input unchanged, from a step of ours (Format-Serving): copy it rather than save it again
    # (its signatures with it). A checkpoint given by the user may hold optimizer state or other
    # extras: it is saved anew, with its serving signatures rebuilt around the model (checked on
    # the eval examples, read only then).
    copied = (
        result.record["serving_model"] == SERVING_INPUT
        and os.path.basename(source.rstrip("/")) == model_io.SERVING_DIR
    )
    result.interface = signatures.interface_for(
        model_uri, model, None if copied else examples_uri, data
    )
    if copied:
        result.serving_source = source
    else:
        result.interface.check_wrappers(model)
    result.record["serving_signatures"] = result.interface.describe()
    return result


def write(result: QuantizedModel, output_uri: str, record_name: str | None = None) -> dict:
    """Writes the standard layout (and the record as JSON); on failure removes what it wrote.

    ``<output_uri>/Format-Serving/`` (SavedModel), ``<output_uri>/Format-TFLite/model.tflite``
    and, with ``record_name``, ``<output_uri>/<record_name>``.

    Returns:
      The paths written (also stored in the record under ``files``).
    """
    files = {
        "serving_model_dir": os.path.join(output_uri, model_io.SERVING_DIR),
        "tflite_path": os.path.join(output_uri, model_io.TFLITE_DIR, model_io.TFLITE_FILE),
    }
    result.record["files"] = files
    written = artifact_output.write_model(
        output_uri,
        model=result.serving_model,
        serving_source=result.serving_source,
        interface=result.interface,
        flatbuffer=result.flatbuffer,
        json_files={record_name: result.record} if record_name else None,
    )
    if record_name:
        files["record"] = written[record_name]
    return files


def run(
    model_uri: str,
    examples_uri: str,
    output_uri: str,
    config: QuantizerConfig,
    data: DataConfig,
    record_name: str = QUANTIZATION_RECORD_FILE,
) -> dict:
    """Quantizes the model at ``model_uri`` and writes the new model artifact at ``output_uri``.

    Writes ``Format-TFLite/model.tflite``, ``Format-Serving/`` and ``quantization.json`` (the
    record); everything is converted and verified in memory first, so nothing when anything fails.

    Returns:
      The record.
    """
    result = quantize_uri(model_uri, examples_uri, data, config)
    write(result, output_uri, record_name)
    return result.record


def _capped(names: list[str], limit: int = 50) -> list[str]:
    """At most ``limit`` names for a property (the JSON record keeps them all)."""
    return names if len(names) <= limit else [*names[:limit], f"... {len(names) - limit} more"]


def key_numbers(record: dict) -> dict:
    """The figures stored as custom properties on the output Model artifact."""
    lite = record["tflite"]
    verification = record["verification"]
    numbers = {
        OPTIMIZATION: "quantized",
        "mode": record["mode"],
        "tflite_bytes": lite["bytes"],
        "tflite_gzip_bytes": lite["gzip_bytes"],
        "input_dtype": lite["input"]["dtype"],
        "output_dtype": lite["output"]["dtype"],
        "input_scale": lite["input"]["scale"],
        "input_zero_point": lite["input"]["zero_point"],
        "output_scale": lite["output"]["scale"],
        "output_zero_point": lite["output"]["zero_point"],
        "calibration_samples": record["calibration_samples"],
        "float_ops": _capped(record["float_ops"]),
        "float_op_count": len(record["float_ops"]),
        "conversion_ops": record["conversion_ops"],
        "verify_agreement": verification["agreement"],
        "verify_mean_abs_diff": verification["mean_abs_diff"],
        "verify_p95_abs_diff": verification["p95_abs_diff"],
        "verify_max_abs_diff": verification["max_abs_diff"],
        "verify_max_mean_abs_diff": verification["limits"]["max_mean_abs_diff"],
        **optimization.metric_numbers(record),
        "serving_metric": record.get("serving_metric"),
        "eval_examples": record["eval_examples"],
        "input_kernel_sparsity": record["input"]["sparsity"],
        "input_max_unique_values": record["input"]["max_unique_values"],
        "tflite_kernel_sparsity": record["tflite_kernels"]["kernel_sparsity"],
        "tflite_max_unique_per_channel": record["tflite_kernels"]["max_unique_per_channel"],
        "tflite_sparse_encoded_kernels": record["tflite_kernels"]["sparse_encoded_kernels"],
        "serving_model": record["serving_model"],
        "notes": record["notes"] or None,
    }
    control = record.get("accuracy_control")
    if control:
        numbers["layers_kept_float"] = _capped(control["spared"]) or None
        numbers["accuracy_control_evaluations"] = control["evaluations_used"]
        numbers["accuracy_control_drop_before"] = control["drop_before"]
    if "fine_tuning" in record:
        numbers[FINE_TUNING_EPOCHS] = record["fine_tuning"]["epochs_run"]
        numbers[FINE_TUNING_WALL_TIME_S] = record["fine_tuning"]["wall_time_s"]
    return numbers
