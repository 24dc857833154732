"""Checks of user inputs before any heavy work: paths, model format, Examples against the config."""

from __future__ import annotations

import os

from components.common import examples as examples_lib
from components.common import model_io
from components.common.errors import TfxOptError
from pipelines.config import PipelineConfig


def check_output_dir(path: str) -> str:
    """Creates ``path`` if needed and checks that it is writable; returns its absolute path."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".tfxopt-write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise TfxOptError(
            f"output directory {path!r} is not writable ({e.strerror}); pass --output with a "
            "directory you can write to."
        ) from None
    return path


def check_inputs(config: PipelineConfig, model_uri: str, examples_uri: str) -> None:
    """Validates the checkpoint and the Examples against the config and each other.

    Raises:
      TfxOptError: a ModelInputError, DataError or ConfigError naming what is wrong.
    """
    model_io.validate_saved_model(model_uri, require_keras=True)
    for split in (config.data.train_split, config.data.eval_split):
        examples_lib.split_files(examples_uri, split)
    if config.data.module_file:
        return  # the user's input_fn decides what the model is fed
    model = model_io.load_keras_model(model_uri)
    for split in (config.data.train_split, config.data.eval_split):
        examples_lib.resolve_mapping(examples_uri, split, config.data, model)
