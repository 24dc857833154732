"""TFX Transform around a model: the Transform graph a serving signature applies, found and reused.

A TFX Trainer fed ``Transform.outputs['transformed_examples']`` exports its model as TFX's
templates (penguin, taxi) do: ``model.tft_layer = tf_transform_output.transform_features_layer()``
(tracked, so the Transform graph, its vocabularies and tables are saved inside the model's
SavedModel), and ``serving_default`` parses raw serialized tf.Examples, applies
``model.tft_layer`` and calls the model. The optimised model serves the same way: its signature
is rebuilt as raw parse -> the same Transform graph -> the new model, the graph read from
``data.transform_graph`` (the Transform component's ``transform_graph`` output) when it is set,
else from the input SavedModel itself (the tracked layer's transform module, saved again as a
``transform_fn/`` SavedModel once per process).

The layer is not part of the Keras model's graph and holds nothing to optimise: a model is
loaded without it (:func:`detach_transform_layers`), so no step's walk over ``model.layers``
(FLOPs, pruning, clustering, quantizer exclusions, layer reports) meets it, and it is attached
again as ``model.tft_layer`` only while a model is saved with its rebuilt signature.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass

from components.common.errors import ModelInputError

LAYER_ATTRIBUTE = "tft_layer"  # where TFX's templates (and the rebuilt models) keep the layer
TRANSFORM_FN_DIR = "transform_fn"  # tft.TFTransformOutput.TRANSFORM_FN_DIR
CONFIG_KEY = "data.transform_graph"
RAW_EXAMPLES_KEY = "data.raw_examples"
EMBEDDED = f"embedded in the SavedModel ({LAYER_ATTRIBUTE})"

_extracted: dict[str, str] = {}  # input SavedModel dir -> the TransformGraph dir saved from it
_lock = threading.Lock()


@dataclass(frozen=True)
class TransformGraph:
    """A Transform graph and what it reads and writes."""

    directory: str  # a TransformGraph directory: transform_fn/ (+ metadata from the component)
    source: str  # EMBEDDED, or the data.transform_graph path
    raw_keys: tuple[str, ...]  # the raw features it reads
    output_keys: tuple[str, ...]  # the transformed features it writes


def is_transform_layer(value) -> bool:
    """A ``tft`` TransformFeaturesLayer, live or revived by tf_keras from a SavedModel (class
    ``TensorFlowTransform>TransformFeaturesLayer``)."""
    return type(value).__name__.endswith("TransformFeaturesLayer")


def detach_transform_layers(model) -> list[str]:
    """Removes the Transform layers a tf_keras model tracks as attributes (``model.tft_layer``).

    Returns:
      The attribute names removed.
    """
    names = [name for name, value in list(vars(model).items()) if is_transform_layer(value)]
    for name in names:
        delattr(model, name)
        # A model revived from a SavedModel also lists it among its checkpoint dependencies:
        # saved again, it would carry the old graph beside the one its signature applies.
        model._delete_tracking(name)
    return names


def attach(model, layer) -> None:
    """``model.tft_layer = layer``, as TFX's templates do: saved with the model, it carries the
    Transform graph, its tables and vocabularies into the SavedModel."""
    setattr(model, LAYER_ATTRIBUTE, layer)


def _embedded_module(loaded):
    """The transform module a loaded SavedModel's TFT layer tracks, or None."""
    for value in vars(loaded).values():
        tracked = getattr(value, "_saved_model_loader_tracked_dict", None)
        if tracked is not None and "_imported" in tracked:
            return tracked["_imported"]
    return None


def has_embedded_graph(loaded) -> bool:
    """True when a SavedModel (``tf.saved_model.load``) tracks a Transform layer's graph."""
    return _embedded_module(loaded) is not None


def _extract(saved_model_dir: str, module) -> str:
    """Saves the embedded transform module as ``<temp>/transform_fn`` (once per input)."""
    import tensorflow as tf

    with _lock:
        if saved_model_dir in _extracted:
            return _extracted[saved_model_dir]
        directory = tempfile.mkdtemp(prefix="tfxopt-transform-")
        atexit.register(shutil.rmtree, directory, True)
        tf.saved_model.save(module, os.path.join(directory, TRANSFORM_FN_DIR))
        _extracted[saved_model_dir] = directory
        return directory


def make_layer(directory: str):
    """A fresh ``TransformFeaturesLayer`` over a TransformGraph directory."""
    import tensorflow_transform as tft

    return tft.TFTransformOutput(directory).transform_features_layer()


def find(saved_model_dir: str, loaded, configured: str | None = None) -> TransformGraph | None:
    """The Transform graph to rebuild a signature with: ``data.transform_graph`` when set, else
    the one the SavedModel embeds; None when there is neither.

    Raises:
      ModelInputError: ``data.transform_graph`` is set but holds no ``transform_fn/`` SavedModel.
    """
    import tensorflow as tf

    if configured:
        if not tf.io.gfile.exists(os.path.join(configured, TRANSFORM_FN_DIR, "saved_model.pb")):
            raise ModelInputError(
                f"{CONFIG_KEY} {configured!r} holds no {TRANSFORM_FN_DIR}/saved_model.pb: point "
                "it to the Transform component's transform_graph output (the directory with "
                f"{TRANSFORM_FN_DIR}/ and transformed_metadata/)."
            )
        directory, source = configured, configured
    else:
        module = _embedded_module(loaded)
        if module is None:
            return None
        directory, source = _extract(saved_model_dir, module), EMBEDDED
    loader = make_layer(directory)._saved_model_loader  # tft's own reader of the graph
    return TransformGraph(
        directory,
        source,
        tuple(sorted(loader._structured_inputs)),
        tuple(sorted(loader.structured_outputs)),
    )


def missing_assets(saved_model_dir: str) -> list[str]:
    """Asset files (a Transform's vocabularies) the SavedModel lists but its ``assets/`` lacks."""
    import tensorflow as tf
    from tensorflow.python.saved_model import loader_impl

    proto = loader_impl.parse_saved_model(saved_model_dir)
    names = sorted({a.filename for m in proto.meta_graphs for a in m.asset_file_def})
    return [n for n in names if not tf.io.gfile.exists(os.path.join(saved_model_dir, "assets", n))]


def check_assets(saved_model_dir: str) -> None:
    """Raises ModelInputError when assets the SavedModel needs are missing (cheap: the proto).

    Without them the model cannot even be loaded: its tables (a Transform layer's vocabularies)
    are initialized from these files.
    """
    missing = missing_assets(saved_model_dir)
    if missing:
        raise ModelInputError(
            f"SavedModel at {saved_model_dir!r} lists assets missing from its assets/ directory: "
            f"{', '.join(missing)} (files its graph reads when it loads, such as the "
            f"vocabularies of a Transform layer, model.{LAYER_ATTRIBUTE}). Copy the whole "
            "SavedModel directory, assets/ included, as the Trainer wrote it."
        )


def raw_parser(directory: str):
    """How raw serialized examples become the features a model trained on the Transform's output
    takes: ``(raw feature spec, apply)`` where ``apply(parsed raw features)`` gives them with the
    transformed features added (a raw feature the graph passes on, e.g. the label, stays)."""
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(directory)
    layer = output.transform_features_layer()

    def apply(parsed: dict) -> dict:
        return {**parsed, **layer(parsed)}

    return output.raw_feature_spec(), apply


def transformed_features(directory: str) -> dict:
    """The dense features a Transform graph writes (its transformed_metadata): name ->
    (kind: float/int64/bytes, values per example).

    Raises:
      DataError: the directory has no readable transformed_metadata.
    """
    import math

    import tensorflow as tf
    import tensorflow_transform as tft

    from components.common.errors import DataError

    try:
        spec = tft.TFTransformOutput(directory).transformed_feature_spec()
    except Exception as e:  # noqa: BLE001 - any unreadable metadata
        raise DataError(
            f"{CONFIG_KEY} {directory!r}: its transformed_metadata cannot be read ({e}); point it "
            "to the Transform component's transform_graph output."
        ) from None
    features = {}
    for key, feature in spec.items():
        if isinstance(feature, tf.io.FixedLenFeature):
            kind = (
                "bytes"
                if feature.dtype == tf.string
                else "int64"
                if feature.dtype.is_integer
                else "float"
            )
            features[key] = (kind, math.prod(feature.shape) if feature.shape else 1)
    return features


def check_raw_examples(signature, records: list, where: str, raw_examples: str | None):
    """The raw examples hold every feature the transform signature parses without a default.

    Raises:
      ModelInputError: naming the signature, the missing features and data.raw_examples.
    """
    import tensorflow as tf

    if not records:
        return
    present = tf.train.Example.FromString(records[0]).features.feature
    missing = sorted(
        k
        for k, (_, _, default) in signature.feature_spec.items()
        if default is None and k not in present
    )
    if not missing:
        return
    held = ", ".join(sorted(present))
    if raw_examples:
        fix = f"Point {RAW_EXAMPLES_KEY} to the raw Examples the Transform read (ExampleGen's output)."
    else:
        fix = (
            f"These look like the transformed examples: set {RAW_EXAMPLES_KEY} to the raw Examples "
            "the Transform read (ExampleGen's output), so the rebuilt signature is verified on "
            "what TF Serving receives."
        )
    raise ModelInputError(
        f"serving signature {signature.key!r} parses raw tf.Examples ({', '.join(sorted(signature.feature_spec))}) "
        f"for its tf.Transform graph, but the examples at {where!r} lack {missing} (they hold: "
        f"{held}). {fix}"
    )
