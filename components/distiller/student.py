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
import os

from components.common.errors import ConfigError, ModelInputError
from components.distiller.architecture import StudentReport, drop_blocks, scale_model_config

# Smallest normal float32: probabilities below it are clipped before the log.
FLOAT32_TINY = 1.1754944e-38

log = logging.getLogger(__name__)


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
    scale_model_config(class_name, config, width_multiplier, report)
    config["name"] = f"{config.get('name') or 'model'}_student"
    student = _from_config(class_name, config, "width-scaled student")
    if depth is not None:
        drop_blocks(class_name, config, student, depth, report)
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
