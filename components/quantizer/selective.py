"""Selective full-int8 quantization: each layer's quantization error, and flatbuffers with chosen
layers kept in float.

Both come from TFLite's ``QuantizationDebugger`` (TensorFlow 2.16): the model is calibrated once;
the debugger's instrumented model compares every quantized op's output with the float op's on the
same input (``NumericVerify``), which gives each op's error independently of the others; and the
calibrated model is re-quantized with a denylist of the ops of the layers to keep in float
(``denylisted_nodes``), without calibrating again. ``quantizer.exclude_layers`` and accuracy
control both use this path.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from components.quantizer import flatbuffer as fb_lib

#: Debug examples run through the instrumented model for the per-layer errors.
DEBUG_SAMPLES = 32


def excluded_nodes(flatbuffer: bytes, layer_names, exclude) -> list[str]:
    """The output tensor names of ``exclude``'s compute ops in ``flatbuffer`` (the denylist)."""
    exclude = set(exclude)
    return [
        op["output"]
        for op in fb_lib.operators(flatbuffer, layer_names)
        if op["layer"] in exclude and op["op"] not in fb_lib.CONVERSION_OPS
    ]


class Requantizer:
    """One calibration of ``model``, re-quantized with any set of layers in float.

    Args:
      converter: a full-int8 converter with float fallback allowed and a representative dataset
        (``conversion._converter(..., allow_float=True)``).
      first: the full-int8 flatbuffer converted with nothing excluded (its tensor names make the
        denylists).
      layer_names: the Keras model's layer names.
      debug_samples: a representative-dataset generator for the per-layer errors.
      fully_quantize: integer input and output tensors (``integer_only_io``).
    """

    def __init__(self, converter, first: bytes, layer_names, debug_samples, fully_quantize: bool):
        import tensorflow as tf

        self._tf = tf
        self.first = first
        self.layer_names = list(layer_names)
        self.fully_quantize = fully_quantize
        self.debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=debug_samples,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                fully_quantize=fully_quantize
            ),
        )

    def flatbuffer(self, float_layers) -> bytes:
        """The int8 flatbuffer with ``float_layers``' ops left in float (``first`` when none)."""
        nodes = excluded_nodes(self.first, self.layer_names, float_layers) if float_layers else []
        if not nodes:
            return self.first
        self.debugger.options = self._tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=nodes, fully_quantize=self.fully_quantize
        )
        return self.debugger.get_nondebug_quantized_model()

    def layer_errors(self) -> list[dict]:
        """Each layer's quantization error, the worst first.

        Per layer (its ops together): ``rmse_over_scale`` (the root-mean-square error of its
        quantized outputs in units of their quantization step: ~0.29 is pure rounding, above ~1
        the layer loses information), ``max_abs_error`` and ``mean_error`` (bias), from the
        debugger's worst op of the layer; ``ops`` lists them.
        """
        self.debugger.options = self._tf.lite.experimental.QuantizationDebugOptions(
            fully_quantize=self.fully_quantize
        )
        self.debugger.run()
        text = io.StringIO()
        self.debugger.layer_statistics_dump(text)
        text.seek(0)
        per_layer: dict[str, dict] = {}
        for row in csv.DictReader(text):
            layer = fb_lib.layer_of(row["tensor_name"], self.layer_names)
            if layer is None:
                continue
            scale = _number(row.get("scale"))
            mse = _number(row.get("mean_squared_error"))
            rmse_scale = math.sqrt(mse) / scale if scale and mse is not None else None
            entry = per_layer.setdefault(
                layer,
                {
                    "layer": layer,
                    "ops": [],
                    "rmse_over_scale": None,
                    "max_abs_error": None,
                    "mean_error": None,
                },
            )
            entry["ops"].append(row["op_name"])
            if rmse_scale is not None and (
                entry["rmse_over_scale"] is None or rmse_scale > entry["rmse_over_scale"]
            ):
                entry["rmse_over_scale"] = rmse_scale
                entry["max_abs_error"] = _number(row.get("max_abs_error"))
                entry["mean_error"] = _number(row.get("mean_error"))
        return sorted(per_layer.values(), key=lambda e: -(e["rmse_over_scale"] or 0.0))


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None
