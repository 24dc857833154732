"""The model-import step on plain paths (no TFX here): one tf_keras model in the standard layout.

- A flat tf_keras SavedModel is copied as it is (byte-identical, milliseconds: nothing to check,
  nothing re-traced).
- A tf_keras model holding nested models is flattened (:mod:`flatten`).
- A Keras 3 ``.keras`` file is converted (:mod:`keras3`), then flattened when it nests models.

A converted or flattened model is verified: its outputs and the original's on the eval examples
may differ by at most the configured tolerance, or nothing is written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass

from components.common import model_io
from components.common.errors import ModelInputError
from components.common.examples import DataConfig
from components.common.keys import IMPORT_RECORD_FILE
from components.importer import flatten, keras3
from components.importer.config import ImporterConfig

log = logging.getLogger(__name__)

# Source formats, and custom property names of the output Model artifact.
TF_KERAS = "tf_keras"
KERAS3 = "keras3"
SOURCE_FORMAT = "source_format"
KERAS_VERSION = "keras_version"
ACTION = "import_action"
FLATTENED_MODELS = "flattened_models"
MAX_ABS_DIFF = "max_abs_diff"
TOLERANCE = "tolerance"
VERIFIED_EXAMPLES = "verified_examples"
WALL_TIME_S = "import_wall_time_s"
_NESTED_IDS = ("_tf_keras_network", "_tf_keras_sequential", "_tf_keras_model")


@dataclass(frozen=True)
class Source:
    """The checkpoint as found: its format, its path and (Keras 3) its checked archive."""

    kind: str  # TF_KERAS or KERAS3
    path: str  # the SavedModel directory, or the .keras file
    archive: keras3.Archive | None = None


def resolve_source(model_uri: str) -> Source:
    """Finds what ``model_uri`` holds, cheaply (no model is loaded).

    Raises:
      ModelInputError: a damaged ``.keras`` file, a Keras 3 ``export()`` SavedModel, or a path
        holding no model; the message says what to pass instead.
    """
    keras_file = keras3.find_keras_file(model_uri)
    if keras_file is not None:
        return Source(KERAS3, keras_file, keras3.read_archive(keras_file))
    return Source(TF_KERAS, model_io.validate_saved_model(model_uri, require_keras=True))


def hook_file(config: ImporterConfig, data: DataConfig) -> str | None:
    """The module file whose ``build_tf_keras_model()`` builds the model, if any."""
    if config.module_file:
        return config.module_file
    if data.module_file and os.path.isfile(data.module_file):
        with open(data.module_file) as f:
            if f"def {keras3.HOOK_NAME}(" in f.read():
                return data.module_file
    return None


def check_source(model_uri: str, config: ImporterConfig, data: DataConfig) -> Source:
    """:func:`resolve_source`, plus (Keras 3, no hook) every layer checked as convertible."""
    source = resolve_source(model_uri)
    if source.kind == KERAS3 and hook_file(config, data) is None:
        keras3.check_convertible(source.archive)
    return source


def model_to_check(source: Source, config: ImporterConfig, data: DataConfig):
    """The flat tf_keras model the later steps will see (Keras 3: the architecture only, fresh
    weights), so preflight can judge the stages' plans on it before anything runs."""
    if source.kind == KERAS3:
        model = _build_tf_keras(source, config, data)
        return flatten.flatten(model)
    # A flat model is returned as loaded: shared with the later steps of this process, which
    # read the ModelImporter's byte-identical copy of it (flattening would add call nodes).
    nested, _ = saved_model_facts(source.path)
    model = model_io.load_keras_model(source.path, shared=not nested)
    return flatten.flatten(model)


def _build_tf_keras(source: Source, config: ImporterConfig, data: DataConfig):
    hook, _ = keras3.load_hook(hook_file(config, data))
    if hook is None:
        return keras3.build_model(source.archive)
    model = hook()
    import tf_keras

    if not isinstance(model, tf_keras.Model):
        raise ModelInputError(
            f"{keras3.HOOK_NAME}() returned {type(model).__name__}, not a tf_keras model: build "
            "it with `import tf_keras`."
        )
    return model


def saved_model_facts(path: str) -> tuple[bool, str]:
    """(holds nested models, tf_keras version) of a tf_keras SavedModel, from its metadata."""
    import tensorflow as tf
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata()
    with tf.io.gfile.GFile(os.path.join(path, model_io.KERAS_METADATA_PB), "rb") as f:
        metadata.ParseFromString(f.read())
    # A TFX Transform layer (model.tft_layer) is a Keras Model outside the model's graph, not a
    # nested model: it is dropped at load and reattached by the serving signature.
    nested = any(
        n.node_path != "root"
        and n.identifier in _NESTED_IDS
        and not json.loads(n.metadata).get("class_name", "").endswith("TransformFeaturesLayer")
        for n in metadata.nodes
    )
    roots = [n for n in metadata.nodes if n.node_path == "root"]
    version = json.loads(roots[0].metadata).get("keras_version", "unknown") if roots else "unknown"
    return nested, str(version)


def run(
    model_uri: str,
    examples_uri: str,
    data: DataConfig,
    config: ImporterConfig,
    output_uri: str,
) -> dict:
    """Imports the checkpoint into ``output_uri`` (``Format-Serving/`` and ``import.json``).

    Returns:
      The record (also written as ``import.json``).
    Raises:
      ModelInputError: the checkpoint cannot be converted or flattened, or the result's
        outputs differ from the original's by more than the tolerance (nothing is written).
    """
    started = time.perf_counter()
    source = check_source(model_uri, config, data)
    record = {"source_uri": model_uri, SOURCE_FORMAT: source.kind, TOLERANCE: config.tolerance}
    if source.kind == TF_KERAS:
        nested, record[KERAS_VERSION] = saved_model_facts(source.path)
        if not nested:
            from components.common import signatures

            # Copied as it is, signatures included: the record says which ones every step keeps.
            model = model_io.load_keras_model(source.path, shared=True)
            interface = signatures.plan(source.path, model, data.module_file, data.transform_graph)
            record["serving_signatures"] = interface.describe()
            return _copy(source, record, output_uri, started)
        original = model_io.load_keras_model(source.path)
        model, record[ACTION] = original, "flattened"
        from components.common import signatures

        # The checkpoint's serving signatures, rebuilt around the flattened model.
        interface = signatures.interface_for(source.path, original, examples_uri, data)
        interface.check_wrappers(original)
        record["serving_signatures"] = interface.describe()
    else:
        record[KERAS_VERSION] = source.archive.keras_version
        original, model = _convert(source, config, data, record)
        interface = None  # a .keras file has no serving signatures: the model's call serves
    record[FLATTENED_MODELS] = flatten.nested_models(model)
    flat = flatten.flatten(model)
    if record[FLATTENED_MODELS] and source.kind == KERAS3:
        record[ACTION] = "converted+flattened"
    record.update(_verify(original, flat, examples_uri, data, config))
    record["layers"] = len(flat.layers)
    record[WALL_TIME_S] = round(time.perf_counter() - started, 3)
    from components.common import optimization

    optimization.write_model_artifact(
        flat, output_uri, {IMPORT_RECORD_FILE: record}, interface=interface
    )
    return record


def _copy(source: Source, record: dict, output_uri: str, started: float) -> dict:
    from components.common import properties

    record.update({ACTION: "copied", FLATTENED_MODELS: [], MAX_ABS_DIFF: 0.0})
    model_io.copy_serving_model(source.path, output_uri)
    record[WALL_TIME_S] = round(time.perf_counter() - started, 3)
    properties.write_json(output_uri, IMPORT_RECORD_FILE, record)
    return record


def _convert(source: Source, config: ImporterConfig, data: DataConfig, record: dict):
    """(Keras 3 original, tf_keras model with its weights) for a ``.keras`` source."""
    path = hook_file(config, data)
    _, custom_objects = keras3.load_hook(path)
    model = _build_tf_keras(source, config, data)
    original = keras3.load_keras3_model(source.archive, custom_objects)
    record["tensors_copied"] = keras3.copy_weights(original, model)
    record[ACTION] = "converted"
    record["built_by"] = f"{path}:{keras3.HOOK_NAME}" if path else "converter"
    return original, model


def _verify(original, model, examples_uri, data, config: ImporterConfig) -> dict:
    """Compares both models' outputs on the eval examples; raises when they differ too much."""
    import numpy as np

    from components.common import examples as examples_lib

    inputs, _ = examples_lib.load_arrays(
        examples_uri, data.eval_split, data, model, limit=config.max_verify_examples
    )
    expected, actual = predict(original, inputs), predict(model, inputs)
    diff = flatten.max_abs_difference(expected, actual)
    scale = max([1.0, *(float(np.max(np.abs(e))) for e in expected if e.size)])
    allowed = config.tolerance * scale
    count = len(inputs[0]) if isinstance(inputs, tuple) else len(inputs)
    if not math.isfinite(diff) or diff > allowed:
        raise ModelInputError(
            f"the imported model's outputs differ from the original's by up to {diff:.3g} on "
            f"{count} eval examples (allowed: {allowed:.3g}, importer.tolerance "
            f"{config.tolerance:g}); nothing was written. Check the model's layers, or raise "
            "importer.tolerance if the difference is expected."
        )
    return {MAX_ABS_DIFF: diff, "allowed_abs_diff": allowed, VERIFIED_EXAMPLES: count}


def predict(model, inputs, batch_size: int = 256) -> list:
    """The model's outputs (inference mode) as a list of numpy arrays, one per output."""
    import numpy as np
    import tensorflow as tf

    arrays = list(inputs) if isinstance(inputs, tuple) else [inputs]
    total = len(arrays[0])
    batches = []
    for start in range(0, total, batch_size):
        chunk = [a[start : start + batch_size] for a in arrays]
        result = model(chunk if len(chunk) > 1 else chunk[0], training=False)
        batches.append([np.asarray(t) for t in tf.nest.flatten(result)])
    return [np.concatenate(parts) for parts in zip(*batches, strict=True)]
