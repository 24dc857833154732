"""ModelImporter executor: TFX glue around :func:`components.importer.importer.run`."""

from __future__ import annotations

from components.common.executor_base import ModelStepExecutor
from components.common.keys import IMPORTED_MODEL_KEY
from components.importer import importer
from components.importer.config import ImporterConfig

# The record's entries that travel as custom properties of the output Model.
PROPERTY_KEYS = (
    importer.SOURCE_FORMAT,
    importer.KERAS_VERSION,
    importer.ACTION,
    importer.FLATTENED_MODELS,
    importer.MAX_ABS_DIFF,
    importer.TOLERANCE,
    importer.VERIFIED_EXAMPLES,
    importer.WALL_TIME_S,
)


class Executor(ModelStepExecutor):
    """Writes the imported tf_keras model (``Format-Serving/``), ``import.json`` and the key
    numbers (source format, Keras version, flattened models, max output difference) as custom
    properties of the output Model. ``run`` writes the output only once the model is converted
    and verified."""

    CONFIG_CLASS, WHERE, DONE = ImporterConfig, "importer", "imported"
    OUTPUT_KEY = IMPORTED_MODEL_KEY

    def run(self, model_uri, examples_uri, output_uri, config, data) -> dict:
        return importer.run(model_uri, examples_uri, data, config, output_uri)

    def key_numbers(self, record: dict, config) -> dict:
        return {key: record.get(key) for key in PROPERTY_KEYS}
