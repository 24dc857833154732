"""Selection: which channels each prunable group keeps, per layer or globally."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from components.pruner.structured.graph import ChannelGroup, ChannelPlan
from components.pruner.structured_config import StructuredPruningConfig


def _keep_count(original: int, fraction: float, current: int, config) -> int:
    floor = min(original, config.min_channels_per_layer)
    keep = max(original - math.floor(fraction * original + 1e-9), floor)
    multiple = config.channel_multiple
    keep = min(original, math.ceil(keep / multiple) * multiple)
    return min(keep, current)


def _best(scores: np.ndarray, count: int) -> np.ndarray:
    # Stable: on equal scores the earlier channel stays, so results do not depend on sort noise.
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:count])


def _original(group: ChannelGroup, original_channels: Mapping[str, int] | None) -> int:
    """A group's channels before any pruning step."""
    if original_channels is None:
        return group.channels
    return max(original_channels.get(p, group.channels) for p in group.producers)


def _global_removals(groups, scores, config, fraction, original_channels) -> dict[int, int]:
    """How many channels each group loses when all channels are ranked together.

    Scores are normalised by their group's mean, so layers with different fan-in (and so
    different norms) compete fairly; no group loses more than ``max_fraction_per_layer``.
    """
    total_original = sum(_original(g, original_channels) for g in groups)
    already_removed = sum(_original(g, original_channels) - g.channels for g in groups)
    to_remove = max(math.floor(fraction * total_original + 1e-9) - already_removed, 0)
    candidates = []
    limits = {}
    for group in groups:
        s = scores[group.id]
        mean = float(np.mean(s)) if s.size else 0.0
        normalised = s / mean if mean > 0 else np.zeros_like(s)
        limits[group.id] = _keep_count(
            _original(group, original_channels),
            config.max_fraction_per_layer,
            group.channels,
            config,
        )
        candidates.extend((float(v), group.id, i) for i, v in enumerate(normalised))
    candidates.sort()
    removed: dict[int, set[int]] = {g.id: set() for g in groups}
    channels = {g.id: g.channels for g in groups}
    count = 0
    for _, gid, index in candidates:
        if count >= to_remove:
            break
        if channels[gid] - len(removed[gid]) > limits[gid]:
            removed[gid].add(index)
            count += 1
    return {gid: len(indices) for gid, indices in removed.items()}


def select_channels(
    plan: ChannelPlan,
    scores: Mapping[int, np.ndarray],
    config: StructuredPruningConfig,
    progress: float = 1.0,
    original_channels: Mapping[str, int] | None = None,
) -> dict[int, np.ndarray]:
    """The channels each prunable group keeps (sorted indices).

    Args:
      plan: from :func:`~components.pruner.structured.graph.analyze`.
      scores: from :func:`~components.pruner.structured.scores.channel_scores`.
      config: scope, per-layer overrides, minimum and multiple of kept channels.
      progress: how far towards the configured fractions (of the *original* channels) to go:
        iterative pruning passes step / steps, a single step 1.0.
      original_channels: output channels of each producer before any pruning step (default:
        the current ones).
    """
    fraction = config.target_fraction * progress
    keep: dict[int, np.ndarray] = {}
    global_groups = []
    for group in plan.prunable_groups:
        overrides = [config.per_layer[p] for p in group.producers if p in config.per_layer]
        if overrides or config.scope == "per_layer":
            group_fraction = min(overrides) * progress if overrides else fraction
            original = _original(group, original_channels)
            count = _keep_count(original, group_fraction, group.channels, config)
            keep[group.id] = _best(scores[group.id], count)
        else:
            global_groups.append(group)
    if not global_groups:
        return keep
    removals = _global_removals(global_groups, scores, config, fraction, original_channels)
    multiple = config.channel_multiple
    for group in global_groups:
        kept = group.channels - removals[group.id]
        kept = min(group.channels, math.ceil(kept / multiple) * multiple)
        keep[group.id] = _best(scores[group.id], kept)
    return keep
