"""Nested tf_keras models rebuilt as one flat functional graph (no TFX here).

Transfer-learning models call a whole model as a layer (``x = base(inputs)`` with ``base`` a
``keras.applications`` backbone). tensorflow-model-optimization wraps only the layers of one flat
model, so the importer rebuilds such a model: every layer of every nested Functional or
Sequential model (any depth) is called directly on the outer graph's tensors, the same layer
objects, so the same weights. A ``training=`` argument given to a nested model's call is passed
on to its layers' calls, so e.g. a frozen backbone's BatchNormalization stays in inference mode.
Input and output names stay those of the original model (its serving signature).
"""

from __future__ import annotations

from components.common.errors import ModelInputError


def is_model(layer) -> bool:
    import tf_keras

    return isinstance(layer, tf_keras.Model)


def nested_models(model) -> list[str]:
    """Names of the models nested in ``model``, at any depth (outer first)."""
    found = []
    for layer in model.layers:
        if is_model(layer):
            found.append(layer.name)
            found.extend(nested_models(layer))
    return found


def _check_graph(model, where: str) -> None:
    import tf_keras

    if not getattr(model, "_is_graph_network", False) and not isinstance(
        model, tf_keras.Sequential
    ):
        raise ModelInputError(
            f"{where} {model.name!r} ({type(model).__name__}) is a subclassed tf_keras model: "
            "its graph is Python code, so it cannot be flattened or optimised. Rebuild it as a "
            "Sequential/functional model (the same layers, same weights)."
        )


def flatten(model):
    """A flat functional copy of ``model`` (shared layers, same weights); ``model`` if flat.

    Raises:
      ModelInputError: a subclassed model, outer or nested.
    """
    import tf_keras

    _check_graph(model, "model")
    nested = nested_models(model)
    if not nested:
        return model
    taken = _unique_leaf_names(model)
    outputs = _run_graph(model, list(model.inputs), training=None)
    outputs = [
        _keep_name(t, name, taken) for t, name in zip(outputs, model.output_names, strict=True)
    ]
    flat = tf_keras.Model(model.inputs, outputs, name=model.name)
    if flat.output_names != model.output_names:
        raise ModelInputError(
            f"flattening model {model.name!r} would rename its outputs {model.output_names} to "
            f"{flat.output_names}; name the nested models' output layers uniquely."
        )
    return flat


def _leaf_layers(model, prefix: str = "") -> list:
    """(prefix, layer) of every non-model layer, nested ones prefixed by their models' names."""
    found = []
    for layer in model.layers:
        if is_model(layer):
            found.extend(_leaf_layers(layer, f"{prefix}{layer.name}_"))
        else:
            found.append((prefix, layer))
    return found


def _unique_leaf_names(model) -> set[str]:
    """Renames nested layers whose names repeat (one flat model needs unique names)."""
    by_name: dict[str, object] = {}
    for prefix, layer in _leaf_layers(model):
        if layer.name in by_name and by_name[layer.name] is not layer:
            layer._name = f"{prefix}{layer.name}"
        by_name.setdefault(layer.name, layer)
    return set(by_name)


def _run_graph(model, inputs: list, training):
    """Calls ``model``'s layers on ``inputs`` in graph order; nested models are opened up."""
    import tensorflow as tf

    _check_graph(model, "nested model")
    if not getattr(model, "_is_graph_network", False):  # a Sequential built without an Input
        (x,) = inputs
        for layer in model.layers:
            x = _call(layer, [x], {}, training)
        return [x]
    values = {str(id(ref)): value for ref, value in zip(model.inputs, inputs, strict=True)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            args, kwargs = _map_arguments(node, values)
            results = _call(node.layer, args, kwargs, training)
            for ref_id, value in zip(node.flat_output_ids, tf.nest.flatten(results), strict=True):
                values[ref_id] = value
    return [values[str(id(ref))] for ref in model.outputs]


def _map_arguments(node, values: dict):
    import tensorflow as tf

    def swap(item):
        ref = str(id(item))
        return values[ref] if ref in values else item

    args = tf.nest.map_structure(swap, node.call_args)
    kwargs = tf.nest.map_structure(swap, node.call_kwargs)
    return args, kwargs


def _call(layer, args, kwargs, training):
    """Calls one layer, or runs a nested model's graph on its (flattened) inputs."""
    import tensorflow as tf

    if training is not None and "training" not in kwargs:
        kwargs = {**kwargs, "training": training}
    if is_model(layer):
        inner_training = kwargs.pop("training", None)
        inputs = tf.nest.flatten(args[0] if len(args) == 1 else args)
        outputs = _run_graph(layer, inputs, inner_training)
        return outputs[0] if len(outputs) == 1 else outputs
    if "training" in kwargs and not getattr(layer, "_expects_training_arg", False):
        kwargs = {k: v for k, v in kwargs.items() if k != "training"}
    return layer(*args, **kwargs)


def _keep_name(tensor, name: str, taken: set[str]):
    """Gives the layer producing an output the outer model's output name (signature keys)."""
    layer = tensor._keras_history.layer
    if layer.name == name or name in taken:
        return tensor
    layer._name = name
    taken.add(name)
    return tensor


def max_abs_difference(expected: list, actual: list) -> float:
    """Largest absolute difference between two lists of output arrays."""
    import numpy as np

    if len(expected) != len(actual):
        raise ModelInputError(f"{len(expected)} outputs against {len(actual)}")
    worst = 0.0
    for a, b in zip(expected, actual, strict=True):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise ModelInputError(f"output shapes differ: {a.shape} against {b.shape}")
        if a.size:
            worst = max(worst, float(np.max(np.abs(a - b))))
    return worst
