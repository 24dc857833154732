"""k8s/: the overlays render with kustomize, validate against the Kubernetes schemas, and hold together.

Rendering uses ``kubectl kustomize`` (or a standalone ``kustomize build``): where no kubectl on
PATH renders the overlays, scripts/install_kubectl.sh (run by ``make test``) installs one, and
without a renderer these tests fail saying so, never skip. Schema validation uses the
``kubernetes-validate`` package, offline, in strict mode (unknown fields are errors). Beyond the
schemas, the tests check what a cluster would only reveal at run time: references between objects,
the restricted Pod Security profile, least-privilege RBAC, and that no key material is in the files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(REPO_ROOT, "k8s")
OVERLAYS = ("local", "cloud")
# local: standalone KFP's namespace (pipeline pods must mount the same claims); cloud: our own.
NAMESPACES = {"local": "kubeflow", "cloud": "tfxopt"}
KUBERNETES_VERSION = "1.30.0"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


# Installed by scripts/install_kubectl.sh (make test runs it) where no kubectl on PATH renders
# the overlays; it lives beside kubernetes-validate, outside the venv's site-packages.
KUBECTL_PATH = os.path.join(sys.prefix, "tools", "kubectl", "bin", "kubectl")


def _renderer() -> list[str]:
    """The command that renders an overlay; fails (never skips) when there is none."""
    if os.access(KUBECTL_PATH, os.X_OK):
        return [KUBECTL_PATH, "kustomize"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    pytest.fail(
        "neither kubectl nor kustomize is installed, so the overlays cannot be rendered: run "
        "scripts/install_kubectl.sh (make test does), which installs kubectl into "
        f"{os.path.dirname(os.path.dirname(KUBECTL_PATH))}"
    )


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    """(overlay, [objects]) for each overlay, rendered by kustomize."""
    command = _renderer()
    proc = subprocess.run(
        [*command, os.path.join(K8S, "overlays", request.param)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert objects
    return request.param, objects


def _by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _pod_specs(objects: list[dict]):
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            yield obj["metadata"]["name"], obj["spec"]["template"]


# kubernetes-validate is installed outside the venv's site-packages (scripts/setup_venv.sh):
# where the kubernetes client can import it, every TFX import pays for loading it.
VALIDATOR_PATH = os.path.join(sys.prefix, "tools", "kubernetes-validate")
_VALIDATE = """
import json, sys
import kubernetes_validate
version, strict = sys.argv[1], sys.argv[2] == "strict"
errors = []
for obj in json.load(sys.stdin):
    try:
        kubernetes_validate.validate(obj, version, strict=strict)
    except Exception as e:  # ValidationError, or an unknown kind/version
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        errors.append(f"{name}: {str(e).splitlines()[0]}")
print(json.dumps(errors))
"""


def schema_errors(objects: list[dict], strict: bool = True) -> list[str]:
    """Each object checked against the Kubernetes OpenAPI schemas, offline; the errors found."""
    assert os.path.isdir(VALIDATOR_PATH), (
        f"{VALIDATOR_PATH} is missing: run scripts/setup_venv.sh (make test does) to install "
        "kubernetes-validate there"
    )
    done = subprocess.run(
        [sys.executable, "-c", _VALIDATE, KUBERNETES_VERSION, "strict" if strict else "lax"],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": VALIDATOR_PATH},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_manifests_validate_against_the_kubernetes_schemas(rendered):
    overlay, objects = rendered
    errors = schema_errors(objects)
    assert not errors, f"{overlay}:\n" + "\n".join(errors)


def test_the_schema_check_is_strict():
    """The validator really rejects a misspelt field (so a passing check means something)."""
    with open(os.path.join(K8S, "base", "watcher.yaml")) as f:
        deployment = yaml.safe_load(f)
    assert schema_errors([deployment]) == []
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    [error] = schema_errors([deployment])
    assert "imagePullPolicyy" in error, error


def test_the_validator_stays_out_of_the_tfx_import():
    """Importing TFX's runner does not load kubernetes-validate (or its schema format checkers)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tfx.orchestration.local.local_dag_runner; "
            "print(sorted(m for m in ('kubernetes_validate', 'rfc3987_syntax') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_every_pod_meets_the_restricted_pod_security_profile(rendered):
    overlay, objects = rendered
    for namespace in _by_kind(objects, "Namespace").values():  # local reuses KFP's namespace
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = dict(_pod_specs(objects))
    assert set(pods) == {"tfxopt-watcher", "tfxopt-serving", "tfxopt-ota"}
    for name, template in pods.items():
        spec = template["spec"]
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] > 0, name
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{overlay}:{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["readOnlyRootFilesystem"] is True, where
            for side in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][side]), where


def test_references_between_objects_resolve(rendered):
    overlay, objects = rendered
    config_maps = _by_kind(objects, "ConfigMap")
    claims = _by_kind(objects, "PersistentVolumeClaim")
    accounts = _by_kind(objects, "ServiceAccount")
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert namespaces == {NAMESPACES[overlay]}  # everything in one namespace
    assert set(_by_kind(objects, "Namespace")) <= namespaces
    for name, template in _pod_specs(objects):
        spec = template["spec"]
        assert spec["serviceAccountName"] in accounts, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, (overlay, name, volume)
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in claims, (overlay, name, volume)
            assert "secret" not in volume, "secrets are mounted into pipeline steps by KFP only"
        for container in spec.get("initContainers", []) + spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, (overlay, name, mount)
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, (overlay, name)
    deployments = _by_kind(objects, "Deployment")
    for service in _by_kind(objects, "Service").values():
        selector = service["spec"]["selector"]
        targets = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, service["metadata"]["name"]
        ports = {
            p["name"]
            for c in targets[0]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_rbac_is_least_privilege(rendered):
    _, objects = rendered
    roles = list(_by_kind(objects, "Role").values())
    assert not _by_kind(objects, "ClusterRole") and not _by_kind(objects, "ClusterRoleBinding")
    for role in roles:
        for rule in role["rules"]:
            assert rule["apiGroups"] == ["pipelines.kubeflow.org"]
            assert set(rule["resources"]) <= {"runs", "experiments"}
            assert set(rule["verbs"]) <= {"get", "list", "create"}
    (binding,) = _by_kind(objects, "RoleBinding").values()
    assert binding["roleRef"]["name"] in _by_kind(objects, "Role")
    assert [s["name"] for s in binding["subjects"]] == ["tfxopt-watcher"]


def test_the_signing_key_is_referenced_never_inlined(rendered):
    _, objects = rendered
    assert not _by_kind(objects, "Secret"), "the signing-key Secret is created out of band"
    text = yaml.safe_dump_all(objects)
    assert not re.search(r"PRIVATE KEY|BEGIN [A-Z ]+KEY", text)
    for root, _, files in os.walk(K8S):
        for name in files:
            with open(os.path.join(root, name), errors="replace") as f:
                assert "PRIVATE KEY-----" not in f.read(), name


def test_watcher_serving_and_ota_are_wired(rendered):
    overlay, objects = rendered
    deployments = _by_kind(objects, "Deployment")
    watcher = deployments["tfxopt-watcher"]["spec"]
    assert watcher["replicas"] == 1 and watcher["strategy"]["type"] == "Recreate"
    (container,) = watcher["template"]["spec"]["containers"]
    assert container["command"] == ["tfxopt", "watch"]
    assert "--submitter=kfp" in container["args"]
    assert "--state-dir=/var/lib/tfxopt-watcher" in container["args"]
    env_map = next(
        cm
        for name, cm in _by_kind(objects, "ConfigMap").items()
        if name.startswith("tfxopt-watcher-env")
    )["data"]
    prefix = env_map["CHECKPOINT_PREFIX"]
    assert prefix.startswith("gs://") if overlay == "cloud" else prefix == "/checkpoints"
    assert env_map["KFP_HOST"].startswith("http")
    token = next(v for v in watcher["template"]["spec"]["volumes"] if v["name"] == "kfp-token")
    (source,) = token["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"

    serving = deployments["tfxopt-serving"]["spec"]["template"]["spec"]
    (tfs,) = serving["containers"]
    assert "--model_config_file=$(MODEL_CONFIG_FILE)" in tfs["args"]
    config_file = next(e["value"] for e in tfs["env"] if e["name"] == "MODEL_CONFIG_FILE")
    assert (
        config_file.startswith("gs://") if overlay == "cloud" else config_file.startswith("/models")
    )
    ota = deployments["tfxopt-ota"]["spec"]["template"]["spec"]
    channels = next(v for v in ota["volumes"] if v["name"] == "channels")
    assert ("csi" in channels) if overlay == "cloud" else ("persistentVolumeClaim" in channels)


def test_the_shipped_pipeline_configs_compile(rendered, tmp_path):
    """The watcher compiles its ConfigMap's config at start: it must be valid and compile."""
    from pipelines.kubeflow.commands import load_configs
    from pipelines.kubeflow.runner import compile_pipeline, load_package

    overlay, objects = rendered
    config_map = next(
        cm
        for name, cm in _by_kind(objects, "ConfigMap").items()
        if name.startswith("tfxopt-pipeline-config")
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(config_map["data"]["pipeline.yaml"])
    config, kubeflow = load_configs(str(path))
    assert kubeflow.pipeline_root.startswith("gs://")
    package = compile_pipeline(config, str(tmp_path / "package.yaml"), kubeflow=kubeflow)
    watcher = _by_kind(objects, "Deployment")["tfxopt-watcher"]
    image = watcher["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == kubeflow.image  # steps run the image the watcher runs
    assert load_package(package.path).pipeline_spec.pipeline_info.name == config.pipeline_name

    # The Pusher reads the key where the Secret is mounted, in its own pod only.
    k8s = package.platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert [label for label, c in k8s.items() if "secretAsVolume" in c] == ["Pusher_executor"]
    (ota,) = config.pusher.ota
    assert ota.signing_key_path == kubeflow.signing_key.file_path
    (serving,) = config.pusher.serving
    deployments = _by_kind(objects, "Deployment")
    tfs = deployments["tfxopt-serving"]["spec"]["template"]["spec"]
    tfs_config = next(
        e["value"] for e in tfs["containers"][0]["env"] if e["name"] == "MODEL_CONFIG_FILE"
    )
    ota_volume = next(
        v
        for v in deployments["tfxopt-ota"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "channels"
    )
    if overlay == "cloud":  # TF Serving and nginx read what the Pusher writes, in GCS
        assert tfs_config == f"{serving.base_directory}/models.config"
        only_dir = ota_volume["csi"]["volumeAttributes"]["mountOptions"].split("only-dir=")[1]
        bucket = ota_volume["csi"]["volumeAttributes"]["bucketName"]
        assert ota.base_directory == f"gs://{bucket}/{only_dir}"
    else:  # ... or on the claims the Pusher step mounts
        mounts = {m["mountPath"]: m["constant"] for m in k8s["Pusher_executor"]["pvcMount"]}
        tfs_claim = next(v for v in tfs["volumes"] if v["name"] == "serving-repo")
        assert mounts[serving.base_directory] == tfs_claim["persistentVolumeClaim"]["claimName"]
        assert tfs_config == f"{serving.server_base_directory}/models.config"
        assert mounts[ota.base_directory] == ota_volume["persistentVolumeClaim"]["claimName"]


def _dockerfile() -> list[tuple[str, str]]:
    """k8s/Dockerfile as (instruction, arguments) pairs, continuation lines joined."""
    with open(os.path.join(K8S, "Dockerfile")) as f:
        text = f.read()
    return [
        (op.upper(), arg)
        for op, arg in (
            line.split(None, 1)
            for line in re.sub(r"\\\n", " ", text).splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        )
    ]


def _pin(package: str) -> str:
    with open(os.path.join(REPO_ROOT, "requirements", "constraints.txt")) as f:
        return re.search(rf"^{re.escape(package)}==(\S+)$", f.read(), re.MULTILINE).group(1)


def test_dockerfile_text_pins_the_base_runs_as_non_root_and_checks_its_imports():
    """The Dockerfile's text, checked as far as text can be (nothing is built here: no registry).

    The base image is the TFX release the constraints pin, by tag or digest; every RUN comes
    before a numeric non-root USER that a RUN created; TF_USE_LEGACY_KERAS is set before the first
    RUN; the build fails unless its import check passes, and that check is run here, against the
    same pins; the entrypoint is reset and the command is the package's own script.
    """
    instructions = _dockerfile()
    ops = [op for op, _ in instructions]
    (base,) = [arg for op, arg in instructions if op == "FROM"]
    tfx_pin = _pin("tfx")
    assert re.fullmatch(
        rf"gcr\.io/tfx-oss-public/tfx(:{re.escape(tfx_pin)})?(@sha256:[0-9a-f]{{64}})?", base
    ) and ("@sha256:" in base or base.endswith(f":{tfx_pin}")), base

    users = [i for i, op in enumerate(ops) if op == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = instructions[users[-1]][1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit()), uid
    runs = [i for i, op in enumerate(ops) if op == "RUN"]
    assert max(runs) < users[-1], "a RUN after the last USER would need root"
    assert any(re.search(rf"useradd\b.*--uid {uid}\b", instructions[i][1]) for i in runs)

    envs = [
        i
        for i, (op, arg) in enumerate(instructions)
        if op == "ENV" and "TF_USE_LEGACY_KERAS=1" in arg
    ]
    assert envs and envs[0] < min(runs), "TF_USE_LEGACY_KERAS=1 must hold for every RUN"

    # The install RUN: Python 3.10, pip with the constraints, then the import check, chained with
    # && so a failing check fails the build.
    (install,) = [instructions[i][1] for i in runs if "pip install" in instructions[i][1]]
    commands = [c.strip() for c in install.split(" && ")]
    assert "python -m pip install -c requirements/constraints.txt ." in commands
    checks = [c for c in commands if c.startswith('python -c "') and "import tfx" in c]
    assert len(checks) == 1 and commands.index(checks[0]) > commands.index(
        "python -m pip install -c requirements/constraints.txt ."
    ), commands
    code = checks[0][len('python -c "') : -1]
    assert f"tfx.__version__ == '{tfx_pin}'" in code
    assert "import_class_by_path(f'components.{n}.executor.Executor') for n in (" in code
    for name in os.listdir(os.path.join(REPO_ROOT, "components")):
        if os.path.exists(os.path.join(REPO_ROOT, "components", name, "executor.py")):
            assert f"'{name}'" in code, f"the import check does not load the {name} executor"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": REPO_ROOT, "TF_USE_LEGACY_KERAS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"tensorflow {_pin('tensorflow')} tfx {tfx_pin}" in done.stdout

    assert instructions[ops.index("ENTRYPOINT")][1] == "[]"
    command = json.loads([arg for op, arg in instructions if op == "CMD"][-1])
    with open(os.path.join(REPO_ROOT, "pyproject.toml")) as f:
        scripts = re.search(r"\[project\.scripts\]\n(\w+) =", f.read()).group(1)
    assert command[0] == scripts, command

    # Everything the package installs is copied in, and let through the build context filter.
    with open(os.path.join(REPO_ROOT, "pyproject.toml")) as f:
        include = re.search(r"include = \[([^\]]*)\]", f.read()).group(1)
    packages = {p.strip().strip('"').rstrip("*") for p in include.split(",") if p.strip()}
    copied = {arg.split()[0].rstrip("/") for op, arg in instructions if op == "COPY"}
    assert packages <= copied, packages - copied
    assert "tfxopt" in copied  # the artifact types' import path (see tfxopt/__init__.py)
    with open(os.path.join(K8S, "Dockerfile.dockerignore")) as f:
        allowed = {line[1:].rstrip("/") for line in f.read().splitlines() if line.startswith("!")}
    assert copied <= allowed, copied - allowed
