"""What a TFLite flatbuffer holds, read from the file itself: operators, their tensor types, kernels.

The converter can leave an op in float without saying so (``TFLITE_BUILTINS_INT8`` alone does not
stop it), so whether a model is really integer is decided here, from the operators that ship.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


#: Layers that compute nothing at inference: they never produce an op of their own.
OPLESS_LAYER_TYPES = frozenset(
    {
        "InputLayer",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "AlphaDropout",
        "GaussianDropout",
        "GaussianNoise",
        "ActivityRegularization",
    }
)
#: Layers whose computation the converter folds into the op before them (a conv or a dense
#: layer's bias, scale and fused activation).
_HEAD_TYPES = frozenset(
    {
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "Dense",
    }
)
_FOLLOWER_TYPES = frozenset({"BatchNormalization", "ReLU", "Activation"})
#: How the layers an op was fused from are joined in its name (``conv2d+batch_normalization``).
JOIN = "+"


@dataclass(frozen=True)
class LayerMap:
    """A Keras model's layers as the converter's op names are read against them.

    ``names``: every layer in model order. ``chains``: each conv / dense layer with the
    BatchNormalization / activation layers after it that the converter can fuse into its op (each
    one the only consumer of the one before). ``consumers``: the layers reading each layer's
    output, op-less layers (Dropout) looked through. ``opless``: the layers that compute nothing
    at inference.
    """

    names: tuple[str, ...]
    chains: tuple[tuple[str, ...], ...] = ()
    consumers: dict = field(default_factory=dict)
    opless: frozenset = frozenset()

    @classmethod
    def of(cls, layers) -> LayerMap:
        """A LayerMap of a Keras model, or of plain layer names (no graph: no fusion chains)."""
        if isinstance(layers, LayerMap):
            return layers
        if not hasattr(layers, "layers"):
            return cls(tuple(layers))
        return _keras_layer_map(layers)

    def order(self, names) -> list[str]:
        index = {n: i for i, n in enumerate(self.names)}
        return sorted(set(names), key=lambda n: index.get(n, len(index)))


def _keras_layer_map(model) -> LayerMap:
    layers = list(model.layers)
    names = tuple(layer.name for layer in layers)
    by_id = {id(layer): layer for layer in layers}
    kind = {layer.name: type(layer).__name__ for layer in layers}
    direct: dict[str, list[str]] = {}
    for layer in layers:
        readers = []
        for node in getattr(layer, "_outbound_nodes", []) or []:
            reader = getattr(node, "outbound_layer", None)
            if reader is not None and id(reader) in by_id and reader.name not in readers:
                readers.append(reader.name)
        direct[layer.name] = readers
    opless = frozenset(n for n in names if kind[n] in OPLESS_LAYER_TYPES)

    def through(name: str, seen=()) -> list[str]:
        result = []
        for reader in direct.get(name, []):
            if reader in opless and reader not in seen:
                result += [r for r in through(reader, (*seen, reader)) if r not in result]
            elif reader not in result:
                result.append(reader)
        return result

    consumers = {n: tuple(through(n)) for n in names}
    chains = []
    for name in names:
        if kind[name] not in _HEAD_TYPES:
            continue
        chain = [name]
        while len(direct[chain[-1]]) == 1 and kind[direct[chain[-1]][0]] in _FOLLOWER_TYPES:
            chain.append(direct[chain[-1]][0])
        if len(chain) > 1:
            chains.append(tuple(chain))
    return LayerMap(names, tuple(chains), consumers, opless)


def mentioned(tensor_name: str, layer_map: LayerMap) -> list[str]:
    """Every layer of ``layer_map`` a converted tensor's name mentions, in model order (a fused op's
    name lists its locations: ``model/re_lu_4/Relu;model/conv2d_2/Conv2D``)."""
    known = set(layer_map.names)
    found = []
    for part in tensor_name.replace(";", "/").split("/"):
        for candidate in (part, part.removeprefix("quant_")):
            if candidate in known:
                found.append(candidate)
    return layer_map.order(found)


def operators(flatbuffer: bytes, layer_names=()) -> list[dict]:
    """Every operator of the main subgraph in execution order.

    ``layer_names``: the Keras model itself (its graph tells which layers fuse), a
    :class:`LayerMap`, or plain layer names.

    Each entry: ``op`` (builtin name, or the custom code), ``output`` (first output tensor name),
    ``input_types`` / ``output_types`` of the non-constant tensors, ``float`` (computes on float
    activations), ``layers`` (every Keras layer the op was fused from, in model order: those its
    output tensor's name mentions, the BatchNormalization / activation layers of the same chain
    that produced no op of their own, and for an op named after the signature the layer reading
    its input's, else its input's layer) and ``layer`` (their names joined with ``+``, or None).
    """
    layer_map = LayerMap.of(layer_names)
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
    input_layers = []
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
                "layers": mentioned(output, layer_map),
            }
        )
        input_layers.append(
            [found for i in inputs for found in mentioned(_tensor_name(tensors[i]), layer_map)]
        )
    _attribute_unnamed(result, input_layers, layer_map)
    _absorb_fused(result, layer_map)
    for entry in result:
        entry["layers"] = layer_map.order(entry["layers"])
        entry["layer"] = JOIN.join(entry["layers"]) or None
    return result


def _attribute_unnamed(ops: list[dict], input_layers: list[list[str]], layer_map) -> None:
    """An op producing a signature output is named after the signature, not its layer: it comes
    from the layer reading its input's layer, when exactly one does and no op names it (a Dense
    output layer after a Flatten); else from its input's layer (that layer's own softmax)."""
    named = {n for op in ops for n in op["layers"]}
    for op, inputs in zip(ops, input_layers, strict=True):
        if op["layers"] or not inputs or op["op"] in CONVERSION_OPS:
            continue
        source = inputs[-1]
        readers = [r for r in layer_map.consumers.get(source, ()) if r not in named]
        if len(readers) == 1:
            op["layers"] = [readers[0]]
            named.add(readers[0])
        else:  # the input layer's own activation (a softmax), or no graph to tell
            op["layers"] = [source]


def _absorb_fused(ops: list[dict], layer_map) -> None:
    """A chain's layer no op names (a BatchNormalization folded into the conv, an activation
    fused without its name) belongs to the op of its nearest named neighbour in the chain, the
    one before it first."""
    for chain in layer_map.chains:
        owner = {}
        for index, op in enumerate(ops):
            for n in op["layers"]:
                if n in chain:
                    owner.setdefault(n, index)
        if not owner:
            continue
        for position, n in enumerate(chain):
            if n in owner:
                continue
            before = [owner[c] for c in chain[:position] if c in owner]
            after = [owner[c] for c in chain[position + 1 :] if c in owner]
            target = before[-1] if before else after[0]
            ops[target]["layers"].append(n)
            owner[n] = target


def layer_of(tensor_name: str, layer_names) -> str | None:
    """The Keras layer a converted tensor came from, from its name (``model/<layer>/MatMul;...``):
    the first one it mentions.

    QAT wraps layers as ``quant_<layer>``; the prefix is dropped.
    """
    known = set(layer_names)
    for part in tensor_name.replace(";", "/").split("/"):
        for candidate in (part, part.removeprefix("quant_")):
            if candidate in known:
                return candidate
    return None


def split_names(names) -> set[str]:
    """Layer names, a fused op's joined name (``conv2d+re_lu``) counting as each of its layers."""
    return {part for name in names for part in str(name).split(JOIN) if part}


def covers(op: dict, names) -> bool:
    """Whether ``op`` comes from any of ``names`` (layer names or joined fused names)."""
    wanted = split_names(names)
    return any(n in wanted for n in op.get("layers") or ([op["layer"]] if op.get("layer") else []))


def op_layers(ops: list[dict]) -> list[str]:
    """The layers some compute op of ``ops`` comes from."""
    seen = []
    for op in ops:
        if op["op"] in CONVERSION_OPS:
            continue
        seen += [n for n in op.get("layers", []) if n not in seen]
    return seen


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
    """``OP(layer)`` or ``OP(tensor)``: how an op is named in messages and properties (a fused
    op by all its layers: ``CONV_2D(conv2d+batch_normalization+re_lu)``)."""
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
