"""The student: built automatically from the teacher's own architecture, or by a user module file.

Automatic student (Sequential and Functional models of standard tf_keras layers, rebuilt from the
teacher's ``get_config()`` with fresh weights):

* **Width.** Every layer with ``filters`` or ``units`` (Dense, Conv*, SeparableConv*, recurrent
  layers, also inside TimeDistributed / Bidirectional wrappers and nested models) gets
  ``floor(n * width_multiplier + 0.5)`` of them. Kept at the teacher's width: the classifier head
  (the width layer(s) nearest the model output, so the number of classes stays) and every layer
  whose output is merged element-wise (Add, Multiply, ...) with a tensor that cannot be scaled (a
  model input, the head), so residual connections stay valid. A layer left with 0 filters/units
  is a :class:`ConfigError` naming it.
* **Depth.** ``depth = k`` keeps at most ``k`` *repeated blocks* in each *run* of them and drops
  the rest (``None`` keeps all, ``0`` drops all). A repeated block is a part of the top-level
  graph whose output shape equals its input shape, so dropping it leaves every other layer valid:

  - a layer with weights (not a normalization layer) with one input, outside the head, whose
    output shape equals its input shape, together with the normalization, activation, dropout
    and noise layers that directly follow it in a chain (e.g. Conv2D-BatchNorm-ReLU);
  - in Functional models, an identity residual block: an ``Add`` of a tensor ``x`` and a branch
    of single-input layers computed from ``x`` alone, with the layers of that kind that follow it.

  Blocks form a run when each starts at the output of the previous one; the first ``k`` of a run
  are kept. The shape test is done on the width-scaled student.

User student: a Python file defining ``build_student(teacher, input_spec) -> tf_keras.Model``, as
the TFX Trainer takes a ``module_file``; ``input_spec`` is the teacher's input signature
(a ``tf.TensorSpec`` with batch dimension None, or a list of them for several inputs).

Either student keeps the teacher's output convention (probabilities if the teacher ends in a
softmax, logits otherwise); :func:`training_copy` gives the logits-output twin that is trained.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
import os
from dataclasses import dataclass, field

from components.common import layer_classes
from components.common.errors import ConfigError, ModelInputError

# Smallest normal float32: probabilities below it are clipped before the log.
FLOAT32_TINY = 1.1754944e-38

log = logging.getLogger(__name__)

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


def _scale_model_config(
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
            _scale_model_config(
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


def _drop_blocks(class_name: str, config: dict, model, depth: int, report: StudentReport) -> None:
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


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _architecture(teacher) -> tuple[str, dict]:
    import tf_keras

    try:
        config = teacher.get_config()
    except (NotImplementedError, AttributeError, TypeError) as e:
        raise ModelInputError(
            "the teacher is not a Sequential or Functional tf_keras model (its architecture "
            f"cannot be read: {e}); give distiller.module_file with build_student(teacher, "
            "input_spec) to define the student."
        ) from None
    if isinstance(teacher, tf_keras.Sequential):
        return "Sequential", copy.deepcopy(config)
    if not isinstance(config, dict) or "layers" not in config or "output_layers" not in config:
        raise ModelInputError(
            f"the teacher ({type(teacher).__name__}) is not a Sequential or Functional tf_keras "
            "model; give distiller.module_file with build_student(teacher, input_spec)."
        )
    return "Functional", copy.deepcopy(config)


def _from_config(class_name: str, config: dict, what: str):
    import tf_keras

    try:
        if class_name == "Sequential":
            return tf_keras.Sequential.from_config(copy.deepcopy(config))
        return tf_keras.Model.from_config(copy.deepcopy(config))
    except Exception as e:  # noqa: BLE001 - any rebuild failure is the same user problem
        raise ModelInputError(
            f"the {what} cannot be built from the teacher's architecture: {e}. Its layers may not "
            "all be standard tf_keras layers, or a layer (a Reshape, ...) fixes a width; change "
            "distiller.width_multiplier / depth or give distiller.module_file with build_student."
        ) from None


def build_auto_student(teacher, width_multiplier: float, depth: int | None = None):
    """A fresh student with the teacher's architecture, narrower and/or shallower.

    Args:
      teacher: a Sequential or Functional tf_keras model (not changed).
      width_multiplier: filters/units factor for the hidden layers (see the module docstring).
      depth: repeated blocks kept per run (see the module docstring); None keeps all.

    Returns:
      (student, StudentReport). The student has fresh (random) weights.
    Raises:
      ConfigError: a layer would have no units left.
      ModelInputError: the teacher's architecture cannot be rebuilt.
    """
    class_name, config = _architecture(teacher)
    report = StudentReport("auto", width_multiplier=width_multiplier, depth=depth)
    _scale_model_config(class_name, config, width_multiplier, report)
    config["name"] = f"{config.get('name') or 'model'}_student"
    student = _from_config(class_name, config, "width-scaled student")
    if depth is not None:
        _drop_blocks(class_name, config, student, depth, report)
        if report.dropped_blocks:
            student = _from_config(class_name, config, "depth-reduced student")
    return student, report


def input_spec(teacher):
    """The teacher's input signature: a tf.TensorSpec (batch None), or a list for several inputs."""
    import tensorflow as tf

    specs = [
        tf.TensorSpec(shape=(None, *t.shape[1:]), dtype=t.dtype, name=t.name.split(":")[0])
        for t in teacher.inputs
    ]
    return specs[0] if len(specs) == 1 else specs


def load_build_student(module_file: str):
    """The ``build_student`` function of a user module file; ConfigError if there is none."""
    if not os.path.isfile(module_file):
        raise ConfigError(
            f"distiller.module_file {module_file!r} does not exist: give the path of a Python "
            "file defining build_student(teacher, input_spec)."
        )
    spec = importlib.util.spec_from_file_location("tfxopt_student_module", module_file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's code: report it as a config problem
        raise ConfigError(
            f"distiller.module_file {module_file!r} failed to import: {type(e).__name__}: {e}"
        ) from None
    fn = getattr(module, "build_student", None)
    if not callable(fn):
        raise ConfigError(
            f"distiller.module_file {module_file!r} defines no build_student(teacher, input_spec) "
            "function returning a tf_keras.Model."
        )
    return fn


def build_module_student(module_file: str, teacher):
    """Calls the module file's ``build_student(teacher, input_spec)``; returns (student, report)."""
    import tf_keras

    fn = load_build_student(module_file)
    student = fn(teacher, input_spec(teacher))
    if not isinstance(student, tf_keras.Model):
        raise ConfigError(
            f"build_student in {module_file!r} returned {type(student).__name__}, not a "
            "tf_keras.Model (build it with tf_keras, not keras 3)."
        )
    return student, StudentReport("module_file")


def check_compatible(teacher, student, task: str = "multiclass") -> None:
    """Raises ModelInputError unless the student takes the teacher's inputs and gives its outputs."""
    if len(teacher.outputs) != 1:
        raise ModelInputError(
            f"the teacher has {len(teacher.outputs)} outputs; distillation needs a classifier "
            "with one output of class scores."
        )
    t_out = tuple(teacher.outputs[0].shape[1:])
    if task == "multiclass" and (len(t_out) != 1 or not t_out[0] or t_out[0] < 2):
        raise ModelInputError(
            f"the teacher's output has shape {t_out} per example; distillation needs class "
            "scores of shape (num_classes,) with at least 2 classes."
        )
    try:
        s_outputs = student.outputs
    except AttributeError:
        s_outputs = None
    if not s_outputs:
        raise ModelInputError(
            "the student has no defined outputs: build it with tf_keras.Input (Sequential or "
            "Functional), or call it once on the input_spec inside build_student."
        )
    if len(s_outputs) != 1 or tuple(s_outputs[0].shape[1:]) != t_out:
        shapes = [tuple(o.shape[1:]) for o in s_outputs]
        raise ModelInputError(
            f"the student outputs {shapes[0] if len(shapes) == 1 else shapes} per example but "
            f"the teacher outputs {t_out}: the student must end in {t_out[0]} class scores."
        )
    t_in = [tuple(t.shape[1:]) for t in teacher.inputs]
    s_in = [tuple(t.shape[1:]) for t in student.inputs]
    if t_in != s_in:
        raise ModelInputError(
            f"the student takes inputs {s_in} but the teacher takes {t_in}: they are fed the "
            "same examples, so the inputs must match."
        )


def _is_graph_model(model) -> bool:
    try:
        model.get_config()
    except (NotImplementedError, AttributeError, TypeError):
        return False
    import tf_keras

    return isinstance(model, tf_keras.Sequential) or getattr(model, "_is_graph_network", False)


def training_copy(model, outputs_probabilities: bool, mixed_precision: bool = False):
    """The twin of ``model`` that is trained: it outputs logits and may compute in float16.

    Sequential and Functional models are cloned with the same weights: a final softmax (an
    activation of the last layer, or a Softmax / Activation layer) becomes linear; with mixed
    precision every layer but the last computes in float16 (its logits stay float32). Other models
    (subclassed) are wrapped: their probabilities are turned into logits by a log, and they share
    the weights.

    Returns:
      (twin, shares_weights): when shares_weights is False, copy the trained weights back with
      ``model.set_weights(twin.get_weights())``.
    """
    import tensorflow as tf
    import tf_keras

    if not _is_graph_model(model):
        if mixed_precision:
            log.warning("distiller: mixed precision is not applied to a subclassed student")
        if not outputs_probabilities:
            return model, True
        inputs = [tf_keras.Input(type_spec=s) for s in tf.nest.flatten(input_spec(model))]
        probs = model(inputs[0] if len(inputs) == 1 else inputs)
        logits = tf_keras.layers.Lambda(
            lambda p: tf.math.log(tf.maximum(p, FLOAT32_TINY)), name="log_probabilities"
        )(probs)
        return tf_keras.Model(inputs, logits, name=f"{model.name}_logits"), True

    last_name = model.layers[-1].name

    def clone_layer(layer):
        config = layer.get_config()
        is_last = layer.name == last_name
        if is_last and outputs_probabilities:
            if isinstance(layer, tf_keras.layers.Softmax) or (
                isinstance(layer, tf_keras.layers.Activation)
            ):
                return tf_keras.layers.Activation("linear", name=layer.name, dtype="float32")
            config["activation"] = "linear"
        if mixed_precision and not isinstance(layer, tf_keras.layers.InputLayer):
            config["dtype"] = "float32" if is_last else "mixed_float16"
        return layer.__class__.from_config(config)

    twin = tf_keras.models.clone_model(model, clone_function=clone_layer)
    twin.set_weights(model.get_weights())
    return twin, False


def match_output_convention(
    student, student_probabilities: bool, teacher_probabilities: bool, activation="softmax"
):
    """The student as saved: with the teacher's output convention (probabilities or logits)."""
    import tf_keras

    if student_probabilities == teacher_probabilities:
        return student
    if teacher_probabilities:
        log.warning(
            "distiller: the student outputs logits; a %s is added to match the teacher", activation
        )
        squash = tf_keras.layers.Activation(activation, name="probabilities")
        if _is_graph_model(student):
            outputs = squash(student.outputs[0])
            return tf_keras.Model(student.inputs, outputs, name=student.name)
        return tf_keras.Sequential([student, squash])
    log.warning("distiller: the student outputs probabilities; saved with logits like the teacher")
    twin, shares = training_copy(student, outputs_probabilities=True)
    if not shares:
        twin.set_weights(student.get_weights())
    return twin
