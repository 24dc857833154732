"""The record of a structured pruning run: file names, property names, the JSON report."""

from __future__ import annotations

from collections.abc import Mapping

from components.common.keys import (
    ACCURACY_AFTER,
    ACCURACY_BEFORE,
    FINE_TUNING_EPOCHS,
    FINE_TUNING_WALL_TIME_S,
    HISTORY_FILE,  # noqa: F401 - re-exported: the package's names for its files
    OPTIMIZATION,
    STRUCTURED_PRUNING_RECORD_FILE,
)
from components.pruner.structured.graph import (
    BATCH_NORM,
    DEPTHWISE,
    PRODUCER,
    ChannelPlan,
    layout_width,
)

FIELD = "pruner.structured"

# Files written inside the output Model artifact, beside Format-Serving/.
RECORD_FILE = STRUCTURED_PRUNING_RECORD_FILE

# Custom property names of the output Model artifact (the shared ones are in keys).
OPTIMIZATION_VALUE = "structured_pruned"
TARGET_FRACTION = "target_channel_fraction"
ACHIEVED_FRACTION = "removed_channel_fraction"
CRITERION = "pruning_criterion"
PER_LAYER_CHANNELS = "per_layer_channels"
PARAMETERS_BEFORE = "parameters_before"
PARAMETERS_AFTER = "parameters_after"
FLOPS_BEFORE = "flops_per_example_before"
FLOPS_AFTER = "flops_per_example_after"
FLOPS_RATIO = "flops_ratio"
ACCURACY_BEFORE_FINE_TUNING = "accuracy_before_fine_tuning"
PRUNING_STEPS = "pruning_steps_accepted"
SKIPPED_LAYERS = "skipped_layers"


def channels_by_layer(plan: ChannelPlan) -> dict[str, int]:
    """Output channels of every Conv/Dense, depthwise and BatchNormalization layer."""
    counts = {}
    for name, lp in plan.layers.items():
        if lp.kind in (PRODUCER, DEPTHWISE, BATCH_NORM) and lp.output_layout:
            counts[name] = layout_width(lp.output_layout)
    return counts


def removed_fraction(plan: ChannelPlan, original: Mapping[str, int], after: Mapping) -> float:
    """Fraction of the prunable groups' channels removed (each group counted once)."""
    total = removed = 0
    for group in plan.prunable_groups:
        name = group.producers[0]
        total += original[name]
        removed += original[name] - after.get(name, original[name])
    return removed / total if total else 0.0


def _ratio(after, before):
    return after / before if before else None


def build_report(plan, final_plan, original_channels, before, after, config) -> dict:
    """The report's model-level part: sizes, accuracy, channels per layer, groups, skips.

    Args:
      plan / final_plan: the analysis of the input model and of the returned one.
      original_channels: output channels of each producer of the input model.
      before / after: parameters, flops_per_example and accuracy of the input / returned model.
      config: the structured pruning config.
    """
    channels_before = channels_by_layer(plan)
    channels_after = channels_by_layer(final_plan)
    return {
        "criterion": config.criterion,
        "scope": config.scope,
        "target_fraction": config.target_fraction,
        "achieved_fraction": removed_fraction(plan, original_channels, channels_after),
        "parameters_before": before["parameters"],
        "parameters_after": after["parameters"],
        "parameters_ratio": _ratio(after["parameters"], before["parameters"]),
        "flops_before": before["flops_per_example"],
        "flops_after": after["flops_per_example"],
        "flops_ratio": _ratio(after["flops_per_example"], before["flops_per_example"]),
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "layers": [
            {
                "layer": name,
                "type": plan.layers[name].type,
                "channels_before": count,
                "channels_after": channels_after.get(name, count),
            }
            for name, count in channels_before.items()
        ],
        "skipped_layers": plan.skipped_layers(),
        "groups": [
            {
                "producers": g.producers,
                "channels": g.channels,
                "prunable": g.prunable,
                "blocked": g.blocked,
            }
            for g in plan.groups.values()
            if g.producers
        ],
    }


def key_numbers(report: dict) -> dict:
    """The custom properties of the output Model artifact (see the constants above), with the
    before/after figures every model-in/model-out step sets."""
    from components.common import optimization

    accepted = [s for s in report["steps"] if s["accepted"]]
    return {
        **optimization.metric_numbers(report),
        OPTIMIZATION: OPTIMIZATION_VALUE,
        CRITERION: report["criterion"],
        TARGET_FRACTION: report["target_fraction"],
        ACHIEVED_FRACTION: report["achieved_fraction"],
        PER_LAYER_CHANNELS: {
            e["layer"]: [e["channels_before"], e["channels_after"]] for e in report["layers"]
        },
        PARAMETERS_BEFORE: report["parameters_before"],
        PARAMETERS_AFTER: report["parameters_after"],
        FLOPS_BEFORE: report["flops_before"],
        FLOPS_AFTER: report["flops_after"],
        FLOPS_RATIO: report["flops_ratio"],
        ACCURACY_BEFORE: report["accuracy_before"],
        ACCURACY_BEFORE_FINE_TUNING: report["accuracy_before_fine_tuning"],
        ACCURACY_AFTER: report["accuracy_after"],
        PRUNING_STEPS: report["steps_accepted"],
        SKIPPED_LAYERS: [s["layer"] for s in report["skipped_layers"]],
        FINE_TUNING_EPOCHS: sum(s["fine_tuning_epochs"] for s in accepted),
        FINE_TUNING_WALL_TIME_S: sum(s["fine_tuning_wall_time_s"] for s in report["steps"]),
    }
