"""Graph analysis: which channels of a tf_keras model are kept or removed together.

:func:`analyze` walks the layer calls of a Sequential or functional model in topological order
and puts the channels (last axis) of every tensor into *channel groups* (see the package doc).
Nothing here changes a model or reads its weights.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from components.common import layer_classes
from components.common.errors import ModelInputError

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
_KNOWN = (
    _PRODUCERS
    | _DEPTHWISE
    | _PASS_THROUGH
    | _ELEMENTWISE_MERGE
    | {"BatchNormalization", "Concatenate", "Flatten", "Reshape", "Softmax"}
)

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

# Kinds by class name, once a layer is known and supported (the rest are PASS).
_KIND_OF_CLASS = {
    **dict.fromkeys(_PRODUCERS, PRODUCER),
    **dict.fromkeys(_DEPTHWISE, DEPTHWISE),
    **dict.fromkeys(_ELEMENTWISE_MERGE, MERGE),
    "BatchNormalization": BATCH_NORM,
    "Concatenate": CONCAT,
    "Flatten": FLATTEN,
    "Reshape": RESHAPE,
}
# Kinds that read exactly one tensor.
_SINGLE_INPUT = (PRODUCER, FLATTEN, RESHAPE, DEPTHWISE, BATCH_NORM, PASS)

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
                    reason = "output channels kept: " + "; ".join(group.blocked)
                    skipped.append({"layer": plan.name, "type": plan.type, "reason": reason})
        return skipped


def layout_width(layout: Layout | None) -> int:
    """Channels along the last axis of a tensor with this layout (0 for none)."""
    return sum(c for _, c in layout) if layout else 0


def tensor_key(tensor) -> TensorKey:
    """Where a symbolic tensor of a functional model is made: (layer, node, tensor index)."""
    history = tensor._keras_history
    return (history.layer.name, int(history.node_index), int(history.tensor_index))


def flat_tensors(structure) -> list:
    """The tensors of a nested structure (a node's inputs or outputs), in order."""
    import tensorflow as tf

    return tf.nest.flatten(structure)


def model_layers(model) -> dict:
    """Layers of ``model`` by name, the InputLayers included (a Sequential does not list them)."""
    layers = {layer.name: layer for layer in model.layers}
    for tensor in model.inputs:
        input_layer = tensor._keras_history.layer
        layers.setdefault(input_layer.name, input_layer)
    return layers


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


def _last_dim(tensor) -> int | None:
    shape = tensor.shape
    if shape.rank is None or shape.rank == 0 or shape[-1] is None:
        return None
    return int(shape[-1])


def _graph_network_nodes(model) -> set:
    """The node ids of a built Sequential/functional model; ModelInputError for other models."""
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
    return network_nodes


def _topological(nodes: dict[tuple[str, int], tuple]) -> list[tuple]:
    """The nodes in an order where every node comes after those it reads (iterative DFS: deep
    models would overflow recursion)."""
    order: list[tuple] = []
    done: set[tuple[str, int]] = set()
    for start in nodes:
        stack = [(start, False)]
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
                name, index, _ = tensor_key(tensor)
                if (name, index) in nodes and (name, index) not in done:
                    stack.append(((name, index), False))
    return order


def network_nodes(model) -> list[tuple[object, int, object]]:
    """(layer, node index, node) of every call inside ``model``, in topological order.

    Raises:
      ModelInputError: a subclassed or unbuilt model.
    """
    in_network = _graph_network_nodes(model)
    nodes: dict[tuple[str, int], tuple[object, int, object]] = {}
    for layer in model_layers(model).values():
        for index, node in enumerate(layer._inbound_nodes):
            if f"{layer.name}_ib-{index}" in in_network:
                nodes[(layer.name, index)] = (layer, index, node)
    return _topological(nodes)


def activation_name(layer) -> str:
    """The name of a layer's activation function ('' for none)."""
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
    if len(flat_tensors(node.outputs)) != 1:
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


def layer_kind(layer, node, shared: bool) -> tuple[str, str]:
    """(kind, reason) of one layer call."""
    import tf_keras

    name = type(layer).__name__
    if isinstance(layer, tf_keras.layers.InputLayer):
        return INPUT, ""
    if isinstance(layer, tf_keras.Model):
        return UNKNOWN, "a nested model is kept whole"
    if name == "Softmax" or (
        name == "Activation" and activation_name(layer) in _CHANNEL_MIXING_ACTIVATIONS
    ):
        # Normalises over the channels: its input must keep them all (it is the classifier's).
        return BARRIER, "mixes channels (softmax)"
    if name not in _KNOWN or type(layer).__module__.split(".")[0] != "tf_keras":
        return UNKNOWN, f"layer type {name} is not one structured pruning can edit; kept whole"
    reason = _unsupported_reason(layer, node, shared)
    if reason:
        return UNKNOWN, f"{name} {reason}; kept whole"
    return _KIND_OF_CLASS.get(name, PASS), ""


class _Analyzer:
    """One walk over a model's layer calls: tensor layouts, group unions and blocks."""

    def __init__(self):
        self.groups = _UnionFind()
        self.layouts: dict[TensorKey, Layout] = {}
        self.blocks: list[tuple[int, str]] = []
        self.producers: dict[int, list[str]] = {}
        self.members: dict[int, list[str]] = {}
        self.scored: list[tuple[TensorKey, Layout]] = []
        self.plans: dict[str, LayerPlan] = {}

    def fresh(self, tensor, reason: str | None) -> Layout:
        """A new group for a tensor's channels, blocked when ``reason`` is given."""
        channels = _last_dim(tensor) or 1
        gid = self.groups.new(channels)
        if reason:
            self.blocks.append((gid, reason))
        return [(gid, channels)]

    def block(self, layout: Layout, reason: str) -> None:
        for gid, _ in layout:
            self.blocks.append((gid, reason))

    def join(self, layouts: list[Layout]) -> bool:
        """Unites the groups of same-shaped layouts; False (nothing joined) when they differ."""
        first = layouts[0]
        if any([c for _, c in lay] != [c for _, c in first] for lay in layouts[1:]):
            return False
        for lay in layouts[1:]:
            for (a, _), (b, _) in zip(first, lay, strict=True):
                self.groups.union(a, b)
        return True

    def visit(self, layer, node, shared: bool) -> None:
        """Gives the outputs of one layer call their layout and records the layer's plan."""
        kind, reason = layer_kind(layer, node, shared)
        outputs = flat_tensors(node.outputs)
        if kind == INPUT:
            for tensor in outputs:
                self.layouts[tensor_key(tensor)] = self.fresh(tensor, "model input")
            return
        inputs = list(node.keras_inputs)
        in_layouts = [self.layouts.get(tensor_key(t)) for t in inputs]
        plan = LayerPlan(layer.name, type(layer).__name__, kind, reason=reason)
        if not inputs or any(lay is None for lay in in_layouts):
            plan.kind = UNKNOWN
            plan.reason = f"{plan.type} reads tensors from outside the model; kept whole"
        elif plan.kind in _SINGLE_INPUT and len(inputs) != 1:
            plan.kind, plan.reason = UNKNOWN, f"{plan.type} with {len(inputs)} inputs; kept whole"
        out_layout = self._output_layout(plan, layer, inputs, outputs, in_layouts)
        if plan.kind in (UNKNOWN, BARRIER):
            self._keep_whole(plan, outputs, in_layouts)
        else:
            self._carry(plan, outputs[0], in_layouts, out_layout)
        self.plans[layer.name] = plan

    def _output_layout(self, plan, layer, inputs, outputs, in_layouts) -> Layout | None:
        if plan.kind == PRODUCER:
            return self._produce(layer, inputs[0], outputs[0], in_layouts[0])
        if plan.kind in (DEPTHWISE, BATCH_NORM, PASS):
            return list(in_layouts[0])
        if plan.kind == MERGE:
            if self.join(in_layouts):
                return list(in_layouts[0])
            why = f"{layer.name} joins tensors whose channels differ (broadcast)"
            return self._unjoinable(in_layouts, outputs[0], why)
        if plan.kind == CONCAT:
            return self._concatenate(layer, outputs[0], in_layouts)
        if plan.kind in (FLATTEN, RESHAPE):
            return self._reshape(plan, inputs[0], outputs[0], in_layouts[0])
        return None

    def _produce(self, layer, tensor_in, tensor_out, in_layout: Layout) -> Layout:
        out_layout = self.fresh(tensor_out, None)
        gid = out_layout[0][0]
        self.producers[gid] = [layer.name]
        if activation_name(layer) in _CHANNEL_MIXING_ACTIVATIONS:
            self.blocks.append((gid, f"{layer.name} applies {activation_name(layer)}"))
        self.scored.append((tensor_key(tensor_in), in_layout))
        return out_layout

    def _unjoinable(self, in_layouts: list[Layout], tensor_out, why: str) -> Layout:
        for lay in in_layouts:
            self.block(lay, why)
        return self.fresh(tensor_out, why)

    def _concatenate(self, layer, tensor_out, in_layouts: list[Layout]) -> Layout:
        rank = tensor_out.shape.rank
        axis = int(layer.get_config().get("axis", -1))
        if rank is not None and axis in (-1, rank - 1):
            return [seg for lay in in_layouts for seg in lay]
        if self.join(in_layouts):
            return list(in_layouts[0])
        why = f"{layer.name} concatenates tensors whose channels differ"
        return self._unjoinable(in_layouts, tensor_out, why)

    def _reshape(self, plan: LayerPlan, tensor_in, tensor_out, in_layout: Layout):
        in_shape, out_shape = tensor_in.shape, tensor_out.shape
        if (
            in_shape.rank is None
            or out_shape.rank is None
            or any(d is None for d in in_shape[1:-1])
        ):
            pass  # the channel axis cannot be followed
        elif out_shape.rank == 2:
            # Channels-last flatten: row (position * C + channel), so the layout repeats.
            self.scored.append((tensor_key(tensor_in), in_layout))
            return list(in_layout) * math.prod(int(d) for d in in_shape[1:-1])
        elif out_shape[-1] is not None and out_shape[-1] == in_shape[-1]:
            return list(in_layout)
        plan.kind, plan.reason = BARRIER, f"{plan.type} moves the channel axis"
        return None

    def _keep_whole(self, plan: LayerPlan, outputs: list, in_layouts: list) -> None:
        why = plan.reason if plan.kind == BARRIER else "is kept whole"
        for lay in in_layouts:
            if lay is not None:
                self.block(lay, f"read by {plan.name} ({plan.type}), which {why}")
        made_by = f"made by {plan.name} ({plan.type}), which {why}"
        out_layouts = [self.fresh(t, made_by) for t in outputs]
        for tensor, lay in zip(outputs, out_layouts, strict=True):
            self.layouts[tensor_key(tensor)] = lay
        plan.input_layout = in_layouts[0] if len(in_layouts) == 1 else None
        plan.output_layout = out_layouts[0] if len(out_layouts) == 1 else None

    def _carry(self, plan: LayerPlan, tensor_out, in_layouts: list, out_layout: Layout) -> None:
        self.layouts[tensor_key(tensor_out)] = out_layout
        plan.input_layout = in_layouts[0] if len(in_layouts) == 1 else None
        plan.output_layout = out_layout
        if len(out_layout) == 1:
            self.members.setdefault(out_layout[0][0], []).append(plan.name)

    def finish(self, model, skip_layers: Iterable[str]) -> ChannelPlan:
        """Blocks the outputs and skipped layers, and gathers the final groups."""
        for tensor in model.outputs:
            self.block(
                self.layouts[tensor_key(tensor)], "model output (the classifier is never pruned)"
            )
        for skipped in skip_layers:
            if skipped in self.plans and self.plans[skipped].output_layout:
                self.block(self.plans[skipped].output_layout, f"{skipped} is in skip_layers")
        root = {gid: self.groups.find(gid) for gid in self.groups.parent}
        groups: dict[int, ChannelGroup] = {}
        for gid, r in root.items():
            group = groups.setdefault(r, ChannelGroup(id=r, channels=self.groups.channels[r]))
            group.producers.extend(self.producers.get(gid, []))
            group.members.extend(self.members.get(gid, []))
        for gid, reason in self.blocks:
            group = groups[root[gid]]
            if reason not in group.blocked:
                group.blocked.append(reason)
        for key, layout in self.scored:
            for gid, _ in layout:
                group = groups[root[gid]]
                if (key, layout) not in group.scored_tensors:
                    group.scored_tensors.append((key, layout))
        return ChannelPlan(layers=self.plans, groups=dict(sorted(groups.items())), root=root)


def analyze(model, skip_layers: Iterable[str] = ()) -> ChannelPlan:
    """Puts the channels of every tensor of ``model`` into channel groups (see the package doc).

    Args:
      model: a built Sequential or functional tf_keras model.
      skip_layers: layers whose output channels must all be kept.

    Returns:
      The plan; nothing is changed.

    Raises:
      ModelInputError: a subclassed or unbuilt model.
    """
    nodes = network_nodes(model)
    calls = Counter(layer.name for layer, _, _ in nodes)
    analyzer = _Analyzer()
    for layer, _, node in nodes:
        analyzer.visit(layer, node, calls[layer.name] > 1)
    return analyzer.finish(model, skip_layers)
