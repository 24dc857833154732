"""The model artifact layout, and loading and saving tf_keras models in it.

``<uri>/Format-Serving/`` holds a SavedModel written by tf_keras (loadable by TF Serving and by
``tf_keras.models.load_model``); a TFLite flavour, when there is one, is ``<uri>/Format-TFLite/model.tflite``.
A plain SavedModel directory (``saved_model.pb`` at its top, as a trainer exports it) is accepted as
input too.
"""

from __future__ import annotations

import os
import warnings

from components.common.errors import ModelInputError

# The layout's names, re-exported: readers of a model artifact use them from here.
from components.common.keys import SAVED_MODEL_PB, SERVING_DIR, TFLITE_DIR, TFLITE_FILE  # noqa: F401

KERAS_METADATA_PB = "keras_metadata.pb"


def _isdir(path: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.isdir(path)


def _exists(path: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(path)


def serving_model_dir(uri: str) -> str:
    """Returns the SavedModel directory of a model artifact or plain SavedModel path.

    Raises:
      ModelInputError: if ``uri`` holds neither layout.
    """
    if not _exists(uri):
        raise ModelInputError(f"model path {uri!r} does not exist: pass a SavedModel directory.")
    if not _isdir(uri):
        hint = ""
        if uri.endswith(".h5"):
            hint = (
                " It looks like a legacy HDF5 Keras model: load it and save it with tf_keras "
                "(`model.save(path, save_format='tf')`), or with Keras 3 as `model.keras`."
            )
        raise ModelInputError(f"model path {uri!r} is a file, not a SavedModel directory.{hint}")
    for candidate in (os.path.join(uri, SERVING_DIR), uri):
        if _exists(os.path.join(candidate, SAVED_MODEL_PB)):
            return candidate
    import tensorflow as tf

    if not tf.io.gfile.listdir(uri):
        raise ModelInputError(f"model directory {uri!r} is empty: it should hold a SavedModel.")
    raise ModelInputError(
        f"model directory {uri!r} holds no {SAVED_MODEL_PB} (looked in it and in {SERVING_DIR}/): "
        "pass the directory a tf_keras `model.save(path)` wrote."
    )


def tflite_path(uri: str) -> str | None:
    """The TFLite flavour of a model artifact, or None when it has none."""
    path = os.path.join(uri, TFLITE_DIR, TFLITE_FILE)
    return path if _exists(path) else None


def validate_saved_model(uri: str, require_keras: bool = True) -> str:
    """Checks that ``uri`` holds a readable (tf_keras) SavedModel, cheaply, without loading it.

    Returns:
      The SavedModel directory.
    Raises:
      ModelInputError: naming the path and what to do.
    """
    path = serving_model_dir(uri)
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        with (
            tf.io.gfile.GFile(os.path.join(path, SAVED_MODEL_PB), "rb") as f,
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", RuntimeWarning)  # the parse warns on garbage; we check
            proto.ParseFromString(f.read())
    except Exception as e:  # noqa: BLE001 - any parse failure means a corrupt file
        raise ModelInputError(
            f"{os.path.join(path, SAVED_MODEL_PB)} is not a valid SavedModel protobuf ({e}); "
            "re-export the model."
        ) from None
    if not proto.meta_graphs:
        raise ModelInputError(
            f"{os.path.join(path, SAVED_MODEL_PB)} is not a valid SavedModel protobuf (it holds "
            "no meta graph); re-export the model."
        )
    from components.common import transform

    transform.check_assets(path)  # a Transform's vocabularies: without them nothing loads
    if require_keras and not _exists(os.path.join(path, KERAS_METADATA_PB)):
        raise ModelInputError(
            f"SavedModel at {path!r} was not written by tf_keras (no {KERAS_METADATA_PB}): it "
            "holds no architecture to optimise. A Keras 3 model: save with "
            "`model.save('model.keras')` and pass that file. A plain tf.Module: build and save "
            "the model with tf_keras (`import tf_keras; model.save(path, save_format='tf')`)."
        )
    return path


def load_keras_model(uri: str, shared: bool = False):
    """Loads the tf_keras model of an artifact (or SavedModel path) without compiling it.

    Every step that works on a Keras model loads it here, so this is also where AutoGraph is told
    to leave tf_keras' own code alone (see :func:`legacy_keras.skip_autograph_for_tf_keras`): the
    first ``predict``, ``evaluate``, ``fit`` or save of a process then traces in about a second
    instead of 10-30 s.

    Args:
      shared: the caller only reads the model (predicts, converts, counts weights): the same
        object may then come from, and go to, this process's cache
        (:mod:`components.common.model_cache`) while the SavedModel's bytes are unchanged.
    """
    path = validate_saved_model(uri, require_keras=True)
    import tf_keras

    from components.common import model_cache
    from components.common.legacy_keras import skip_autograph_for_tf_keras

    skip_autograph_for_tf_keras()

    def load():
        try:
            model = tf_keras.models.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001
            raise ModelInputError(f"could not load the tf_keras model at {path!r}: {e}") from None
        # A TFX Transform layer (model.tft_layer) is no layer to optimise: its serving
        # signature reapplies the graph (components/common/transform.py).
        from components.common import transform

        transform.detach_transform_layers(model)
        return model

    return model_cache.get_or_load("keras", path, load, keras_fingerprint) if shared else load()


def keras_fingerprint(model) -> str:
    """SHA-256 of a tf_keras model's config and weights: what a shared model must still hold."""
    import hashlib

    sha = hashlib.sha256(model.to_json().encode())
    for weight in model.weights:
        sha.update(weight.numpy().tobytes())
    return sha.hexdigest()


def load_saved_model(saved_model_dir: str):
    """``tf.saved_model.load`` (what TF Serving runs), shared by readers in this process."""
    import tensorflow as tf

    from components.common import model_cache

    return model_cache.get_or_load(
        "saved_model", saved_model_dir, lambda: tf.saved_model.load(saved_model_dir)
    )


def save_keras_model(
    model, output_uri: str, training_config: dict | None = None, signatures: dict | None = None
) -> str:
    """Saves ``model`` as ``<output_uri>/Format-Serving`` and returns that path.

    ``training_config`` (the input model's compiled loss and metrics, see
    :func:`read_training_config`) is kept beside it, so the next step fine-tunes with the same loss.
    ``signatures`` (key -> concrete function, :mod:`components.common.signatures`) are the input
    model's serving signatures rebuilt around ``model``; without them ``serving_default`` is the
    model's call.

    A model made only of tf_keras' own layers is saved without the traces of every layer's call
    (``save_traces=False``), with its serving signature traced once: 3-4x faster to save and
    about 2x faster to load for a MobileNet-class model, and the same ``serving_default``
    signature (names, shapes, outputs) TF Serving and the TFLite converter use. tf_keras
    rebuilds such a model from its config. Any other model (a custom or revived layer) keeps
    the traces, without which it could not be loaded again.
    """
    from components.common.legacy_keras import skip_autograph_for_tf_keras

    skip_autograph_for_tf_keras()
    path = os.path.join(output_uri, SERVING_DIR)
    if _builtin_layers_only(model):
        from tf_keras.src.saving.legacy import saving_utils

        signature = signatures or saving_utils.trace_model_call(model)
        model.save(
            path, include_optimizer=False, save_format="tf", save_traces=False, signatures=signature
        )
        # What load_keras_model(shared=True) would rebuild from these files is this model (same
        # config, same weights): the next step of this process reads it from memory instead.
        # Not a model whose layers are also called in another model (a flattened copy shares
        # its layers with the nested original): loaded, its layers would have one call each.
        if all(len(layer._inbound_nodes) <= 1 for layer in model.layers):
            from components.common import model_cache

            model_cache.put("keras", path, model, keras_fingerprint)
    else:
        model.save(path, include_optimizer=False, save_format="tf", signatures=signatures)
    if training_config:
        import json

        import tensorflow as tf

        with tf.io.gfile.GFile(os.path.join(output_uri, TRAINING_CONFIG_FILE), "w") as f:
            json.dump(training_config, f)
    return path


TRAINING_CONFIG_FILE = "training_config.json"


def read_training_config(uri: str) -> dict | None:
    """The Keras training config (compiled loss, metrics) a model was saved with, or None.

    tf_keras keeps it in ``keras_metadata.pb`` when the model was compiled and saved with its
    optimizer (the default of ``model.save``); a step of ours keeps its input's beside its output
    (``training_config.json``).
    """
    import json

    import tensorflow as tf

    sidecar = os.path.join(uri, TRAINING_CONFIG_FILE)
    if tf.io.gfile.exists(sidecar):
        with tf.io.gfile.GFile(sidecar) as f:
            return json.load(f)
    try:
        from tf_keras.protobuf import saved_metadata_pb2

        proto = saved_metadata_pb2.SavedMetadata()
        with tf.io.gfile.GFile(os.path.join(serving_model_dir(uri), KERAS_METADATA_PB), "rb") as f:
            proto.ParseFromString(f.read())
        for node in proto.nodes:
            if node.node_path == "root":
                return json.loads(node.metadata).get("training_config")
    except Exception:  # noqa: BLE001 - no readable metadata: no training config
        return None
    return None


def _builtin_layers_only(model) -> bool:
    """True for a Sequential/functional model of tf_keras' own layers, each rebuildable alone.

    tf_keras rebuilds a layer saved without traces from its config and its recorded build
    shape. A layer built explicitly (``layer.build(shape)``, as a working copy's layers are)
    has no recorded shape: it is set here from the layer's input in the graph, or, when that
    is ambiguous (a layer called on several shapes), the model keeps its traces.
    """
    import tf_keras

    graph = isinstance(model, tf_keras.Sequential) or getattr(model, "_is_graph_network", False)
    if not graph or not type(model).__module__.startswith("tf_keras.src.engine."):
        return False  # subclassed, or revived without its class
    missing = []
    for layer in model.layers:
        module = type(layer).__module__
        if not module.startswith("tf_keras.") or ".saved_model." in module:  # revived: no class
            return False
        if isinstance(layer, tf_keras.Model):
            return False
        if layer.weights and getattr(layer, "_build_input_shape", None) is None:
            try:
                missing.append((layer, layer.input_shape))
            except (AttributeError, RuntimeError):  # several inbound shapes
                return False
    for layer, shape in missing:
        layer._build_input_shape = shape
    return True


def copy_serving_model(source_dir: str, output_uri: str) -> str:
    """Copies a SavedModel directory to ``<output_uri>/Format-Serving`` (any gfile filesystem).

    For a step whose serving flavour is its input model unchanged: a copy is byte-identical and
    takes milliseconds, where loading and saving it again re-traces every function (1-2 s).

    Returns:
      The new SavedModel directory.
    """
    from tfx.utils import io_utils  # the Evaluator copies its selected candidate the same way

    destination = os.path.join(output_uri, SERVING_DIR)
    io_utils.copy_dir(source_dir, destination)
    return destination


def write_tflite(flatbuffer: bytes, output_uri: str) -> str:
    """Writes a TFLite flatbuffer at the fixed path of the artifact and returns that path."""
    import tensorflow as tf

    directory = os.path.join(output_uri, TFLITE_DIR)
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, TFLITE_FILE)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(flatbuffer)
    return path
