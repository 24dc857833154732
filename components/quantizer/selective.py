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

from components.common.errors import ConfigError
from components.quantizer import flatbuffer as fb_lib

#: Debug examples run through the instrumented model for the per-layer errors.
DEBUG_SAMPLES = 32


def excluded_nodes(flatbuffer: bytes, layer_names, exclude) -> list[str]:
    """The output tensor names of the compute ops in ``flatbuffer`` that come from any layer of
    ``exclude`` (the denylist): an op fused from a conv, its BatchNormalization and its
    activation is denylisted by any of the three (or by its joined name).

    Raises:
      ConfigError: an entry of ``exclude`` that no op of ``flatbuffer`` comes from.
    """
    return denylist(fb_lib.operators(flatbuffer, layer_names), exclude)


def denylist(ops: list[dict], exclude) -> list[str]:
    """:func:`excluded_nodes` of the operators already read."""
    check_excluded(ops, exclude, "quantizer.exclude_layers")
    return [
        name
        for op in ops
        if op["op"] not in fb_lib.CONVERSION_OPS and fb_lib.covers(op, exclude)
        for name in tensor_names(op, ops)
    ]


def tensor_names(op: dict, ops: list[dict]) -> list[str]:
    """The names ``op``'s output has in the debugger's calibrated model: its own, and where the
    quantized flatbuffer gave its name to the DEQUANTIZE / QUANTIZE after it (a signature output:
    ``StatefulPartitionedCall:01`` feeding ``StatefulPartitionedCall:0``), that name too."""
    names = [op["output"]]
    boundary = {o["output"] for o in ops if o["op"] in fb_lib.CONVERSION_OPS}
    if op["output"].endswith("1") and op["output"][:-1] in boundary:
        names.append(op["output"][:-1])
    return names


def check_excluded(ops: list[dict], exclude, where: str) -> None:
    """Every entry of ``exclude`` must name a layer some compute op comes from: an entry that
    matches nothing would leave the user believing a layer stays in float when nothing does.

    Raises:
      ConfigError: naming the entries and the layer names that would work.
    """
    producing = fb_lib.op_layers(ops)
    missing = [
        entry
        for entry in exclude
        if not any(part in producing for part in str(entry).split(fb_lib.JOIN))
    ]
    if missing:
        raise ConfigError(
            f"{where}: {missing} produce no op in the converted model (no such layer, or a layer "
            f"with nothing to compute, e.g. Dropout); nothing would stay in float. Layers that "
            f"produce ops: {producing}."
        )


class Requantizer:
    """One calibration of ``model``, re-quantized with any set of layers in float.

    Args:
      converter: a full-int8 converter with float fallback allowed and a representative dataset
        (``conversion._converter(..., allow_float=True)``).
      first: the full-int8 flatbuffer converted with nothing excluded (its tensor names make the
        denylists).
      layer_names: the Keras model's layers (a :class:`~components.quantizer.flatbuffer.LayerMap`
        or the model: which layers each op was fused from).
      debug_samples: a representative-dataset generator for the per-layer errors.
      fully_quantize: integer input and output tensors (``integer_only_io``).
    """

    def __init__(self, converter, first: bytes, layer_names, debug_samples, fully_quantize: bool):
        import tensorflow as tf

        self._tf = tf
        self.first = first
        self.layer_names = fb_lib.LayerMap.of(layer_names)
        self._ops: list[dict] | None = None
        self.fully_quantize = fully_quantize
        self.debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=debug_samples,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                fully_quantize=fully_quantize
            ),
        )

    @property
    def ops(self) -> list[dict]:
        """``first``'s operators with the layers each came from (read when first needed: a
        flatbuffer that does not load is the caller's to report)."""
        if self._ops is None:
            self._ops = fb_lib.operators(self.first, self.layer_names)
        return self._ops

    def flatbuffer(self, float_layers) -> bytes:
        """The int8 flatbuffer with ``float_layers``' ops left in float (``first`` when none)."""
        nodes = denylist(self.ops, float_layers) if float_layers else []
        if not nodes:
            return self.first
        self.debugger.options = self._tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=nodes, fully_quantize=self.fully_quantize
        )
        return self.debugger.get_nondebug_quantized_model()

    def layer_errors(self) -> list[dict]:
        """Each layer's quantization error, the worst first.

        Per op's layers (``layer``: an op fused from several layers names them all,
        ``conv2d+batch_normalization+re_lu``; ``layers``: the list), its ops together:
        ``rmse_over_scale`` (the root-mean-square error of its
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
        by_output = {
            name: op["layers"]
            for op in self.ops
            if op["layers"] and op["op"] not in fb_lib.CONVERSION_OPS
            for name in tensor_names(op, self.ops)
        }
        for row in csv.DictReader(text):
            layers = by_output.get(row["tensor_name"]) or fb_lib.mentioned(
                row["tensor_name"], self.layer_names
            )
            if not layers:
                continue
            layer = fb_lib.JOIN.join(layers)
            scale = _number(row.get("scale"))
            mse = _number(row.get("mean_squared_error"))
            rmse_scale = math.sqrt(mse) / scale if scale and mse is not None else None
            entry = per_layer.setdefault(
                layer,
                {
                    "layer": layer,
                    "layers": list(layers),
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
