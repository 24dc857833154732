"""What a TFLite flatbuffer holds, read from the file itself: operators, their tensor types, kernels.

The converter can leave an op in float without saying so (``TFLITE_BUILTINS_INT8`` alone does not
stop it), so whether a model is really integer is decided here, from the operators that ship.
"""

from __future__ import annotations

import numpy as np

# Ops that convert between float and integer tensors: boundaries, not float compute.
CONVERSION_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64"})


def _enum_names(enum_class) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


def _tensor_name(tensor) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name or "")


def _model(flatbuffer: bytes):
    from tensorflow.lite.python import schema_py_generated as schema

    return schema, schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)


def operators(flatbuffer: bytes, layer_names: list[str] | tuple[str, ...] = ()) -> list[dict]:
    """Every operator of the main subgraph in execution order.

    Each entry: ``op`` (builtin name, or the custom code), ``output`` (first output tensor name),
    ``input_types`` / ``output_types`` of the non-constant tensors, ``float`` (computes on float
    activations), and ``layer`` (the Keras layer in ``layer_names`` its tensor names point to,
    or None).
    """
    schema, model = _model(flatbuffer)
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    subgraph = model.subgraphs[0]
    tensors = subgraph.tensors or []

    def is_constant(index: int) -> bool:
        buffer_index = tensors[index].buffer
        if not buffer_index:
            return False
        data = model.buffers[buffer_index].data
        return data is not None and len(data) > 0

    result = []
    for op in subgraph.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, str(builtin))
        if name == "CUSTOM" and code.customCode:
            name = (
                code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            )
        inputs = [i for i in (op.inputs if op.inputs is not None else []) if i >= 0]
        outputs = list(op.outputs if op.outputs is not None else [])
        input_types = [type_names[tensors[i].type] for i in inputs if not is_constant(i)]
        output_types = [type_names[tensors[i].type] for i in outputs]
        output = _tensor_name(tensors[outputs[0]]) if outputs else ""
        # An op producing a signature output is named after the signature; its inputs still
        # carry the layer's name.
        layer = layer_of(output, layer_names) or next(
            (
                found
                for i in inputs
                if (found := layer_of(_tensor_name(tensors[i]), layer_names)) is not None
            ),
            None,
        )
        computes_in_float = name not in CONVERSION_OPS and any(
            t in _FLOAT_TYPES for t in input_types + output_types
        )
        result.append(
            {
                "op": name,
                "output": output,
                "input_types": input_types,
                "output_types": output_types,
                "float": computes_in_float,
                "layer": layer,
            }
        )
    return result


def layer_of(tensor_name: str, layer_names: list[str] | tuple[str, ...]) -> str | None:
    """The Keras layer a converted tensor came from, from its name (``model/<layer>/MatMul;...``).

    QAT wraps layers as ``quant_<layer>``; the prefix is dropped.
    """
    known = set(layer_names)
    for part in tensor_name.replace(";", "/").split("/"):
        for candidate in (part, part.removeprefix("quant_")):
            if candidate in known:
                return candidate
    return None


def float_ops(ops: list[dict]) -> list[dict]:
    """The operators computing on float activations (dequantized between integer layers)."""
    return [op for op in ops if op["float"]]


def activation_conversions(ops: list[dict]) -> list[dict]:
    """QUANTIZE / DEQUANTIZE ops on activations (at the I/O boundary or between layers).

    A DEQUANTIZE of a constant (float16 weights) is left out: it converts weights, it is not a
    boundary between integer and float computation.
    """
    return [op for op in ops if op["op"] in CONVERSION_OPS and op["input_types"]]


def describe(op: dict) -> str:
    """``OP(layer)`` or ``OP(tensor)``: how an op is named in messages and properties."""
    return f"{op['op']}({op['layer'] or op['output']})"


def kernels(flatbuffer: bytes) -> list[dict]:
    """Weight tensors of rank >= 2 (conv and dense kernels) with their sparsity and distinct values.

    Sparse-encoded tensors (``EXPERIMENTAL_SPARSITY``) are densified first.
    ``max_unique_per_channel`` counts distinct stored values per quantization channel (per output
    channel for per-axis int8 kernels, the whole tensor otherwise): clustered weights keep at most
    one value per cluster in each channel, even where each channel has its own scale.
    """
    schema, model = _model(flatbuffer)
    from components.common.tflite import tensor_values

    result = []
    for tensor in model.subgraphs[0].tensors or []:
        if not tensor.buffer or tensor.shape is None or len(tensor.shape) < 2:
            continue
        values = tensor_values(model, tensor)
        if values is None or values.shape != tuple(tensor.shape):
            continue  # packed (e.g. int4): not a kernel we can read
        dtype = values.dtype
        axis = 0
        quant = tensor.quantization
        if quant is not None and quant.scale is not None and len(quant.scale) > 1:
            axis = int(quant.quantizedDimension)
            per_channel = [
                np.unique(np.take(values, i, axis=axis)).size for i in range(values.shape[axis])
            ]
        else:
            per_channel = [int(np.unique(values).size)]
        result.append(
            {
                "name": _tensor_name(tensor),
                "dtype": np.dtype(dtype).name,
                "shape": list(values.shape),
                "count": int(values.size),
                "sparsity": float(1.0 - np.count_nonzero(values) / values.size),
                "unique_values": int(np.unique(values).size),
                "max_unique_per_channel": int(max(per_channel)),
                "sparse_encoded": tensor.sparsity is not None,
            }
        )
    return result


def kernel_summary(stats: list[dict]) -> dict:
    """Totals over kernels: element-weighted sparsity, most distinct values in one channel."""
    total = sum(s["count"] for s in stats)
    zeros = sum(s["sparsity"] * s["count"] for s in stats)
    return {
        "kernels": len(stats),
        "kernel_parameters": total,
        "kernel_sparsity": (zeros / total) if total else 0.0,
        "max_unique_per_channel": max((s["max_unique_per_channel"] for s in stats), default=0),
        "sparse_encoded_kernels": sum(1 for s in stats if s.get("sparse_encoded")),
    }
