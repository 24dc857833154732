"""Distiller TFX component: a teacher Model and Examples in, a smaller student Model out."""

from __future__ import annotations

import warnings

from tfx import types
from tfx.dsl.components.base import executor_spec

from components.common.component_base import ModelStepComponent, ModelStepSpec
from components.common.examples import DataConfig
from components.distiller import executor
from components.distiller.config import DistillerConfig

__all__ = ["Distiller", "DistillerSpec"]


class DistillerSpec(ModelStepSpec):
    """Inputs, outputs and parameters of the Distiller (the ``model`` input is the teacher)."""


class Distiller(ModelStepComponent):
    """Trains a smaller student to mimic the teacher (knowledge distillation).

    The student is the teacher's own architecture at ``width_multiplier`` (and ``depth``), or what
    ``build_student(teacher, input_spec)`` in ``module_file`` returns. Its output is a standard
    ``Model`` artifact (``outputs['optimized_model']``: ``Format-Serving/``), so it feeds the
    Pruner, Clusterer and Quantizer. The teacher is the ``model`` input, as every
    model-in/model-out component names it (``teacher=`` still works, with a DeprecationWarning).

    Example:
      distiller = Distiller(model=importer.outputs['result'],
                            examples=example_gen.outputs['examples'],
                            config={'width_multiplier': 0.5, 'temperature': 2.0,
                                    'fine_tuning': {'epochs': 25}})
    """

    SPEC_CLASS = DistillerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
    CONFIG_CLASS, WHERE = DistillerConfig, "distiller"

    def __init__(
        self,
        model: types.BaseChannel | None = None,
        examples: types.BaseChannel | None = None,
        config: DistillerConfig | dict | None = None,
        data_config: DataConfig | dict | None = None,
        teacher: types.BaseChannel | None = None,
    ):
        model = _model_or_teacher(model, teacher)
        if examples is None:
            raise TypeError(
                "Distiller: examples is required (the Examples to train the student on)"
            )
        super().__init__(model, examples, config, data_config)


def _model_or_teacher(model, teacher):
    """The teacher channel: ``model``, or ``teacher`` (its name before this release)."""
    if teacher is None:
        if model is None:
            raise TypeError("Distiller: model is required (the teacher Model channel)")
        return model
    if model is not None:
        raise TypeError("Distiller: give the teacher as model= only (teacher= is its old name)")
    warnings.warn(
        "Distiller(teacher=...) is deprecated: pass the teacher as model=..., as for every "
        "model-in/model-out component; teacher= goes in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
    return teacher
