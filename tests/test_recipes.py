"""Recipes as candidates: the plan (shared prefixes, node ids), its validation, the built and
compiled pipeline, and a local run where two recipes share one Pruner."""

from __future__ import annotations

import os

import pytest
import yaml

from components.common.errors import ConfigError
from pipelines.config import PipelineConfig, load_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES_YAML = os.path.join(REPO_ROOT, "pipelines", "configs", "recipes.yaml")
GOLDEN = os.path.join(REPO_ROOT, "tests", "golden", "kfp_recipes.yaml")

PRUNE = {"target_sparsity": 0.8}
CLUSTER = {"number_of_clusters": 16, "preserve_sparsity": True}
SLIM = {"target_fraction": 0.5}
RECIPES = {
    "sparse_int8": {"pruner": PRUNE, "clusterer": CLUSTER, "quantization": {"mode": "full_int8"}},
    "sparse_pcqat": {"pruner": PRUNE, "clusterer": CLUSTER, "quantization": {"mode": "pcqat"}},
    "slim_int8": {"structured": SLIM, "quantization": {"mode": "full_int8"}},
    "slim_sparse_pcqat": {
        "structured": SLIM,
        "pruner": {"target_sparsity": 0.7},
        "clusterer": CLUSTER,
        "quantization": {"mode": "pcqat"},
    },
    "pruned": {"pruner": PRUNE},
}


def _plan(recipes, **top):
    return PipelineConfig.parse({"candidates": recipes, **top}).plan()


def _parents(plan) -> dict[str, str | None]:
    return {node.node_id: node.parent for node in plan.stages}


# -- the plan -------------------------------------------------------------------------------------
def test_shared_prefixes_run_once_and_every_recipe_is_a_candidate():
    plan = _plan(RECIPES)
    parents = _parents(plan)
    assert len(parents) == len(plan.stages)  # ids are unique
    assert parents == {
        "Pruner_s80": None,
        "Clusterer_s80_c16": "Pruner_s80",
        "StructuredPruner_f50": None,
        "Pruner_s70": "StructuredPruner_f50",
        "Clusterer_s70_c16": "Pruner_s70",
        "Quantizer_sparse_int8": "Clusterer_s80_c16",
        "Quantizer_sparse_pcqat": "Clusterer_s80_c16",
        "Quantizer_slim_int8": "StructuredPruner_f50",
        "Quantizer_slim_sparse_pcqat": "Clusterer_s70_c16",
    }
    # a recipe without quantization is its last stage's model
    assert plan.candidates == {
        "sparse_int8": "Quantizer_sparse_int8",
        "sparse_pcqat": "Quantizer_sparse_pcqat",
        "slim_int8": "Quantizer_slim_int8",
        "slim_sparse_pcqat": "Quantizer_slim_sparse_pcqat",
        "pruned": "Pruner_s80",
    }
    seen = set()
    for node in plan.stages:  # topological: every parent comes first
        assert node.parent is None or node.parent in seen
        seen.add(node.node_id)
    structured = plan.node("StructuredPruner_f50").config
    assert structured.mode == "structured" and structured.structured.target_fraction == 0.5


def test_node_ids_are_stable_and_hashed_only_where_labels_collide():
    reordered = dict(reversed(list(RECIPES.items())))
    assert set(_parents(_plan(reordered))) == set(_parents(_plan(RECIPES)))
    # the same target sparsity with different fine-tuning: two nodes, told apart by a hash
    recipes = {
        "a": {"pruner": PRUNE, "quantization": {"mode": "none"}},
        "b": {"pruner": {**PRUNE, "fine_tuning": {"epochs": 2}}, "quantization": {"mode": "none"}},
    }
    ids = [n.node_id for n in _plan(recipes).stages if n.kind == "pruner"]
    assert len(set(ids)) == 2 and all(i.startswith("Pruner_s80_") and len(i) == 17 for i in ids)
    assert ids == [n.node_id for n in _plan(recipes).stages if n.kind == "pruner"]
    # m-by-n sparsity and distillation have readable labels too
    plan = _plan(
        {
            "nm": {"pruner": {"sparsity_m_by_n": "2:4"}},
            "student": {"distiller": {"width_multiplier": 0.5}, "quantization": {"mode": "none"}},
        }
    )
    assert {n.node_id for n in plan.stages} == {"Pruner_2by4", "Distiller_w50", "Quantizer_student"}


def test_top_level_sections_keep_their_node_ids():
    config = PipelineConfig.parse(
        {
            "pruner": PRUNE,
            "clusterer": CLUSTER,
            "quantization": [{"mode": "none", "name": "float32"}, {"mode": "full_int8"}],
        }
    )
    plan = config.plan()
    assert _parents(plan) == {
        "Pruner": None,
        "Clusterer": "Pruner",
        "Quantizer_float32": "Clusterer",
        "Quantizer_full_int8": "Clusterer",
    }
    assert PipelineConfig.parse({"pruner": PRUNE}).plan().candidates == {"pruned": "Pruner"}


def test_recipes_alias_and_yaml_anchors(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "recipes:\n"
        "  a: {pruner: &p {target_sparsity: 0.5}, quantization: {mode: none}}\n"
        "  b: {pruner: *p, quantization: {mode: dynamic_range}}\n"
    )
    plan = load_config(str(path)).plan()
    assert [n.node_id for n in plan.stages if n.kind == "pruner"] == ["Pruner_s50"]


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"candidates": {"a": {}}}, "at least one stage"),
        ({"candidates": {"Bad-Name": {"pruner": PRUNE}}}, "candidate name 'Bad-Name'"),
        (
            {"candidates": {"a": {"pruner": PRUNE}}, "pruner": PRUNE},
            r"exclude each other",
        ),
        (
            {"candidates": {"a": {"pruner": PRUNE}, "b": {"pruner": PRUNE}}},
            "'a' and 'b' are the same chain",
        ),
        (
            {"candidates": {f"r{i}": {"pruner": {"target_sparsity": i / 10}} for i in range(9)}},
            "at most 8 recipes",
        ),
        ({"candidates": {"a": {"quantization": {"mode": "pcqat"}}}}, "add a `pruner` stage"),
        (
            {"candidates": {"a": {"structured": SLIM, "quantization": {"mode": "sparse_float32"}}}},
            "add a `pruner` stage",
        ),
        (
            {"candidates": {"a": {"pruner": PRUNE, "quantization": {"mode": "cqat"}}}},
            "add a `clusterer` stage",
        ),
        (
            {"candidates": {"a": {"pruner": {"mode": "structured"}}}},
            "its own `structured` stage",
        ),
        (
            {"candidates": {"a": {"structured": {"target_fraction": 1.5}}}},
            "candidates.a.structured.target_fraction",
        ),
        ({"candidates": {"a": {"prunner": PRUNE}}}, "candidates.a.prunner: unknown key"),
    ],
)
def test_bad_recipes_fail_at_build_time_naming_the_field(top, message):
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.parse(top)


def test_shipped_recipes_config_names_no_layer():
    with open(RECIPES_YAML) as f:
        raw = yaml.safe_load(f)
    text = yaml.safe_dump(raw)
    assert "names" not in text and "skip_layers" not in text and "per_layer:" not in text
    config = load_config(RECIPES_YAML)
    assert config.evaluator.rules.max_accuracy_drop_points == 0.3
    assert config.evaluator.rules.min_compression_ratio == 14.0
    plan = config.plan()
    assert len(plan.candidates) == len(raw["candidates"]) <= 8
    kinds = [n.kind for n in plan.stages]
    assert kinds.count("pruner") == 2 and kinds.count("structured") == 1  # shared, not per recipe


def test_preflight_checks_each_recipe_against_the_checkpoint(reference_data):
    from components.common.errors import TfxOptError
    from pipelines.local import preflight

    good = {"pruner": PRUNE, "quantization": {"mode": "full_int8", "exclude_layers": ["conv1"]}}
    config = PipelineConfig.parse({"candidates": {"good": good, "slim": {"structured": SLIM}}})
    preflight.check_inputs(config, reference_data["model"], reference_data["examples"])
    for recipe, named in (
        ({"pruner": {**PRUNE, "layers": {"names": ["nope"]}}}, "nope"),
        ({"pruner": PRUNE, "quantization": {"mode": "int16x8", "exclude_layers": ["x"]}}, "'x'"),
    ):
        bad = PipelineConfig.parse({"candidates": {"good": good, "bad": recipe}})
        with pytest.raises(TfxOptError, match="candidates.bad: ") as error:
            preflight.check_inputs(bad, reference_data["model"], reference_data["examples"])
        assert named in str(error.value)


# -- the built and compiled pipeline --------------------------------------------------------------
def test_pipeline_has_one_component_per_planned_node_and_judges_every_leaf(tmp_path):
    from pipelines.pipeline import MODEL_IMPORTER_ID, create_pipeline

    config = PipelineConfig.parse({"candidates": RECIPES})
    pipeline = create_pipeline(config, "/m", "/e", str(tmp_path))
    by_id = {c.id: c for c in pipeline.components}
    plan = config.plan()
    for node in plan.stages:
        upstream = {u.id for u in by_id[node.node_id].upstream_nodes}
        assert (node.parent or MODEL_IMPORTER_ID) in upstream
    evaluator = by_id["Evaluator"]
    import json

    names = json.loads(evaluator.exec_properties["candidate_names"])
    assert names == list(RECIPES)
    profiled = {c.id for c in pipeline.components if c.id.startswith("Profiler_")}
    assert profiled == {f"Profiler_{name}" for name in RECIPES}


@pytest.fixture(scope="module")
def compiled_recipes(tmp_path_factory):
    from pipelines.kubeflow.config import KubeflowConfig
    from pipelines.kubeflow.runner import compile_pipeline

    config = load_config(RECIPES_YAML)
    path = str(tmp_path_factory.mktemp("kfp") / "recipes.yaml")
    kubeflow = KubeflowConfig.parse(
        {"image": "tfx-optimize:golden", "pipeline_root": "gs://tfxopt-golden/root"}
    )
    return compile_pipeline(config, path, kubeflow=kubeflow)


def test_golden_recipes_spec_shares_stages(compiled_recipes):
    from tests.test_kubeflow import _docs, _normalize, compare_with_golden

    tasks = compiled_recipes.pipeline_spec["root"]["dag"]["tasks"]
    for name in ("pruned_int8", "pruned_pcqat", "pruned_sparse_int8"):
        assert set(tasks[f"Quantizer_{name}"]["dependentTasks"]) == {
            "Clusterer_s80_c16",
            "ExampleGen",
        }
    assert "StructuredPruner_f50" in tasks["Pruner_s70"]["dependentTasks"]
    assert sorted(t for t in tasks if t.startswith("Pruner")) == ["Pruner_s70", "Pruner_s80"]
    evaluator_inputs = tasks["Evaluator"]["inputs"]["artifacts"]
    producers = {a["taskOutputArtifact"]["producerTask"] for a in evaluator_inputs.values()}
    assert {f"Quantizer_{name}" for name in load_config(RECIPES_YAML).candidates} <= producers
    compare_with_golden(_normalize(_docs(compiled_recipes.path)), GOLDEN, "tests/test_recipes.py")


# -- a local run ----------------------------------------------------------------------------------
@pytest.mark.e2e
def test_two_recipes_share_one_pruner_in_a_local_run(tmp_path, reference_data):
    from pipelines.local.runner import run_local
    from pipelines.report import console

    prune = {"target_sparsity": 0.5, "fine_tuning": {"epochs": 1}}
    config = PipelineConfig.parse(
        {
            "pipeline_name": "recipes",
            "profile_candidates": False,
            "profiler": {"warmup_runs": 2, "timed_runs": 10, "throughput_runs": 2},
            "candidates": {
                "pruned_float": {"pruner": prune, "quantization": {"mode": "none"}},
                "pruned_dynamic": {"pruner": prune, "quantization": {"mode": "dynamic_range"}},
            },
            "evaluator": {
                "rules": {"max_accuracy_drop_points": 50.0},
                "latency": {"warmup_runs": 2, "timed_runs": 20},
            },
        }
    )
    run = run_local(config, reference_data["model"], reference_data["examples"], str(tmp_path))
    states = {s.node_id: s.state for s in run.steps}
    assert states == {
        node: "COMPLETE"
        for node in (
            "ExampleGen",
            "CheckpointImporter",
            "ModelImporter",
            "BaselineProfiler",
            "Pruner_s50",
            "Quantizer_pruned_float",
            "Quantizer_pruned_dynamic",
            "Evaluator",
        )
    }
    [pruned] = run.outputs_of("Pruner_s50", "optimized_model")
    evaluation = console.evaluation_record(run)
    assert [c["name"] for c in evaluation["candidates"]] == ["pruned_float", "pruned_dynamic"]
    assert evaluation["decision"]["blessed"] is True
    assert pruned.custom_properties["achieved_sparsity"].double_value > 0.4
