"""Distiller configuration: loss weights, temperature, the student definition and training."""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import pydantic

from components.common.config import StrictModel
from components.common.training import FineTuneConfig

DEFAULT_WIDTH_MULTIPLIER = 0.5
# The training section's name before it was ``fine_tuning`` (as in every other component).
OLD_TRAINING_KEY = "training"
log = logging.getLogger(__name__)


class DistillTrainingConfig(FineTuneConfig):
    """How the student is trained (also used, unchanged, for the label-only baseline).

    Extends the shared :class:`FineTuneConfig` (epochs, batch size, optimizer, strategy, seed, early
    stopping on eval accuracy) with a warm-up + cosine-decay learning-rate schedule and mixed
    precision. Defaults suit training a student from scratch, not fine-tuning.
    """

    epochs: int = pydantic.Field(25, ge=0, le=10_000)
    learning_rate: float = pydantic.Field(
        3e-3, gt=0, le=10, description="Peak learning rate, reached at the end of the warm-up."
    )
    warmup_epochs: float = pydantic.Field(
        1.0, ge=0, le=10_000, description="Linear warm-up from ~0 to learning_rate, in epochs."
    )
    final_learning_rate_fraction: float = pydantic.Field(
        0.0,
        ge=0,
        le=1,
        description="Cosine decay ends at learning_rate times this fraction, at the last epoch.",
    )
    mixed_precision: bool = pydantic.Field(
        False,
        description="Train the student in mixed_float16 (GPU only: ignored, with a log line, on CPU).",
    )


class FeaturePair(StrictModel):
    """An intermediate-feature hint: the student layer's output is pulled towards the teacher's."""

    teacher_layer: str = pydantic.Field(..., min_length=1)
    student_layer: str | None = pydantic.Field(
        None,
        min_length=1,
        description="Default: the teacher's layer name (automatic students keep layer names).",
    )


class DistillerConfig(StrictModel):
    """Knowledge distillation from a teacher model into a smaller student.

    Loss per batch::

        alpha * CE(labels, student)
        + beta * T^2 * KL(softmax(teacher_logits / T) || softmax(student_logits / T))
        + gamma * sum over feature_pairs of mean((projection(student_feature) - teacher_feature)^2)
    """

    alpha: float = pydantic.Field(0.5, ge=0, description="Weight of the hard-label cross-entropy.")
    beta: float = pydantic.Field(0.5, ge=0, description="Weight of the soft-target KL term.")
    gamma: float = pydantic.Field(
        0.0, ge=0, description="Weight of the intermediate-feature L2 term (needs feature_pairs)."
    )
    temperature: float = pydantic.Field(
        2.0, gt=0, le=1000, description="Softmax temperature T of the soft targets; must be > 0."
    )
    teacher_outputs: Literal["auto", "logits", "probabilities"] = pydantic.Field(
        "auto",
        description="Whether the teacher outputs logits or probabilities; 'auto' looks for a final "
        "softmax. Probabilities are turned back into logits (their log) before scaling by T.",
    )
    width_multiplier: float | None = pydantic.Field(
        None,
        gt=0,
        le=4,
        description="Automatic student: filters/units of every hidden layer times this (rounded); "
        f"default {DEFAULT_WIDTH_MULTIPLIER} when no module_file is given.",
    )
    depth: int | None = pydantic.Field(
        None,
        ge=0,
        description="Automatic student: keep at most this many repeated blocks in each run of "
        "them (see components/distiller/student.py); None keeps them all.",
    )
    module_file: str | None = pydantic.Field(
        None,
        min_length=1,
        description="Python file defining build_student(teacher, input_spec) -> tf_keras.Model; "
        "replaces the automatic student.",
    )
    feature_pairs: list[FeaturePair] = pydantic.Field(
        default_factory=list, description="Intermediate layers matched by the gamma term."
    )
    label_only_baseline: bool = pydantic.Field(
        True,
        description="Also train the same student on labels alone (same epochs, seed and data "
        "order) and report what distillation bought.",
    )
    max_eval_examples: int | None = pydantic.Field(
        None, ge=1, description="Cap on eval examples for the reported accuracies."
    )
    fine_tuning: DistillTrainingConfig = pydantic.Field(
        default_factory=DistillTrainingConfig,
        description="How the student is trained (the section every component names fine_tuning).",
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _old_training_key(cls, data):
        """``training`` (the previous release's name) still works, with a warning to rename it."""
        if not isinstance(data, dict) or OLD_TRAINING_KEY not in data:
            return data
        if "fine_tuning" in data:
            raise ValueError(
                "both 'training' and 'fine_tuning' are set: keep 'fine_tuning' ('training' is "
                "its old name)"
            )
        message = (
            "distiller: the config section 'training' is now 'fine_tuning' (as in the Pruner, "
            "Clusterer and Quantizer); rename it, the old name goes in the next release"
        )
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        log.warning(message)
        data = dict(data)
        data["fine_tuning"] = data.pop(OLD_TRAINING_KEY)
        return data

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> DistillerConfig:
        if self.alpha == 0 and self.beta == 0 and self.gamma == 0:
            raise ValueError("alpha, beta and gamma are all 0: nothing to train the student on")
        if self.gamma > 0 and not self.feature_pairs:
            raise ValueError("gamma > 0 needs feature_pairs (teacher_layer / student_layer)")
        if self.feature_pairs and self.gamma == 0:
            raise ValueError("feature_pairs are set but gamma is 0: set gamma > 0 or drop them")
        if self.module_file and (self.width_multiplier is not None or self.depth is not None):
            raise ValueError(
                "module_file builds the student: width_multiplier and depth apply only to the "
                "automatic student; set one or the other"
            )
        return self

    @property
    def student_width_multiplier(self) -> float:
        """The width multiplier of the automatic student (its default when unset)."""
        if self.width_multiplier is None:
            return DEFAULT_WIDTH_MULTIPLIER
        return self.width_multiplier
