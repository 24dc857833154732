"""Writing an output artifact: all of it, or nothing of it when anything fails.

The one place every step writes its output directory through: the model-in/model-out steps
(Pruner, Clusterer, Quantizer, Distiller, and the ModelImporter) with :func:`write_model`, the
Evaluator and the copying ExampleGen with :func:`all_or_nothing`. A reader never finds a
half-written artifact: a failure removes what the step wrote before it is raised again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def _names(directory: str) -> set[str]:
    import tensorflow as tf

    if not tf.io.gfile.isdir(directory):
        return set()
    # Object stores list a directory with a trailing slash.
    return {name.rstrip("/") for name in tf.io.gfile.listdir(directory)}


def _remove(path: str) -> None:
    import tensorflow as tf

    if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


def empty(directory: str) -> None:
    """Removes everything inside ``directory`` (made when missing), keeping the directory."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(directory):
        tf.io.gfile.makedirs(directory)
        return
    for name in _names(directory):
        _remove(os.path.join(directory, name))


@contextlib.contextmanager
def all_or_nothing(directory: str) -> Iterator[str]:
    """A block that writes into ``directory``: when it raises, what it added there is removed.

    Entries that were there before the block are left alone (a step's output directory is new,
    so in practice everything the step wrote is removed). The error is raised again.
    """
    before = _names(directory)
    try:
        yield directory
    except BaseException:
        for name in _names(directory) - before:
            _remove(os.path.join(directory, name))
        raise


def write_model(
    output_uri: str,
    *,
    model=None,
    serving_source: str | None = None,
    flatbuffer: bytes | None = None,
    json_files: dict[str, object] | None = None,
    training_config: dict | None = None,
    interface=None,
) -> dict[str, str]:
    """Writes a Model artifact in the standard layout; on failure nothing of it stays.

    Args:
      output_uri: the artifact's directory.
      model: a tf_keras model, saved as ``Format-Serving/`` (with ``training_config`` beside it
        when given, so a later step compiles it the same way).
      serving_source: instead of ``model``, a SavedModel directory copied as ``Format-Serving/``
        (a step whose serving flavour is its input unchanged: byte-identical, milliseconds).
      flatbuffer: a TFLite flatbuffer, written as ``Format-TFLite/model.tflite``.
      json_files: file name -> record, written as JSON at the top of the artifact.
      interface: the input model's serving interface
        (:class:`components.common.signatures.ServingInterface`): every signature of the input
        is rebuilt around ``model`` and checked before anything is written.

    Returns:
      What was written: ``serving_model_dir``, ``tflite_path`` and each JSON file's name, to path.
    """
    from components.common import model_io, properties

    written = {}
    signatures = None
    if model is not None and not serving_source and interface is not None:
        signatures = interface.signatures_for(model)  # raises before anything is written
    with all_or_nothing(output_uri):
        if serving_source:
            written["serving_model_dir"] = model_io.copy_serving_model(serving_source, output_uri)
        elif model is not None:
            try:
                written["serving_model_dir"] = model_io.save_keras_model(
                    model, output_uri, training_config, signatures
                )
            finally:  # a Transform layer attached for the save leaves with it
                from components.common import transform

                transform.detach_transform_layers(model)
        if flatbuffer is not None:
            written["tflite_path"] = model_io.write_tflite(flatbuffer, output_uri)
        for name, content in (json_files or {}).items():
            written[name] = properties.write_json(output_uri, name, content)
    return written
