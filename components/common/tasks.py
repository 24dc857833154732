"""Which task a model solves, inferred from its output layer and the label feature, or set with
``data.task`` (the one key; ``evaluator.task`` is its deprecated older name).

Inference reads the model's single output (per-example shape and final activation) and the label
feature of the Examples (dtype, values per example, and a sample of values: are they all 0/1?):

- outputs (C,) with C >= 2, not sigmoid, one int label -> ``multiclass``
- outputs (1,) sigmoid, or a linear unit with int 0/1 labels -> ``binary``
- outputs (K,) sigmoid (or linear with int 0/1 labels), K 0/1 labels -> ``multilabel``
- outputs (K,) not softmax, K float labels (not all 0/1, or a linear output with float labels
  that are not all 0/1) -> ``regression``
- outputs (..., C) with one int label per position -> ``dense``

A case the rules cannot settle (a linear output with float 0/1 labels: logit or regression?) is
an error naming ``data.task``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from components.common.errors import DataError, ModelInputError
from components.common.metrics import TASKS, Task

TASK_KEY = "data.task"


@dataclass(frozen=True)
class LabelInfo:
    """What the Examples say about the label: dtype, values per example, a sample of values."""

    key: str
    kind: str  # "int64", "float" or "bytes"
    length: int
    binary_values: bool  # every sampled value is 0 or 1


def final_activation(model) -> str:
    """``softmax``, ``sigmoid``, ``linear`` or another activation name of the model's output."""
    import tf_keras

    layer = model.layers[-1]
    if isinstance(layer, tf_keras.layers.Softmax):
        return "softmax"
    if isinstance(layer, tf_keras.layers.Activation) or hasattr(layer, "activation"):
        activation = getattr(layer, "activation", None)
        name = getattr(activation, "__name__", None) or str(activation or "linear")
        return name
    return "linear"


def output_shape(model) -> tuple[int, ...]:
    """The per-example shape of the model's one output.

    Raises:
      ModelInputError: for models with several outputs, or an unknown output dimension.
    """
    outputs = list(model.outputs)
    if len(outputs) != 1:
        names = [t.name.split("/")[0].split(":")[0] for t in outputs]
        raise ModelInputError(
            f"model {model.name!r} has {len(outputs)} outputs {names}: the pipeline optimises and "
            "gates models with one output. Export the head you deploy as its own model (e.g. "
            "tf_keras.Model(model.inputs, model.outputs[0])), or concatenate the outputs into one."
        )
    shape = tuple(outputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ModelInputError(
            f"model {model.name!r} has an output of unknown shape {shape}: give its inputs a "
            "fixed shape so every example gives the same number of outputs."
        )
    return tuple(int(d) for d in shape)


def _check(kind: str, shape: tuple[int, ...], label: LabelInfo | None, from_logits: bool) -> None:
    """Raises DataError when ``kind`` cannot fit these outputs and labels."""
    size = math.prod(shape)
    problem = None
    if kind == "multiclass" and (len(shape) != 1 or shape[0] < 2):
        problem = f"multiclass needs outputs (C,) with C >= 2 class scores, the model gives {shape}"
    elif kind == "binary" and size != 1:
        problem = f"binary needs one output value per example, the model gives {shape}"
    elif kind == "dense" and len(shape) < 2:
        problem = f"dense needs outputs (..., C) per position, the model gives {shape}"
    if problem is None and label is not None:
        expected = {
            "multiclass": 1,
            "binary": 1,
            "multilabel": size,
            "regression": size,
            "dense": math.prod(shape[:-1]),
        }[kind]
        if label.length != expected:
            problem = (
                f"{kind} needs {expected} label value(s) per example for outputs {shape}, the "
                f"label {label.key!r} holds {label.length}"
            )
        elif label.kind == "bytes":
            problem = f"label {label.key!r} holds bytes; labels must be numbers"
        elif kind in ("multiclass", "dense") and label.kind != "int64":
            problem = f"{kind} needs int64 class ids, label {label.key!r} holds floats"
        elif kind in ("binary", "multilabel") and not label.binary_values:
            problem = f"{kind} needs 0/1 labels, label {label.key!r} holds other values"
    if problem:
        raise DataError(
            f"{TASK_KEY}: {problem}. Set {TASK_KEY} to the model's task, one of {list(TASKS)}."
        )


def infer(model, label: LabelInfo | None, override: str = "auto") -> Task:
    """The task of ``model`` given its label (None: only the model is known).

    Raises:
      ModelInputError: several outputs, or an output of unknown shape.
      DataError: the task cannot be inferred (names data.task) or the override does not fit.
    """
    shape = output_shape(model)
    activation = final_activation(model)
    from_logits = activation not in ("softmax", "sigmoid")
    if override and override != "auto":
        _check(override, shape, label, from_logits)
        return Task(override, shape, from_logits, f"set by {TASK_KEY}")
    kind, why = _guess(shape, activation, label)
    _check(kind, shape, label, from_logits)
    return Task(kind, shape, from_logits and kind != "regression", why)


def _guess(shape, activation: str, label: LabelInfo | None) -> tuple[str, str]:
    size = math.prod(shape)
    what = f"{activation} output {shape}"
    if label is None:
        if len(shape) >= 2:
            return "dense", f"inferred from the {what}"
        if activation == "sigmoid":
            return ("binary" if size == 1 else "multilabel"), f"inferred from the {what}"
        if size == 1:
            return "regression", f"inferred from the {what}"
        return "multiclass", f"inferred from the {what}"
    about = f"{what}, label {label.key!r} ({label.length} {label.kind})"
    if len(shape) >= 2 and label.length == math.prod(shape[:-1]) and label.kind == "int64":
        return "dense", f"inferred from the {about}"
    if len(shape) == 1 and shape[0] >= 2 and label.length == 1 and activation != "sigmoid":
        return "multiclass", f"inferred from the {about}"
    if label.length == size:
        if activation == "softmax" and size >= 2:
            return "multilabel", f"inferred from the {about}"  # _check explains what is wrong
        binary = "binary" if size == 1 else "multilabel"
        if activation == "sigmoid" and label.binary_values:
            return binary, f"inferred from the {about}, 0/1 labels"
        if label.kind == "int64" and label.binary_values and activation != "sigmoid":
            return binary, f"inferred from the {about}, 0/1 labels (logits)"
        if label.kind == "float" and label.binary_values and activation not in ("sigmoid",):
            raise DataError(
                f"{TASK_KEY}: cannot tell the task: the model has a {what} and label "
                f"{label.key!r} holds float 0/1 values (logits of a classifier, or a regression "
                f"target?). Set {TASK_KEY}: binary/multilabel or {TASK_KEY}: regression."
            )
        return "regression", f"inferred from the {about}"
    raise DataError(
        f"{TASK_KEY}: no task fits a model with {what} and label {label.key!r} holding "
        f"{label.length} {label.kind} value(s) per example: multiclass needs one class id, "
        "binary/multilabel/regression one label per output, dense one class id per position. "
        f"Check data.label_key, or set {TASK_KEY}."
    )


def label_info(key: str, kind: str, length: int, values) -> LabelInfo:
    """A :class:`LabelInfo` from the label feature's description and a sample of its values."""
    sample = np.asarray(values, dtype=np.float64)
    binary = bool(sample.size) and bool(np.all((sample == 0) | (sample == 1)))
    return LabelInfo(key, kind, length, binary)
