"""The pipeline's YAML config: one typed, validated object, checked when the pipeline is built.

Unknown keys and out-of-range values fail at once with the field's dotted name.
"""

from __future__ import annotations

import logging
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
from components.evaluator.constants import MAX_CANDIDATES, NO_RULES_MEANING
from components.importer.config import ImporterConfig
from components.latency_benchmark.config import LatencyBenchmarkConfig
from components.profiler.config import ProfilerConfig
from components.pruner.config import PrunerConfig
from components.pusher.config import PusherConfig
from components.quantizer.config import QuantizerConfig
from pipelines.kubeflow.config import KubeflowConfig
from pipelines.recipes import Plan, Recipe, check_candidate_name, plan_recipes, plan_sections

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

#: What ``tfxopt run`` runs without ``--config``: sections common to every task, and per task
#: (under ``tasks:``) the recipes that apply to it and its gate rule.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.yaml")
DEFAULT_TASKS_KEY = "tasks"
DEFAULT_TASK_SECTIONS = ("candidates", "evaluator")


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
    candidates: dict[str, Recipe] = pydantic.Field(
        default_factory=dict,
        validation_alias=pydantic.AliasChoices("candidates", "recipes"),
        description="Recipes as candidates (also `recipes:`): name -> chain of stages "
        "(distiller, structured, pruner, clusterer, quantization). Stages shared by several "
        "recipes run once. Replaces the top-level distiller/pruner/clusterer/quantization.",
    )
    latency_benchmark: LatencyBenchmarkConfig | None = pydantic.Field(
        None,
        description="Time baseline and candidates in a step of their own, LatencyBenchmark, "
        "whose figures the Evaluator's latency rules use (evaluator.latency.source auto or "
        "external): on Kubeflow, pin it to the target hardware with "
        "kubeflow.steps.LatencyBenchmark (absent: the Evaluator times them where it runs).",
    )
    evaluator: EvaluatorConfig | None = pydantic.Field(
        None, description=f"The gate over the candidates (absent: {NO_RULES_MEANING})."
    )
    pusher: PusherConfig | None = pydantic.Field(
        None, description="Where blessed models go (absent: nothing is pushed)."
    )
    kubeflow: KubeflowConfig = pydantic.Field(
        default_factory=KubeflowConfig,
        description="Image, pipeline root and per-step Kubernetes settings for `tfxopt compile`.",
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _evaluator_task_to_data(cls, data):
        """``evaluator.task`` (deprecated) moves to ``data.task``, the key every step reads."""
        if not isinstance(data, dict):
            return data
        evaluator = data.get("evaluator")
        task = evaluator.get("task") if isinstance(evaluator, dict) else None
        if task is None:
            return data
        section = dict(data.get("data") or {})
        # "classification" names no one task: the classifier's task is still inferred.
        if section.get("task", "auto") == "auto" and task != "classification":
            section["task"] = task
            data = {**data, "data": section}
        logging.getLogger(__name__).warning(
            "tfxopt: evaluator.task is deprecated: set data.task (read by every step); "
            "using data.task: %s",
            section.get("task", "auto"),
        )
        return data

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
        if self.candidates:
            self._check_recipes()
        names = [c.candidate_name for c in self.quantization]
        for name in names:
            check_candidate_name(name, "quantization")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"quantization: candidate names must be unique, {duplicates} repeat; give each "
                "entry a distinct `name`"
            )
        if len(names) > MAX_CANDIDATES:
            raise ValueError(
                f"quantization: at most {MAX_CANDIDATES} candidates (the Evaluator's slots)"
            )
        if self.latency_benchmark is not None and not self.has_candidates:
            raise ValueError(
                "latency_benchmark is configured but no stage makes a candidate to time"
            )
        if self.pusher is not None and not self.has_candidates:
            raise ValueError(
                "pusher is configured but no stage makes a candidate: enable distiller, pruner, "
                "clusterer or quantization"
            )
        return self

    def _check_recipes(self) -> None:
        sections = [
            key
            for key in ("distiller", "pruner", "clusterer", "quantization")
            if getattr(self, key)
        ]
        if sections:
            raise ValueError(
                f"candidates (recipes) and the top-level {sections} exclude each other: put "
                "those stages inside the recipes"
            )
        for name in self.candidates:
            check_candidate_name(name, "candidates:")
        if len(self.candidates) > MAX_CANDIDATES:
            raise ValueError(
                f"candidates: at most {MAX_CANDIDATES} recipes (the Evaluator's slots), got "
                f"{len(self.candidates)}"
            )
        plan_recipes(self.candidates)  # two recipes that are the same chain fail here

    @property
    def has_candidates(self) -> bool:
        return bool(
            self.candidates
            or self.quantization
            or self.pruner
            or self.clusterer
            or self.distiller is not None
        )

    def plan(self) -> Plan:
        """The optimisation DAG: the recipes, or the top-level sections as one chain."""
        if self.candidates:
            return plan_recipes(self.candidates)
        return plan_sections(self.distiller, self.pruner, self.clusterer, self.quantization)


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
            dest["extra_signing_key_paths"] = [
                fix(p) for p in dest.get("extra_signing_key_paths") or []
            ]
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


def _merged(base: dict, update: dict) -> dict:
    """``base`` with ``update`` merged in: mappings key by key, any other value replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merged(merged[key], value)
        merged[key] = value
    return merged


def default_recipe() -> tuple[dict, dict[str, dict]]:
    """``configs/default.yaml`` as (the sections common to every task, task -> its sections).

    Raises:
      ConfigError: the file lacks a task of components/common/metrics.TASKS, or a task's entry
        holds more than ``candidates`` and ``evaluator``.
    """
    import yaml

    from components.common.metrics import TASKS

    with open(DEFAULT_CONFIG) as f:
        common = yaml.safe_load(f)
    variants = common.pop(DEFAULT_TASKS_KEY, None) or {}
    for task in TASKS:
        sections = variants.get(task)
        if not isinstance(sections, dict) or "candidates" not in sections:
            raise ConfigError(f"{DEFAULT_CONFIG}: {DEFAULT_TASKS_KEY}.{task}.candidates is missing")
        extra = sorted(set(sections) - set(DEFAULT_TASK_SECTIONS))
        if extra:
            raise ConfigError(
                f"{DEFAULT_CONFIG}: {DEFAULT_TASKS_KEY}.{task} holds {extra}: a task picks "
                f"{' and '.join(DEFAULT_TASK_SECTIONS)} only"
            )
    return common, variants


def default_config_for_task(config: PipelineConfig, task: str) -> PipelineConfig:
    """``config`` (a default recipe) with the candidates and the gate of ``task``'s recipe.

    The default recipe's ``evaluator`` is the common one with the task's merged in (its drop
    rule: accuracy points, or the relative error for regression); its ``candidates`` are the
    task's (magnitude pruning where structured pruning cannot run: every task but multiclass).
    Everything else in ``config`` (the label key, the pusher) is kept.
    """
    common, variants = default_recipe()
    variant = variants[task]
    data = config.model_dump()
    data["candidates"] = variant["candidates"]
    data["evaluator"] = _merged(common.get("evaluator") or {}, variant.get("evaluator") or {})
    return PipelineConfig.parse(data)


def default_config(task: str = "multiclass") -> PipelineConfig:
    """The default recipe (``configs/default.yaml``) for ``task``, as ``tfxopt compile`` and
    ``tfxopt watch`` use it without ``--config`` (no model to infer the task from: it is named)."""
    common, _ = default_recipe()
    return default_config_for_task(PipelineConfig.parse(common), task)


def default_run_config(
    model_uri: str,
    serving_dir: str | None = None,
    task: str = "multiclass",
    label_key: str | None = None,
) -> PipelineConfig:
    """The default recipe (``configs/default.yaml``) for ``task``, pushing to ``serving_dir`` when
    one is given, reading the label from ``label_key`` when one is given.

    The pushed model's name is the model directory's name (a TFX ``Format-Serving`` directory's
    parent's; a ``.keras`` file's stem), made safe for the repository layout.
    """
    common, _ = default_recipe()
    if label_key is not None:
        common = _merged(common, {"data": {"label_key": label_key}})
    config = default_config_for_task(PipelineConfig.parse(common), task)
    if serving_dir is None:
        return config
    return with_serving(config, model_uri, serving_dir)


def model_name_for(model_uri: str) -> str:
    """The name a pushed model gets from its checkpoint: the model directory's name (a TFX
    ``Format-Serving`` directory's parent's; a ``.keras`` file's stem), made safe for the
    repository layout."""
    path = os.path.abspath(model_uri).rstrip("/")
    if os.path.basename(path) == "Format-Serving":
        path = os.path.dirname(path)
    base = os.path.basename(path)
    if os.path.isfile(path):  # a Keras 3 `.keras` file: its stem
        base = os.path.splitext(base)[0]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip("_.-") or "model"
    return name[:128]


def with_serving(config: PipelineConfig, model_uri: str, serving_dir: str) -> PipelineConfig:
    """``config`` pushing to the TF Serving repository ``serving_dir`` (``tfxopt run --serving``).

    It replaces the config's serving destinations and keeps its OTA ones and their settings; a
    config with no pusher gets one, named after the checkpoint (:func:`model_name_for`).

    Raises:
      ConfigError: the config makes no candidate, so there is nothing to push.
    """
    if not config.has_candidates:
        raise ConfigError(
            "--serving: the config makes no candidate to push (no candidates, distiller, "
            "pruner, clusterer or quantization section); add one, or drop --serving"
        )
    data = config.model_dump()
    pusher = data.get("pusher") or {"model_name": model_name_for(model_uri)}
    kept = (pusher.get("serving") or [{}])[0]
    # relative to where it was typed, like every other path on the command line
    pusher["serving"] = [{**kept, "base_directory": os.path.abspath(serving_dir)}]
    data["pusher"] = pusher
    return PipelineConfig.parse(data)
