"""Converting a tf_keras model to TFLite as a device runs it: the model's call, static input shapes.

Every flatbuffer we measure and ship is converted here, from the Keras model's own call (never from
the SavedModel's serving signature, which may parse tf.Examples or apply a Transform graph that
TFLite has no kernels for), traced with a **static** input signature: batch 1 by default
(``data.tflite_batch_size``). With a dynamic batch, a model that starts with a ``Reshape`` (as
nearly every model fed by Examples does) computes its shape at run time (SHAPE -> STRIDED_SLICE ->
PACK), XNNPACK takes only part of the graph and int8 runs slower than float32; a Keras LSTM needs a
static batch to become TFLite's fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` (with a dynamic batch the
converter fails on TensorList ops). Inputs keep the model's dtypes (int64 token ids stay int64).

A model that cannot be given a static shape (an input with a variable dimension other than the
batch, e.g. variable-length token sequences) keeps a dynamic signature, with the reason recorded:
never a failure. The plan travels in every record (``tflite_inputs``) and in the OTA manifest.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

DEFAULT_BATCH_SIZE = 1
_OP_PATTERN = re.compile(r"'(tf\.[A-Za-z0-9_]+)'|op[s]? (?:named )?'?([A-Z][A-Za-z0-9_]+)'?")


def unsupported_ops(message: str) -> list[str]:
    """Op names mentioned in a converter error message."""
    found = []
    for a, b in _OP_PATTERN.findall(message):
        name = a or b
        if name and name not in found:
            found.append(name)
    return found


@dataclass(frozen=True)
class InputPlan:
    """The input signature a flatbuffer is converted with."""

    batch_size: int | None  # the static batch; None: dynamic
    requested: int | None  # what the configuration asked for
    inputs: tuple[tuple[str, tuple[int | None, ...], str], ...]  # (name, shape with batch, dtype)
    reason: str | None = None  # why the batch is dynamic although a static one was asked for

    @property
    def static(self) -> bool:
        return self.batch_size is not None

    def to_dict(self) -> dict:
        record = asdict(self)
        record["static"] = self.static
        record["inputs"] = [
            {"name": name, "shape": [-1 if d is None else d for d in shape], "dtype": dtype}
            for name, shape, dtype in self.inputs
        ]
        return record

    def describe(self) -> str:
        if self.static:
            return f"static batch {self.batch_size}"
        why = f" ({self.reason})" if self.reason else " (asked for)"
        return f"dynamic batch{why}"


def input_names(model) -> list[str]:
    names = list(getattr(model, "input_names", None) or [])
    return [
        names[i] if i < len(names) else tensor.name.split(":")[0]
        for i, tensor in enumerate(model.inputs)
    ]


def plan_inputs(model, batch_size: int | None = DEFAULT_BATCH_SIZE) -> InputPlan:
    """The static input signature for ``model`` at ``batch_size`` (None: dynamic), or a dynamic
    one with the reason when an input has a variable dimension besides the batch."""
    reason = None
    batch = batch_size
    shapes = []
    for name, tensor in zip(input_names(model), model.inputs, strict=True):
        dims = tuple(None if d is None else int(d) for d in tensor.shape[1:])
        if batch is not None and None in dims:
            shown = tuple("None" if d is None else d for d in dims)
            reason = (
                f"input {name!r} has a variable dimension {shown}: converted with dynamic shapes"
            )
            batch = None
        shapes.append((name, dims, tensor.dtype.name))
    inputs = tuple((name, (batch, *dims), dtype) for name, dims, dtype in shapes)
    return InputPlan(batch, batch_size, inputs, reason)


def keras_call(model, plan: InputPlan):
    """The model's call as a concrete function with the plan's input signature.

    Inputs are named like the model's inputs and outputs like its outputs, so the flatbuffer's
    signature runner takes and gives the names TF Serving clients of the SavedModel use.
    """
    import tensorflow as tf

    specs = [
        tf.TensorSpec([plan.batch_size, *shape[1:]], tf.as_dtype(dtype), name=name)
        for name, shape, dtype in plan.inputs
    ]
    output_names = list(getattr(model, "output_names", None) or ["output_0"])

    def call(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        return dict(zip(output_names, outputs, strict=True))

    return tf.function(call, autograph=False).get_concrete_function(*specs)


def converter(model, batch_size: int | None = DEFAULT_BATCH_SIZE):
    """A ``TFLiteConverter`` for ``model``'s call with a static input signature when possible.

    Converted from a concrete function whose variables are held by a plain ``tf.Module``: the
    converter saves only that (what ``from_keras_model`` does is save the whole Keras model with
    every layer's traces, 10x slower on a MobileNet).

    Returns:
      (the converter, the :class:`InputPlan` it converts with).
    """
    import tensorflow as tf

    plan = plan_inputs(model, batch_size)
    function = keras_call(model, plan)
    holder = tf.Module()
    holder.variables_of_model = list(model.variables)
    return tf.lite.TFLiteConverter.from_concrete_functions([function], holder), plan


def static_batch_hint(ops: list[str], plan: InputPlan | None) -> str | None:
    """What to do when a dynamic-batch conversion failed on TensorList ops (a recurrent layer)."""
    if plan is None or plan.static or not any(op.startswith("tf.TensorList") for op in ops):
        return None
    return (
        "A recurrent layer converts to TFLite's fused kernels only with a static batch: set "
        "data.tflite_batch_size (e.g. 1)" + (f"; here: {plan.reason}" if plan.reason else "")
    )


def conversion_failure(error: Exception, plan: InputPlan, what: str, hint: str):
    """A ConversionError naming the ops TFLite has no kernel for and what to do."""
    from components.common.errors import ConversionError

    text = str(error).strip()
    ops = unsupported_ops(text)
    which = f" (ops without a TFLite builtin kernel: {', '.join(ops)})" if ops else ""
    last = (text.splitlines()[-1] if text else type(error).__name__).rstrip(".")
    hint = static_batch_hint(ops, plan) or hint
    return ConversionError(
        f"{what} cannot be converted to TFLite{which}: {last[:400]}. {hint}.",
        detail=f"{what}: TFLite conversion: {last[:160]}",
    )


def convert_float32(model, batch_size: int | None = DEFAULT_BATCH_SIZE, what: str = "the model"):
    """A float32 flatbuffer (builtin ops only) of ``model``'s call.

    Returns:
      (flatbuffer bytes, :class:`InputPlan`).
    Raises:
      ConversionError: naming the ops without a builtin kernel.
    """
    import tensorflow as tf

    conv, plan = converter(model, batch_size)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return conv.convert(), plan
    except Exception as e:  # noqa: BLE001 - ConverterError and friends
        raise conversion_failure(
            e, plan, what, "Replace those ops or leave the model out of TFLite conversion"
        ) from None


def flatbuffer_plan(flatbuffer: bytes) -> dict:
    """What a flatbuffer's inputs were fixed to, read from the file: the static batch (None when
    any input's batch is dynamic), each input's name, shape signature and dtype, and its state
    tensors (:func:`state_tensors`).

    Raises:
      ValueError: the bytes are not a TFLite flatbuffer.
    """
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema

    model = _read_model(flatbuffer)
    subgraph = model.subgraphs[0]
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    inputs = []
    for index in subgraph.inputs if subgraph.inputs is not None else []:
        tensor = subgraph.tensors[index]
        signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        dtype = types.get(tensor.type, str(tensor.type))
        inputs.append(
            {
                "name": name,
                "shape": [int(d) for d in np.asarray(signature if signature is not None else [])],
                "dtype": "bool" if dtype == "bool" else dtype,
            }
        )
    batches = {i["shape"][0] if i["shape"] else None for i in inputs}
    static = len(batches) == 1 and all(i["shape"] and i["shape"][0] > 0 for i in inputs)
    dynamic_dims = any(d < 0 for i in inputs for d in i["shape"])
    return {
        "batch_size": next(iter(batches)) if static else None,
        "static": static and not dynamic_dims,
        "inputs": inputs,
        "state_tensors": _count_state_tensors(model),
    }


def _read_model(flatbuffer: bytes):
    from tensorflow.lite.python import schema_py_generated as schema

    if len(flatbuffer) < 8 or flatbuffer[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    return schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)


def _count_state_tensors(model) -> int:
    return sum(
        1 for subgraph in model.subgraphs or [] for t in subgraph.tensors or [] if t.isVariable
    )


def state_tensors(flatbuffer: bytes) -> int:
    """The flatbuffer's variable tensors: the state a fused LSTM keeps between calls.

    A Keras LSTM (not stateful) converts to ``UNIDIRECTIONAL_SEQUENCE_LSTM`` whose hidden and cell
    states are variable tensors that the kernel updates on every call: the next call starts from
    the previous example's state unless the caller resets them (``reset_all_variables()``,
    ``Interpreter::ResetVariableTensors``) before each call, as our runner does.
    """
    return _count_state_tensors(_read_model(flatbuffer))
