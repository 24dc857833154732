"""TFLite conversion and a small runner around ``tf.lite.Interpreter`` (quantized I/O handled)."""

from __future__ import annotations

import re

import numpy as np

from components.common.errors import ConversionError

_OP_PATTERN = re.compile(r"'(tf\.[A-Za-z0-9_]+)'|op[s]? (?:named )?'?([A-Z][A-Za-z0-9_]+)'?")


def unsupported_ops(message: str) -> list[str]:
    """Op names mentioned in a converter error message."""
    found = []
    for a, b in _OP_PATTERN.findall(message):
        name = a or b
        if name and name not in found:
            found.append(name)
    return found


def convert_float32(saved_model_dir: str) -> bytes:
    """Converts a SavedModel to a float32 TFLite flatbuffer (builtin ops only).

    Raises:
      ConversionError: (a ModelInputError) naming the ops TFLite has no builtin kernel for.
    """
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
    """Runs a flatbuffer: float inputs in, float outputs out, (de)quantizing int I/O as needed."""

    def __init__(self, flatbuffer: bytes, num_threads: int = 1):
        import tensorflow as tf

        self.flatbuffer = flatbuffer
        self.interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self._batch = 1

    @property
    def input_dtype(self) -> str:
        return np.dtype(self.input_details[0]["dtype"]).name

    @property
    def output_dtype(self) -> str:
        return np.dtype(self.output_details[0]["dtype"]).name

    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        for detail in self.input_details:
            shape = list(detail["shape"])
            shape[0] = batch
            self.interpreter.resize_tensor_input(detail["index"], shape)
        self.interpreter.allocate_tensors()
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self._batch = batch

    def set_inputs(self, inputs) -> None:
        """Sets the input tensors (float arrays, batch first) without running."""
        arrays = inputs if isinstance(inputs, tuple | list) else [inputs]
        self._resize(int(arrays[0].shape[0]))
        for detail, array in zip(self.input_details, arrays, strict=True):
            dtype = detail["dtype"]
            scale, zero_point = detail["quantization"]
            if np.issubdtype(dtype, np.integer) and scale:
                info = np.iinfo(dtype)
                array = np.clip(np.round(array / scale + zero_point), info.min, info.max)
            self.interpreter.set_tensor(detail["index"], np.asarray(array, dtype=dtype))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def outputs(self) -> np.ndarray:
        detail = self.output_details[0]
        out = self.interpreter.get_tensor(detail["index"])
        scale, zero_point = detail["quantization"]
        if np.issubdtype(out.dtype, np.integer) and scale:
            out = (out.astype(np.float32) - zero_point) * scale
        return out.astype(np.float32)

    def predict(self, inputs) -> np.ndarray:
        """Float outputs of the first output tensor for a batch of float inputs."""
        self.set_inputs(inputs)
        self.invoke()
        return self.outputs()

    def predict_each(self, inputs, batch_size: int = 1) -> np.ndarray:
        """Runs ``inputs`` through in batches (TFLite models are often built for batch 1)."""
        arrays = inputs if isinstance(inputs, tuple | list) else [inputs]
        n = int(arrays[0].shape[0])
        chunks = []
        for start in range(0, n, batch_size):
            part = [a[start : start + batch_size] for a in arrays]
            chunks.append(self.predict(part if len(part) > 1 else part[0]).copy())
        return np.concatenate(chunks)


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
