"""Structured pruning: remove whole filters and units, rebuild a smaller dense model (no TFX here).

Unstructured sparsity leaves every multiply in place; removing whole output channels of
convolutions and dense layers (and the matching input channels of the layers that read them)
gives a physically smaller model that is faster on every runtime.

How it works:

1. :func:`analyze` walks the layer graph of a Sequential or functional tf_keras model and puts
   every tensor's channels (its last axis) into *channel groups*: a Conv/Dense layer starts a
   group; BatchNormalization, DepthwiseConv2D, pooling, activations and dropout carry it on;
   Add (and the other element-wise merges) joins the groups of its inputs, so the tensors of a
   residual block keep one common set of channels; Concatenate lays its inputs' groups side by
   side; Flatten repeats them once per spatial position (channels-last order). A group feeding
   a layer the analysis does not know, a model output, or a layer named in ``skip_layers`` is
   *blocked*: it keeps all its channels, and the report says why.
2. :func:`channel_scores` ranks each group's channels: the l1/l2 norm of the producing filters,
   or, on a few train batches, the mean absolute activation or the first-order Taylor score
   ``|activation x gradient|`` of the tensors that the next weighted layers read.
3. :func:`select_channels` keeps the best channels of each group (per layer, or globally on
   scores normalised per group).
4. :func:`rebuild` clones the model with fewer filters/units (editing the layer configs) and
   copies the surviving weights into it. The input model is never changed.

:func:`structured_prune` runs the whole thing, optionally in steps with fine-tuning between them
and an accuracy floor, and returns the new model and a JSON-ready report.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from components.common import layer_classes, training
from components.common.errors import ConfigError, DataError, ModelInputError
from components.pruner.structured_config import DATA_CRITERIA, StructuredPruningConfig

log = logging.getLogger(__name__)

FIELD = "pruner.structured"

# Files written inside the output Model artifact, beside Format-Serving/.
RECORD_FILE = "structured_pruning.json"
HISTORY_FILE = "fine_tuning_history.json"

# Custom property names of the output Model artifact.
OPTIMIZATION = "optimization"
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
ACCURACY_BEFORE = "accuracy_before"
ACCURACY_BEFORE_FINE_TUNING = "accuracy_before_fine_tuning"
ACCURACY_AFTER = "accuracy_after"
PRUNING_STEPS = "pruning_steps_accepted"
SKIPPED_LAYERS = "skipped_layers"
FINE_TUNING_EPOCHS = "fine_tuning_epochs"
FINE_TUNING_WALL_TIME_S = "fine_tuning_wall_time_s"

# What a layer does to the channels (last axis) of its input, by exact class name: subclasses of
# these (custom layers) may compute anything, so they are treated as unknown and left whole.
_PRODUCERS = {
    "Dense",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "SeparableConv1D",
    "SeparableConv2D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
}
_DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
_PASS_THROUGH = (
    layer_classes.ELEMENTWISE_STATELESS | layer_classes.SPATIAL_CHANNEL_PRESERVING | {"Identity"}
)
_ELEMENTWISE_MERGE = layer_classes.ELEMENTWISE_MERGE
_CHANNEL_MIXING_ACTIVATIONS = {"softmax", "log_softmax"}

# Layer kinds in a plan.
PRODUCER = "producer"
DEPTHWISE = "depthwise"
BATCH_NORM = "batch_norm"
PASS = "pass_through"
MERGE = "merge"
CONCAT = "concatenate"
FLATTEN = "flatten"
RESHAPE = "reshape"
INPUT = "input"
BARRIER = "barrier"  # a known layer that moves or mixes channels: its input keeps them all
UNKNOWN = "unknown"

TensorKey = tuple[str, int, int]  # (layer name, node index, tensor index)
Layout = list[tuple[int, int]]  # [(group id, channels)] along the last axis


@dataclass
class LayerPlan:
    """How one layer is treated: its kind, and the channel layout of its input and output."""

    name: str
    type: str
    kind: str
    input_layout: Layout | None = None
    output_layout: Layout | None = None
    reason: str = ""


@dataclass
class ChannelGroup:
    """Channels that are kept or removed together (one producer, or several joined by Add)."""

    id: int
    channels: int
    producers: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    # Tensors read by the next weighted layers (or Flatten), scored by the data criteria.
    scored_tensors: list[tuple[TensorKey, Layout]] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        """True when the group has a producer and nothing forbids removing its channels."""
        return bool(self.producers) and not self.blocked


@dataclass
class ChannelPlan:
    """The outcome of :func:`analyze`: the channel groups and how every layer is treated."""

    layers: dict[str, LayerPlan]
    groups: dict[int, ChannelGroup]
    root: dict[int, int]  # any group id met during the walk -> its final group id

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        """Groups whose channels may be removed, in model order."""
        return [g for g in self.groups.values() if g.prunable]

    def group_of(self, layer_name: str) -> ChannelGroup | None:
        """The group of a layer's output channels (None for layers without one)."""
        plan = self.layers.get(layer_name)
        if plan is None or not plan.output_layout or len(plan.output_layout) != 1:
            return None
        return self.groups[self.root[plan.output_layout[0][0]]]

    def skipped_layers(self) -> list[dict]:
        """Layers left whole, with the reason: unsupported layers and blocked producers."""
        skipped = []
        for plan in self.layers.values():
            if plan.kind == UNKNOWN:
                skipped.append({"layer": plan.name, "type": plan.type, "reason": plan.reason})
            elif plan.kind == PRODUCER:
                group = self.group_of(plan.name)
                if group is not None and group.blocked:
                    skipped.append(
                        {
                            "layer": plan.name,
                            "type": plan.type,
                            "reason": "output channels kept: " + "; ".join(group.blocked),
                        }
                    )
        return skipped


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}
        self.channels: dict[int, int] = {}

    def new(self, channels: int) -> int:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.channels[gid] = channels
        return gid

    def find(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The lower id (the earlier producer) stays the root, so groups keep model order.
            self.parent[max(ra, rb)] = min(ra, rb)


def _tensor_key(tensor) -> TensorKey:
    history = tensor._keras_history
    return (history.layer.name, int(history.node_index), int(history.tensor_index))


def _flat(structure) -> list:
    import tensorflow as tf

    return tf.nest.flatten(structure)


def _last_dim(tensor) -> int | None:
    shape = tensor.shape
    if shape.rank is None or shape.rank == 0 or shape[-1] is None:
        return None
    return int(shape[-1])


def _network_nodes(model) -> list[tuple[object, int, object]]:
    """(layer, node index, node) of every call inside ``model``, in topological order."""
    import tf_keras

    network_nodes = getattr(model, "_network_nodes", None)
    if not isinstance(model, tf_keras.Sequential) and not getattr(
        model, "_is_graph_network", False
    ):
        network_nodes = None
    if network_nodes is None or not getattr(model, "built", False):
        raise ModelInputError(
            f"model {model.name!r} ({type(model).__name__}) is not a built Sequential or "
            "functional tf_keras model: structured pruning rebuilds the layer graph, which a "
            "subclassed model does not expose. Rebuild it as a Sequential/functional model with "
            "an Input (the same layers, same weights)."
        )
    layers = {layer.name: layer for layer in model.layers}
    for tensor in model.inputs:
        input_layer = tensor._keras_history.layer
        layers.setdefault(input_layer.name, input_layer)
    nodes: dict[tuple[str, int], tuple[object, int, object]] = {}
    for layer in layers.values():
        for index, node in enumerate(layer._inbound_nodes):
            if f"{layer.name}_ib-{index}" in network_nodes:
                nodes[(layer.name, index)] = (layer, index, node)
    order: list[tuple[object, int, object]] = []
    done: set[tuple[str, int]] = set()

    def visit(key):  # iterative DFS: deep models would overflow recursion
        stack = [(key, False)]
        while stack:
            current, expanded = stack.pop()
            if current in done:
                continue
            if expanded:
                done.add(current)
                order.append(nodes[current])
                continue
            stack.append((current, True))
            for tensor in nodes[current][2].keras_inputs:
                name, index, _ = _tensor_key(tensor)
                if (name, index) in nodes and (name, index) not in done:
                    stack.append(((name, index), False))

    for key in nodes:
        visit(key)
    return order


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") if activation is not None else ""


def _unsupported_reason(layer, node, shared: bool) -> str | None:
    """Why a layer of a known kind still cannot be handled, or None when it can."""
    config = layer.get_config()
    if shared:
        return "called more than once (shared weights)"
    if config.get("data_format") == "channels_first":
        return "channels_first data format"
    if int(config.get("groups", 1) or 1) != 1:
        return "grouped convolution"
    outputs = _flat(node.outputs)
    if len(outputs) != 1:
        return "more than one output"
    name = type(layer).__name__
    if name in _DEPTHWISE and int(config.get("depth_multiplier", 1)) != 1:
        return "depth_multiplier > 1"
    if name == "BatchNormalization":
        axis = config.get("axis")
        axes = list(axis) if isinstance(axis, list | tuple) else [axis]
        rank = node.keras_inputs[0].shape.rank
        if rank is None or len(axes) != 1 or axes[0] not in (-1, rank - 1):
            return "normalises over an axis other than the channels"
    return None


def _kind(layer, node, shared: bool) -> tuple[str, str]:
    """(kind, reason) of one layer call."""
    import tf_keras

    name = type(layer).__name__
    if isinstance(layer, tf_keras.layers.InputLayer):
        return INPUT, ""
    if isinstance(layer, tf_keras.Model):
        return UNKNOWN, "a nested model is kept whole"
    if name == "Softmax" or (
        name == "Activation" and _activation_name(layer) in _CHANNEL_MIXING_ACTIVATIONS
    ):
        # Normalises over the channels: its input must keep them all (it is the classifier's).
        return BARRIER, "mixes channels (softmax)"
    known = (
        _PRODUCERS
        | _DEPTHWISE
        | _PASS_THROUGH
        | _ELEMENTWISE_MERGE
        | {"BatchNormalization", "Concatenate", "Flatten", "Reshape", "Softmax"}
    )
    if name not in known or type(layer).__module__.split(".")[0] != "tf_keras":
        return UNKNOWN, f"layer type {name} is not one structured pruning can edit; kept whole"
    reason = _unsupported_reason(layer, node, shared)
    if reason:
        return UNKNOWN, f"{name} {reason}; kept whole"
    if name in _PRODUCERS:
        return PRODUCER, ""
    if name in _DEPTHWISE:
        return DEPTHWISE, ""
    if name == "BatchNormalization":
        return BATCH_NORM, ""
    if name in _ELEMENTWISE_MERGE:
        return MERGE, ""
    if name == "Concatenate":
        return CONCAT, ""
    if name == "Flatten":
        return FLATTEN, ""
    if name == "Reshape":
        return RESHAPE, ""
    return PASS, ""


def analyze(model, skip_layers: Iterable[str] = ()) -> ChannelPlan:
    """Puts the channels of every tensor of ``model`` into channel groups (see the module doc).

    Args:
      model: a built Sequential or functional tf_keras model.
      skip_layers: layers whose output channels must all be kept.

    Returns:
      The plan; nothing is changed.

    Raises:
      ModelInputError: a subclassed or unbuilt model.
    """
    nodes = _network_nodes(model)
    uf = _UnionFind()
    layouts: dict[TensorKey, Layout] = {}
    blocks: list[tuple[int, str]] = []
    producers: dict[int, list[str]] = {}
    members: dict[int, list[str]] = {}
    scored: list[tuple[TensorKey, Layout]] = []
    plans: dict[str, LayerPlan] = {}
    calls: dict[str, int] = {}
    for layer, _, _ in nodes:
        calls[layer.name] = calls.get(layer.name, 0) + 1

    def fresh(tensor, reason: str | None) -> Layout:
        channels = _last_dim(tensor) or 1
        gid = uf.new(channels)
        if reason:
            blocks.append((gid, reason))
        return [(gid, channels)]

    def block(layout: Layout, reason: str) -> None:
        for gid, _ in layout:
            blocks.append((gid, reason))

    def join(layouts_in: list[Layout]) -> bool:
        first = layouts_in[0]
        if any([c for _, c in lay] != [c for _, c in first] for lay in layouts_in[1:]):
            return False
        for lay in layouts_in[1:]:
            for (a, _), (b, _) in zip(first, lay, strict=True):
                uf.union(a, b)
        return True

    for layer, _, node in nodes:
        name = type(layer).__name__
        kind, reason = _kind(layer, node, calls[layer.name] > 1)
        inputs = list(node.keras_inputs)
        outputs = _flat(node.outputs)
        in_layouts = [layouts.get(_tensor_key(t)) for t in inputs]
        if kind == INPUT:
            for tensor in outputs:
                layouts[_tensor_key(tensor)] = fresh(tensor, "model input")
            continue
        if any(lay is None for lay in in_layouts) or not inputs:
            kind, reason = UNKNOWN, f"{name} reads tensors from outside the model; kept whole"
        plan = LayerPlan(layer.name, name, kind, reason=reason)
        out_layout: Layout | None = None
        if kind in (PRODUCER, FLATTEN, RESHAPE, DEPTHWISE, BATCH_NORM, PASS) and len(inputs) != 1:
            kind = plan.kind = UNKNOWN
            plan.reason = f"{name} with {len(inputs)} inputs; kept whole"
        if kind == PRODUCER:
            out_layout = fresh(outputs[0], None)
            gid = out_layout[0][0]
            producers[gid] = [layer.name]
            if _activation_name(layer) in _CHANNEL_MIXING_ACTIVATIONS:
                blocks.append((gid, f"{layer.name} applies {_activation_name(layer)}"))
            scored.append((_tensor_key(inputs[0]), in_layouts[0]))
        elif kind in (DEPTHWISE, BATCH_NORM, PASS):
            out_layout = list(in_layouts[0])
        elif kind == MERGE:
            if join(in_layouts):
                out_layout = list(in_layouts[0])
            else:
                why = f"{layer.name} joins tensors whose channels differ (broadcast)"
                for lay in in_layouts:
                    block(lay, why)
                out_layout = fresh(outputs[0], why)
        elif kind == CONCAT:
            rank = outputs[0].shape.rank
            axis = int(layer.get_config().get("axis", -1))
            if rank is not None and axis in (-1, rank - 1):
                out_layout = [seg for lay in in_layouts for seg in lay]
            elif join(in_layouts):
                out_layout = list(in_layouts[0])
            else:
                why = f"{layer.name} concatenates tensors whose channels differ"
                for lay in in_layouts:
                    block(lay, why)
                out_layout = fresh(outputs[0], why)
        elif kind in (FLATTEN, RESHAPE):
            in_shape = inputs[0].shape
            out_shape = outputs[0].shape
            if (
                in_shape.rank is None
                or out_shape.rank is None
                or any(d is None for d in in_shape[1:-1])
            ):
                kind = BARRIER
            elif out_shape.rank == 2:
                # Channels-last flatten: row (position * C + channel), so the layout repeats.
                out_layout = list(in_layouts[0]) * math.prod(int(d) for d in in_shape[1:-1])
                scored.append((_tensor_key(inputs[0]), in_layouts[0]))
            elif out_shape[-1] is not None and out_shape[-1] == in_shape[-1]:
                out_layout = list(in_layouts[0])
            else:
                kind = BARRIER
            if kind == BARRIER:
                plan.kind = BARRIER
                plan.reason = f"{name} moves the channel axis"
        if plan.kind in (UNKNOWN, BARRIER):
            why = plan.reason if plan.kind == BARRIER else "is kept whole"
            for lay in in_layouts:
                if lay is not None:
                    block(lay, f"read by {layer.name} ({name}), which {why}")
            out_layouts = [fresh(t, f"made by {layer.name} ({name}), which {why}") for t in outputs]
            for tensor, lay in zip(outputs, out_layouts, strict=True):
                layouts[_tensor_key(tensor)] = lay
            plan.input_layout = in_layouts[0] if len(in_layouts) == 1 else None
            plan.output_layout = out_layouts[0] if len(out_layouts) == 1 else None
        else:
            layouts[_tensor_key(outputs[0])] = out_layout
            plan.input_layout = in_layouts[0] if len(in_layouts) == 1 else None
            plan.output_layout = out_layout
            if len(out_layout) == 1:
                members.setdefault(out_layout[0][0], []).append(layer.name)
        plans[layer.name] = plan

    for tensor in model.outputs:
        block(layouts[_tensor_key(tensor)], "model output (the classifier is never pruned)")
    for skipped in skip_layers:
        if skipped in plans and plans[skipped].output_layout:
            block(plans[skipped].output_layout, f"{skipped} is in skip_layers")

    groups: dict[int, ChannelGroup] = {}
    root = {gid: uf.find(gid) for gid in uf.parent}
    for gid in uf.parent:
        r = root[gid]
        if r not in groups:
            groups[r] = ChannelGroup(id=r, channels=uf.channels[r])
        groups[r].producers.extend(producers.get(gid, []))
        groups[r].members.extend(members.get(gid, []))
    for gid, reason in blocks:
        group = groups[root[gid]]
        if reason not in group.blocked:
            group.blocked.append(reason)
    for key, layout in scored:
        for gid, _ in layout:
            group = groups[root[gid]]
            if (key, layout) not in group.scored_tensors:
                group.scored_tensors.append((key, layout))
    return ChannelPlan(layers=plans, groups=dict(sorted(groups.items())), root=root)


def check_model(model, config: StructuredPruningConfig) -> ChannelPlan:
    """Checks the model against the config before any heavy work; returns the plan.

    Raises:
      ModelInputError: a subclassed model, or nothing in the model can be pruned.
      ConfigError: a layer named in per_layer or skip_layers is missing, or per_layer names a
        layer whose channels cannot be removed.
    """
    plan = analyze(model, config.skip_layers)
    for field_name, names in (("skip_layers", config.skip_layers), ("per_layer", config.per_layer)):
        missing = sorted(n for n in names if n not in plan.layers)
        if missing:
            raise ConfigError(
                f"{FIELD}.{field_name}: no layer named {missing} in model {model.name!r} "
                f"(layers: {sorted(plan.layers)})"
            )
    for name in config.per_layer:
        if plan.layers[name].kind != PRODUCER:
            raise ConfigError(
                f"{FIELD}.per_layer.{name}: {name} is a {plan.layers[name].type}; only Conv/Dense "
                "layers have filters or units to remove"
            )
        group = plan.group_of(name)
        if group is not None and group.blocked and config.per_layer[name] > 0:
            raise ConfigError(
                f"{FIELD}.per_layer.{name}: the output channels of {name} cannot be removed ("
                + "; ".join(group.blocked)
                + "); drop it from per_layer"
            )
    if config.target_fraction > 0 and not plan.prunable_groups:
        skipped = "; ".join(f"{s['layer']}: {s['reason']}" for s in plan.skipped_layers())
        raise ModelInputError(
            f"model {model.name!r} has no Conv/Dense layer whose output channels can be removed "
            f"({skipped or 'no Conv/Dense layers'})."
        )
    return plan


# --------------------------------------------------------------------------------------------
# Scores


def _norm(values: np.ndarray, criterion: str, out_axis: int) -> np.ndarray:
    moved = np.moveaxis(values, out_axis, -1).reshape(-1, values.shape[out_axis])
    if criterion == "l1":
        return np.abs(moved).sum(axis=0)
    return np.sqrt(np.square(moved).sum(axis=0))


def _producer_kernel(layer) -> tuple[np.ndarray, int]:
    """The weights that make each output channel, and the axis of output channels."""
    name = type(layer).__name__
    if name.startswith("SeparableConv"):
        return layer.pointwise_kernel.numpy(), -1
    if name.endswith("Transpose"):
        return layer.kernel.numpy(), -2
    return layer.kernel.numpy(), -1


def weight_scores(model, plan: ChannelPlan, criterion: str) -> dict[int, np.ndarray]:
    """l1 or l2 norm of each output channel's filter, summed over a group's producers."""
    scores: dict[int, np.ndarray] = {}
    for group in plan.prunable_groups:
        total = np.zeros(group.channels, dtype=np.float64)
        for name in group.producers:
            kernel, axis = _producer_kernel(model.get_layer(name))
            total += _norm(kernel, criterion, axis)
        scores[group.id] = total
    return scores


def _tensor(model, key: TensorKey):
    name, node_index, tensor_index = key
    layers = {layer.name: layer for layer in model.layers}
    for tensor in model.inputs:  # a Sequential's InputLayer is not among model.layers
        layers.setdefault(tensor._keras_history.layer.name, tensor._keras_history.layer)
    layer = layers[name]
    return _flat(layer._inbound_nodes[node_index].outputs)[tensor_index]


def activation_scores(
    model, plan: ChannelPlan, criterion: str, dataset, batches: int
) -> dict[int, np.ndarray]:
    """Per-channel mean |activation| or first-order Taylor score on ``batches`` train batches.

    The tensors scored are those the next weighted layer (or a Flatten before one) reads, so a
    channel's score is what removing it takes away from the rest of the network. Taylor is
    Molchanov et al. (2017): per example, |mean over positions of activation x dLoss/dActivation|.

    Raises:
      DataError: the dataset yields no batch.
    """
    import tensorflow as tf
    import tf_keras

    keys: list[TensorKey] = []
    for group in plan.prunable_groups:
        for key, _ in group.scored_tensors:
            if key not in keys:
                keys.append(key)
    if not keys:
        return {g.id: np.zeros(g.channels) for g in plan.prunable_groups}
    if len(model.outputs) != 1:
        raise ModelInputError(
            f"{FIELD}.criterion {criterion!r} needs a single-output classifier; model "
            f"{model.name!r} has {len(model.outputs)} outputs. Use criterion l1 or l2."
        )
    probe = tf_keras.Model(model.inputs, [model.outputs[0], *[_tensor(model, k) for k in keys]])
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(
        from_logits=not training.outputs_probabilities(model)
    )
    sums = {k: None for k in keys}
    examples = 0
    for x, y in dataset.take(batches):
        with tf.GradientTape() as tape:
            outputs = probe(x, training=False)
            predictions, activations = outputs[0], outputs[1:]
            loss = loss_fn(y, predictions) if criterion == "taylor" else None
        gradients = tape.gradient(loss, activations) if criterion == "taylor" else None
        for i, key in enumerate(keys):
            a = activations[i]
            axes = list(range(1, a.shape.rank - 1))
            if criterion == "taylor":
                per_example = tf.abs(tf.reduce_mean(a * gradients[i], axis=axes))
            else:
                per_example = tf.reduce_mean(tf.abs(a), axis=axes)
            total = tf.reduce_sum(per_example, axis=0).numpy().astype(np.float64)
            sums[key] = total if sums[key] is None else sums[key] + total
        examples += int(tf.shape(predictions)[0])
    if not examples:
        raise DataError(f"{FIELD}.criterion {criterion!r}: the train dataset yielded no batch")
    scores: dict[int, np.ndarray] = {}
    for group in plan.prunable_groups:
        total = np.zeros(group.channels, dtype=np.float64)
        for key, layout in group.scored_tensors:
            offset = 0
            for gid, channels in layout:
                if plan.root[gid] == group.id:
                    total += sums[key][offset : offset + channels] / examples
                offset += channels
        scores[group.id] = total
    return scores


def channel_scores(
    model, plan: ChannelPlan, criterion: str, dataset=None, batches: int = 8
) -> dict[int, np.ndarray]:
    """Scores of every prunable group's channels (higher is more important)."""
    if criterion in ("l1", "l2"):
        return weight_scores(model, plan, criterion)
    if dataset is None:
        raise ConfigError(f"{FIELD}.criterion {criterion!r} needs train data; pass a dataset")
    return activation_scores(model, plan, criterion, dataset, batches)


# --------------------------------------------------------------------------------------------
# Selection


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


def select_channels(
    plan: ChannelPlan,
    scores: Mapping[int, np.ndarray],
    config: StructuredPruningConfig,
    progress: float = 1.0,
    original_channels: Mapping[str, int] | None = None,
) -> dict[int, np.ndarray]:
    """The channels each prunable group keeps (sorted indices).

    Args:
      plan: from :func:`analyze`.
      scores: from :func:`channel_scores`.
      config: scope, per-layer overrides, minimum and multiple of kept channels.
      progress: how far towards the configured fractions (of the *original* channels) to go:
        iterative pruning passes step / steps, a single step 1.0.
      original_channels: output channels of each producer before any pruning step (default:
        the current ones).
    """
    fraction = config.target_fraction * progress

    def original(group: ChannelGroup) -> int:
        if original_channels is None:
            return group.channels
        return max(original_channels.get(p, group.channels) for p in group.producers)

    keep: dict[int, np.ndarray] = {}
    global_groups = []
    for group in plan.prunable_groups:
        overrides = [config.per_layer[p] for p in group.producers if p in config.per_layer]
        if overrides or config.scope == "per_layer":
            group_fraction = min(overrides) * progress if overrides else fraction
            count = _keep_count(original(group), group_fraction, group.channels, config)
            keep[group.id] = _best(scores[group.id], count)
        else:
            global_groups.append(group)
    if not global_groups:
        return keep

    # Global: rank every channel on scores normalised by its group's mean, so layers with
    # different fan-in (and so different norms) compete fairly.
    total_original = sum(original(g) for g in global_groups)
    already_removed = sum(original(g) - g.channels for g in global_groups)
    to_remove = max(math.floor(fraction * total_original + 1e-9) - already_removed, 0)
    candidates = []
    limits = {}
    for group in global_groups:
        s = scores[group.id]
        mean = float(np.mean(s)) if s.size else 0.0
        normalised = s / mean if mean > 0 else np.zeros_like(s)
        limits[group.id] = _keep_count(
            original(group), config.max_fraction_per_layer, group.channels, config
        )
        candidates.extend((float(v), group.id, i) for i, v in enumerate(normalised))
    candidates.sort()
    removed: dict[int, set[int]] = {g.id: set() for g in global_groups}
    channels = {g.id: g.channels for g in global_groups}
    count = 0
    for _, gid, index in candidates:
        if count >= to_remove:
            break
        if channels[gid] - len(removed[gid]) > limits[gid]:
            removed[gid].add(index)
            count += 1
    for group in global_groups:
        kept = group.channels - len(removed[group.id])
        multiple = config.channel_multiple
        kept = min(group.channels, math.ceil(kept / multiple) * multiple)
        keep[group.id] = _best(scores[group.id], kept)
    return keep


# --------------------------------------------------------------------------------------------
# Rebuild


def _indices(layout: Layout, plan: ChannelPlan, keep: Mapping[int, np.ndarray]) -> np.ndarray:
    parts, offset = [], 0
    for gid, channels in layout:
        kept = keep.get(plan.root[gid])
        parts.append(offset + (np.arange(channels) if kept is None else np.asarray(kept)))
        offset += channels
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _full(layout: Layout | None) -> int:
    return sum(c for _, c in layout) if layout else 0


def _slice_layer(layer, lp: LayerPlan, plan: ChannelPlan, keep) -> tuple[dict, list] | None:
    """(config changes, new weights) of a layer whose channels change, or None when unchanged."""
    weights = layer.get_weights()
    in_idx = _indices(lp.input_layout, plan, keep) if lp.input_layout else None
    out_idx = _indices(lp.output_layout, plan, keep) if lp.output_layout else None
    in_same = in_idx is None or len(in_idx) == _full(lp.input_layout)
    out_same = out_idx is None or len(out_idx) == _full(lp.output_layout)
    if in_same and out_same:
        return None
    if lp.kind == PRODUCER:
        name = lp.type
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


def rebuild(model, plan: ChannelPlan, keep: Mapping[int, Sequence[int]]):
    """A new model with only the kept channels of each group, and the surviving weights.

    Args:
      model: the model ``plan`` was made from (it is not changed).
      plan: from :func:`analyze`.
      keep: kept channel indices per group id; groups left out keep all their channels.

    Raises:
      ValueError: a blocked group is asked to lose channels, or an index is out of range.
    """
    import tf_keras

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
    changes: dict[str, tuple[dict, list]] = {}
    for name, lp in plan.layers.items():
        if lp.kind in (UNKNOWN, BARRIER):
            continue
        sliced = _slice_layer(model.get_layer(name), lp, plan, keep)
        if sliced is not None:
            changes[name] = sliced

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


# --------------------------------------------------------------------------------------------
# Orchestration


def _channels_by_layer(plan: ChannelPlan) -> dict[str, int]:
    counts = {}
    for name, lp in plan.layers.items():
        if lp.kind in (PRODUCER, DEPTHWISE, BATCH_NORM) and lp.output_layout:
            counts[name] = _full(lp.output_layout)
    return counts


def _measure(model, eval_ds) -> dict:
    from components.common.flops import model_flops

    flops = model_flops(model)
    return {
        "parameters": int(model.count_params()),
        "flops_per_example": int(flops["flops_per_example"]),
        "accuracy": training.accuracy(model, eval_ds) if eval_ds is not None else None,
    }


def _prune_step(model, plan, train_ds, eval_ds, config, step, original_channels, strategy):
    """One step: score, select, rebuild, fine-tune. Returns (new model, step record)."""
    import tf_keras

    progress = step / config.steps
    scores = channel_scores(model, plan, config.criterion, train_ds, config.score_batches)
    keep = select_channels(plan, scores, config, progress, original_channels)
    with strategy.scope():
        candidate = rebuild(model, plan, keep)
    pruned = _measure(candidate, eval_ds)
    fine_tuning = {"epochs_run": 0, "wall_time_s": 0.0, "history": []}
    accuracy_after = pruned["accuracy"]
    if config.fine_tuning.epochs > 0:
        tf_keras.utils.set_random_seed(config.fine_tuning.seed + step)
        with strategy.scope():
            training.compile_classifier(candidate, config.fine_tuning)
        fine_tuning = training.fit(
            candidate, train_ds, eval_ds, config.fine_tuning, f"structured pruning {step}"
        )
        if eval_ds is not None:
            accuracy_after = training.accuracy(candidate, eval_ds)
    return candidate, {
        "step": step,
        "fraction": config.target_fraction * progress,
        "parameters": pruned["parameters"],
        "flops_per_example": pruned["flops_per_example"],
        "accuracy_before_fine_tuning": pruned["accuracy"],
        "accuracy_after_fine_tuning": accuracy_after,
        "fine_tuning_epochs": fine_tuning["epochs_run"],
        "fine_tuning_wall_time_s": fine_tuning["wall_time_s"],
        "fine_tuning_history": fine_tuning["history"],
    }


def structured_prune(model, train_ds, eval_ds, config: StructuredPruningConfig):
    """Removes filters and units from ``model`` as ``config`` says; returns (new model, report).

    With ``config.steps`` > 1 the target is reached in equal steps, each fine-tuned; a step
    whose eval accuracy after fine-tuning falls below ``config.accuracy_floor`` is discarded
    and pruning stops with the model of the step before (an unpruned copy after step 1).

    Args:
      model: a built Sequential or functional tf_keras classifier (not changed).
      train_ds: batched (inputs, labels) for the data criteria and fine-tuning (capped by the
        caller, e.g. ``make_dataset(..., limit=fine_tuning.max_train_examples)``), or None when
        neither is used.
      eval_ds: batched (inputs, labels) for accuracy, or None (no accuracy, no floor).
      config: the structured pruning config.

    Returns:
      The rebuilt model (fine-tuned when configured; compiled when fine-tuned) and a JSON-ready
      report: ``layers`` (channels_before/after per Conv/Dense/DepthwiseConv/BN layer),
      ``parameters_before/after``, ``flops_before/after`` (per example), their ratios,
      ``accuracy_before`` (input model), ``accuracy_before_fine_tuning`` and
      ``accuracy_after_fine_tuning`` (last accepted step), ``accuracy_after`` (returned model),
      ``achieved_fraction``, ``skipped_layers`` (layer, type, reason), ``groups``, ``steps``
      and ``stopped_reason``.

    Raises:
      ConfigError, ModelInputError, DataError: before any heavy work where possible.
    """
    started = time.time()
    plan = check_model(model, config)
    if config.criterion in DATA_CRITERIA and train_ds is None:
        raise ConfigError(f"{FIELD}.criterion {config.criterion!r} needs the train split")
    if config.fine_tuning.epochs > 0 and train_ds is None:
        raise ConfigError(f"{FIELD}.fine_tuning.epochs > 0 needs the train split")
    if config.accuracy_floor is not None and eval_ds is None:
        raise ConfigError(f"{FIELD}.accuracy_floor needs the eval split")
    training.skip_autograph_for_tf_keras()

    original_channels = {
        name: _full(lp.output_layout) for name, lp in plan.layers.items() if lp.kind == PRODUCER
    }
    before = _measure(model, eval_ds)
    strategy = training.make_strategy(config.fine_tuning.strategy)
    current, current_plan, current_metrics = model, plan, before
    records: list[dict] = []
    stopped_reason = "target reached"
    for step in range(1, config.steps + 1):
        candidate, record = _prune_step(
            current, current_plan, train_ds, eval_ds, config, step, original_channels, strategy
        )
        accuracy = record["accuracy_after_fine_tuning"]
        log.warning(
            "structured pruning step %d/%d: fraction %.3f, FLOPs %d -> %d, accuracy %s -> %s",
            step,
            config.steps,
            record["fraction"],
            current_metrics["flops_per_example"],
            record["flops_per_example"],
            record["accuracy_before_fine_tuning"],
            accuracy,
        )
        record["accepted"] = config.accuracy_floor is None or accuracy >= config.accuracy_floor
        records.append(record)
        if not record["accepted"]:
            kept = f"the model of step {step - 1}" if step > 1 else "the unpruned model"
            stopped_reason = (
                f"accuracy {accuracy:.4f} after step {step} is below the floor "
                f"{config.accuracy_floor}; kept {kept}"
            )
            break
        current, current_plan = candidate, analyze(candidate, config.skip_layers)
        current_metrics = {
            "parameters": record["parameters"],
            "flops_per_example": record["flops_per_example"],
            "accuracy": accuracy,
        }
    if current is model:
        # Nothing was accepted: hand back a copy, so the caller never shares the input's weights.
        current = rebuild(model, plan, {})
    report = _report(plan, current_plan, original_channels, before, current_metrics, config)
    report.update(
        stopped_reason=stopped_reason,
        steps_run=len(records),
        steps_accepted=sum(1 for r in records if r["accepted"]),
        steps=records,
        wall_time_s=time.time() - started,
    )
    last = next((r for r in reversed(records) if r["accepted"]), None)
    report["accuracy_before_fine_tuning"] = last["accuracy_before_fine_tuning"] if last else None
    report["accuracy_after_fine_tuning"] = last["accuracy_after_fine_tuning"] if last else None
    return current, report


def _report(plan, final_plan, original_channels, before, after, config) -> dict:
    channels_before = _channels_by_layer(plan)
    channels_after = _channels_by_layer(final_plan)
    return {
        "criterion": config.criterion,
        "scope": config.scope,
        "target_fraction": config.target_fraction,
        "achieved_fraction": _removed_fraction(plan, original_channels, channels_after),
        "parameters_before": before["parameters"],
        "parameters_after": after["parameters"],
        "parameters_ratio": after["parameters"] / before["parameters"]
        if before["parameters"]
        else None,
        "flops_before": before["flops_per_example"],
        "flops_after": after["flops_per_example"],
        "flops_ratio": after["flops_per_example"] / before["flops_per_example"]
        if before["flops_per_example"]
        else None,
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


def _removed_fraction(plan: ChannelPlan, original: Mapping[str, int], after: Mapping) -> float:
    """Fraction of the prunable groups' channels removed (each group counted once)."""
    total = removed = 0
    for group in plan.prunable_groups:
        name = group.producers[0]
        total += original[name]
        removed += original[name] - after.get(name, original[name])
    return removed / total if total else 0.0


# --------------------------------------------------------------------------------------------
# Artifacts (paths in, paths out; the Pruner's executor calls these in mode structured)


def run(
    model_uri: str,
    examples_uri: str,
    data,
    config: StructuredPruningConfig,
    output_uri: str,
) -> dict:
    """Prunes the model at ``model_uri`` and writes the new model artifact at ``output_uri``.

    The train split (shuffled, capped at ``fine_tuning.max_train_examples``) feeds the data
    criteria and fine-tuning; the eval split feeds accuracy. Writes ``Format-Serving/``,
    ``structured_pruning.json`` (the report) and ``fine_tuning_history.json``; nothing when
    anything fails.

    Args:
      model_uri: a Model artifact or SavedModel directory (tf_keras).
      examples_uri: TFX Examples with the train and eval splits ``data`` names.
      data: a :class:`~components.common.examples.DataConfig`.
      config: the structured pruning config.
      output_uri: the output Model artifact's directory.

    Returns:
      The report.
    """
    from components.common import model_io, optimization

    model = model_io.load_keras_model(model_uri)
    check_model(model, config)  # fail on the model before reading any data
    train_ds, eval_ds, _ = optimization.datasets(examples_uri, data, model, config.fine_tuning)
    new_model, report = structured_prune(
        model, train_ds if config.needs_train_data else None, eval_ds, config
    )
    history = {str(s["step"]): s.pop("fine_tuning_history") for s in report["steps"]}
    report["model_uri"] = model_uri
    report["config"] = config.model_dump(mode="json")
    optimization.write_model_artifact(
        new_model, output_uri, {RECORD_FILE: report, HISTORY_FILE: history}
    )
    return report


def key_numbers(report: dict) -> dict:
    """The custom properties of the output Model artifact (see the constants above)."""
    accepted = [s for s in report["steps"] if s["accepted"]]
    return {
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
