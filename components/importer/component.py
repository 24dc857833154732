"""ModelImporter TFX component: the checkpoint (tf_keras or Keras 3) in, one flat tf_keras Model out."""

from __future__ import annotations

from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter

from components.common.component_base import ModelStepComponent, ModelStepSpec
from components.common.keys import IMPORTED_MODEL_KEY
from components.importer import executor
from components.importer.config import ImporterConfig

__all__ = ["ModelImporter", "ModelImporterSpec"]


class ModelImporterSpec(ModelStepSpec):
    """Inputs, outputs and parameters of the ModelImporter."""

    OUTPUTS = {IMPORTED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}


class ModelImporter(ModelStepComponent):
    """Brings the checkpoint into the pipeline as one flat tf_keras model, verified.

    A flat tf_keras SavedModel is copied unchanged; a model nesting Functional/Sequential models
    is flattened; a Keras 3 ``.keras`` file is converted to tf_keras (and flattened). Converted or
    flattened models are checked on the eval examples: outputs within ``config.tolerance`` of the
    original's, or the step fails and writes nothing. The output Model
    (``outputs['imported_model']``) holds ``Format-Serving/`` and ``import.json`` and carries the
    source format, Keras version, flattened models and max output difference as custom properties.

    Example:
      imported = ModelImporter(model=checkpoint.outputs['result'],
                               examples=example_gen.outputs['examples'],
                               config={'tolerance': 1e-4})
    """

    SPEC_CLASS = ModelImporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
    CONFIG_CLASS, WHERE = ImporterConfig, "importer"
