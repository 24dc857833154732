"""What a serving signature reads and feeds, with no knowledge of how signatures are kept: the
model's inputs, a ParseExample's dense feature spec, parsing serialized tf.Examples into the model's
feeds, and the Transform signature's function (:mod:`components.common.signatures` keeps them;
:mod:`components.common.serving_calls` calls them). A leaf below both: it imports neither."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy-style name: float32, int64, string
    shape: tuple[int, ...]  # -1 where unknown (the batch)

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape)}


def tensor_info(name: str, info) -> TensorInfo:
    import tensorflow as tf

    dtype = tf.as_dtype(info.dtype)
    shape = tuple(-1 if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    return TensorInfo(name, "string" if dtype == tf.string else dtype.name, shape)


def model_inputs(model) -> list[TensorInfo]:
    from components.common.conversion import input_names

    return [
        TensorInfo(
            name,
            "string" if t.dtype.name == "string" else t.dtype.name,
            tuple(-1 if d is None else int(d) for d in t.shape),
        )
        for name, t in zip(input_names(model), model.inputs, strict=True)
    ]


def const_value(nodes: dict, ref: str):
    from tensorflow.python.framework import tensor_util

    node = nodes.get(ref.split(":")[0].lstrip("^"))
    if node is None or node.op != "Const":
        return None
    return tensor_util.MakeNdarray(node.attr["value"].tensor)


def read_parse_spec(function) -> dict | None:
    """The dense feature spec of the one ``ParseExampleV2`` in a concrete function's graph (its
    nested functions included): key -> (dtype name, shape, default or None). None when there is
    no parse, several, sparse or ragged features, or a key that is not a constant."""
    import tensorflow as tf

    graph = function.graph.as_graph_def()
    bodies = [list(graph.node)] + [list(f.node_def) for f in graph.library.function]
    found = []
    for body in bodies:
        nodes = {n.name: n for n in body}
        found += [(n, nodes) for n in body if n.op == "ParseExampleV2"]
    if len(found) != 1:
        return None
    node, nodes = found[0]
    if node.attr["num_sparse"].i or len(node.attr["ragged_value_types"].list.type):
        return None
    keys = const_value(nodes, node.input[3])
    if keys is None:
        return None
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in np.ravel(keys)]
    dtypes = [tf.as_dtype(t) for t in node.attr["Tdense"].list.type]
    shapes = [tuple(int(d.size) for d in s.dim) for s in node.attr["dense_shapes"].list.shape]
    defaults = list(node.input[5 : 5 + len(keys)])
    if not (len(keys) == len(dtypes) == len(shapes) == len(defaults)):
        return None
    spec = {}
    for key, dtype, shape, ref in zip(keys, dtypes, shapes, defaults, strict=True):
        value = const_value(nodes, ref)
        if value is None:
            return None
        default = None if value.size == 0 else value.tolist()
        spec[key] = ("string" if dtype == tf.string else dtype.name, shape, default)
    return spec


def parse_features(spec: dict) -> dict:
    import tensorflow as tf

    return {
        key: tf.io.FixedLenFeature(list(shape), tf.as_dtype(dtype), default_value=default)
        for key, (dtype, shape, default) in spec.items()
    }


def feeds_from_features(model, parsed: dict, image_scale: float | None = 1 / 255):
    """The model's inputs from parsed features: by input name, or the one feature for the one
    input; reshaped to the input's shape and cast to its dtype; an encoded image (a string
    feeding a (height, width, channels) input) decoded and scaled as the data mapping does."""
    import tensorflow as tf

    from components.common import examples as examples_lib

    inputs = model_inputs(model)
    if all(t.name in parsed for t in inputs):
        names = [t.name for t in inputs]
    elif len(inputs) == 1 and len(parsed) == 1:
        names = list(parsed)
    else:
        return None
    feeds = []
    for name, info, tensor in zip(names, inputs, model.inputs, strict=True):
        value = parsed[name]
        if value.dtype == tf.string and examples_lib.is_image_input(
            "bytes", tensor.dtype.name, info.shape[1:]
        ):
            feeds.append(
                examples_lib.decode_images(value, info.shape[1:], tensor.dtype, image_scale)
            )
            continue
        if tensor.dtype != tf.string:
            value = tf.cast(value, tensor.dtype)
        feeds.append(tf.reshape(value, [-1, *info.shape[1:]]))
    return feeds[0] if len(feeds) == 1 else feeds


def spec_problem(spec: dict | None, model) -> str | None:
    if spec is None:
        return "no single ParseExample of dense features with constant keys in its graph"
    inputs = model_inputs(model)
    names = [t.name for t in inputs]
    if not (all(n in spec for n in names) or (len(names) == 1 and len(spec) == 1)):
        return f"its parsed features {sorted(spec)} are not named like the model's inputs {names}"
    return None


# ----------------------------------------------------------------------------- transform


def transform_inputs_problem(graph, model) -> str | None:
    names = [t.name for t in model_inputs(model)]
    missing = [n for n in names if n not in graph.output_keys]
    if missing:
        return (
            f"the model's inputs {missing} are not among the features its Transform graph "
            f"({graph.source}) writes: {list(graph.output_keys)}"
        )
    return None


def rebuilt_transform_signature(model, signature, layer, image_scale: float | None = 1 / 255):
    """A concrete function: raw serialized tf.Examples -> the spec's parsing -> the Transform
    ``layer`` -> ``model`` (its inputs picked from the transformed features by name)."""
    import tensorflow as tf

    (input_name,) = signature.inputs
    (output_key,) = signature.outputs
    features = parse_features(signature.feature_spec)

    def serve(serialized):
        transformed = layer(tf.io.parse_example(serialized, features))
        return {output_key: model(feeds_from_features(model, transformed, image_scale))}

    spec = tf.TensorSpec([None], tf.string, name=input_name)
    return tf.function(serve, autograph=False).get_concrete_function(spec)
