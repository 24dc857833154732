"""Quantizing a tf_keras model to a verified TFLite flatbuffer, on plain objects (no TFX here).

Post-training modes convert the model as it is; QAT modes first fine-tune a fake-quant copy
(``tfmot.quantization.keras``), with the collaborative schemes keeping the input's sparsity
and/or clusters. Every flatbuffer is checked before it is returned: it loads in
``tf.lite.Interpreter``, runs one eval example and agrees with the Keras model it came from.

The SavedModel that travels beside the flatbuffer is the input model (post-training modes) or,
for QAT modes, the input architecture carrying the QAT-learned float weights: plain tf_keras
layers that TF Serving runs at float speed and that any later step loads without tfmot (the
fake-quant ranges live in the flatbuffer, which is the deployable). See ``serving_model``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from components.common import examples as examples_lib
from components.common import measure, model_io, properties, tflite, training
from components.common import metrics as metrics_lib
from components.common import weights as weights_lib
from components.common.errors import (
    CandidateError,
    ConfigError,
    ConversionError,
    DataError,
    ModelInputError,
)
from components.common.examples import DataConfig
from components.quantizer import flatbuffer as fb_lib
from components.quantizer.config import (
    CALIBRATED_MODES,
    CLUSTER_PRESERVING_MODES,
    DEFAULT_REPRESENTATIVE_SAMPLES,
    INTEGER_MODES,
    QAT_MODES,
    SPARSE_MODES,
    SPARSITY_PRESERVING_MODES,
    QuantizerConfig,
)

log = logging.getLogger(__name__)

SERVING_INPUT = "input model"
SERVING_QAT_WEIGHTS = "float model with QAT-learned weights"
SERVING_QAT_MODEL = "QAT Keras model"


class VerificationError(CandidateError):
    """The converted flatbuffer does not run, or disagrees with its Keras model beyond tolerance."""

    step = "verification"


@dataclass
class QuantizedModel:
    """A verified flatbuffer, the Keras model to save beside it, and the full record."""

    flatbuffer: bytes
    serving_model: object
    record: dict = field(default_factory=dict)
    # A SavedModel directory holding ``serving_model`` as it is (written by one of our steps,
    # so without optimizer state): ``write`` copies it instead of saving the model again.
    serving_source: str | None = None


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
    names = [layer.name for layer in model.layers]
    unknown = [n for n in config.exclude_layers if n not in names]
    if unknown:
        raise ConfigError(
            f"quantizer.exclude_layers names {unknown}, not layers of the model (layers: {names})."
        )


def _check_qat_support(model, config: QuantizerConfig) -> None:
    """Names the layers tfmot cannot quantize, before any training starts."""
    import tf_keras

    if not (isinstance(model, tf_keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ModelInputError(
            f"mode {config.mode!r} needs a Sequential or functional tf_keras model; "
            f"{type(model).__name__} is subclassed. Rebuild it with the functional API, or use a "
            "post-training mode (full_int8, int16x8)."
        )
    lambdas = [x.name for x in model.layers if isinstance(x, tf_keras.layers.Lambda)]
    if lambdas:
        # tfmot rebuilds the model from its config, and tf_keras refuses to deserialize Python
        # code from a Lambda config (safe mode), excluded or not.
        raise ModelInputError(
            f"mode {config.mode!r}: Lambda layer(s) {lambdas} cannot go through quantization-aware "
            "training (tfmot rebuilds the model from its config, which a Lambda does not survive "
            "safely). Rewrite them as registered custom layers, or use a post-training mode "
            "(full_int8 with exclude_layers)."
        )
    default = _scheme("qat").get_quantize_registry()
    registry = _scheme(config.mode).get_quantize_registry()
    unsupported = []
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.InputLayer) or layer.name in config.exclude_layers:
            continue
        if not (default.supports(layer) and registry.supports(layer)):
            unsupported.append(f"{layer.name} ({type(layer).__name__})")
    if unsupported:
        raise ModelInputError(
            f"mode {config.mode!r}: tfmot cannot quantize layer(s) {', '.join(unsupported)}. "
            "Leave them in float with quantizer.exclude_layers, or use a post-training mode."
        )


def check_inputs(model, examples_uri: str, data: DataConfig, config: QuantizerConfig) -> dict:
    """Every check that needs no training or conversion.

    Returns:
      The input's kernel statistics and the calibration sample size.

    Raises:
      ConfigError / ModelInputError / DataError: naming the field, layer or split at fault.
    """
    examples_lib.resolve_mapping(examples_uri, data.eval_split, data, model)
    _check_layers(model, config)
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
        _check_qat_support(model, config)
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


# --------------------------------------------------------------------------- QAT


def _scheme(mode: str):
    import tensorflow_model_optimization as tfmot

    combine = tfmot.experimental.combine
    if mode == "pqat":
        return combine.Default8BitPrunePreserveQuantizeScheme()
    if mode == "cqat":
        return combine.Default8BitClusterPreserveQuantizeScheme()
    if mode == "pcqat":
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def _annotate(model, exclude: list[str]):
    """The model with every layer but ``exclude`` annotated for quantization (weights kept)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    quant = tfmot.quantization.keras
    if not exclude:
        return quant.quantize_annotate_model(model)

    def annotate(layer):
        copy = layer.__class__.from_config(layer.get_config())
        return copy if layer.name in exclude else quant.quantize_annotate_layer(copy)

    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    return annotated


def _train_qat(model, examples_uri: str, data: DataConfig, config: QuantizerConfig, args=None):
    """Builds the fake-quant model for the mode and fine-tunes it; returns (model, fit record)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from components.common import distillation, optimization

    tuning = config.fine_tuning
    training.skip_autograph_for_tf_keras()
    train_ds, eval_ds, _ = optimization.datasets(examples_uri, data, model, tuning)
    tf_keras.utils.set_random_seed(tuning.seed)
    if args is None:
        args = training.CompileArgs.default(training.classifier_task(model))
    strategy = training.make_local_strategy(tuning.strategy)
    with strategy.scope():
        try:
            qat_model = tfmot.quantization.keras.quantize_apply(
                _annotate(model, config.exclude_layers), _scheme(config.mode)
            )
        except (ValueError, RuntimeError) as e:
            raise ModelInputError(
                f"mode {config.mode!r}: tfmot could not build the quantization-aware model: "
                f"{str(e)[:400]}. Leave the layer in float with quantizer.exclude_layers."
            ) from None
        # With fine_tuning.distillation, the input model guides the QAT model as a teacher.
        trainer = distillation.guided(qat_model, model, tuning, args.task)
        # The QAT wrapper hides the output activation, so the loss is chosen from the input.
        training.compile_for_task(trainer, tuning, args)
    validation = eval_ds if tuning.early_stopping_patience else None
    fit = training.fit(
        trainer, train_ds, validation, tuning, name=f"quantizer[{config.mode}]", task=args.task
    )
    fit["teacher"] = training.teacher_record(tuning)
    return qat_model, fit


def _short_name(weight) -> str:
    return weight.name.split("/")[-1].split(":")[0]


def float_model_with_qat_weights(input_model, qat_model):
    """The input architecture holding the weights QAT computes with, or None if they don't map.

    The weights are the ones the fake-quant ops see at inference: the trained float variables,
    masked where a sparsity-preserving quantizer masks them (cluster-preserving quantizers
    already write clustered values into the variables). So zeros and clusters the flatbuffer
    keeps are in this model too.
    """
    import tf_keras

    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        if inner is None:
            by_layer[layer.name] = {_short_name(w): w.numpy() for w in layer.weights}
            continue
        # The wrapper takes the quantized weights (kernels) out of the inner layer's weights.
        values = {_short_name(w): w.numpy() for w in inner.weights}
        for weight, _, qvars in getattr(layer, "_weight_vars", []):
            value = weight.numpy()
            if isinstance(qvars, dict) and "sparsity_mask" in qvars:
                value = value * np.asarray(qvars["sparsity_mask"], dtype=value.dtype)
            values[_short_name(weight)] = value
        by_layer[inner.name] = values
    float_model = tf_keras.models.clone_model(input_model)
    for layer in float_model.layers:
        if not layer.weights:
            continue
        found = by_layer.get(layer.name, {})
        values = [found.get(_short_name(w)) for w in layer.weights]
        if any(
            v is None or v.shape != tuple(w.shape)
            for v, w in zip(values, layer.weights, strict=True)
        ):
            log.warning("QAT weights of layer %r do not map onto the input model", layer.name)
            return None
        layer.set_weights(values)
    return float_model


# --------------------------------------------------------------------------- conversion


def _representative(samples):
    """A representative-dataset generator yielding one example at a time."""
    arrays = samples if isinstance(samples, tuple) else (samples,)

    def generate():
        for i in range(arrays[0].shape[0]):
            yield [a[i : i + 1].astype(np.float32) for a in arrays]

    return generate


def _converter(model, config: QuantizerConfig, samples, allow_float: bool):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    mode = config.base_mode
    if mode != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if config.mode in SPARSE_MODES:
        # The pruned zeros stored sparse (XNNPACK / TFLite sparse kernels where there are some).
        converter.optimizations = [*converter.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in CALIBRATED_MODES:
        converter.representative_dataset = _representative(samples)
    if mode == "full_int8":
        # Float fallback stays allowed: the converter leaves an op without an int8 kernel in float
        # even with TFLITE_BUILTINS_INT8 alone, so the shipped operators are checked afterwards.
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + ([builtins] if allow_float else [])
        converter.target_spec.supported_ops = ops
    elif mode == "int16x8":
        int16 = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        converter.target_spec.supported_ops = [int16] + ([builtins] if allow_float else [])
    else:
        converter.target_spec.supported_ops = [builtins]
    if config.integer_only_io:
        io_type = tf.int16 if mode == "int16x8" else tf.int8
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    return converter


def _convert(converter, config: QuantizerConfig) -> bytes:
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - ConverterError and friends
        text = str(e).strip()
        ops = tflite.unsupported_ops(text)
        which = f" (op(s) without a kernel for this mode: {', '.join(ops)})" if ops else ""
        hint = "Leave the layer(s) in float with quantizer.exclude_layers"
        if config.mode == "int16x8":
            hint += ", or use mode full_int8"
        last = (text.splitlines()[-1] if text else type(e).__name__).rstrip(".")
        raise ConversionError(
            f"mode {config.mode!r}: TFLite conversion failed{which}: {last[:400]}. {hint}.",
            detail=f"mode {config.mode}: {last[:160]}",
        ) from None


def _excluded_nodes(flatbuffer: bytes, layer_names, exclude: list[str]) -> list[str]:
    return [
        op["output"]
        for op in fb_lib.operators(flatbuffer, layer_names)
        if op["layer"] in exclude and op["op"] not in fb_lib.CONVERSION_OPS
    ]


def _convert_full_int8_excluding(model, config: QuantizerConfig, samples, first: bytes) -> bytes:
    """Requantizes with the excluded layers' ops denylisted, so they stay float (selective PTQ)."""
    import tensorflow as tf

    nodes = _excluded_nodes(first, [layer.name for layer in model.layers], config.exclude_layers)
    if not nodes:
        return first
    converter = _converter(model, config, samples, allow_float=True)
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=nodes, fully_quantize=config.integer_only_io
    )
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=_representative(samples), debug_options=options
    )
    return debugger.get_nondebug_quantized_model()


def convert(model, config: QuantizerConfig, samples=None) -> bytes:
    """The flatbuffer for ``config.mode`` (``model`` is the QAT model for QAT modes)."""
    allow_float = bool(config.exclude_layers)
    flatbuffer = _convert(_converter(model, config, samples, allow_float), config)
    if config.base_mode == "full_int8" and config.exclude_layers:
        flatbuffer = _convert_full_int8_excluding(model, config, samples, flatbuffer)
    return flatbuffer


def check_integer_ops(ops: list[dict], config: QuantizerConfig) -> None:
    """Integer modes promise integer compute: an op left in float must come from an excluded layer.

    Raises:
      ModelInputError: naming each float op and its layer, and what to do.
    """
    if config.mode not in INTEGER_MODES:
        return
    stray = [op for op in fb_lib.float_ops(ops) if op["layer"] not in config.exclude_layers]
    if not stray:
        return
    named = ", ".join(fb_lib.describe(op) for op in stray)
    layers = sorted({op["layer"] for op in stray if op["layer"]})
    bits = "16x8-bit" if config.mode == "int16x8" else "int8"
    other = "full_int8" if config.mode == "int16x8" else "int16x8"
    raise ConversionError(
        f"mode {config.mode!r}: op(s) {named} have no {bits} kernel and would run in float, "
        f"dequantizing around them. Try mode {other!r}, or leave the layer(s) in float with "
        f"quantizer.exclude_layers: {layers or '[the layer producing it]'}.",
        detail=f"mode {config.mode}: {named} left in float (no {bits} kernel)",
    )


def check_integer_io(flatbuffer: bytes, config: QuantizerConfig) -> None:
    """``integer_only_io`` is a promise to integer-only accelerators: the converter must keep it.

    Raises:
      ModelInputError: naming the tensor that stayed float.
    """
    if not config.integer_only_io:
        return
    runner = tflite.TFLiteModel(flatbuffer)
    for kind, details in (("input", runner.input_details), ("output", runner.output_details)):
        for detail in details:
            if not np.issubdtype(detail["dtype"], np.integer):
                dtype = np.dtype(detail["dtype"]).name
                raise ConversionError(
                    f"mode {config.mode!r}: integer_only_io was asked for but the flatbuffer's "
                    f"{kind} {detail['name']!r} stayed {dtype} (a layer "
                    "left in float produces or consumes it). Drop integer_only_io or that "
                    "layer's exclusion.",
                    detail=f"integer_only_io: {kind} {detail['name']!r} stayed {dtype}",
                )


def _io_details(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    return {
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": [int(d) for d in detail["shape_signature"]],
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def _first(inputs):
    if isinstance(inputs, tuple):
        return tuple(a[:1] for a in inputs)
    return inputs[:1]


def verify(flatbuffer: bytes, keras_model, example, tolerance: float, task=None) -> dict:
    """Loads the flatbuffer, runs one example, and compares it with the Keras model.

    Per task: classification outputs are compared as probabilities (softmax/sigmoid of logits),
    regression outputs as values, relative to max(1, |Keras output|).

    Raises:
      VerificationError: when it does not load or run, or differs beyond the tolerance.
    """
    try:
        runner = tflite.TFLiteModel(flatbuffer)
        got = runner.predict(example)
    except (ValueError, RuntimeError) as e:
        raise VerificationError(
            f"the converted flatbuffer does not run: {e}",
            detail=f"the flatbuffer does not run: {str(e)[:160]}",
        ) from None
    expected = np.asarray(keras_model(example, training=False), dtype=np.float32)
    if got.shape != expected.shape:
        raise VerificationError(
            f"the flatbuffer's output shape {got.shape} differs from the Keras model's "
            f"{expected.shape}.",
            detail=f"output shape {got.shape} != {expected.shape}",
        )
    compared = "outputs"
    if task is not None:
        got = metrics_lib.comparable_outputs(task, got)
        expected = metrics_lib.comparable_outputs(task, expected)
        compared = "values" if task.kind == "regression" else "probabilities"
    diff = float(np.max(np.abs(got - expected)))
    allowed = tolerance * max(1.0, float(np.max(np.abs(expected))))
    result = {
        "examples": 1,
        "compared": compared,
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "allowed_abs_diff": allowed,
        "passed": diff <= allowed,
    }
    if not result["passed"]:
        raise VerificationError(
            f"the flatbuffer's output differs from the Keras model by {diff:.4g} on one eval "
            f"example (allowed {allowed:.4g}). The model is too sensitive for this mode: try "
            "int16x8 or a QAT mode, exclude sensitive layers, or raise quantizer.verify_tolerance.",
            detail=f"max abs diff {diff:.3g} > {allowed:.3g}",
        )
    return result


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
      VerificationError: when the flatbuffer fails verification (nothing is returned).
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
        reference, record["fine_tuning"] = _train_qat(model, examples_uri, data, config, args)
        serving = float_model_with_qat_weights(model, reference)
        serving_kind = SERVING_QAT_WEIGHTS
        if serving is None:  # an architecture QAT rewrote: keep the QAT model itself
            serving, serving_kind = reference, SERVING_QAT_MODEL
    record["serving_model"] = serving_kind

    converted_at = time.time()
    flatbuffer = convert(reference, config, samples)
    record["conversion_s"] = time.time() - converted_at
    layer_names = [layer.name for layer in model.layers]
    ops = fb_lib.operators(flatbuffer, layer_names)
    check_integer_ops(ops, config)
    check_integer_io(flatbuffer, config)

    eval_x, eval_y = examples_lib.load_arrays(
        examples_uri, data.eval_split, data, model, limit=config.max_eval_examples
    )
    record["verification"] = verify(flatbuffer, reference, _first(eval_x), config.tolerance, task)

    runner = tflite.TFLiteModel(flatbuffer)
    record["tflite"] = {
        "bytes": len(flatbuffer),
        "gzip_bytes": measure.gzipped_bytes(flatbuffer),
        "input": _io_details(runner.input_details[0]),
        "output": _io_details(runner.output_details[0]),
    }
    record["operators"] = ops
    record["float_ops"] = [fb_lib.describe(op) for op in fb_lib.float_ops(ops)]
    record["conversion_ops"] = len(fb_lib.activation_conversions(ops))

    tflite_pred = runner.predict_each(eval_x, batch_size=1)
    accuracy = {
        "split": data.eval_split,
        "examples": int(eval_y.shape[0]),
        "metric": task.metric,
        "tflite_top1": _metric(task, tflite_pred, eval_y),
        "input_top1": _metric(task, _predict(model, eval_x), eval_y),
    }
    # "drop": how much worse the flatbuffer is than its input, in the metric's own direction.
    accuracy["drop"] = metrics_lib.worse_by(task, accuracy["input_top1"], accuracy["tflite_top1"])
    if serving is not model:
        accuracy["serving_top1"] = _metric(task, _predict(serving, eval_x), eval_y)
    record["accuracy"] = accuracy

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
    # The input unchanged, from a step of ours (Format-Serving): copy it rather than save it again.
    # A checkpoint given by the user may hold optimizer state or other extras: it is saved anew.
    if (
        result.record["serving_model"] == SERVING_INPUT
        and os.path.basename(source.rstrip("/")) == model_io.SERVING_DIR
    ):
        result.serving_source = source
    return result


def write(result: QuantizedModel, output_uri: str, record_name: str | None = None) -> dict:
    """Writes the standard layout (and the record as JSON); on failure removes what it wrote.

    ``<output_uri>/Format-Serving/`` (SavedModel), ``<output_uri>/Format-TFLite/model.tflite``
    and, with ``record_name``, ``<output_uri>/<record_name>``.

    Returns:
      The paths written (also stored in the record under ``files``).
    """
    import tensorflow as tf

    files = {
        "serving_model_dir": os.path.join(output_uri, model_io.SERVING_DIR),
        "tflite_path": os.path.join(output_uri, model_io.TFLITE_DIR, model_io.TFLITE_FILE),
    }
    result.record["files"] = files
    try:
        if result.serving_source:
            model_io.copy_serving_model(result.serving_source, output_uri)
        else:
            model_io.save_keras_model(result.serving_model, output_uri)
        model_io.write_tflite(result.flatbuffer, output_uri)
        if record_name:
            files["record"] = properties.write_json(output_uri, record_name, result.record)
    except BaseException:
        # Nothing half-written may stay in the output artifact.
        for name in (model_io.SERVING_DIR, model_io.TFLITE_DIR, record_name):
            path = os.path.join(output_uri, name) if name else None
            if path and tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            elif path and tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
        raise
    return files


def _capped(names: list[str], limit: int = 50) -> list[str]:
    """At most ``limit`` names for a property (the JSON record keeps them all)."""
    return names if len(names) <= limit else [*names[:limit], f"... {len(names) - limit} more"]


def key_numbers(record: dict) -> dict:
    """The figures stored as custom properties on the output Model artifact."""
    lite = record["tflite"]
    accuracy = record["accuracy"]
    verification = record["verification"]
    numbers = {
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
        "verify_tolerance": verification["tolerance"],
        "verify_max_abs_diff": verification["max_abs_diff"],
        "metric": accuracy.get("metric", "top1_accuracy"),
        "accuracy": accuracy["tflite_top1"],
        "input_accuracy": accuracy["input_top1"],
        "accuracy_drop": accuracy["drop"],
        "serving_accuracy": accuracy.get("serving_top1"),
        "eval_examples": accuracy["examples"],
        "input_kernel_sparsity": record["input"]["sparsity"],
        "input_max_unique_values": record["input"]["max_unique_values"],
        "tflite_kernel_sparsity": record["tflite_kernels"]["kernel_sparsity"],
        "tflite_max_unique_per_channel": record["tflite_kernels"]["max_unique_per_channel"],
        "tflite_sparse_encoded_kernels": record["tflite_kernels"]["sparse_encoded_kernels"],
        "serving_model": record["serving_model"],
        "notes": record["notes"] or None,
    }
    if "fine_tuning" in record:
        numbers["fine_tuning_epochs"] = record["fine_tuning"]["epochs_run"]
        numbers["fine_tuning_wall_time_s"] = record["fine_tuning"]["wall_time_s"]
    return numbers
