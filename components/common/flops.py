"""Analytic compute per example for standard tf_keras layers (multiply-accumulates and FLOPs).

FLOPs are counted as 2 x MACs for convolutions and dense layers; element-wise work (activations,
batch norm, pooling, adds) is small next to them and reported as zero. Layers we cannot count are
named, so a report never hides them.
"""

from __future__ import annotations

import math


def _shape(tensor_shape) -> list[int]:
    shape = tensor_shape
    if isinstance(shape, list) and shape and isinstance(shape[0], tuple | list):
        shape = shape[0]
    return [int(d) if d is not None else 1 for d in list(shape)[1:]]


def layer_macs(layer) -> int | None:
    """MACs per example of one layer, or None when the layer type is not counted."""
    import tf_keras

    layers = tf_keras.layers
    try:
        out_shape = _shape(layer.output_shape)
        in_shape = _shape(layer.input_shape)
    except (AttributeError, RuntimeError):
        return None
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        cin = in_shape[-1]
        spatial = math.prod(out_shape[:-1])
        depthwise = spatial * kh * kw * cin * layer.depth_multiplier
        pointwise = spatial * cin * layer.depth_multiplier * out_shape[-1]
        return depthwise + pointwise
    if isinstance(layer, layers.DepthwiseConv2D | layers.DepthwiseConv1D):
        # One k-tap filter per output channel (cin x depth_multiplier of them).
        return math.prod(out_shape) * math.prod(layer.kernel_size)
    if isinstance(layer, layers.Conv1DTranspose | layers.Conv2DTranspose | layers.Conv3DTranspose):
        # Every input position is scattered through the whole kernel: (*k, cout, cin).
        kernel = layer.kernel.shape
        return math.prod(in_shape[:-1]) * math.prod(kernel)
    if isinstance(layer, layers.Conv2D | layers.Conv1D | layers.Conv3D):
        kernel = layer.kernel.shape  # (*k, cin/groups, cout)
        return math.prod(out_shape) * math.prod(kernel[:-2]) * int(kernel[-2])
    if isinstance(layer, layers.Dense):
        kernel = layer.kernel.shape
        positions = math.prod(out_shape[:-1]) if len(out_shape) > 1 else 1
        return positions * int(kernel[0]) * int(kernel[1])
    if isinstance(
        layer,
        layers.InputLayer
        | layers.Reshape
        | layers.Flatten
        | layers.Dropout
        | layers.Activation
        | layers.ReLU
        | layers.BatchNormalization
        | layers.MaxPooling2D
        | layers.AveragePooling2D
        | layers.GlobalAveragePooling2D
        | layers.GlobalMaxPooling2D
        | layers.Add
        | layers.Concatenate
        | layers.Multiply
        | layers.ZeroPadding2D
        | layers.Softmax
        | layers.Rescaling,
    ):
        return 0
    return None


def model_flops(model) -> dict:
    """Per-layer MACs/FLOPs, totals, shares, and the layers that could not be counted."""
    per_layer = []
    uncounted = []
    for layer in model.layers:
        macs = layer_macs(layer)
        if macs is None:
            uncounted.append(f"{layer.name} ({type(layer).__name__})")
            macs = 0
        per_layer.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "macs": int(macs),
                "flops": int(2 * macs),
                "parameters": int(layer.count_params()),
            }
        )
    total_flops = sum(entry["flops"] for entry in per_layer)
    for entry in per_layer:
        entry["flops_share"] = entry["flops"] / total_flops if total_flops else 0.0
    return {
        "flops_per_example": total_flops,
        "macs_per_example": total_flops // 2,
        "per_layer": per_layer,
        "uncounted_layers": uncounted,
    }


def hot_layers(flops: dict, top: int) -> list[dict]:
    """The ``top`` layers by FLOPs share."""
    ranked = sorted(flops["per_layer"], key=lambda e: e["flops"], reverse=True)
    return [e for e in ranked[:top] if e["flops"] > 0]
