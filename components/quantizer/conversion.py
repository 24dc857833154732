"""Converting a tf_keras model to a TFLite flatbuffer for one mode, and verifying the result.

Every flatbuffer is checked before it is used: integer modes keep integer compute (and integer
I/O when asked), and the flatbuffer loads in the LiteRT interpreter and agrees with the Keras model
it came from on the eval examples, as the task reads its outputs (:mod:`.verification`).
"""

from __future__ import annotations

import numpy as np

from components.common import tflite
from components.common.errors import ConversionError
from components.quantizer import flatbuffer as fb_lib
from components.quantizer import selective, verification
from components.quantizer.config import (
    CALIBRATED_MODES,
    INTEGER_MODES,
    SPARSE_MODES,
    QuantizerConfig,
)

# Raised by verify; importable from here, beside the conversion it judges.
from components.quantizer.verification import ConversionVerificationError  # noqa: F401


def representative_dataset(samples):
    """A representative-dataset generator yielding one example at a time, in its input's dtype
    (float32 features, integer token ids)."""
    arrays = samples if isinstance(samples, tuple) else (samples,)
    arrays = tuple(
        a if np.issubdtype(a.dtype, np.integer) else a.astype(np.float32) for a in arrays
    )

    def generate():
        for i in range(arrays[0].shape[0]):
            yield [a[i : i + 1] for a in arrays]

    return generate


def _converter(model, config: QuantizerConfig, samples, allow_float: bool, batch_size=1):
    import tensorflow as tf

    from components.common import conversion as common_conversion

    converter, _ = common_conversion.converter(model, batch_size)
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
        converter.representative_dataset = representative_dataset(samples)
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


def _convert(converter, config: QuantizerConfig, plan=None) -> bytes:
    from components.common import conversion as common_conversion

    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - ConverterError and friends
        text = str(e).strip()
        ops = tflite.unsupported_ops(text)
        which = f" (op(s) without a kernel for this mode: {', '.join(ops)})" if ops else ""
        hint = "Leave the layer(s) in float with quantizer.exclude_layers"
        if config.mode == "int16x8":
            hint += ", or use mode full_int8"
        hint = common_conversion.static_batch_hint(ops, plan) or hint
        last = (text.splitlines()[-1] if text else type(e).__name__).rstrip(".")
        raise ConversionError(
            f"mode {config.mode!r}: TFLite conversion failed{which}: {last[:400]}. {hint}.",
            detail=f"mode {config.mode}: {last[:160]}",
        ) from None


def requantizer(model, config: QuantizerConfig, samples, first: bytes, batch_size=1):
    """A :class:`~components.quantizer.selective.Requantizer` for ``model`` (full int8): one
    calibration, then any layers kept in float (selective PTQ) and each layer's error."""
    converter = _converter(model, config, samples, True, batch_size)
    n = selective.DEBUG_SAMPLES
    debug = tuple(a[:n] for a in samples) if isinstance(samples, tuple) else samples[:n]
    return selective.Requantizer(
        converter,
        first,
        fb_lib.LayerMap.of(model),
        representative_dataset(debug),
        config.integer_only_io,
    )


def convert(model, config: QuantizerConfig, samples=None, batch_size: int | None = 1):
    """The flatbuffer for ``config.mode`` (``model`` is the QAT model for QAT modes), converted
    from the model's call with a static batch of ``batch_size`` where the model allows one
    (:mod:`components.common.conversion`).

    Returns:
      (flatbuffer, the :class:`~components.common.conversion.InputPlan` it was converted with).
    """
    from components.common import conversion as common_conversion

    plan = common_conversion.plan_inputs(model, batch_size)
    if config.base_mode in CALIBRATED_MODES:
        check_calibratable(model, config, batch_size)
    allow_float = bool(config.exclude_layers)
    converter = _converter(model, config, samples, allow_float, batch_size)
    flatbuffer = _convert(converter, config, plan)
    if config.base_mode == "full_int8" and config.exclude_layers:
        flatbuffer = requantizer(model, config, samples, flatbuffer, batch_size).flatbuffer(
            config.exclude_layers
        )
    return flatbuffer, plan


def convert_selective(model, config: QuantizerConfig, samples, batch_size: int | None = 1):
    """Full int8 with layers to keep in float chosen afterwards: the flatbuffer with nothing kept
    in float, its input plan, and a :class:`~components.quantizer.selective.Requantizer` (one
    calibration) for the flatbuffers with layers in float and the per-layer errors.

    Returns:
      (flatbuffer with nothing excluded, plan, requantizer); in place of the requantizer, why the
      debugger could not take the model when nothing needs it (no exclusions, no accuracy
      control: the per-layer errors are then left out).
    """
    first, plan = convert(
        model, config.model_copy(update={"exclude_layers": []}), samples, batch_size
    )
    return first, plan, requantizer(model, config, samples, first, batch_size)


# Control-flow ops the TFLite calibrator (tensorflow 2.16) cannot run: it crashes the process
# (SIGSEGV) calibrating a graph that keeps a GRU's or a SimpleRNN's WHILE loop.
CONTROL_FLOW_OPS = frozenset({"WHILE", "IF", "CALL_ONCE"})


def check_calibratable(model, config: QuantizerConfig, batch_size) -> None:
    """A model whose float graph keeps a control-flow loop cannot be calibrated: refused with
    the layer and what to do, before the calibrator would crash the process.

    Only models with recurrent layers are converted to look (an LSTM becomes the fused
    UNIDIRECTIONAL_SEQUENCE_LSTM, which calibrates; a GRU stays a WHILE loop).

    Raises:
      ConversionError: naming the recurrent layer(s), the op and the modes that work.
    """
    import tf_keras

    recurrent = [
        layer
        for layer in model.layers
        if isinstance(layer, tf_keras.layers.RNN | tf_keras.layers.Bidirectional)
    ]
    if not recurrent:
        return
    from components.common import conversion as common_conversion

    flatbuffer, _ = common_conversion.convert_float32(model, batch_size)
    loops = sorted({op["op"] for op in fb_lib.operators(flatbuffer)} & CONTROL_FLOW_OPS)
    if not loops:
        return
    names = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in recurrent)
    raise ConversionError(
        f"mode {config.mode!r}: the converted graph keeps a {'/'.join(loops)} loop from the "
        f"recurrent layer(s) {names} (TFLite fuses LSTM only), and TFLite's calibrator cannot "
        "calibrate a loop (it crashes). Use mode dynamic_range or float16 for this model, or "
        "build the layer with unroll=True (a fixed sequence length) or as an LSTM.",
        detail=f"mode {config.mode}: {'/'.join(loops)} loop of {names} cannot be calibrated",
    )


def check_integer_ops(ops: list[dict], config: QuantizerConfig) -> None:
    """Integer modes promise integer compute: an op left in float must come from an excluded layer.

    Raises:
      ModelInputError: naming each float op and its layer, and what to do.
    """
    if config.mode not in INTEGER_MODES:
        return
    stray = [op for op in fb_lib.float_ops(ops) if not fb_lib.covers(op, config.exclude_layers)]
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


def io_details(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    return {
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": [int(d) for d in detail["shape_signature"]],
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def verify(got, expected, task, limits, output_dtype="float32", integer_io=False) -> dict:
    """:func:`components.quantizer.verification.verify` (kept here, beside the conversion it
    judges)."""
    return verification.verify(got, expected, task, limits, output_dtype, integer_io)
