"""Keras 3 ``.keras`` files to equivalent tf_keras models (no TFX here).

tensorflow-model-optimization works on tf_keras (Keras 2) models only, while ``import keras``
is Keras 3 since TensorFlow 2.16. A ``.keras`` file is a zip of ``config.json`` (the
architecture), ``metadata.json`` (the Keras version) and ``model.weights.h5``. The architecture is
read from ``config.json`` and rewritten as a tf_keras config (same layer names, same graph); the
weights are copied tensor by tensor from the Keras 3 model; the importer then verifies the
outputs (:mod:`components.importer.importer`).

Only built-in layers in :data:`SUPPORTED_LAYERS` are converted. Anything else (a custom layer, a
``Lambda`` holding Python code written against ``keras.ops``) fails here, before heavy work,
naming the layer; a module file's ``build_tf_keras_model()`` may build the tf_keras model instead.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass

from components.common.errors import ModelInputError

KERAS_SUFFIX = ".keras"
CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
MODEL_CLASSES = frozenset({"Functional", "Sequential"})
HOOK_NAME = "build_tf_keras_model"
HOOK_CUSTOM_OBJECTS = "KERAS3_CUSTOM_OBJECTS"

# Built-in Keras 3 layers converted to the tf_keras layer of the same name.
SUPPORTED_LAYERS = frozenset(
    {
        "InputLayer", "Dense", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D",
        "BatchNormalization", "LayerNormalization", "MaxPooling1D", "MaxPooling2D",
        "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Dropout",
        "SpatialDropout1D", "SpatialDropout2D", "Flatten", "Reshape", "Add", "Subtract",
        "Concatenate", "Multiply", "Average", "Maximum", "Minimum", "Activation", "ReLU",
        "Softmax", "Embedding", "UpSampling2D", "ZeroPadding1D", "ZeroPadding2D", "Rescaling",
        "Normalization",
    }
)  # fmt: skip
# Keras 3 config keys tf_keras does not know, and the value that means "not used".
KERAS3_ONLY_OPTIONS = {
    "lora_rank": None,
    "lora_alpha": None,
    "quantization_config": None,
    "rms_scaling": False,
    "optional": False,
}
_DROPPED_KEYS = ("build_config", "compile_config", "shared_object_id", "registered_name", "module")
_TO_DO = (
    "give a module file (importer.module_file or data.module_file) defining "
    f"{HOOK_NAME}() that returns the same model built with tf_keras (the weights are copied by "
    "layer name), or rebuild and save the model with tf_keras"
)


@dataclass(frozen=True)
class Archive:
    """What a checked ``.keras`` file holds."""

    path: str
    config: dict  # config.json: {"class_name", "config", ...}
    keras_version: str


def find_keras_file(path: str) -> str | None:
    """The ``.keras`` file ``path`` names or holds, or None when it is not a Keras 3 input.

    A directory counts when it holds exactly one ``.keras`` file and no SavedModel.

    Raises:
      ModelInputError: a directory holding several ``.keras`` files.
    """
    import tensorflow as tf

    if not tf.io.gfile.isdir(path):
        return path if path.endswith(KERAS_SUFFIX) and tf.io.gfile.exists(path) else None
    names = tf.io.gfile.listdir(path)
    if "saved_model.pb" in names:
        return None
    found = sorted(n for n in names if n.endswith(KERAS_SUFFIX))
    if len(found) > 1:
        raise ModelInputError(
            f"model directory {path!r} holds several Keras files {found}: pass the one to "
            "optimise (--model DIR/NAME.keras)."
        )
    return os.path.join(path, found[0]) if found else None


def read_archive(path: str) -> Archive:
    """Reads and checks a ``.keras`` file: an intact zip with a Keras 3 config and weights.

    Raises:
      ModelInputError: truncated or tampered files (bad zip, checksum mismatch, unreadable
        members), a missing member, or a model that is neither Functional nor Sequential.
    """
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    bad = f"Keras file {path!r} is damaged"
    fix = "save the model again with `model.save('model.keras')` and pass that file."
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            broken = archive.testzip()  # reads every member and checks its CRC
            if broken is not None:
                raise ModelInputError(f"{bad}: member {broken!r} fails its checksum; {fix}")
            members = set(archive.namelist())
            missing = [m for m in (CONFIG_MEMBER, WEIGHTS_MEMBER) if m not in members]
            if missing:
                raise ModelInputError(f"{bad}: it holds no {missing}; {fix}")
            config = json.loads(archive.read(CONFIG_MEMBER))
            metadata = {}
            if METADATA_MEMBER in members:
                metadata = json.loads(archive.read(METADATA_MEMBER))
            _check_weights_file(archive.read(WEIGHTS_MEMBER), path, fix)
    except ModelInputError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, zipfile.LargeZipFile) as e:
        raise ModelInputError(f"{bad} (truncated or not a zip file: {e}); {fix}") from None
    _check_model_class(config, path)
    return Archive(path, config, str(metadata.get("keras_version", "unknown")))


def _check_weights_file(weights: bytes, path: str, fix: str) -> None:
    import h5py

    try:
        with h5py.File(io.BytesIO(weights), "r") as f:
            f.visit(lambda _: None)
    except Exception as e:  # noqa: BLE001 - any h5 failure means a damaged weights file
        raise ModelInputError(
            f"Keras file {path!r} is damaged: {WEIGHTS_MEMBER} is not a readable HDF5 file "
            f"({e}); {fix}"
        ) from None


def _check_model_class(config: dict, path: str) -> None:
    kind = config.get("class_name") if isinstance(config, dict) else None
    if kind not in MODEL_CLASSES:
        raise ModelInputError(
            f"Keras file {path!r} holds a {kind or 'non-model'} object, not a Functional or "
            f"Sequential model: a subclassed model has no graph to convert; {_TO_DO}."
        )


def walk_layers(config: dict, prefix: str = ""):
    """Yields (path, layer entry) of every layer in a model config, nested models included."""
    for entry in config["config"]["layers"]:
        name = entry.get("config", {}).get("name") or entry.get("name", "?")
        yield f"{prefix}{name}", entry
        if entry.get("class_name") in MODEL_CLASSES:
            yield from walk_layers(entry, f"{prefix}{name}/")


def unsupported_layers(config: dict) -> list[str]:
    """One line per layer the converter cannot map to tf_keras, saying why."""
    problems = []
    for path, entry in walk_layers(config):
        kind = entry.get("class_name", "?")
        if kind in MODEL_CLASSES:
            continue
        module = entry.get("module") or "keras.layers"
        if entry.get("registered_name") or not module.startswith("keras"):
            problems.append(f"{path!r} ({kind}, a custom layer from {module!r})")
        elif kind == "Lambda":
            problems.append(
                f"{path!r} (Lambda: Python code written for Keras 3, e.g. keras.ops, which "
                "tf_keras cannot run)"
            )
        elif kind not in SUPPORTED_LAYERS:
            problems.append(f"{path!r} ({kind}: not among the converted Keras 3 layers)")
        else:
            problems.extend(_unconvertible_options(path, kind, entry.get("config", {})))
    return problems


def _unconvertible_options(path: str, kind: str, config: dict) -> list[str]:
    return [
        f"{path!r} ({kind} with {key}={config[key]!r}, a Keras 3 option tf_keras lacks)"
        for key, neutral in KERAS3_ONLY_OPTIONS.items()
        if key in config and config[key] != neutral
    ]


def check_convertible(archive: Archive) -> None:
    """Raises ModelInputError naming every layer the converter cannot map, and what to do."""
    problems = unsupported_layers(archive.config)
    if problems:
        raise ModelInputError(
            f"Keras 3 model {archive.path!r} cannot be converted to tf_keras: layer(s) "
            + "; ".join(problems)
            + f". To optimise it, {_TO_DO}. Converted layers: {sorted(SUPPORTED_LAYERS)}."
        )


def to_tf_keras_config(entry: dict) -> dict:
    """A Keras 3 serialized model or layer ({"class_name", "config", ...}) as tf_keras's."""
    kind = entry["class_name"]
    config = dict(entry.get("config", {}))
    if kind in MODEL_CLASSES:
        return {"class_name": kind, "config": _model_config(kind, config)}
    for key in KERAS3_ONLY_OPTIONS:
        config.pop(key, None)
    for key in _DROPPED_KEYS:
        config.pop(key, None)
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = config["dtype"].get("config", {}).get("name", "float32")
    if kind == "InputLayer" and "batch_shape" in config:
        config["batch_input_shape"] = config.pop("batch_shape")
    for key, value in list(config.items()):
        if isinstance(value, dict) and "class_name" in value and key != "dtype":
            config[key] = {"class_name": value["class_name"], "config": value.get("config", {})}
    return {"class_name": kind, "config": config}


def _model_config(kind: str, config: dict) -> dict:
    layers = []
    for entry in config["layers"]:
        converted = to_tf_keras_config(entry)
        if kind == "Functional":
            converted["name"] = entry.get("name", converted["config"].get("name"))
            converted["inbound_nodes"] = [
                _node(node, entry.get("name")) for node in entry.get("inbound_nodes", [])
            ]
        layers.append(converted)
    result = {"name": config.get("name"), "layers": layers}
    if kind == "Functional":
        result["input_layers"] = _refs(config["input_layers"])
        result["output_layers"] = _refs(config["output_layers"])
    elif config.get("build_input_shape") is not None:
        result["build_input_shape"] = config["build_input_shape"]
    return result


def _refs(refs) -> list:
    if isinstance(refs, dict):
        raise ModelInputError(
            "a Keras 3 model with dict inputs or outputs cannot be converted: use lists, or "
            f"{_TO_DO}."
        )
    return [refs] if refs and isinstance(refs[0], str) else [list(r) for r in refs]


def _node(node: dict, layer: str) -> list:
    """A Keras 3 call ({"args": [...], "kwargs": {...}}) as tf_keras node data."""
    if isinstance(node, list):  # already tf_keras' (old Keras 3 files kept the old format)
        return node
    tensors = []

    def collect(value):
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            tensors.append(list(value["config"]["keras_history"]))
        elif isinstance(value, list | tuple):
            for item in value:
                collect(item)

    for arg in node.get("args", []):
        collect(arg)
    kwargs = {}
    for key, value in node.get("kwargs", {}).items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            raise ModelInputError(
                f"layer {layer!r} is called with a tensor for {key!r}, which the converter "
                f"cannot map; {_TO_DO}."
            )
        kwargs[key] = value
    return [[*ref, kwargs] for ref in tensors]


def build_model(archive: Archive):
    """The tf_keras model the Keras 3 config describes (fresh weights; see :func:`copy_weights`)."""
    import tf_keras

    converted = to_tf_keras_config(archive.config)
    try:
        return tf_keras.layers.deserialize(converted)
    except Exception as e:  # noqa: BLE001 - any failure is a config tf_keras cannot build
        raise ModelInputError(
            f"Keras 3 model {archive.path!r}: tf_keras cannot build its architecture ({e}); "
            f"{_TO_DO}."
        ) from None


def load_hook(module_file: str | None):
    """The ``build_tf_keras_model`` function and Keras 3 custom objects of a module file."""
    if not module_file:
        return None, None
    import importlib.util

    if not os.path.isfile(module_file):
        raise ModelInputError(f"module file {module_file!r} does not exist.")
    spec = importlib.util.spec_from_file_location("tfxopt_import_module", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, HOOK_NAME, None), getattr(module, HOOK_CUSTOM_OBJECTS, None)


def load_keras3_model(archive: Archive, custom_objects: dict | None = None):
    """The original model, loaded with Keras 3 (safe mode: no Python code from the file runs)."""
    import keras

    try:
        return keras.saving.load_model(
            archive.path, compile=False, safe_mode=True, custom_objects=custom_objects
        )
    except Exception as e:  # noqa: BLE001
        raise ModelInputError(
            f"Keras 3 could not load {archive.path!r} ({e}); to convert a model with custom "
            f"layers, list their Keras 3 classes in {HOOK_CUSTOM_OBJECTS} of the module file "
            f"that defines {HOOK_NAME}()."
        ) from None


def leaf_layers(model) -> dict:
    """{name: layer} of the layers holding weights, inside nested models too."""
    found = {}
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ in MODEL_CLASSES | {"Model"}:
            inner = leaf_layers(layer)
            if set(inner) & set(found):
                raise ModelInputError(
                    f"layer names {sorted(set(inner) & set(found))} repeat in nested models: "
                    "weights are matched by layer name, so give the layers distinct names."
                )
            found.update(inner)
        elif layer.weights:
            found[layer.name] = layer
    return found


def copy_weights(source, target) -> int:
    """Copies every weight of the Keras 3 ``source`` into the tf_keras ``target``, layer by name.

    Returns:
      The number of tensors copied.
    Raises:
      ModelInputError: a layer with weights on one side only, or weights of another shape.
    """
    sources, targets = leaf_layers(source), leaf_layers(target)
    unmatched = sorted(set(sources) ^ set(targets))
    if unmatched:
        raise ModelInputError(
            f"layers with weights {unmatched} exist in only one of the Keras 3 model and the "
            "tf_keras model: both must have the same layer names."
        )
    copied = 0
    for name, layer in targets.items():
        values = [w.numpy() for w in sources[name].weights]
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [v.shape for v in values]:
            raise ModelInputError(
                f"layer {name!r}: the Keras 3 weights have shapes {[v.shape for v in values]}, "
                f"the tf_keras layer {shapes}; the two models differ."
            )
        layer.set_weights(values)
        copied += len(values)
    return copied
