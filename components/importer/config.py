"""ModelImporter configuration (validated when the pipeline is built)."""

from __future__ import annotations

import pydantic

from components.common.config import StrictModel


class ImporterConfig(StrictModel):
    """How the checkpoint is brought in: Keras 3 conversion, nested-model flattening, checks."""

    tolerance: float = pydantic.Field(
        1e-4,
        gt=0,
        le=1,
        description="Largest output difference allowed between the original and the converted "
        "or flattened model on the eval examples: absolute for outputs of magnitude up to 1, "
        "relative to the largest output magnitude above that.",
    )
    max_verify_examples: int = pydantic.Field(
        1000, ge=1, le=1_000_000, description="Eval examples the outputs are compared on."
    )
    module_file: str | None = pydantic.Field(
        None,
        description="Python file defining build_tf_keras_model() (the model built with "
        "tf_keras, for Keras 3 models with layers the converter does not map) and optionally "
        "KERAS3_CUSTOM_OBJECTS (the Keras 3 classes needed to load the original). Default: "
        "data.module_file when it defines build_tf_keras_model().",
    )
