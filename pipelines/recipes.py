"""Recipes as candidates: named chains of stages, planned as one DAG with shared prefixes.

A recipe is a chain ``[distiller] -> [structured] -> [pruner] -> [clusterer] -> [quantization]``.
Several recipes become one plan: stages with the same configuration after the same upstream
stages are one node, computed once (two recipes that start with the same pruner share a Pruner);
each recipe's last stage is its candidate. Node ids come from the stage configs (``Pruner_s80``,
``StructuredPruner_f50``, ``Clusterer_c16``), with a short hash of the whole prefix appended only
when two different nodes would otherwise share an id. Nothing here imports TFX or TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import pydantic

from components.clusterer.config import ClustererConfig
from components.common.config import StrictModel
from components.distiller.config import DistillerConfig
from components.pruner.config import PrunerConfig
from components.pruner.structured_config import StructuredPruningConfig
from components.quantizer.config import (
    CLUSTER_PRESERVING_MODES,
    SPARSITY_PRESERVING_MODES,
    QuantizerConfig,
)

#: Stage kinds in chain order; each maps to one component.
STAGE_ORDER = ("distiller", "structured", "pruner", "clusterer", "quantization")
#: Node id prefix per stage kind (quantizers take the candidate's name instead of a label).
STAGE_PREFIX = {
    "distiller": "Distiller",
    "structured": "StructuredPruner",
    "pruner": "Pruner",
    "clusterer": "Clusterer",
}

#: The node ids of the top-level sections' single chain (as they have always been).
DISTILLER_ID = "Distiller"
PRUNER_ID = "Pruner"
CLUSTERER_ID = "Clusterer"

CANDIDATE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def check_candidate_name(name: str, where: str) -> None:
    """Candidate names key node ids, files and report rows.

    Raises:
      ValueError: naming ``where`` and the name.
    """
    if not CANDIDATE_NAME.match(name):
        raise ValueError(
            f"{where} candidate name {name!r}: use 1-31 lower-case letters, digits and '_', "
            "starting with a letter"
        )


class Recipe(StrictModel):
    """One candidate: a chain of optimisation stages, each present section one stage."""

    distiller: DistillerConfig | None = pydantic.Field(
        None, description="Distil the baseline into a smaller student first."
    )
    structured: StructuredPruningConfig | None = pydantic.Field(
        None, description="Structured pruning (whole filters/units removed, model rebuilt)."
    )
    pruner: PrunerConfig | None = pydantic.Field(
        None, description="Magnitude pruning (zeros in place); use `structured` for filters."
    )
    clusterer: ClustererConfig | None = pydantic.Field(None, description="Weight clustering.")
    quantization: QuantizerConfig | None = pydantic.Field(
        None, description="The TFLite conversion (absent: the last stage's model is the candidate)."
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if not any(getattr(self, kind) is not None for kind in STAGE_ORDER):
            raise ValueError("a recipe needs at least one stage: " + ", ".join(STAGE_ORDER))
        if self.pruner is not None and self.pruner.mode == "structured":
            raise ValueError(
                "pruner.mode structured: in a recipe, give structured pruning its own "
                "`structured` stage (it runs before magnitude pruning)"
            )
        mode = self.quantization.mode if self.quantization is not None else None
        if mode in SPARSITY_PRESERVING_MODES and self.pruner is None:
            raise ValueError(
                f"quantization mode {mode!r} needs a sparse model: add a `pruner` stage"
            )
        if mode in CLUSTER_PRESERVING_MODES and self.clusterer is None:
            raise ValueError(f"quantization mode {mode!r} keeps clusters: add a `clusterer` stage")
        return self

    def stages(self) -> list[tuple[str, StrictModel]]:
        """(kind, component config) per present stage, in chain order."""
        out = []
        for kind in STAGE_ORDER:
            stage = getattr(self, kind)
            if stage is None:
                continue
            if kind == "structured":
                stage = PrunerConfig(mode="structured", structured=stage)
            out.append((kind, stage))
        return out


@dataclass(frozen=True)
class StageNode:
    """One component of the plan: its id, kind, config, and the node it reads (None: baseline)."""

    node_id: str
    kind: str
    config: StrictModel
    parent: str | None


@dataclass
class Plan:
    """The optimisation part of the DAG: stage nodes in topological order and the candidates."""

    stages: list[StageNode] = field(default_factory=list)
    # candidate name -> id of the node whose output model is that candidate
    candidates: dict[str, str] = field(default_factory=dict)

    def node(self, node_id: str) -> StageNode:
        return next(n for n in self.stages if n.node_id == node_id)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}".replace(".", "p")


def stage_label(kind: str, config: StrictModel) -> str:
    """The readable id of a stage, from the parameters that tell stages of one kind apart."""
    prefix = STAGE_PREFIX[kind]
    if kind == "distiller":
        suffix = "custom" if config.module_file else f"w{_percent(config.student_width_multiplier)}"
    elif kind == "structured":
        suffix = f"f{_percent(config.structured.target_fraction)}"
    elif kind == "pruner":
        m_by_n = config.sparsity_m_by_n
        suffix = f"{m_by_n[0]}by{m_by_n[1]}" if m_by_n else f"s{_percent(config.target_sparsity)}"
    else:
        suffix = f"c{config.number_of_clusters}"
    return f"{prefix}_{suffix}"


def _key(kind: str, config: StrictModel) -> str:
    return json.dumps([kind, config.model_dump(mode="json")], sort_keys=True)


def _short_hash(prefix: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(prefix).encode()).hexdigest()[:6]


def plan_recipes(recipes: dict[str, Recipe]) -> Plan:
    """Plans recipes as one DAG: shared prefixes once, readable ids, one candidate per recipe.

    Raises:
      ValueError: two recipes that are the same chain (they would be the same candidate).
    """
    prefixes: dict[tuple[str, ...], dict] = {}  # chain prefix -> {label, kind, config, parent}
    chains: dict[str, tuple[tuple[str, ...], QuantizerConfig | None]] = {}
    for name, recipe in recipes.items():
        prefix: tuple[str, ...] = ()
        quantization = None
        for kind, config in recipe.stages():
            if kind == "quantization":
                quantization = config
                continue
            parent, prefix = prefix, (*prefix, _key(kind, config))
            label = stage_label(kind, config)
            node = {"label": label, "kind": kind, "config": config, "parent": parent}
            prefixes.setdefault(prefix, node)
        chains[name] = (prefix, quantization)
    _check_distinct(chains)
    ids = _node_ids(prefixes)
    plan = Plan()
    for prefix, node in prefixes.items():
        parent = ids[node["parent"]] if node["parent"] else None
        plan.stages.append(StageNode(ids[prefix], node["kind"], node["config"], parent))
    for name, (prefix, quantization) in chains.items():
        if quantization is None:
            plan.candidates[name] = ids[prefix]
            continue
        parent = ids[prefix] if prefix else None
        plan.stages.append(StageNode(quantizer_id(name), "quantization", quantization, parent))
        plan.candidates[name] = quantizer_id(name)
    return plan


def plan_sections(distiller, pruner, clusterer, quantization) -> Plan:
    """The single chain of the top-level sections, with the node ids it has always had.

    ``Distiller`` -> ``Pruner`` -> ``Clusterer`` -> ``Quantizer_<name>`` per quantization entry
    (each a candidate); without quantization the last stage's model is the one candidate,
    named ``distilled``, ``pruned`` or ``clustered``.
    """
    plan, parent, last = Plan(), None, None
    sections = (
        ("distiller", DISTILLER_ID, distiller, "distilled"),
        ("pruner", PRUNER_ID, pruner, "pruned"),
        ("clusterer", CLUSTERER_ID, clusterer, "clustered"),
    )
    for kind, node_id, config, candidate in sections:
        if config is None:
            continue
        plan.stages.append(StageNode(node_id, kind, config, parent))
        parent, last = node_id, candidate
    for entry in quantization:
        name = entry.candidate_name
        plan.stages.append(
            StageNode(quantizer_id(name), "quantization", entry.quantizer_config(), parent)
        )
        plan.candidates[name] = quantizer_id(name)
    if not quantization and last is not None:
        plan.candidates[last] = parent
    return plan


def _check_distinct(chains: dict[str, tuple]) -> None:
    seen: dict[str, str] = {}
    for name, (prefix, quantization) in chains.items():
        leaf = json.dumps([*prefix, _key("quantization", quantization) if quantization else ""])
        if leaf in seen:
            raise ValueError(
                f"recipes {seen[leaf]!r} and {name!r} are the same chain of stages; drop one or "
                "change a stage"
            )
        seen[leaf] = name


def _node_ids(prefixes: dict[tuple[str, ...], dict]) -> dict[tuple[str, ...], str]:
    """Readable ids: the stage's label; where two nodes share it, the parent's label suffix too
    (``Clusterer_s80_c16``); a short hash of the whole prefix only where that still collides."""

    def qualified(prefix: tuple[str, ...]) -> str:
        node = prefixes[prefix]
        if not node["parent"]:
            return node["label"]
        kind, suffix = node["label"].split("_", 1)
        parent_suffix = prefixes[node["parent"]]["label"].split("_", 1)[1]
        return f"{kind}_{parent_suffix}_{suffix}"

    ids = {}
    for naming in (lambda p: prefixes[p]["label"], qualified):
        pending = [p for p in prefixes if p not in ids]
        names = [naming(p) for p in pending]
        for prefix, name in zip(pending, names, strict=True):
            if names.count(name) == 1 and name not in ids.values():
                ids[prefix] = name
    for prefix in prefixes:
        ids.setdefault(prefix, f"{prefixes[prefix]['label']}_{_short_hash(prefix)}")
    return ids


def quantizer_id(name: str) -> str:
    return f"Quantizer_{name}"


def profiler_id(name: str) -> str:
    return f"Profiler_{name}"


def _stage_text(kind: str, config) -> str:
    if kind == "distiller":
        return f"distil (width {config.student_width_multiplier:g})"
    if kind == "structured":
        return f"structured {config.structured.target_fraction:.0%}"
    if kind == "pruner":
        m_by_n = config.sparsity_m_by_n
        return f"prune {m_by_n[0]}:{m_by_n[1]}" if m_by_n else f"prune {config.target_sparsity:.0%}"
    if kind == "clusterer":
        return f"cluster {config.number_of_clusters}"
    return "float32" if config.mode == "none" else config.mode


def describe(plan: Plan) -> list[str]:
    """One line per candidate: its chain of stages, e.g. ``small: prune 80% -> cluster 16 -> ...``."""
    lines = []
    for name, node_id in plan.candidates.items():
        chain, current = [], node_id
        while current is not None:
            node = plan.node(current)
            chain.insert(0, _stage_text(node.kind, node.config))
            current = node.parent
        lines.append(f"{name}: {' -> '.join(chain)}")
    return lines
