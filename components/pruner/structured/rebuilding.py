"""Rebuild: a new, narrower model with the kept channels of each group and their weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from components.common.errors import ModelInputError
from components.pruner.structured.graph import (
    BARRIER,
    BATCH_NORM,
    DEPTHWISE,
    PRODUCER,
    RESHAPE,
    UNKNOWN,
    ChannelPlan,
    LayerPlan,
    Layout,
    analyze,
    layout_width,
)


def _indices(layout: Layout, plan: ChannelPlan, keep: Mapping[int, np.ndarray]) -> np.ndarray:
    parts, offset = [], 0
    for gid, channels in layout:
        kept = keep.get(plan.root[gid])
        parts.append(offset + (np.arange(channels) if kept is None else np.asarray(kept)))
        offset += channels
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _slice_producer(name: str, weights: list, in_idx, out_idx) -> tuple[dict, list]:
    """(config changes, new weights) of a Conv/Dense layer keeping ``in_idx`` -> ``out_idx``."""
    changes = {"units" if name == "Dense" else "filters": int(len(out_idx))}
    if name.startswith("SeparableConv"):
        depthwise, pointwise = weights[0], weights[1]
        multiplier = depthwise.shape[-1]
        rows = (in_idx[:, None] * multiplier + np.arange(multiplier)[None, :]).reshape(-1)
        new = [
            np.take(depthwise, in_idx, axis=-2),
            np.take(np.take(pointwise, rows, axis=-2), out_idx, axis=-1),
        ]
        new += [np.take(w, out_idx, axis=0) for w in weights[2:]]
        return changes, new
    in_axis, out_axis = (-1, -2) if name.endswith("Transpose") else (-2, -1)
    kernel = np.take(np.take(weights[0], in_idx, axis=in_axis), out_idx, axis=out_axis)
    return changes, [kernel, *[np.take(w, out_idx, axis=0) for w in weights[1:]]]


def _slice_layer(layer, lp: LayerPlan, plan: ChannelPlan, keep) -> tuple[dict, list] | None:
    """(config changes, new weights) of a layer whose channels change, or None when unchanged."""
    weights = layer.get_weights()
    in_idx = _indices(lp.input_layout, plan, keep) if lp.input_layout else None
    out_idx = _indices(lp.output_layout, plan, keep) if lp.output_layout else None
    in_same = in_idx is None or len(in_idx) == layout_width(lp.input_layout)
    out_same = out_idx is None or len(out_idx) == layout_width(lp.output_layout)
    if in_same and out_same:
        return None
    if lp.kind == PRODUCER:
        return _slice_producer(lp.type, weights, in_idx, out_idx)
    if lp.kind == DEPTHWISE:
        kernel = np.take(weights[0], in_idx, axis=-2)
        return {}, [kernel, *[np.take(w, in_idx, axis=0) for w in weights[1:]]]
    if lp.kind == BATCH_NORM:
        return {}, [np.take(w, in_idx, axis=0) for w in weights]
    if lp.kind == RESHAPE:
        target = list(layer.get_config()["target_shape"])
        if target[-1] != -1:
            target[-1] = int(len(out_idx))
        return {"target_shape": tuple(target)}, weights
    return {}, weights


def _checked_keep(plan: ChannelPlan, keep: Mapping[int, Sequence[int]]) -> dict[int, np.ndarray]:
    """``keep`` as sorted unique index arrays; ValueError for a blocked group or a bad index."""
    keep = {gid: np.unique(np.asarray(idx, dtype=np.int64)) for gid, idx in keep.items()}
    for gid, idx in keep.items():
        group = plan.groups[gid]
        if len(idx) < group.channels and not group.prunable:
            raise ValueError(
                f"channel group of {group.members or group.producers} cannot lose channels: "
                + "; ".join(group.blocked or ["it has no Conv/Dense producer"])
            )
        if len(idx) == 0 or idx[0] < 0 or idx[-1] >= group.channels:
            raise ValueError(f"kept channels of group {gid} must be in [0, {group.channels})")
    return keep


def _clone_with(model, changes: Mapping[str, tuple[dict, list]]):
    """A clone of ``model`` with the config changes applied, and its (sliced) weights."""
    import tf_keras

    def clone(layer):
        config = layer.get_config()
        if layer.name in changes:
            config.update(changes[layer.name][0])
        return layer.__class__.from_config(config)

    try:
        new_model = tf_keras.models.clone_model(model, clone_function=clone)
    except NotImplementedError as e:
        raise ModelInputError(
            f"model {model.name!r} cannot be rebuilt: a layer has no get_config() ({e}). "
            "Implement get_config on custom layers so the model can be cloned."
        ) from None
    for layer in model.layers:
        target = new_model.get_layer(layer.name)
        target.set_weights(changes[layer.name][1] if layer.name in changes else layer.get_weights())
    return new_model


def rebuild(model, plan: ChannelPlan, keep: Mapping[int, Sequence[int]]):
    """A new model with only the kept channels of each group, and the surviving weights.

    Args:
      model: the model ``plan`` was made from (it is not changed).
      plan: from :func:`~components.pruner.structured.graph.analyze`.
      keep: kept channel indices per group id; groups left out keep all their channels.

    Raises:
      ValueError: a blocked group is asked to lose channels, or an index is out of range.
    """
    keep = _checked_keep(plan, keep)
    changes: dict[str, tuple[dict, list]] = {}
    for name, lp in plan.layers.items():
        if lp.kind in (UNKNOWN, BARRIER):
            continue
        sliced = _slice_layer(model.get_layer(name), lp, plan, keep)
        if sliced is not None:
            changes[name] = sliced
    new_model = _clone_with(model, changes)
    for old, new in zip(model.outputs, new_model.outputs, strict=True):
        if tuple(old.shape) != tuple(new.shape):
            raise AssertionError(f"output shape changed from {old.shape} to {new.shape}")
    return new_model


def prune_channels(model, keep_by_layer: Mapping[str, Sequence[int]], skip_layers=()):
    """Removes channels named per producer layer: ``{"conv1": [0, 2, 5], ...}`` keeps those.

    Layers joined by Add share one set; naming any of them (or all, consistently) is enough.

    Raises:
      ValueError: an unknown or non-prunable layer, or conflicting sets for one group.
    """
    plan = analyze(model, skip_layers)
    keep: dict[int, np.ndarray] = {}
    for name, indices in keep_by_layer.items():
        if name not in plan.layers or plan.layers[name].kind != PRODUCER:
            raise ValueError(f"{name!r} is not a Conv/Dense layer of model {model.name!r}")
        group = plan.group_of(name)
        idx = np.unique(np.asarray(indices, dtype=np.int64))
        if group.id in keep and not np.array_equal(keep[group.id], idx):
            raise ValueError(f"{name} is joined with {group.producers}: give them one channel set")
        keep[group.id] = idx
    return rebuild(model, plan, keep)
