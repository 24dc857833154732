"""The pipeline's YAML config: one typed, validated object, checked when the pipeline is built.

Unknown keys and out-of-range values fail at once with the field's dotted name.
"""

from __future__ import annotations

import os
import re
from typing import Literal

import pydantic

from components.clusterer.config import ClustererConfig
from components.common.config import StrictModel
from components.common.errors import ConfigError
from components.common.examples import DataConfig
from components.distiller.config import DistillerConfig
from components.evaluator.config import EvaluatorConfig
from components.importer.config import ImporterConfig
from components.profiler.config import ProfilerConfig
from components.pruner.config import PrunerConfig
from components.pusher.config import PusherConfig
from components.quantizer.config import QuantizerConfig
from pipelines.kubeflow_config import KubeflowConfig

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


_CANDIDATE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class QuantizationCandidate(QuantizerConfig):
    """One Quantizer branch: a quantizer config plus the candidate's name (default: the mode)."""

    name: str | None = pydantic.Field(
        None, description="Candidate name in reports and node ids (default: the mode)."
    )

    @property
    def candidate_name(self) -> str:
        return self.name or self.mode

    def quantizer_config(self) -> QuantizerConfig:
        return QuantizerConfig.parse(self.model_dump(exclude={"name"}))


class PipelineConfig(StrictModel):
    """Top-level pipeline configuration (``pipelines/configs/*.yaml``)."""

    pipeline_name: str = pydantic.Field(
        "tfxopt", description="Lower-case letters, digits and '-': also the KFP pipeline name."
    )
    enable_cache: bool = pydantic.Field(
        True, description="Reuse results of steps whose inputs and config did not change."
    )
    beam_pipeline_args: list[str] = pydantic.Field(
        default_factory=lambda: ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
        description="Apache Beam options for Beam-based steps (runner, workers, ...).",
    )
    example_gen: Literal["copy", "beam"] = pydantic.Field(
        "copy",
        description=(
            "How the input Examples enter the pipeline root: 'copy' copies the TFRecord files "
            "(reading every record once to check it; components/example_gen), 'beam' re-encodes "
            "them with TFX's ImportExampleGen (a Beam pipeline: use it to parallelise very large "
            "inputs on a distributed runner)."
        ),
    )
    data: DataConfig = pydantic.Field(default_factory=DataConfig)
    importer: ImporterConfig = pydantic.Field(
        default_factory=ImporterConfig,
        description="How the checkpoint is brought in (Keras 3 conversion, nested models "
        "flattened, the output check's tolerance).",
    )
    profiler: ProfilerConfig = pydantic.Field(default_factory=ProfilerConfig)
    profile_candidates: bool = pydantic.Field(
        True, description="Profile every candidate (the summary shows them beside the baseline)."
    )
    distiller: DistillerConfig | None = pydantic.Field(
        None, description="Distil the baseline into a smaller student first (absent: off)."
    )
    pruner: PrunerConfig | None = pydantic.Field(None, description="Prune (absent: off).")
    clusterer: ClustererConfig | None = pydantic.Field(None, description="Cluster (absent: off).")
    quantization: list[QuantizationCandidate] = pydantic.Field(
        default_factory=list,
        description="One Quantizer branch per entry; each output is a candidate. Empty: the "
        "last of distiller/pruner/clusterer is the one candidate.",
    )
    evaluator: EvaluatorConfig | None = pydantic.Field(
        None, description="The gate over the candidates (absent with candidates: default rules)."
    )
    pusher: PusherConfig | None = pydantic.Field(
        None, description="Where blessed models go (absent: nothing is pushed)."
    )
    kubeflow: KubeflowConfig = pydantic.Field(
        default_factory=KubeflowConfig,
        description="Image, pipeline root and per-step Kubernetes settings for `tfxopt compile`.",
    )

    @pydantic.field_validator("pipeline_name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1-63 lower-case letters, digits or '-', starting and ending with a "
                "letter or digit"
            )
        return value

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        names = [c.candidate_name for c in self.quantization]
        for name in names:
            if not _CANDIDATE_NAME.match(name):
                raise ValueError(
                    f"quantization candidate name {name!r}: use lower-case letters, digits and '_'"
                )
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"quantization: candidate names must be unique, {duplicates} repeat; give each "
                "entry a distinct `name`"
            )
        if len(names) > 8:
            raise ValueError("quantization: at most 8 candidates (the Evaluator's slots)")
        if self.pusher is not None and not self.has_candidates:
            raise ValueError(
                "pusher is configured but no stage makes a candidate: enable distiller, pruner, "
                "clusterer or quantization"
            )
        return self

    @property
    def has_candidates(self) -> bool:
        return bool(
            self.quantization or self.pruner or self.clusterer or self.distiller is not None
        )


def resolve_paths(config: PipelineConfig, base_dir: str) -> PipelineConfig:
    """Makes the relative destination, key and module paths of a config relative to ``base_dir``.

    Local runs resolve them against ``--output``, so `serving`, `ota` and `keys/ota.pem` in a
    config land beside the run's metadata; absolute paths and URIs (gs://...) are kept.
    """

    def fix(path):
        if path is None or "://" in path or os.path.isabs(path):
            return path
        return os.path.join(base_dir, path)

    data = config.model_dump()
    pusher = data.get("pusher")
    if pusher:
        for dest in pusher.get("serving", []):
            dest["base_directory"] = fix(dest["base_directory"])
        for dest in pusher.get("ota", []):
            dest["base_directory"] = fix(dest["base_directory"])
            dest["signing_key_path"] = fix(dest.get("signing_key_path"))
        pusher["metrics_path"] = fix(pusher.get("metrics_path"))
    evaluator = data.get("evaluator")
    if evaluator and evaluator.get("production"):
        evaluator["production"]["metrics_path"] = fix(evaluator["production"].get("metrics_path"))
    return PipelineConfig.parse(data)


def load_config(path: str | None) -> PipelineConfig:
    """Reads and validates a YAML config file (None: all defaults)."""
    if path is None:
        return PipelineConfig()
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist.")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path!r} is not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"config file {path!r} must hold a mapping of keys, not {type(data).__name__}."
        )
    try:
        return PipelineConfig.parse(data or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
