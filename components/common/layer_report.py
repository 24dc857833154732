"""What a pruning or clustering step did to every layer, and why it left a layer alone.

The Pruner and the Clusterer add :func:`coverage` to their records: one entry per layer of the
model with ``optimised`` true, or false and the reason (excluded by config, not selected by
config, too small, no weights the technique acts on, not supported by the toolkit), and
:func:`kernel_numbers`: sparsity and unique values over the layers the step targeted (what the
config asked for) and over every kernel of the model (what a profile counts), so a figure that
looks short of the target (a 0.6 sparsity read as 0.565 over all kernels) is explained.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Why tensorflow-model-optimization 0.8 acts on no weight of a layer it otherwise supports.
TOOLKIT_NOTES = {
    ("pruning", "DepthwiseConv2D"): (
        "tensorflow-model-optimization prunes no weight of DepthwiseConv2D (its registry lists "
        "none): the depthwise kernels stay dense, so sparsity over all kernels is below the target"
    ),
    ("clustering", "DepthwiseConv2D"): (
        "tensorflow-model-optimization clusters no weight of DepthwiseConv2D: its registry lists "
        "the layer as non-clusterable ('big unrecoverable accuracy loss'): each depthwise "
        "filter holds only kh x kw weights per channel, too few to share 16 values"
    ),
}
NO_TARGET_WEIGHTS = "no weights {technique} acts on (no kernel: e.g. normalisation, activation)"
UNSUPPORTED = "not supported by tensorflow-model-optimization {technique}"
NOT_SELECTED = "not selected by config ({field}.names / {field}.types)"


def _reason(layer, selection, target_weights, technique: str, field: str) -> str:
    name, kind = layer.name, type(layer).__name__
    if name in selection.skipped:
        return selection.skipped[name]
    weights = target_weights(layer)
    if weights is None:
        return UNSUPPORTED.format(technique=technique)
    if not weights:
        return TOOLKIT_NOTES.get((technique, kind), NO_TARGET_WEIGHTS.format(technique=technique))
    return NOT_SELECTED.format(field=field)


def coverage(
    model,
    selection,
    done: list[str],
    target_weights: Callable[[object], list | None],
    technique: str,
    field: str,
) -> dict:
    """Per-layer record: which layers ``technique`` acted on, and why each other one was left.

    Args:
      model: the model the step read (its layers, in order).
      selection: the step's :class:`components.common.optimization.Selection` (its ``skipped``
        reasons are kept as they are).
      done: names of the layers the step optimised.
      target_weights: the step's layer -> weights function (None: unsupported by the toolkit).
      technique: "pruning" or "clustering".
      field: the config section, e.g. "pruner.layers".
    """
    wanted = set(done)
    layers, left_out = [], {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        entry = {"layer": layer.name, "type": kind, "optimised": layer.name in wanted}
        if not entry["optimised"]:
            entry["reason"] = _reason(layer, selection, target_weights, technique, field)
            left_out.setdefault(entry["reason"], []).append(layer.name)
        entry["weights"] = int(sum(np.prod(w.shape) for w in layer.weights))
        layers.append(entry)
    return {
        "technique": technique,
        "layers": layers,
        "optimised": len(wanted),
        "left_out": len(layers) - len(wanted),
        "left_out_by_reason": left_out,
    }


def _is_kernel(weight) -> bool:
    return "kernel" in weight.name


def _kernel_summary(tensors: list[tuple[str, np.ndarray]]) -> dict:
    count = int(sum(t.size for _, t in tensors))
    zeros = int(sum(t.size - np.count_nonzero(t) for _, t in tensors))
    unique = [(int(np.unique(t).size), name) for name, t in tensors]
    most = max(unique, default=(0, None))
    return {
        "kernels": len(tensors),
        "weights": count,
        "sparsity": zeros / count if count else 0.0,
        "max_unique_values": most[0],
        "max_unique_values_layer": most[1],
    }


def kernel_numbers(model, targeted: list[str]) -> dict:
    """Kernel sparsity and unique values over the targeted layers and over all kernels."""
    wanted = set(targeted)
    every, chosen = [], []
    for layer in model.layers:
        for weight in layer.weights:
            if _is_kernel(weight):
                entry = (layer.name, np.asarray(weight.numpy()))
                every.append(entry)
                if layer.name in wanted:
                    chosen.append(entry)
    return {"targeted_layers": _kernel_summary(chosen), "all_kernels": _kernel_summary(every)}
