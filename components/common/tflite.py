"""TFLite conversion (``tf.lite``, the converter) and a small runner around the LiteRT interpreter
(``ai_edge_litert``, the runtime devices use; quantized I/O and static batches handled)."""

from __future__ import annotations

import numpy as np

# The converter's op names (unsupported_ops) and the fused LSTM's state (state_tensors) are read
# in :mod:`components.common.conversion`, which imports nothing of this module.
from components.common.conversion import state_tensors, unsupported_ops  # noqa: F401
from components.common.errors import ConversionError


def convert_float32(saved_model_dir: str, batch_size: int | None = 1) -> bytes:
    """A float32 TFLite flatbuffer (builtin ops only) of a SavedModel: see :func:`convert_float32_planned`."""
    return convert_float32_planned(saved_model_dir, batch_size)[0]


def convert_float32_planned(saved_model_dir: str, batch_size: int | None = 1):
    """Converts a SavedModel to a float32 TFLite flatbuffer (builtin ops only).

    A tf_keras SavedModel is converted from the Keras model's call with a static batch of
    ``batch_size`` (:mod:`components.common.conversion`; None: dynamic), whatever its serving
    signature does (parse tf.Examples, say); any other SavedModel from its serving signature.
    The baseline is converted by its Profiler and again by the Evaluator: in one process the
    second conversion of the same SavedModel bytes comes from :mod:`components.common.model_cache`.

    Returns:
      (flatbuffer, the input plan as a dict: ``batch_size``, ``static``, ``inputs``, ``reason``).
    Raises:
      ConversionError: (a ModelInputError) naming the ops TFLite has no builtin kernel for.
    """
    import os

    from components.common import model_cache, model_io

    def convert():
        if os.path.exists(os.path.join(saved_model_dir, model_io.KERAS_METADATA_PB)):
            from components.common import conversion

            model = model_io.load_keras_model(saved_model_dir, shared=True)
            flatbuffer, plan = conversion.convert_float32(
                model, batch_size, what=f"the model at {saved_model_dir!r}"
            )
            return flatbuffer, plan.to_dict()
        return _convert_float32(saved_model_dir), {
            "batch_size": None,
            "requested": batch_size,
            "static": False,
            "reason": "not a tf_keras SavedModel: converted from its serving signature",
        }

    return model_cache.get_or_load(f"float32_tflite_b{batch_size}", saved_model_dir, convert)


def _convert_float32(saved_model_dir: str) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - ConverterError and friends
        ops = unsupported_ops(str(e))
        which = f" (ops without a TFLite builtin kernel: {', '.join(ops)})" if ops else ""
        first_line = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ConversionError(
            f"the model at {saved_model_dir!r} cannot be converted to TFLite{which}: "
            f"{first_line[:400]}. Replace those ops or leave the model out of TFLite conversion.",
            detail=f"float32 TFLite conversion: {first_line[:160]}",
        ) from None


class TFLiteModel:
    """Runs a flatbuffer in the LiteRT interpreter, the runtime devices use.

    Float inputs in, float outputs out: each input is cast to its tensor's own dtype (float into
    an int8/uint8 input with a scale is quantized; int32/int64 token ids pass through) and int
    outputs are dequantized. A flatbuffer converted with a static batch (input shape signature
    ``[1, ...]``, see :attr:`static_batch`) runs a larger input in chunks of that batch, the last
    one padded and the padding dropped: its reshapes are baked in, so it is never resized. A
    dynamic-batch flatbuffer (``[-1, ...]``) is resized to the input's batch.

    A graph the default delegate (XNNPACK) takes but then fails to prepare (LiteRT 2.3 does so
    on sparse-encoded int8 weights) runs on the default kernels instead, as an app that turns
    the delegate off would; :attr:`delegate_error` says why (None: the delegate prepared).
    """

    def __init__(self, flatbuffer: bytes, num_threads: int = 1):
        self.flatbuffer = flatbuffer
        self.num_threads = num_threads
        self.delegate_error: str | None = None
        self.interpreter = interpreter(flatbuffer, num_threads=num_threads)
        self._allocate()
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self.static_batch: int | None = static_batch(self.input_details)
        first = self.input_details[0]["shape"] if self.input_details else []
        self._batch = int(first[0]) if len(first) else 1
        self._rows: int | None = None  # rows of the last input when it was padded
        self._stateful: bool | None = None  # has state tensors to reset before each call

    @property
    def input_dtype(self) -> str:
        return np.dtype(self.input_details[0]["dtype"]).name

    @property
    def output_dtype(self) -> str:
        return np.dtype(self.output_details[0]["dtype"]).name

    def _allocate(self) -> None:
        try:
            self.interpreter.allocate_tensors()
        except RuntimeError as e:
            if self.delegate_error is not None or not is_delegate_failure(e):
                raise
            import logging

            self.delegate_error = str(e).strip()
            logging.getLogger(__name__).warning(
                "XNNPACK failed to prepare this graph (%s): running it on the default kernels",
                self.delegate_error,
            )
            shapes = [list(d["shape"]) for d in self.interpreter.get_input_details()]
            self.interpreter = interpreter(
                self.flatbuffer, num_threads=self.num_threads, default_delegates=False
            )
            for detail, shape in zip(self.interpreter.get_input_details(), shapes, strict=True):
                if list(detail["shape"]) != shape:
                    self.interpreter.resize_tensor_input(detail["index"], shape)
            self.interpreter.allocate_tensors()

    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        for detail in self.input_details:
            shape = list(detail["shape"])
            shape[0] = batch
            self.interpreter.resize_tensor_input(detail["index"], shape)
        self._allocate()
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self._batch = batch

    def set_inputs(self, inputs) -> None:
        """Sets the input tensors (arrays, batch first) without running.

        A static-batch flatbuffer takes at most :attr:`static_batch` rows (fewer are padded);
        :meth:`predict` and :meth:`predict_each` run larger inputs in chunks.

        Raises:
          ValueError: more rows than a static-batch flatbuffer takes.
        """
        arrays = _arrays(inputs)
        rows = int(arrays[0].shape[0]) if arrays[0].ndim else 1
        self._rows = None
        if self.static_batch is None:
            self._resize(rows)
        elif rows > self.static_batch:
            raise ValueError(
                f"this flatbuffer has a static batch of {self.static_batch} and cannot take "
                f"{rows} rows at once (predict and predict_each run them in chunks)"
            )
        elif rows < self.static_batch:
            pad = self.static_batch - rows
            arrays = [np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for a in arrays]
            self._rows = rows
        for detail, array in zip(self.input_details, arrays, strict=True):
            self.interpreter.set_tensor(detail["index"], cast_input(array, detail))

    def invoke(self) -> None:
        """One call, from a clean state: a flatbuffer with state tensors (a fused LSTM's hidden and
        cell state, kept between calls by the kernel) has them reset first, as a stateless Keras
        model computes (see :func:`components.common.conversion.state_tensors`)."""
        if self._stateful is None:
            self._stateful = state_tensors(self.flatbuffer) > 0
        if self._stateful:
            self.interpreter.reset_all_variables()
        self.interpreter.invoke()

    def outputs(self) -> np.ndarray:
        """The first output tensor as float32 (dequantized), without a static batch's padding."""
        detail = self.output_details[0]
        out = self.interpreter.get_tensor(detail["index"])
        scale, zero_point = detail["quantization"]
        if np.issubdtype(out.dtype, np.integer) and scale:
            out = (out.astype(np.float32) - zero_point) * scale
        out = out.astype(np.float32)
        return out[: self._rows] if self._rows is not None else out

    def predict(self, inputs) -> np.ndarray:
        """Float outputs of the first output tensor for a batch of inputs (a static-batch
        flatbuffer runs it in chunks of its batch)."""
        arrays = _arrays(inputs)
        rows = int(arrays[0].shape[0]) if arrays[0].ndim else 1
        if self.static_batch is None or rows <= self.static_batch:
            self.set_inputs(arrays)
            self.invoke()
            return self.outputs()
        return self._chunks(arrays, rows, self.static_batch)

    def predict_each(self, inputs, batch_size: int = 1) -> np.ndarray:
        """Runs ``inputs`` through in batches of ``batch_size`` (of :attr:`static_batch` for a
        flatbuffer converted with one)."""
        arrays = _arrays(inputs)
        rows = int(arrays[0].shape[0])
        return self._chunks(arrays, rows, self.static_batch or batch_size)

    def _chunks(self, arrays: list, rows: int, size: int) -> np.ndarray:
        chunks = []
        for start in range(0, rows, size):
            self.set_inputs([a[start : start + size] for a in arrays])
            self.invoke()
            chunks.append(self.outputs().copy())
        return np.concatenate(chunks)


def interpreter(
    flatbuffer: bytes | None = None,
    num_threads: int = 1,
    model_path: str | None = None,
    default_delegates: bool = True,
):
    """A LiteRT interpreter (``ai_edge_litert``) for a flatbuffer's bytes or file, with the
    default delegate (XNNPACK) as on a device unless ``default_delegates`` is False; tensors not
    yet allocated (the delegate is applied when they first are)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (
        OpResolverType.AUTO
        if default_delegates
        else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return Interpreter(
        model_path=model_path,
        model_content=flatbuffer,
        num_threads=num_threads,
        experimental_op_resolver_type=resolver,
    )


def is_delegate_failure(error: Exception) -> bool:
    """True for the interpreter's error when a delegate took a node and then failed to prepare
    it (``... (TfLiteXNNPackDelegate) failed to prepare``)."""
    return "delegate" in str(error).lower()


def static_batch(input_details: list[dict]) -> int | None:
    """The batch a flatbuffer was converted with (its inputs' ``shape_signature[0]``), or None
    when the batch is dynamic (-1) or an input has no batch dimension."""
    batches = set()
    for detail in input_details:
        signature = detail.get("shape_signature")
        signature = detail["shape"] if signature is None or len(signature) == 0 else signature
        if len(signature) == 0 or int(signature[0]) < 1:
            return None
        batches.add(int(signature[0]))
    return batches.pop() if len(batches) == 1 else None


def cast_input(array, detail: dict) -> np.ndarray:
    """``array`` as the input tensor of ``detail`` takes it: floats into an integer tensor with a
    scale are quantized, other values are cast (token ids rounded, never scaled)."""
    array = np.asarray(array)
    dtype = np.dtype(detail["dtype"])
    if array.dtype == dtype:
        return array
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and np.issubdtype(array.dtype, np.floating):
        info = np.iinfo(dtype)
        if scale:
            array = np.round(array / scale + zero_point)
        array = np.clip(np.rint(array), info.min, info.max)
    return array.astype(dtype)


def _arrays(inputs) -> list:
    return (
        [np.asarray(a) for a in inputs]
        if isinstance(inputs, tuple | list)
        else [np.asarray(inputs)]
    )


# TensorType enum of the TFLite schema -> numpy dtype.
_TFLITE_DTYPES = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    6: np.bool_,
    7: np.int16,
    9: np.int8,
    10: np.float64,
}


def densify(values: np.ndarray, shape, sparsity) -> np.ndarray:
    """The dense tensor of a sparse-encoded one (TFLite ``SparsityParameters``, CSR levels).

    ``values`` are the stored (non-zero) values in traversal order; each level of
    ``dim_metadata`` is DENSE (``dense_size`` entries) or SPARSE_CSR (segments and indices); the
    levels past the tensor's rank are the inner dimensions of blocks (``block_map``). This is
    TFLite's own ``FormatConverter::SparseToDense``, so a sparse flatbuffer's weights read as
    what the model computes with.
    """
    rank = len(shape)
    order = [int(i) for i in sparsity.traversalOrder]
    block_map = [int(i) for i in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    levels = sparsity.dimMetadata
    block_size = {d: int(levels[rank + k].denseSize) for k, d in enumerate(block_map)}
    dense = np.zeros([int(d) for d in shape], dtype=values.dtype)
    index = [0] * len(levels)

    def coordinate() -> tuple[int, ...]:
        at = {dim: index[level] for level, dim in enumerate(order)}
        return tuple(
            at[d] * block_size[d] + at[rank + block_map.index(d)] if d in block_size else at[d]
            for d in range(rank)
        )

    def fill(level: int, position: int) -> None:
        if level == len(levels):
            dense[coordinate()] = values[position]
            return
        meta = levels[level]
        if meta.format == 0:  # DENSE
            for i in range(int(meta.denseSize)):
                index[level] = i
                fill(level + 1, position * int(meta.denseSize) + i)
            return
        segments, indices = meta.arraySegments.values, meta.arrayIndices.values
        for i in range(int(segments[position]), int(segments[position + 1])):
            index[level] = int(indices[i])
            fill(level + 1, i)

    fill(0, 0)
    return dense


def tensor_values(model, tensor) -> np.ndarray | None:
    """A constant tensor's values from its buffer, densified when sparse-encoded (None: no data)."""
    buffer = model.buffers[tensor.buffer] if tensor.buffer else None
    dtype = _TFLITE_DTYPES.get(tensor.type)
    if buffer is None or buffer.data is None or len(buffer.data) == 0 or dtype is None:
        return None
    data = np.frombuffer(np.asarray(buffer.data, dtype=np.uint8).tobytes(), dtype=dtype)
    shape = list(tensor.shape) if tensor.shape is not None else [data.size]
    if tensor.sparsity is not None:
        return densify(data, shape, tensor.sparsity)
    return data.reshape(shape) if data.size == np.prod(shape) else data


def flatbuffer_weights(flatbuffer: bytes) -> list[dict]:
    """Every constant tensor stored in a flatbuffer (weights, biases), read from its buffers.

    Reads the model file itself rather than the interpreter, so it sees exactly what ships:
    int8 weights stay int8, and sparsity or clustering that survived conversion is visible
    (sparse-encoded tensors are densified).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    weights = []
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            values = tensor_values(model, tensor)
            if values is None:
                continue
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            weights.append({"name": name, "dtype": values.dtype.name, "values": values})
    return weights
