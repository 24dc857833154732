"""Compiles the pipeline for Kubeflow Pipelines (KFP v2 YAML) or Vertex AI Pipelines (JSON).

The factory's pipeline is compiled by TFX's ``KubeflowV2DagRunner``; the checkpoint and the Examples
are runtime parameters (``model_uri``, ``examples_uri``), so one compiled package serves every new
checkpoint. Three things TFX 1.16's runner does not do are done here on the compiled dict:

- **Per-step Kubernetes settings.** CPU/memory/GPU go into each executor's
  ``deploymentSpec.executors[*].container.resources`` (``cpuRequest``/``cpuLimit`` in cores,
  ``memoryRequest``/``memoryLimit`` in GB, ``accelerator {type, count}``) and plain variables into its
  ``env``; both the KFP backend and Vertex read them. Node selectors, tolerations, PVC mounts and the
  signing-key Secret go into a second YAML document, the ``PlatformSpec`` (``platforms.kubernetes
  .deploymentSpec.executors[*]``) in the format of ``kfp-kubernetes`` (``nodeSelector.labels``,
  ``tolerations``, ``pvcMount``, ``secretAsVolume``/``secretAsEnv``, in their plain-name forms that
  every KFP 2.x backend reads), which kfp 2.5's client sends with the run and the KFP backend's driver
  applies to the step's pod. Vertex has no such section, so those settings are refused for JSON.
- **The pipeline root** is KFP's run-level setting, not a TFX runtime parameter (TFX 1.16 fails with a
  ``RuntimeParameter`` pipeline root): the package carries ``defaultPipelineRoot`` and ``tfxopt
  submit --pipeline-root`` overrides it per run.
- **Runtime-parameter defaults** (``examples_uri``) are written to the root ``inputDefinitions``.

The package is then checked with kfp's own loader (:func:`load_package`) before it is written.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any

from components.common.errors import ConfigError
from pipelines.kubeflow.config import KubeflowConfig, StepSettings

MODEL_URI_PARAMETER = "model_uri"
EXAMPLES_URI_PARAMETER = "examples_uri"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
# The pipeline object needs a root; on KFP the run's root replaces it, so it never reaches the spec.
_UNSET_ROOT = "gs://unset-pipeline-root"
_FORMATS = ("yaml", "json")


@dataclass
class CompiledPipeline:
    """What ``tfxopt compile`` wrote."""

    path: str
    output_format: str
    pipeline_spec: dict
    platform_spec: dict
    container_steps: list[str] = field(default_factory=list)
    settings: dict[str, dict] = field(default_factory=dict)


def kubeflow_settings(config) -> KubeflowConfig:
    """The ``kubeflow:`` section of a PipelineConfig (defaults when the config has none)."""
    section = getattr(config, "kubeflow", None)
    if section is None:
        return KubeflowConfig()
    if isinstance(section, KubeflowConfig):
        return section
    return KubeflowConfig.parse(section, where="kubeflow")


def build_pipeline(config, pipeline_root: str | None = None):
    """The factory's pipeline with ``model_uri`` and ``examples_uri`` as KFP runtime parameters."""
    from tfx.orchestration.data_types import RuntimeParameter

    from pipelines.pipeline import create_pipeline

    model_uri = RuntimeParameter(name=MODEL_URI_PARAMETER, ptype=str)
    examples_uri = RuntimeParameter(name=EXAMPLES_URI_PARAMETER, ptype=str)
    return create_pipeline(
        config,
        model_uri=model_uri,
        examples_uri=examples_uri,
        pipeline_root=pipeline_root or _UNSET_ROOT,
    )


def compile_pipeline(
    config,
    output_path: str,
    *,
    image: str | None = None,
    output_format: str | None = None,
    pipeline_root: str | None = None,
    examples_uri: str | None = None,
    kubeflow: KubeflowConfig | None = None,
) -> CompiledPipeline:
    """Compiles ``config``'s pipeline into a KFP package at ``output_path``.

    Args:
      config: the validated PipelineConfig (its ``kubeflow`` section, if any, gives the defaults).
      output_path: the package file: ``.yaml``/``.yml`` (Kubeflow Pipelines) or ``.json`` (Vertex).
      image: component image (default: ``kubeflow.image``).
      output_format: ``yaml`` or ``json``; must agree with the file extension, which decides
        (the config's ``output_format`` only picks ``tfxopt compile``'s default file name).
      pipeline_root: default pipeline root written into the package (default: the config's).
      examples_uri: default of the ``examples_uri`` runtime parameter (default: the config's).
      kubeflow: the Kubeflow settings (default: ``config.kubeflow``, else all defaults).

    Raises:
      ConfigError: bad format, a step pattern that matches no step, settings the format cannot carry.
    """
    kubeflow = kubeflow or kubeflow_settings(config)
    check_no_relative_paths(config)
    fmt = _resolve_format(output_path, output_format or None)
    root = pipeline_root or kubeflow.pipeline_root
    examples_default = examples_uri or kubeflow.examples_uri
    job = _run_tfx_compiler(config, image or kubeflow.image, root)
    spec = job["pipelineSpec"]
    if root:
        spec["defaultPipelineRoot"] = root
    if examples_default:
        _set_parameter_default(spec, EXAMPLES_URI_PARAMETER, examples_default)

    steps = container_steps(spec)
    settings = resolve_step_settings(kubeflow, steps)
    platform = apply_step_settings(spec, steps, settings, kubeflow, fmt)
    _validate(spec, platform)

    parent = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(parent, exist_ok=True)
    if fmt == "yaml":
        text = render_yaml(spec, platform)
    else:
        text = render_json(job, spec, root)
    tmp = f"{output_path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, output_path)  # a reader never sees half a package
    load_package(output_path)  # what submit will do: fail here, not at the cluster
    return CompiledPipeline(
        path=output_path,
        output_format=fmt,
        pipeline_spec=spec,
        platform_spec=platform,
        container_steps=sorted(steps),
        settings={k: v.model_dump(exclude_defaults=True) for k, v in sorted(settings.items())},
    )


#: Config keys that hold a file or directory (by the end of their name): on Kubeflow each step runs
#: in its own pod, where a relative path means nothing (a local run resolves them against --output).
PATH_KEY_SUFFIXES = ("_path", "_directory", "module_file", "_uri", "_graph", "pipeline_root")


def relative_paths(data, where: str = "") -> list[str]:
    """Dotted keys (``pusher.serving[0].base_directory``) of path values that are relative."""
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{where}.{key}" if where else str(key)
            if (
                isinstance(value, str)
                and str(key).endswith(PATH_KEY_SUFFIXES)
                and "://" not in value
                and not value.startswith("/")
            ):
                found.append(f"{dotted}: {value!r}")
            else:
                found += relative_paths(value, dotted)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += relative_paths(value, f"{where}[{index}]")
    return found


def check_no_relative_paths(config) -> None:
    """Refuses a config with relative paths for Kubeflow, naming each key.

    Raises:
      ConfigError: naming the keys and what to give instead.
    """
    found = relative_paths(config.model_dump(exclude_none=True))
    if found:
        raise ConfigError(
            f"relative paths cannot be compiled for Kubeflow (each step runs in its own pod): "
            f"{'; '.join(found)}. Give gs:// URIs, or absolute paths inside the image or on a "
            "volume mounted in the step (kubeflow.steps.<step>.volumes)."
        )


def _resolve_format(path: str, requested: str | None) -> str:
    ext = os.path.splitext(path)[1].lower()
    by_ext = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}.get(ext)
    if requested is not None and requested not in _FORMATS:
        raise ConfigError(f"output format {requested!r}: use yaml or json.")
    if by_ext is None:
        raise ConfigError(
            f"output file {path!r} must end in .yaml (Kubeflow Pipelines) or .json (Vertex AI)."
        )
    if requested and requested != by_ext:
        raise ConfigError(
            f"output format {requested!r} does not match the file name {path!r}: name it "
            f"*.{requested}."
        )
    return by_ext


def _run_tfx_compiler(config, image: str, pipeline_root: str | None) -> dict:
    import warnings

    with warnings.catch_warnings():
        # The runner imports the Vertex AI client, whose Google API libraries warn about the
        # Python version on import: noise for a compile.
        warnings.simplefilter("ignore", FutureWarning)
        from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as v2

    pipeline = build_pipeline(config, pipeline_root)
    # Schema 2.1 (parameterType / parameterValues) is what KFP >= 2.0 and Vertex read; TFX's 2.0
    # schema also breaks its own YAML writer when the pipeline has runtime parameters.
    runner_config = v2.KubeflowV2DagRunnerConfig(
        display_name=config.pipeline_name, default_image=image, use_pipeline_spec_2_1=True
    )
    runner = v2.KubeflowV2DagRunner(config=runner_config)
    return runner.run(pipeline, write_out=False)


def _set_parameter_default(spec: dict, name: str, value: Any) -> None:
    params = spec["root"].setdefault("inputDefinitions", {}).setdefault("parameters", {})
    if name not in params:
        raise ConfigError(f"the pipeline has no runtime parameter {name!r}.")
    params[name]["defaultValue"] = value
    params[name]["isOptional"] = True


def container_steps(spec: dict) -> dict[str, str]:
    """Node id -> executor label, for every step that runs a container (not importers/resolvers)."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    result = {}
    for task_id, task in spec["root"]["dag"]["tasks"].items():
        label = spec["components"][task["componentRef"]["name"]].get("executorLabel")
        if label and "container" in executors.get(label, {}):
            result[task_id] = label
    return result


def resolve_step_settings(
    kubeflow: KubeflowConfig, steps: dict[str, str]
) -> dict[str, StepSettings]:
    """Each container step's merged settings; a pattern matching no container step is an error."""
    import fnmatch

    ids = sorted(steps)
    patterns = [("kubeflow.steps", p) for p in kubeflow.steps]
    if kubeflow.signing_key is not None:
        patterns += [("kubeflow.signing_key.steps", p) for p in kubeflow.signing_key.steps]
    for where, pattern in patterns:
        if not any(fnmatch.fnmatchcase(step, pattern) for step in ids):
            raise ConfigError(
                f"{where}: {pattern!r} matches no step of the pipeline; its container steps are "
                f"{', '.join(ids)}."
            )
    return {step: kubeflow.settings_for(step) for step in ids}


def _resources(settings: StepSettings, fmt: str, step: str) -> dict:
    resources: dict[str, Any] = {}
    for name, key in (
        ("cpu_request", "cpuRequest"),
        ("cpu_limit", "cpuLimit"),
        ("memory_request_gb", "memoryRequest"),
        ("memory_limit_gb", "memoryLimit"),
    ):
        value = getattr(settings, name)
        if value is not None:
            resources[key] = float(value)
    if settings.gpu_count:
        gpu_type = settings.gpu_type
        if gpu_type is None:
            if fmt == "json":
                raise ConfigError(
                    f"kubeflow.steps ({step}): gpu_count on Vertex AI needs gpu_type, e.g. "
                    "NVIDIA_TESLA_T4."
                )
            gpu_type = DEFAULT_GPU_RESOURCE
        resources["accelerator"] = {"type": gpu_type, "count": int(settings.gpu_count)}
    return resources


def _kubernetes_config(settings: StepSettings, kubeflow: KubeflowConfig, step: str) -> dict:
    import fnmatch

    config: dict[str, Any] = {}
    if settings.node_selector:
        config["nodeSelector"] = {"labels": dict(sorted(settings.node_selector.items()))}
    if settings.tolerations:
        config["tolerations"] = [
            {k: v for k, v in t.model_dump().items() if v != ""} for t in settings.tolerations
        ]
    if settings.volumes:
        config["pvcMount"] = [
            {"constant": v.pvc_name, "mountPath": v.mount_path} for v in settings.volumes
        ]
    key = kubeflow.signing_key
    if key is not None and any(fnmatch.fnmatchcase(step, p) for p in key.steps):
        # The deprecated plain `secretName` form is the one every KFP 2.x backend understands.
        if key.expose_as == "file":
            config["secretAsVolume"] = [
                {"secretName": key.secret_name, "mountPath": key.mount_path}
            ]
        else:
            config["secretAsEnv"] = [
                {
                    "secretName": key.secret_name,
                    "keyToEnv": [{"secretKey": key.secret_key, "envVar": key.env_var}],
                }
            ]
    return config


def apply_step_settings(
    spec: dict,
    steps: dict[str, str],
    settings: dict[str, StepSettings],
    kubeflow: KubeflowConfig,
    fmt: str,
) -> dict:
    """Writes resources/env into ``spec`` in place; returns the PlatformSpec dict ({} if none)."""
    executors = spec["deploymentSpec"]["executors"]
    platform_executors = {}
    for step, label in sorted(steps.items()):
        step_settings = settings[step]
        container = executors[label]["container"]
        resources = _resources(step_settings, fmt, step)
        if resources:
            container["resources"] = resources
        if step_settings.env:
            container["env"] = [
                {"name": k, "value": v} for k, v in sorted(step_settings.env.items())
            ]
        k8s = _kubernetes_config(step_settings, kubeflow, step)
        if k8s:
            platform_executors[label] = k8s
    if not platform_executors:
        return {}
    if fmt == "json":
        raise ConfigError(
            "node_selector, tolerations, volumes and signing_key are Kubernetes settings that a Vertex AI "
            f"PipelineJob (JSON) cannot carry (steps: {', '.join(sorted(platform_executors))}); "
            "compile to YAML for Kubeflow Pipelines, or remove them for Vertex."
        )
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": platform_executors}}}}


def _validate(spec: dict, platform: dict) -> None:
    """Parses the spec, every executor and the platform spec into kfp's protos (strict)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    parts = [("the PipelineSpec", spec, pipeline_spec_pb2.PipelineSpec())]
    parts += [
        (f"executor {label}", executor, pipeline_spec_pb2.PipelineDeploymentConfig.ExecutorSpec())
        for label, executor in spec["deploymentSpec"]["executors"].items()
    ]
    parts.append(("the PlatformSpec", platform, pipeline_spec_pb2.PlatformSpec()))
    for what, value, message in parts:
        try:
            json_format.ParseDict(value, message)
        except json_format.ParseError as e:
            raise ConfigError(f"the compiled pipeline is not valid KFP: {what}: {e}") from None


def _header(spec: dict) -> str:
    lines = ["# PIPELINE DEFINITION", f"# Name: {spec['pipelineInfo']['name']}"]
    lines.append("# Compiled by tfx-optimize (tfxopt compile) with TFX's KubeflowV2DagRunner.")
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    if params:
        lines.append("# Inputs:")
        for name, body in sorted(params.items()):
            default = body.get("defaultValue")
            suffix = f" [Default: {default!r}]" if default is not None else " (required)"
            lines.append(f"#  {name}: {body['parameterType'].lower()}{suffix}")
    if spec.get("defaultPipelineRoot"):
        lines.append(f"# Default pipeline root: {spec['defaultPipelineRoot']}")
    return "\n".join(lines) + "\n"


def render_yaml(spec: dict, platform: dict) -> str:
    """The KFP package text: the PipelineSpec, then the PlatformSpec when there is one."""
    import yaml

    documents = [spec] + ([platform] if platform else [])
    return _header(spec) + yaml.safe_dump_all(documents, sort_keys=True)


def render_json(job: dict, spec: dict, pipeline_root: str | None) -> str:
    """A Vertex AI PipelineJob: the spec plus its runtime config (root, parameter defaults)."""
    job = copy.deepcopy(job)
    job["pipelineSpec"] = spec
    job.pop("labels", None)  # TFX telemetry labels: volatile, and not ours to send
    runtime = job.setdefault("runtimeConfig", {})
    runtime.pop("gcsOutputDirectory", None)
    if pipeline_root:
        runtime["gcsOutputDirectory"] = pipeline_root
    defaults = {
        name: body["defaultValue"]
        for name, body in spec["root"].get("inputDefinitions", {}).get("parameters", {}).items()
        if "defaultValue" in body
    }
    if defaults:
        runtime["parameterValues"] = defaults
    return json.dumps(job, indent=2, sort_keys=True) + "\n"


@dataclass
class LoadedPackage:
    """A compiled package as kfp reads it."""

    path: str
    output_format: str
    pipeline_spec: Any  # pipeline_spec_pb2.PipelineSpec
    platform_spec: Any  # pipeline_spec_pb2.PlatformSpec
    runtime_config: dict = field(default_factory=dict)

    @property
    def parameters(self) -> dict[str, dict]:
        """Root runtime parameters: name -> {'type', 'default' (absent if required)}."""
        from google.protobuf import json_format

        result = {}
        params = self.pipeline_spec.root.input_definitions.parameters
        for name, param in params.items():
            entry = {"type": param.parameter_type}
            if param.HasField("default_value"):
                entry["default"] = json_format.MessageToDict(param.default_value)
            result[name] = entry
        return result


def load_package(path: str) -> LoadedPackage:
    """Loads a package with kfp's own loader (the one ``kfp.Client`` submits with).

    YAML goes through ``kfp.client.client._extract_pipeline_yaml`` (PipelineSpec + PlatformSpec,
    strict proto parsing); JSON is parsed as a Vertex ``PipelineJob``.

    Raises:
      ConfigError: the file is missing or is not a valid KFP package.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"pipeline package {path!r} does not exist: run `tfxopt compile` first.")
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    try:
        if path.endswith(".json"):
            with open(path) as f:
                job_dict = json.load(f)
            job = pipeline_spec_pb2.PipelineJob()
            json_format.ParseDict(job_dict, job)
            spec = pipeline_spec_pb2.PipelineSpec()
            json_format.ParseDict(job_dict.get("pipelineSpec", {}), spec)
            platform = pipeline_spec_pb2.PlatformSpec()
            runtime = job_dict.get("runtimeConfig", {})
            fmt = "json"
        else:
            from kfp.client import client as kfp_client

            doc = kfp_client._extract_pipeline_yaml(path)
            spec, platform, runtime, fmt = doc.pipeline_spec, doc.platform_spec, {}, "yaml"
    except Exception as e:  # yaml, json and protobuf each raise their own error types
        raise ConfigError(
            f"{path!r} is not a valid KFP pipeline package ({type(e).__name__}: {e}); "
            "compile it again with `tfxopt compile`."
        ) from None
    if not spec.root.dag.tasks:
        raise ConfigError(
            f"{path!r} holds no pipeline (no tasks): compile it with `tfxopt compile`."
        )
    return LoadedPackage(path, fmt, spec, platform, runtime)


def executor_classes(spec: dict) -> dict[str, str]:
    """Executor label -> ``--executor_class_path`` of every container step."""
    result = {}
    for label, executor in spec["deploymentSpec"]["executors"].items():
        args = executor.get("container", {}).get("args", [])
        if "--executor_class_path" in args:
            result[label] = args[args.index("--executor_class_path") + 1]
    return result
