"""The automatic student's architecture: the teacher's config scaled in width and depth.

A graph view of a Sequential / Functional config (top level), the width rule (every layer with
``filters``/``units`` scaled, the head and the layers merged with unscalable tensors kept) and the
depth rule (repeated blocks dropped per run); :mod:`components.distiller.student` builds the
model from the result. The rules themselves are described in that module's docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from components.common import layer_classes
from components.common.errors import ConfigError

WIDTH_FIELDS = ("filters", "units")
NESTED_MODEL_CLASSES = ("Sequential", "Functional", "Model")
# Layers that travel with the weighted layer before them when a block is dropped.
FOLLOWER_CLASSES = layer_classes.ELEMENTWISE_STATELESS | {
    "PReLU",
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
}
# Layers whose output has the channel count (last dimension) of their input.
CHANNEL_PRESERVING_CLASSES = (
    FOLLOWER_CLASSES
    | layer_classes.SPATIAL_CHANNEL_PRESERVING
    | {"Softmax", "DepthwiseConv1D", "DepthwiseConv2D"}
)
ELEMENTWISE_MERGE_CLASSES = layer_classes.ELEMENTWISE_MERGE


@dataclass
class StudentReport:
    """How the student was made from the teacher (recorded in the distillation JSON)."""

    source: str  # "auto" or "module_file"
    width_multiplier: float | None = None
    depth: int | None = None
    scaled_layers: dict = field(default_factory=dict)  # name -> {field: [teacher, student]}
    kept_width_layers: list = field(default_factory=list)
    dropped_blocks: list = field(default_factory=list)  # [[layer names], ...]
    kept_blocks: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------
# Graph view of a Sequential / Functional config (top level only)
# --------------------------------------------------------------------------------------------


def _is_ref(item) -> bool:
    return (
        isinstance(item, list)
        and len(item) >= 3
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and isinstance(item[2], int)
    )


def _refs(structure) -> list[list]:
    """Every tensor reference ``[layer, node, tensor, ...]`` in an ``inbound_nodes`` structure."""
    if _is_ref(structure):
        return [structure]
    found = []
    if isinstance(structure, list):
        for item in structure:
            found.extend(_refs(item))
    elif isinstance(structure, dict):
        for item in structure.values():
            found.extend(_refs(item))
    return found


class _Graph:
    """Names, producers and consumers of the layers of one model config."""

    def __init__(self, class_name: str, config: dict):
        self.sequential = class_name == "Sequential"
        self.entries = config["layers"]
        self.names = [e["config"]["name"] for e in self.entries]
        self.by_name = dict(zip(self.names, self.entries, strict=True))
        self.inputs: dict[str, list[str]] = {}
        self.single: dict[str, bool] = {}  # one call, one input tensor
        if self.sequential:
            for i, name in enumerate(self.names):
                self.inputs[name] = [self.names[i - 1]] if i else []
                self.single[name] = i > 0
            self.outputs = [self.names[-1]]
        else:
            for entry in self.entries:
                nodes = entry.get("inbound_nodes") or []
                refs = _refs(nodes)
                self.inputs[entry["name"]] = list(dict.fromkeys(r[0] for r in refs))
                self.single[entry["name"]] = (
                    len(nodes) == 1 and len(refs) == 1 and refs[0][1] == 0 and refs[0][2] == 0
                )
            self.outputs = [r[0] for r in config["output_layers"]]
        self.consumers: dict[str, list[str]] = {n: [] for n in self.names}
        for name in self.names:
            for src in self.inputs[name]:
                if src in self.consumers:
                    self.consumers[src].append(name)

    def class_of(self, name: str) -> str:
        return self.by_name[name]["class_name"]


def _width_configs(entry: dict) -> list[dict]:
    """The layer configs of ``entry`` holding a width field (itself, or a wrapped layer)."""
    found = []
    config = entry.get("config", {})
    if any(isinstance(config.get(f), int) for f in WIDTH_FIELDS):
        found.append(config)
    for key in ("layer", "backward_layer"):
        inner = config.get(key)
        if isinstance(inner, dict):
            found.extend(_width_configs(inner))
    return found


def _has_width(graph: _Graph, name: str) -> bool:
    return bool(_width_configs(graph.by_name[name]))


def _head_layers(graph: _Graph) -> set[str]:
    """Layers between the nearest width layer(s) and the outputs, those width layers included."""
    head: set[str] = set()
    stack = list(graph.outputs)
    while stack:
        name = stack.pop()
        if name in head:
            continue
        head.add(name)
        if not _has_width(graph, name) and graph.class_of(name) not in NESTED_MODEL_CLASSES:
            stack.extend(graph.inputs[name])
    return head


def _width_source(graph: _Graph, name: str) -> str | None:
    """The width layer that sets the channel count of ``name``'s output, or None if none does."""
    seen = set()
    while name not in seen:
        seen.add(name)
        if _has_width(graph, name):
            return name
        cls = graph.class_of(name)
        if cls in CHANNEL_PRESERVING_CLASSES or cls in ELEMENTWISE_MERGE_CLASSES:
            inputs = graph.inputs[name]
            if not inputs:
                return None
            name = inputs[0]
            continue
        return None
    return None


def _merge_locked(graph: _Graph, keep: set[str]) -> set[str]:
    """Width layers that must keep their width because an element-wise merge ties them to a
    tensor that is not scaled (a model input, a kept layer)."""
    locked: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name in graph.names:
            if graph.class_of(name) not in ELEMENTWISE_MERGE_CLASSES:
                continue
            sources = [_width_source(graph, src) for src in graph.inputs[name]]
            fixed = any(s is None or s in keep or s in locked for s in sources)
            if fixed:
                for s in sources:
                    if s is not None and s not in keep and s not in locked:
                        locked.add(s)
                        changed = True
    return locked


def _scaled(value: int, multiplier: float, what: str) -> int:
    new = int(math.floor(value * multiplier + 0.5))
    if new < 1:
        raise ConfigError(
            f"distiller.width_multiplier {multiplier} leaves {what} with 0 (the teacher has "
            f"{value}); use a width_multiplier of at least {0.5 / value:.3g}, or a module_file "
            "with build_student."
        )
    return new


def scale_model_config(
    class_name: str,
    config: dict,
    multiplier: float,
    report: StudentReport,
    prefix: str = "",
    top: bool = True,
) -> None:
    """Scales every width field of a (nested) model config in place."""
    graph = _Graph(class_name, config)
    keep = _head_layers(graph) if top else set()
    keep |= _merge_locked(graph, keep)
    for name in graph.names:
        entry = graph.by_name[name]
        # Stale build shapes would make tf_keras build layers for the teacher's widths.
        entry.pop("build_config", None)
        entry.pop("compile_config", None)
        if entry["class_name"] in NESTED_MODEL_CLASSES:
            # A nested model on the way to the output holds the classifier head.
            scale_model_config(
                entry["class_name"],
                entry["config"],
                multiplier,
                report,
                f"{prefix}{name}/",
                top=name in keep,
            )
            continue
        for layer_config in _width_configs(entry):
            for key in WIDTH_FIELDS:
                value = layer_config.get(key)
                if not isinstance(value, int):
                    continue
                if name in keep:
                    report.kept_width_layers.append(f"{prefix}{name}")
                    continue
                new = _scaled(value, multiplier, f"layer {prefix}{name!r} ({key})")
                layer_config[key] = new
                report.scaled_layers[f"{prefix}{name}"] = {key: [value, new]}


# --------------------------------------------------------------------------------------------
# Depth: repeated blocks
# --------------------------------------------------------------------------------------------


@dataclass
class _Block:
    layers: list[str]
    input_name: str
    output_name: str


def _layer_shapes(model, name: str):
    try:
        layer = model.get_layer(name)
        return tuple(layer.input_shape), tuple(layer.output_shape)
    except (AttributeError, ValueError, RuntimeError, TypeError):
        return None, None


def _followers(graph: _Graph, name: str, excluded: set[str]) -> list[str]:
    chain = []
    current = name
    while True:
        consumers = graph.consumers[current]
        if current in graph.outputs or len(consumers) != 1:
            return chain
        nxt = consumers[0]
        if nxt in excluded or graph.class_of(nxt) not in FOLLOWER_CLASSES or not graph.single[nxt]:
            return chain
        chain.append(nxt)
        current = nxt


def _residual_block(graph: _Graph, add: str, model, excluded: set[str]) -> _Block | None:
    inputs = graph.inputs[add]
    if len(inputs) != 2 or len(_refs(graph.by_name[add].get("inbound_nodes"))) != 2:
        return None
    for shortcut, branch_end in (inputs, inputs[::-1]):
        branch: list[str] = []
        current, consumer = branch_end, add
        while current != shortcut:
            if (
                current in excluded
                or current in branch
                or not graph.single.get(current)
                or graph.consumers[current] != [consumer]
                or current in graph.outputs
            ):
                branch = []
                break
            branch.insert(0, current)
            consumer = current
            current = graph.inputs[current][0]
        if not branch:
            continue
        _, x_shape = _layer_shapes(model, shortcut)
        _, add_shape = _layer_shapes(model, add)
        if x_shape is None or x_shape != add_shape:
            continue
        tail = _followers(graph, add, excluded)
        return _Block([*branch, add, *tail], shortcut, (tail or [add])[-1])
    return None


def _find_blocks(graph: _Graph, model, head: set[str]) -> list[_Block]:
    blocks: list[_Block] = []
    used: set[str] = set(head)
    if not graph.sequential:
        for name in graph.names:
            if graph.class_of(name) == "Add" and name not in used:
                block = _residual_block(graph, name, model, used)
                if block:
                    blocks.append(block)
                    used.update(block.layers)
    for name in graph.names:
        if name in used or not graph.single[name] or graph.class_of(name) in FOLLOWER_CLASSES:
            continue
        if graph.class_of(name) in NESTED_MODEL_CLASSES or name in graph.outputs:
            continue
        layer = model.get_layer(name)
        if not layer.weights:
            continue
        in_shape, out_shape = _layer_shapes(model, name)
        if in_shape is None or in_shape != out_shape:
            continue
        tail = _followers(graph, name, used)
        blocks.append(_Block([name, *tail], graph.inputs[name][0], (tail or [name])[-1]))
        used.update([name, *tail])
    order = {n: i for i, n in enumerate(graph.names)}
    return sorted(blocks, key=lambda b: order[b.layers[0]])


def drop_blocks(class_name: str, config: dict, model, depth: int, report: StudentReport) -> None:
    """Drops, in place, the repeated blocks beyond ``depth`` in each run."""
    graph = _Graph(class_name, config)
    head = _head_layers(graph)
    blocks = _find_blocks(graph, model, head)
    position: dict[str, int] = {}  # block output -> its position in its run
    dropped: list[_Block] = []
    for block in blocks:
        index = position.get(block.input_name, -1) + 1
        position[block.output_name] = index
        if index >= depth:
            dropped.append(block)
        else:
            report.kept_blocks.append(block.layers)
    if not dropped:
        return
    removed = {name for b in dropped for name in b.layers}
    alias = {b.output_name: b.input_name for b in dropped}

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    config["layers"] = [e for e in config["layers"] if e["config"]["name"] not in removed]
    if class_name != "Sequential":
        for entry in config["layers"]:
            for ref in _refs(entry.get("inbound_nodes")):
                ref[0] = resolve(ref[0])
        for ref in config["output_layers"]:
            ref[0] = resolve(ref[0])
    report.dropped_blocks.extend(b.layers for b in dropped)
