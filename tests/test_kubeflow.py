"""Kubeflow Pipelines: compile, the golden spec, kfp's loader, step-by-step runs, submit and schedule.

There is no cluster here, so what the cluster would do is done in its place: kfp's own package loader
reads the compiled package; :mod:`tests.kfp_emulator` runs each step through TFX's v2 container
entrypoint in a clean subprocess, as the KFP launcher would; a fake KFP REST server receives what
``kfp.Client`` sends.

The golden file ``tests/golden/kfp_pipeline.yaml`` is the compiled package for ``GOLDEN_CONFIG`` and
``GOLDEN_KUBEFLOW`` with ``sdkVersion`` blanked. The pipeline grows with the components, so when the factory changes,
regenerate it and review the diff::

    UPDATE_GOLDEN=1 TFXOPT_REFERENCE_DIR=/tmp/ref .venv/bin/python -m pytest tests/test_kubeflow.py -k golden
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from components.common.errors import ConfigError
from pipelines.config import PipelineConfig
from pipelines.kubeflow.config import KubeflowConfig, StepSettings
from tests.fake_kfp import FakeKfp

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO_ROOT, "tests", "golden", "kfp_pipeline.yaml")
# The whole chain (baseline profile, a pruned and quantized candidate, its profile, the gate, the
# pusher), so the golden covers every kind of step the factory makes.
GOLDEN_CONFIG = {
    "pipeline_name": "tfxopt-golden",
    "pruner": {"target_sparsity": 0.5},
    "quantization": [{"mode": "full_int8"}],
    "evaluator": {"rules": {"max_accuracy_drop_points": 1.0}},
    "pusher": {
        "model_name": "digits",
        "serving": [{"base_directory": "gs://tfxopt-golden/serving"}],
        "ota": [
            {
                "base_directory": "gs://tfxopt-golden/ota",
                # where kubeflow.signing_key mounts the Secret in the Pusher's pod
                "signing_key_path": "/var/run/secrets/tfxopt/signing/private_key.pem",
            }
        ],
    },
}
GOLDEN_KUBEFLOW = {
    "image": "tfx-optimize:golden",
    "pipeline_root": "gs://tfxopt-golden/root",
    "examples_uri": "gs://tfxopt-golden/examples",
    "defaults": {"cpu_request": 1, "memory_request_gb": 2, "memory_limit_gb": 4},
    "steps": {
        "ExampleGen": {"memory_limit_gb": 8},
        "*Profiler*": {
            "node_selector": {"cloud.google.com/gke-nodepool": "target-hw"},
            "tolerations": [{"key": "target-hw", "operator": "Exists", "effect": "NoSchedule"}],
            "cpu_limit": 2,
            "env": {"OMP_NUM_THREADS": "1"},
        },
        "Pruner": {"gpu_count": 1},
    },
    "signing_key": {"secret_name": "tfxopt-ota-signing-key", "steps": ["*Pusher*"]},
}


def _e2e_config(out_dir: str) -> dict:
    """The whole chain, small: profile, one quantized candidate, the gate, a serving + OTA push.

    Small enough for the step-by-step run to stay quick; the numbers are not what is tested.
    """
    from components.pusher import signing

    key = os.path.join(out_dir, "keys", "ota.pem")
    signing.write_keypair(key)
    return {
        "pipeline_name": "tfxopt-kfp-e2e",
        "profiler": {
            "warmup_runs": 2,
            "timed_runs": 10,
            "throughput_runs": 1,
            "measure_memory": False,
            "max_eval_examples": 100,
        },
        "profile_candidates": False,
        # The second candidate fails verification (a tolerance no int8 model meets): the step
        # succeeds with its output marked failed, the gate rejects it, the run goes on.
        "quantization": [
            {"mode": "dynamic_range"},
            {
                "mode": "full_int8",
                "name": "int8_strict",
                "verify_tolerance": 1e-6,
                "representative_samples": 32,
            },
        ],
        # Latency in a step of its own (on a cluster, pinned to the target hardware): the gate
        # judges its figures, not its own pod's.
        "latency_benchmark": {"warmup_runs": 2, "timed_runs": 10},
        "evaluator": {
            "rules": {"max_accuracy_drop_points": 2.0, "min_speedup": 0.01},
            "latency": {"measure": False, "source": "external"},
        },
        "pusher": {
            "model_name": "digits",
            "serving": [{"base_directory": os.path.join(out_dir, "serving")}],
            "ota": [{"base_directory": os.path.join(out_dir, "ota"), "signing_key_path": key}],
        },
    }


def _normalize(documents: list[dict]) -> list[dict]:
    """Drops what changes between TFX releases without changing the pipeline (sdkVersion)."""
    documents = json.loads(json.dumps(documents))
    documents[0]["sdkVersion"] = "<normalized>"
    return documents


def _docs(path: str) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The golden configuration compiled once (TFX import + compile)."""
    from pipelines.kubeflow.runner import compile_pipeline

    path = str(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    return compile_pipeline(
        PipelineConfig.parse(GOLDEN_CONFIG), path, kubeflow=KubeflowConfig.parse(GOLDEN_KUBEFLOW)
    )


# -- config -------------------------------------------------------------------------------------
def test_step_settings_merge_defaults_then_patterns_in_order():
    kubeflow = KubeflowConfig.parse(
        {
            "defaults": {"cpu_request": 1, "node_selector": {"pool": "cpu"}, "env": {"A": "1"}},
            "steps": {
                "*Profiler": {"node_selector": {"pool": "target-hw"}, "cpu_limit": 2},
                "BaselineProfiler": {"gpu_count": 1, "env": {"B": "2"}},
            },
        }
    )
    base = kubeflow.settings_for("BaselineProfiler")
    assert base.cpu_request == 1 and base.cpu_limit == 2 and base.gpu_count == 1
    assert base.node_selector == {"pool": "target-hw"}
    assert base.env == {"A": "1", "B": "2"}
    other = kubeflow.settings_for("CandidateProfiler")
    assert other.gpu_count is None and other.node_selector == {"pool": "target-hw"}
    assert kubeflow.settings_for("ExampleGen") == StepSettings.parse(
        {"cpu_request": 1, "node_selector": {"pool": "cpu"}, "env": {"A": "1"}}
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"defaults": {"cpu_request": 4, "cpu_limit": 2}}, "exceeds cpu_limit"),
        ({"defaults": {"memory_request_gb": 9, "memory_limit_gb": 8}}, "exceeds memory_limit_gb"),
        (
            {"steps": {"X": {"node_selector": {"bad key!": "x"}}}},
            "not a valid Kubernetes label key",
        ),
        ({"steps": {"X": {"env": {"TF_USE_LEGACY_KERAS": "0"}}}}, "do not override"),
        ({"signing_key": {"secret_name": "Bad_Name"}}, "kubeflow.signing_key.secret_name"),
        ({"signing_key": {"secret_key": "a/b"}}, "secret_key"),
        ({"steps": {"X": {"tolerations": [{"operator": "Exists", "value": "v"}]}}}, "no value"),
        ({"output_format": "xml"}, "kubeflow.output_format"),
        ({"stepz": {}}, "unknown key"),
    ],
)
def test_bad_kubeflow_config_names_the_field(section, message):
    with pytest.raises(ConfigError, match=message):
        KubeflowConfig.parse(section, where="kubeflow")


# -- compile ------------------------------------------------------------------------------------
def test_runtime_parameters_and_pipeline_root(compiled):
    spec = compiled.pipeline_spec
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["model_uri"] == {"parameterType": "STRING"}  # required per run
    assert params["examples_uri"]["defaultValue"] == "gs://tfxopt-golden/examples"
    assert spec["defaultPipelineRoot"] == "gs://tfxopt-golden/root"
    tasks = spec["root"]["dag"]["tasks"]
    # The checkpoint reaches the Importer and the Examples reach ExampleGen as run parameters.
    wired = {
        (task, name): value["componentInputParameter"]
        for task, body in tasks.items()
        for name, value in body.get("inputs", {}).get("parameters", {}).items()
        if "componentInputParameter" in value
    }
    assert ("CheckpointImporter", "artifact_uri") in wired
    assert wired[("CheckpointImporter", "artifact_uri")] == "model_uri"
    assert wired[("ExampleGen", "input_base")] == "examples_uri"


def test_step_settings_land_in_resources_env_and_platform_spec(compiled):
    executors = compiled.pipeline_spec["deploymentSpec"]["executors"]
    profilers = [s for s in compiled.container_steps if "Profiler" in s]
    assert len(profilers) >= 2  # the baseline's and the candidate's
    for step in profilers:
        container = executors[f"{step}_executor"]["container"]
        assert container["image"] == "tfx-optimize:golden"
        assert container["resources"] == {
            "cpuRequest": 1.0,
            "cpuLimit": 2.0,
            "memoryRequest": 2.0,
            "memoryLimit": 4.0,
        }
        assert container["env"] == [{"name": "OMP_NUM_THREADS", "value": "1"}]
    assert executors["ExampleGen_executor"]["container"]["resources"]["memoryLimit"] == 8.0
    assert executors["Pruner_executor"]["container"]["resources"]["accelerator"] == {
        "type": "nvidia.com/gpu",
        "count": 1,
    }
    k8s = compiled.platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s) == {f"{s}_executor" for s in profilers} | {"Pusher_executor"}
    assert k8s["BaselineProfiler_executor"] == {
        "nodeSelector": {"labels": {"cloud.google.com/gke-nodepool": "target-hw"}},
        "tolerations": [{"key": "target-hw", "operator": "Exists", "effect": "NoSchedule"}],
    }
    # Only the signing step gets the key, mounted where the Pusher's config reads it.
    assert k8s["Pusher_executor"] == {
        "secretAsVolume": [
            {"secretName": "tfxopt-ota-signing-key", "mountPath": "/var/run/secrets/tfxopt/signing"}
        ]
    }
    pusher_config = next(
        v["runtimeValue"]["constant"]
        for v in compiled.pipeline_spec["root"]["dag"]["tasks"]["Pusher"]["inputs"][
            "parameters"
        ].values()
        if "signing_key_path" in str(v)
    )
    assert KubeflowConfig.parse(GOLDEN_KUBEFLOW).signing_key.file_path in pusher_config
    text = open(compiled.path).read()
    assert "BEGIN" not in text and "PRIVATE" not in text  # the key is referenced, never inlined


def test_gpu_and_signing_key_as_env(tmp_path, compiled):
    from pipelines.kubeflow.runner import compile_pipeline

    kubeflow = KubeflowConfig.parse(
        {
            "steps": {
                "BaselineProfiler": {"gpu_count": 2},
                "*Profiler": {"volumes": [{"pvc_name": "tfxopt-ota", "mount_path": "/mnt/ota"}]},
            },
            "signing_key": {"expose_as": "env", "steps": ["Baseline*"]},
        }
    )
    result = compile_pipeline(PipelineConfig(), str(tmp_path / "p.yaml"), kubeflow=kubeflow)
    container = result.pipeline_spec["deploymentSpec"]["executors"]["BaselineProfiler_executor"]
    assert container["container"]["resources"] == {
        "accelerator": {"type": "nvidia.com/gpu", "count": 2}
    }
    k8s = result.platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["BaselineProfiler_executor"]["pvcMount"] == [
        {"constant": "tfxopt-ota", "mountPath": "/mnt/ota"}
    ]
    assert k8s["BaselineProfiler_executor"]["secretAsEnv"] == [
        {
            "secretName": "tfxopt-ota-signing-key",
            "keyToEnv": [{"secretKey": "private_key.pem", "envVar": "TFXOPT_OTA_SIGNING_KEY"}],
        }
    ]


def test_a_pattern_that_matches_no_step_fails(tmp_path, compiled):
    from pipelines.kubeflow.runner import compile_pipeline

    for section, where in (
        ({"steps": {"Profilr": {"cpu_limit": 1}}}, "kubeflow.steps"),
        ({"steps": {"CheckpointImporter": {"cpu_limit": 1}}}, "kubeflow.steps"),
        ({"signing_key": {"steps": ["*Pusher*"]}}, "kubeflow.signing_key.steps"),
    ):
        path = tmp_path / "p.yaml"  # PipelineConfig(): no optimisation stages, so no Pusher
        with pytest.raises(ConfigError, match=where) as error:
            compile_pipeline(PipelineConfig(), str(path), kubeflow=KubeflowConfig.parse(section))
        assert "BaselineProfiler" in str(error.value)  # lists the steps there are
        assert not path.exists()


def compare_with_golden(actual: list[dict], golden: str, source: str) -> None:
    """Fails with a diff when ``actual`` differs from the golden file (UPDATE_GOLDEN=1 rewrites it)."""
    if os.environ.get("UPDATE_GOLDEN") == "1":
        os.makedirs(os.path.dirname(golden), exist_ok=True)
        with open(golden, "w") as f:
            f.write(
                f"# Golden compiled KFP package ({source})\n"
                f"# Regenerate: UPDATE_GOLDEN=1 .venv/bin/python -m pytest {source.split(':')[0]} "
                "-k golden\n"
            )
            yaml.safe_dump_all(actual, f, sort_keys=True)
    assert os.path.exists(golden), "no golden file: run with UPDATE_GOLDEN=1 to create it"
    expected = _docs(golden)
    if actual != expected:
        diff = difflib.unified_diff(
            yaml.safe_dump_all(expected, sort_keys=True).splitlines(),
            yaml.safe_dump_all(actual, sort_keys=True).splitlines(),
            "golden",
            "compiled",
            lineterm="",
            n=2,
        )
        pytest.fail(
            "compiled spec differs from the golden file; if the change is intended, rerun with "
            "UPDATE_GOLDEN=1 and review the diff:\n" + "\n".join(list(diff)[:200])
        )


def test_golden_compiled_spec(compiled):
    """The compiled package matches tests/golden/kfp_pipeline.yaml (UPDATE_GOLDEN=1 rewrites it)."""
    compare_with_golden(
        _normalize(_docs(compiled.path)),
        GOLDEN,
        "tests/test_kubeflow.py: GOLDEN_CONFIG, GOLDEN_KUBEFLOW",
    )


def test_compiled_twice_is_identical(tmp_path, compiled):
    from pipelines.kubeflow.runner import compile_pipeline

    again = compile_pipeline(
        PipelineConfig.parse(GOLDEN_CONFIG),
        str(tmp_path / "again.yaml"),
        kubeflow=KubeflowConfig.parse(GOLDEN_KUBEFLOW),
    )
    assert open(again.path).read() == open(compiled.path).read()


# -- kfp's loader -------------------------------------------------------------------------------
def test_kfp_loader_accepts_the_package(compiled):
    from kfp.client import client as kfp_client
    from kfp.pipeline_spec import pipeline_spec_pb2

    from pipelines.kubeflow.runner import load_package

    doc = kfp_client._extract_pipeline_yaml(compiled.path)  # what kfp.Client submits
    assert isinstance(doc.pipeline_spec, pipeline_spec_pb2.PipelineSpec)
    assert set(doc.pipeline_spec.root.dag.tasks) >= {"ExampleGen", "CheckpointImporter"}
    assert "kubernetes" in doc.platform_spec.platforms
    assert doc.to_dict()["platform_spec"]["platforms"]["kubernetes"]  # sent along with the run
    package = load_package(compiled.path)
    assert "default" not in package.parameters["model_uri"]
    assert package.parameters["examples_uri"]["default"] == "gs://tfxopt-golden/examples"


def test_kfp_loader_rejects_a_broken_package(tmp_path, compiled):
    from pipelines.kubeflow.runner import load_package

    documents = _docs(compiled.path)
    documents[0]["root"]["dag"]["tasks"]["ExampleGen"]["notAField"] = 1
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(documents))
    with pytest.raises(ConfigError, match="not a valid KFP pipeline package.*notAField"):
        load_package(str(broken))
    with pytest.raises(ConfigError, match="does not exist"):
        load_package(str(tmp_path / "missing.yaml"))


def test_every_executor_class_and_artifact_type_is_importable(compiled):
    """What the container entrypoint imports, resolved the way it resolves them.

    (The step-by-step test below imports them again in clean subprocesses, as the pods do.)
    """
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entrypoint
    from tfx.types.artifact import Artifact
    from tfx.utils import import_utils

    from pipelines.kubeflow.runner import executor_classes

    classes = sorted(set(executor_classes(compiled.pipeline_spec).values()))
    assert "components.profiler.executor.Executor" in classes
    for path in classes:
        executor = import_utils.import_class_by_path(path)
        assert callable(getattr(executor, "Do", None)), path
    type_names = set()
    for component in compiled.pipeline_spec["components"].values():
        for side in ("inputDefinitions", "outputDefinitions"):
            for body in component.get(side, {}).get("artifacts", {}).values():
                schema = pipeline_spec_pb2.ArtifactTypeSchema(
                    instance_schema=body["artifactType"]["instanceSchema"]
                )
                cls = import_utils.import_class_by_path(entrypoint._retrieve_class_path(schema))
                assert issubclass(cls, Artifact)
                type_names.add(cls.TYPE_NAME)
    assert "tfxopt.ModelProfile" in type_names  # custom types resolve through the tfxopt module


def test_json_package_for_vertex(tmp_path, compiled):
    from pipelines.kubeflow.runner import compile_pipeline, load_package

    kubeflow = KubeflowConfig.parse(
        {
            "pipeline_root": "gs://b/root",
            "examples_uri": "gs://b/examples",
            "steps": {"*Profiler": {"gpu_count": 1, "gpu_type": "NVIDIA_TESLA_T4"}},
        }
    )
    result = compile_pipeline(PipelineConfig(), str(tmp_path / "job.json"), kubeflow=kubeflow)
    job = json.loads(open(result.path).read())
    assert job["runtimeConfig"] == {
        "gcsOutputDirectory": "gs://b/root",
        "parameterValues": {"examples_uri": "gs://b/examples"},
    }
    profiler = job["pipelineSpec"]["deploymentSpec"]["executors"]["BaselineProfiler_executor"]
    assert profiler["container"]["resources"]["accelerator"] == {
        "type": "NVIDIA_TESLA_T4",
        "count": 1,
    }
    assert load_package(result.path).output_format == "json"
    # Kubernetes-only settings cannot travel in a Vertex PipelineJob: refused, not dropped.
    k8s_only = KubeflowConfig.parse({"steps": {"*Profiler": {"node_selector": {"a": "b"}}}})
    with pytest.raises(ConfigError, match="Vertex"):
        compile_pipeline(PipelineConfig(), str(tmp_path / "k8s.json"), kubeflow=k8s_only)
    with pytest.raises(ConfigError, match="gpu_type"):
        compile_pipeline(
            PipelineConfig(),
            str(tmp_path / "gpu.json"),
            kubeflow=KubeflowConfig.parse({"steps": {"*Profiler": {"gpu_count": 1}}}),
        )
    with pytest.raises(ConfigError, match="does not match the file name"):
        compile_pipeline(PipelineConfig(), str(tmp_path / "x.yaml"), output_format="json")


# -- the compiled pipeline, step by step --------------------------------------------------------
@pytest.mark.e2e
def test_compiled_pipeline_runs_step_by_step_to_a_blessing_and_a_push(tmp_path, reference_data):
    """Every step of the package runs via kubeflow_v2_run_executor, outputs wired to inputs.

    The compiled pipeline (baseline profile, two quantized candidates, one of which fails its
    verification, the gate, the pusher) runs without Kubernetes on a local pipeline root, each
    step in a clean subprocess as in its pod: the failing candidate does not fail the run.
    """
    from google.protobuf import json_format

    from pipelines.kubeflow.runner import compile_pipeline, load_package
    from pipelines.pipeline import quantizer_id
    from tests.kfp_emulator import KfpEmulator

    config = PipelineConfig.parse(_e2e_config(str(tmp_path)))
    package = compile_pipeline(config, str(tmp_path / "pipeline.yaml"))
    spec = json_format.MessageToDict(load_package(package.path).pipeline_spec)  # as kfp read it
    assert {"Evaluator", "Pusher"} <= set(package.container_steps)
    root = str(tmp_path / "root")
    emulator = KfpEmulator(
        spec,
        root,
        {"model_uri": reference_data["model"], "examples_uri": reference_data["examples"]},
        cwd=REPO_ROOT,
        max_parallel=2,
        metadata_path=str(tmp_path / "kfp-metadata.sqlite"),  # as the backend records the run
    )
    started = time.time()
    results = emulator.run()
    print(
        f"\nstep-by-step run: {time.time() - started:.0f}s; "
        + ", ".join(f"{name} {r.seconds:.0f}s" for name, r in sorted(results.items()))
    )
    assert set(results) == set(spec["root"]["dag"]["tasks"])

    importer = results["CheckpointImporter"].artifacts["result"][0]
    assert importer["uri"] == reference_data["model"]
    examples = results["ExampleGen"].artifacts["examples"][0]
    assert examples["uri"].startswith(root)
    assert json.loads(examples["metadata"]["split_names"]) == ["train", "eval"]
    for split in ("train", "eval"):
        assert os.listdir(os.path.join(examples["uri"], f"Split-{split}"))

    # The ModelImporter copied the flat checkpoint and said so in its output's properties.
    imported = results["ModelImporter"].artifacts["imported_model"][0]
    assert imported["metadata"]["import_action"] == "copied"
    assert imported["metadata"]["source_format"] == "tf_keras"
    assert os.path.exists(os.path.join(imported["uri"], "Format-Serving", "saved_model.pb"))

    # The Profiler got both artifacts through its ExecutorInput and reported its numbers back.
    profiler_input = results["BaselineProfiler"].executor_input["inputs"]
    assert profiler_input["artifacts"]["model"]["artifacts"][0]["uri"] == imported["uri"]
    assert profiler_input["artifacts"]["examples"]["artifacts"][0]["uri"] == examples["uri"]
    profile = results["BaselineProfiler"].artifacts["profile"][0]
    with open(os.path.join(profile["uri"], "profile.json")) as f:
        record = json.load(f)
    assert record["parameters"]["total_parameters"] == profile["metadata"]["total_parameters"]
    assert profile["metadata"]["total_parameters"] == 89930
    assert 0 < profile["metadata"]["latency_p50_ms"] <= profile["metadata"]["latency_p99_ms"]

    # The failed candidate's step succeeded, its Model marked failed (no model files in it).
    (failed,) = results["Quantizer_int8_strict"].artifacts["optimized_model"]
    assert failed["metadata"]["failed"] == 1, failed
    assert failed["metadata"]["failure_step"] == "verification"
    assert sorted(os.listdir(failed["uri"])) == ["candidate_failure.json", "quantization.json"]

    # The gate rejected it, blessed the other candidate, and the pusher pushed that one, to
    # serving and to the OTA channel.
    (blessing,) = results["Evaluator"].artifacts["blessing"]
    assert blessing["metadata"]["blessed"] == 1, blessing
    # The Evaluator read the LatencyBenchmark step's report and judged its figures.
    evaluator_input = results["Evaluator"].executor_input["inputs"]["artifacts"]
    (latency_report,) = results["LatencyBenchmark"].artifacts["latency_report"]
    assert evaluator_input["latency_report"]["artifacts"][0]["uri"] == latency_report["uri"]
    (evaluation,) = results["Evaluator"].artifacts["evaluation"]
    with open(os.path.join(evaluation["uri"], "evaluation.json")) as f:
        judged = {c["name"]: c for c in json.load(f)["candidates"]}
    used = judged["dynamic_range"]["latency_used"]
    assert used["source"].startswith("external: LatencyBenchmark"), used
    assert "latency_measured" not in judged["dynamic_range"]
    assert blessing["metadata"]["selected_candidate"] == "dynamic_range"
    assert blessing["metadata"]["failed_candidates"] == 1
    (pushed,) = results["Pusher"].artifacts["pushed_model"]
    assert pushed["metadata"]["pushed"] == 1, pushed
    version_dir = pushed["metadata"]["pushed_destination"]
    assert version_dir.startswith(str(tmp_path / "serving" / "digits"))
    assert os.path.exists(os.path.join(version_dir, "saved_model.pb"))
    # The OTA release verifies with the public key, and its flatbuffer is, byte for byte, the
    # candidate the gate blessed (the Quantizer's output the blessing names).
    from components.common import model_io
    from components.pusher import ota, signing

    (candidate,) = results[quantizer_id("dynamic_range")].artifacts["optimized_model"]
    assert blessing["metadata"]["current_model"] == candidate["uri"], blessing
    trusted = signing.trusted_keys(
        [signing.load_public_key(str(tmp_path / "keys" / "ota.pem.pub"))]
    )
    channel = tmp_path / "ota" / "digits" / "canary"
    manifest = ota.verify_channel(str(channel), trusted)
    (shipped,) = [f for f in manifest["files"] if f["path"].endswith(".tflite")]
    with open(model_io.tflite_path(candidate["uri"]), "rb") as f:
        blessed_bytes = f.read()
    assert shipped["sha256"] == hashlib.sha256(blessed_bytes).hexdigest()
    assert shipped["length"] == len(blessed_bytes)
    _check_kubeflow_report(tmp_path, results)


def _check_kubeflow_report(tmp_path, results) -> None:
    """`tfxopt report --kubeflow RUN_ID` rebuilds the report of that run from KFP's metadata."""
    import contextlib
    import io

    from pipelines import cli

    out = tmp_path / "kfp-report" / "report.html"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = cli.main(
            ["report", "--kubeflow", "run-1", "--metadata", str(tmp_path / "kfp-metadata.sqlite"),
             "--out", str(out), "--json", "--require-blessing"]
        )  # fmt: skip
    assert status == 0, stdout.getvalue()[-2000:]
    summary = json.loads(stdout.getvalue())
    assert summary["run_id"] == "run-1" and summary["pipeline_name"] == "tfxopt-kfp-e2e"
    assert {s["node_id"] for s in summary["steps"]} == set(results)
    assert {s["state"] for s in summary["steps"]} == {"COMPLETE"}
    assert summary["gate"]["blessed"] is True
    assert summary["gate"]["selected"] == "dynamic_range"
    assert summary["push"]["pushed"] is True
    names = {m["name"]: m for m in summary["models"]}
    assert names["int8_strict"]["failure"]["step"] == "verification"
    evaluator = next(s for s in summary["steps"] if s["node_id"] == "Evaluator")
    assert "Quantizer_dynamic_range" in evaluator["upstream"]
    assert out.exists() and "run-1" in out.read_text()
    # a run the store does not hold: exit 2, naming it
    assert cli.main(["report", "--kubeflow", "run-9", "--metadata",
                     str(tmp_path / "kfp-metadata.sqlite")]) == 2  # fmt: skip


# -- submit and schedule against a fake KFP API -------------------------------------------------
@pytest.fixture
def fake_kfp(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no kfp context file from the developer's machine
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.delenv("KFP_NAMESPACE", raising=False)
    server = FakeKfp()
    yield server
    server.close()
    # every request matched kfp_server_api's operations and models (see tests/fake_kfp.py)
    assert server.errors == [], server.errors


def test_submit_sends_the_package_parameters_and_root(fake_kfp, compiled):
    from pipelines.kubeflow import client as kfp_client

    submission = kfp_client.submit(
        compiled.path,
        {"model_uri": "gs://b/ckpt/7", "examples_uri": None},
        host=fake_kfp.host,
        pipeline_root="gs://b/run-root",
        experiment="tfxopt-ci",
        run_name="ckpt 7",
        service_account="pipeline-runner",
    )
    assert (submission.kind, submission.id) == ("run", "run-42")
    assert submission.url == f"{fake_kfp.host}/#/runs/details/run-42"
    (experiment,) = fake_kfp.posted("/apis/v2beta1/experiments")
    assert experiment["display_name"] == "tfxopt-ci"
    (run,) = fake_kfp.posted("/apis/v2beta1/runs")
    assert run["display_name"] == "ckpt 7" and run["experiment_id"] == "exp-1"
    assert run["service_account"] == "pipeline-runner"
    # examples_uri=None keeps the package default; the root is the run's, not the package's.
    assert run["runtime_config"] == {
        "parameters": {"model_uri": "gs://b/ckpt/7"},
        "pipeline_root": "gs://b/run-root",
    }
    sent = run["pipeline_spec"]
    assert sent["pipeline_spec"]["pipelineInfo"]["name"] == "tfxopt-golden"
    assert "Pusher_executor" in json.dumps(sent["platform_spec"])


def test_schedule_cron_and_interval(fake_kfp, compiled, monkeypatch):
    from pipelines.kubeflow import client as kfp_client

    monkeypatch.setenv("KFP_HOST", fake_kfp.host)
    params = {"model_uri": "gs://b/exports/latest"}
    cron = kfp_client.schedule(compiled.path, params, cron="0 3 * * *", name="nightly")
    every = kfp_client.schedule(compiled.path, params, interval="6h", catchup=True)
    assert (cron.kind, cron.id, every.id) == ("recurring_run", "rr-7", "rr-7")
    first, second = fake_kfp.posted("/apis/v2beta1/recurringruns")
    assert first["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert first["display_name"] == "nightly" and first["no_catchup"] is True
    # int64 fields: kfp.Client sends JSON numbers (the fake accepts a number or a digit string,
    # as the API server's decoder does)
    assert first["max_concurrency"] == 1
    assert second["trigger"] == {"periodic_schedule": {"interval_second": 21600}}
    assert second["no_catchup"] is False
    assert first["runtime_config"]["parameters"] == params


def test_the_fake_kfp_refuses_requests_that_drift_from_the_api(fake_kfp):
    """The fake checks bodies against kfp_server_api: a drift answers 400 and is recorded."""
    import urllib.error
    import urllib.request

    from tests import fake_kfp as fake

    run = {"display_name": "r", "runtime_config": {"parameters": {"model_uri": "gs://m"}}}
    assert fake.check_request("POST", "/apis/v2beta1/runs", run) == []
    assert fake.check_request("POST", "/apis/v2beta1/runs", {**run, "runtime_cfg": {}}) == [
        "RunServiceApi.create_run body: V2beta1Run has no field 'runtime_cfg'"
    ]
    [wrong_type] = fake.check_request("POST", "/apis/v2beta1/runs", {"display_name": 7})
    assert "7 is not a str" in wrong_type
    [bad_mode] = fake.check_request("POST", "/apis/v2beta1/recurringruns", {"mode": "ON"})
    assert "'ON' is not one of" in bad_mode
    [no_route] = fake.check_request("POST", "/apis/v2beta1/jobs", {})
    assert "no such operation" in no_route
    [bad_query] = fake.check_request("GET", "/apis/v2beta1/experiments?name=x", None)
    assert "unknown query parameter 'name'" in bad_query

    request = urllib.request.Request(
        f"{fake_kfp.host}/apis/v2beta1/runs",
        data=json.dumps({**run, "pipeline": "x"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert fake_kfp.errors == ["RunServiceApi.create_run body: V2beta1Run has no field 'pipeline'"]
    fake_kfp.errors.clear()  # expected here; the fixture fails any other test that has some


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "every day"}, "cron 'every day'"),
        ({"cron": "0 3 * * *", "interval": "1h"}, "exactly one"),
        ({"interval": "0s"}, "positive"),
        ({"interval": "5 weeks"}, "interval"),
    ],
)
def test_schedule_rejects_bad_timing_before_contacting_the_host(kwargs, message, compiled):
    from pipelines.kubeflow import client as kfp_client

    with pytest.raises(ConfigError, match=message):
        kfp_client.schedule(
            compiled.path, {"model_uri": "gs://m"}, host="http://127.0.0.1:9", **kwargs
        )


def test_bad_package_or_parameters_fail_before_contacting_the_host(fake_kfp, compiled, tmp_path):
    from pipelines.kubeflow import client as kfp_client

    broken = tmp_path / "broken.yaml"
    broken.write_text("pipelineInfo: {name: x}\nroot: {dag: {tasks: {}}}\nbogus: 1\n")
    with pytest.raises(ConfigError, match="not a valid KFP pipeline package"):
        kfp_client.submit(str(broken), {"model_uri": "m"}, host=fake_kfp.host)
    with pytest.raises(ConfigError, match=r"model_uri need a value \(--model\)"):
        kfp_client.submit(compiled.path, {"model_uri": None}, host=fake_kfp.host)
    with pytest.raises(ConfigError, match="unknown pipeline parameter.*modle_uri"):
        kfp_client.submit(compiled.path, {"modle_uri": "m"}, host=fake_kfp.host)
    with pytest.raises(ConfigError, match="KFP_HOST"):
        kfp_client.submit(compiled.path, {"model_uri": "m"})
    assert fake_kfp.requests == []  # nothing reached the cluster


def test_unreachable_host_is_one_clear_error(compiled, tmp_path, monkeypatch):
    import socket

    from pipelines.kubeflow import client as kfp_client

    monkeypatch.setenv("HOME", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    started = time.time()
    with pytest.raises(
        kfp_client.KfpError, match=f"cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}"
    ):
        kfp_client.submit(compiled.path, {"model_uri": "m"}, host=f"http://127.0.0.1:{port}")
    assert time.time() - started < 15


def test_commands_register_without_heavy_imports():
    script = (
        "import argparse, sys\n"
        "from pipelines.kubeflow import commands as kfp_commands\n"
        "p = argparse.ArgumentParser(prog='tfxopt'); sub = p.add_subparsers(dest='command')\n"
        "kfp_commands.register(sub)\n"
        "a = p.parse_args(['schedule', '--cron', '0 3 * * *', '--model', 'gs://m'])\n"
        "assert a.func.__name__ == '_cmd_schedule' and a.package == 'pipeline.yaml'\n"
        "a = p.parse_args(['watch', '--checkpoints', '/c', '--submitter', 'kfp', '--once'])\n"
        "assert a.once and a.stable_seconds == 60.0\n"
        "heavy = [m for m in ('tensorflow', 'tfx', 'kfp', 'apache_beam') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_compile_command_with_kubeflow_section_in_the_config_file(tmp_path, compiled):
    import argparse

    from pipelines.kubeflow import commands as kfp_commands

    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "pipeline_name": "from-file",
                "kubeflow": {
                    "image": "registry/tfxopt:1",
                    "steps": {"ExampleGen": {"cpu_limit": 3}},
                },
            }
        )
    )
    parser = argparse.ArgumentParser()
    kfp_commands.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "out.yaml"
    args = parser.parse_args(["compile", "--config", str(config_file), "--output", str(out)])
    assert args.func(args) == 0
    spec = _docs(str(out))[0]
    assert spec["pipelineInfo"]["name"] == "from-file"
    example_gen = spec["deploymentSpec"]["executors"]["ExampleGen_executor"]["container"]
    assert example_gen["image"] == "registry/tfxopt:1"
    assert example_gen["resources"] == {"cpuLimit": 3.0}


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("0 3 * * *", "0 0 3 * * *"),
        ("*/15 * * * *", "0 */15 * * * *"),
        ("0 30 2 1,15 JAN-jun MON-FRI", "0 30 2 1,15 JAN-jun MON-FRI"),
        ("0 0 3 ? * 0", "0 0 3 ? * 0"),
    ],
)
def test_cron_expressions_kfp_accepts(expression, expected):
    from pipelines.kubeflow.client import parse_cron

    assert parse_cron(expression) == expected


@pytest.mark.parametrize(
    "expression, message",
    [
        ("0 24 * * *", "hour field '24' is out of range (allowed 0-23)"),
        ("0 3 0 * *", "day of month field '0' is out of range"),
        ("0 3 * 13 *", "month field '13' is out of range (allowed 1-12 or JAN..DEC)"),
        ("0 3 * * 7", "day of week field '7' is out of range"),
        ("0 3 * * FUN", "day of week field 'FUN' is out of range"),
        ("*/0 * * * *", "minute field '*/0' has a step of 0"),
        ("60 0 3 * * *", "second field '60' is out of range"),
        ("0 3 * *", "use 5 fields"),
    ],
)
def test_cron_expressions_out_of_range_name_the_field(expression, message):
    from pipelines.kubeflow.client import parse_cron

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_cron(expression)
