"""README "Run on Kubeflow", run as written: its code block, extracted from the README, executed by
bash line by line against the KFP API double (tests/fake_kfp.py), then the run it submitted driven
through the step-by-step emulator (tests/kfp_emulator.py) from what the API received.

Only what needs a cluster or a registry is stood in for: ``docker`` and ``kubectl`` are shims that
record their arguments; ``$BUCKET`` is a local directory (TFX reads it with ``tf.io.gfile`` as it
would ``gs://``) holding the reference checkpoint and Examples; ``$KFP_HOST`` is the double. Every
``tfxopt`` line runs the real command line. The commands run in a scratch directory that sees the
repository's ``pipelines/`` and ``k8s/``, so ``pipeline.yaml`` and ``keys/`` land there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from tests.fake_kfp import FakeKfp

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO_ROOT, "README.md")
PRODUCTION = os.path.join(REPO_ROOT, "pipelines", "configs", "production.yaml")
REGISTRY = "registry.example/ml"
# The steps the quick test runs for real: the checkpoint and the Examples the run was submitted
# with reach the pipeline and are read (the rest is the local pipeline's, covered elsewhere).
FIRST_STEPS = {"CheckpointImporter", "ExampleGen", "ModelImporter"}


def kubeflow_commands() -> list[str]:
    """The README's "Run on Kubeflow" code block, one command per line (continuations joined)."""
    with open(README) as f:
        text = f.read()
    section = text.split("\n## Run on Kubeflow\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _shim(bin_dir, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, reference_data):
    """Runs the README block; returns what each tool and the KFP double received."""
    root = tmp_path_factory.mktemp("quickstart")
    work, bucket, bin_dir = root / "work", root / "bucket", root / "bin"
    for directory in (work, bin_dir):
        directory.mkdir()
    for name in ("pipelines", "k8s"):
        os.symlink(os.path.join(REPO_ROOT, name), work / name)
    # The bucket: two checkpoints the trainer exported long enough ago to count as complete.
    for checkpoint in ("1700000000", "latest"):
        shutil.copytree(reference_data["model"], bucket / "exports" / checkpoint)
    shutil.copytree(reference_data["examples"], bucket / "examples")
    old = time.time() - 3600
    for directory, _, files in os.walk(bucket / "exports"):
        for name in [*files, "."]:
            os.utime(os.path.join(directory, name), (old, old))
    calls = root / "calls.log"
    for tool in ("docker", "kubectl"):
        _shim(bin_dir, tool, f'echo "{tool} $*" >> {calls}')
    _shim(
        bin_dir,
        "tfxopt",
        f'PYTHONPATH={REPO_ROOT} exec {sys.executable} -m pipelines.cli "$@"',
    )
    server = FakeKfp()
    commands = kubeflow_commands()
    # The block's first line sets the three names the others use; the test gives its own values
    # (a registry name, the local bucket, the double) and runs every other line as written.
    first, *rest = commands
    assert re.fullmatch(r"export REGISTRY=\S+ BUCKET=gs://\S+ KFP_HOST=\S+", first), first
    script = [
        "set -e",
        f"export REGISTRY={REGISTRY} BUCKET={bucket} KFP_HOST={server.host}",
        *rest,
    ]
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(root),
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=work, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    try:
        yield {
            "done": done,
            "work": work,
            "bucket": bucket,
            "calls": calls.read_text().splitlines() if calls.exists() else [],
            "server": server,
            "root": root,
        }
    finally:
        server.close()


def test_the_readme_block_runs_to_the_end(quickstart):
    done = quickstart["done"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert quickstart["server"].errors == []  # every request matched the KFP API
    commands = kubeflow_commands()
    assert [c.split()[1] for c in commands if c.startswith("tfxopt ")] == [
        "ota-keygen", "compile", "submit", "schedule", "watch",
    ]  # fmt: skip


def test_the_image_built_is_the_image_compiled_in(quickstart):
    image = f"{REGISTRY}/tfx-optimize:0.1.0"
    calls = quickstart["calls"]
    assert f"docker build -f k8s/Dockerfile -t {image} ." in calls
    assert f"docker push {image}" in calls
    run = quickstart["server"].posted("/apis/v2beta1/runs")[0]  # submit's
    executors = run["pipeline_spec"]["pipeline_spec"]["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {image}


def test_the_key_written_is_the_secret_the_pusher_mounts(quickstart):
    work = quickstart["work"]
    assert (work / "keys" / "private_key.pem").is_file()
    assert (work / "keys" / "private_key.pem.pub").is_file()
    (secret,) = [c for c in quickstart["calls"] if c.startswith("kubectl ") and "secret" in c]
    with open(PRODUCTION) as f:
        kubeflow = yaml.safe_load(f)["kubeflow"]
    key = kubeflow["signing_key"]
    assert f"create secret generic {key['secret_name']} " in secret
    assert f"--from-file={key['secret_key']}=keys/private_key.pem" in secret
    run = quickstart["server"].posted("/apis/v2beta1/runs")[0]  # submit's
    platform = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    mounts = platform["deploymentSpec"]["executors"]["Pusher_executor"]["secretAsVolume"]
    assert mounts == [{"secretName": key["secret_name"], "mountPath": key["mount_path"]}]


def test_submit_schedule_and_watch_pass_the_model_and_the_examples(quickstart):
    bucket = quickstart["bucket"]
    server = quickstart["server"]
    runs = server.posted("/apis/v2beta1/runs")
    submitted, *watched = runs
    assert submitted["runtime_config"] == {
        "parameters": {
            "model_uri": f"{bucket}/exports/1700000000",
            "examples_uri": f"{bucket}/examples",
        }
    }
    (recurring,) = server.posted("/apis/v2beta1/recurringruns")
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert recurring["runtime_config"]["parameters"] == {
        "model_uri": f"{bucket}/exports/latest",
        "examples_uri": f"{bucket}/examples",
    }
    # watch: one run per complete checkpoint under the prefix, each with the Examples
    assert sorted(r["runtime_config"]["parameters"]["model_uri"] for r in watched) == [
        f"{bucket}/exports/1700000000",
        f"{bucket}/exports/latest",
    ]
    assert {r["runtime_config"]["parameters"]["examples_uri"] for r in watched} == {
        f"{bucket}/examples"
    }
    # the package's root is the one compile was given
    spec = submitted["pipeline_spec"]["pipeline_spec"]
    assert spec["defaultPipelineRoot"] == f"{bucket}/tfxopt/pipeline-root"


def test_the_submitted_package_pins_latency_to_the_target_hardware(quickstart):
    (run, *_) = quickstart["server"].posted("/apis/v2beta1/runs")
    spec = run["pipeline_spec"]["pipeline_spec"]
    evaluator = spec["root"]["dag"]["tasks"]["Evaluator"]
    assert "LatencyBenchmark" in _dependencies(evaluator)
    k8s = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]
    selector = k8s["executors"]["LatencyBenchmark_executor"]["nodeSelector"]["labels"]
    assert selector == {"cloud.google.com/gke-nodepool": "target-hw"}
    assert "nodeSelector" not in k8s["executors"].get("Evaluator_executor", {})


def _dependencies(task: dict) -> set[str]:
    from tests.kfp_emulator import _dependencies as deps

    return deps(task)


def _emulate(quickstart, only):
    from tests.kfp_emulator import KfpEmulator

    (run, *_) = quickstart["server"].posted("/apis/v2beta1/runs")
    spec = run["pipeline_spec"]["pipeline_spec"]
    emulator = KfpEmulator(
        spec,
        spec["defaultPipelineRoot"],  # the run's root: the package's, under $BUCKET
        run["runtime_config"]["parameters"],
        cwd=REPO_ROOT,
        max_parallel=2,
    )
    return emulator.run(only=only)


@pytest.mark.e2e
def test_the_submitted_run_reads_the_checkpoint_and_the_examples(quickstart):
    results = _emulate(quickstart, FIRST_STEPS)
    bucket = quickstart["bucket"]
    (checkpoint,) = results["CheckpointImporter"].artifacts["result"]
    assert checkpoint["uri"] == f"{bucket}/exports/1700000000"
    (examples,) = results["ExampleGen"].artifacts["examples"]
    assert examples["uri"].startswith(f"{bucket}/tfxopt/pipeline-root/")
    for split in ("train", "eval"):
        assert os.listdir(os.path.join(examples["uri"], f"Split-{split}"))
    (imported,) = results["ModelImporter"].artifacts["imported_model"]
    assert imported["metadata"]["source_format"] == "tf_keras"
    assert os.path.exists(os.path.join(imported["uri"], "Format-Serving", "saved_model.pb"))


@pytest.mark.slow  # the whole production chain step by step (minutes); the steps above run always
def test_the_submitted_run_reaches_the_gate_on_latency_benchmark_figures(quickstart):
    (run, *_) = quickstart["server"].posted("/apis/v2beta1/runs")
    tasks = set(run["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"])
    results = _emulate(quickstart, tasks - {"Pusher"})  # the Pusher writes to the CHANGE-ME bucket
    import json

    (evaluation,) = results["Evaluator"].artifacts["evaluation"]
    with open(os.path.join(evaluation["uri"], "evaluation.json")) as f:
        record = json.load(f)
    built = [c for c in record["candidates"] if not c.get("failure")]
    assert built, record["candidates"]
    for candidate in built:  # the gate judged LatencyBenchmark's figures, not its own pod's
        assert candidate["latency_used"]["source"].startswith("external: LatencyBenchmark")
        assert "latency_measured" not in candidate


# -- what the docs say agrees with the code and the manifests (fast) ---------------------------
def test_relative_paths_are_refused_at_compile_naming_each_key(tmp_path):
    from components.common.errors import ConfigError
    from pipelines.config import load_config
    from pipelines.kubeflow.runner import compile_pipeline

    demo = load_config(os.path.join(REPO_ROOT, "pipelines", "configs", "demo.yaml"))
    with pytest.raises(ConfigError) as error:
        compile_pipeline(demo, str(tmp_path / "p.yaml"))
    message = str(error.value)
    for key in (
        "pusher.serving[0].base_directory: 'serving'",
        "pusher.ota[0].base_directory: 'ota'",
        "pusher.ota[0].signing_key_path: 'keys/ota.pem'",
    ):
        assert key in message
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize(
    "path, data",
    [
        ("data.module_file", {"data": {"module_file": "my_module.py"}}),
        ("kubeflow.pipeline_root", {"kubeflow": {"pipeline_root": "root"}}),
        (
            "evaluator.latency.external_path",
            {"evaluator": {"latency": {"external_path": "lat.json"}}},
        ),
    ],
)
def test_every_kind_of_relative_path_is_named(path, data):
    from components.common.errors import ConfigError
    from pipelines.config import PipelineConfig
    from pipelines.kubeflow.runner import check_no_relative_paths

    config = PipelineConfig.parse({"quantization": [{"mode": "dynamic_range"}], **data})
    with pytest.raises(ConfigError, match=re.escape(path)):
        check_no_relative_paths(config)
    check_no_relative_paths(PipelineConfig.parse({"quantization": [{"mode": "dynamic_range"}]}))


def test_k8s_readme_loads_the_image_the_local_overlay_runs():
    with open(os.path.join(REPO_ROOT, "k8s", "README.md")) as f:
        text = f.read()
    with open(os.path.join(REPO_ROOT, "k8s", "overlays", "local", "kustomization.yaml")) as f:
        (image,) = yaml.safe_load(f)["images"]
    with open(os.path.join(REPO_ROOT, "k8s", "overlays", "local", "config", "pipeline.yaml")) as f:
        local_image = yaml.safe_load(f)["kubeflow"]["image"]
    tag = f"{image['newName']}:{image['newTag']}"
    assert local_image == tag
    (kind,) = re.findall(r"kind load docker-image (\S+)", text)
    assert kind == tag
    assert f"-t {tag} ." in text


def test_the_key_paths_and_variable_agree_everywhere():
    from components.pusher.commands import DEFAULT_KEY_ENV
    from pipelines.kubeflow.config import SigningKeySecret

    assert SigningKeySecret().env_var == DEFAULT_KEY_ENV
    docs = ""
    for path in ("README.md", "k8s/README.md", "components/pusher/README.md"):
        with open(os.path.join(REPO_ROOT, path)) as f:
            docs += f.read()
    assert "TFXOPT_SIGNING_KEY" not in docs
    # ota-keygen writes the path it is given (and .pub beside it): the Secret is made from it
    for keygen in re.findall(r"tfxopt ota-keygen (\S+)", docs):
        assert keygen.endswith(".pem"), keygen
    for source in re.findall(r"--from-file=private_key\.pem=(\S+)", docs):
        assert re.search(rf"tfxopt ota-keygen {re.escape(source)}\b", docs), source


def test_shipped_configs_judge_latency_relative_to_the_baseline():
    """An absolute `max_latency_ms` holds on one machine only; the shipped gates use min_speedup."""
    import glob

    paths = sorted(glob.glob(os.path.join(REPO_ROOT, "pipelines", "configs", "*.yaml")))
    paths += sorted(
        glob.glob(os.path.join(REPO_ROOT, "k8s", "**", "pipeline.yaml"), recursive=True)
    )
    assert len(paths) >= 8
    with_latency_rule = 0
    for path in paths:
        with open(path) as f:
            data = yaml.safe_load(f)
        rules = (data.get("evaluator") or {}).get("rules") or {}
        assert "max_latency_ms" not in rules, path
        with_latency_rule += "min_speedup" in rules
    assert with_latency_rule >= 6  # demo, production, strict_latency, default, the k8s configs
