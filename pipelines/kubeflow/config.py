"""The ``kubeflow:`` section of the pipeline config: image, pipeline root and per-step Kubernetes settings.

Steps are matched by node id (``ExampleGen``, ``BaselineProfiler``, ...) with shell-style patterns, so
the settings keep working as the pipeline grows: ``"*Profiler"`` pins every latency measurement to the
target-hardware node pool, ``"Distiller"`` asks for a GPU. A pattern that matches no step of the
compiled pipeline is an error at compile time (a typo would otherwise be silently ignored).

Example::

    kubeflow:
      image: europe-docker.pkg.dev/my-project/ml/tfx-optimize:0.1.0
      pipeline_root: gs://my-bucket/tfxopt/root
      examples_uri: gs://my-bucket/data/digits/examples
      defaults: {cpu_request: 1, memory_request_gb: 2, memory_limit_gb: 4}
      steps:
        "*Profiler": {node_selector: {cloud.google.com/gke-nodepool: target-hw}, cpu_limit: 2}
        Distiller:
          gpu_count: 1
          tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      signing_key: {secret_name: tfxopt-ota-signing-key, steps: ["*Pusher*"]}
"""

from __future__ import annotations

import posixpath
import re
from typing import Literal

import pydantic

from components.common.config import StrictModel

# Kubernetes object names (DNS-1123 subdomain) and label keys/values, checked here so that a bad
# value fails at compile time instead of when the KFP driver builds the pod.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^({_DNS_SUBDOMAIN.pattern[1:-1]}/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# What KFP's own launcher and the TFX entrypoint set; a step must not override them.
_RESERVED_ENV = {"TF_USE_LEGACY_KERAS", "KFP_POD_NAME", "KFP_POD_UID", "ML_PIPELINE_SERVICE_HOST"}


def _check_name(value: str, what: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(f"{what} {value!r} is not a valid Kubernetes name (lower-case DNS-1123)")
    return value


class Toleration(StrictModel):
    """A Kubernetes toleration (e.g. for a tainted GPU node pool)."""

    key: str = pydantic.Field("", description="Taint key; empty with operator Exists: any taint.")
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.key and not _LABEL_KEY.match(self.key):
            raise ValueError(f"toleration key {self.key!r} is not a valid Kubernetes key")
        return self


class PvcMount(StrictModel):
    """A PersistentVolumeClaim mounted into a step (e.g. the serving repository on a local cluster)."""

    pvc_name: str
    mount_path: str = pydantic.Field(..., pattern=r"^/.+")

    @pydantic.field_validator("pvc_name")
    @classmethod
    def _pvc_name(cls, value: str) -> str:
        return _check_name(value, "pvc_name")


class StepSettings(StrictModel):
    """Kubernetes settings of one pipeline step (every field optional: unset means cluster default).

    CPU is in cores and memory in GB (10^9 bytes), the units of KFP's ``PipelineContainerSpec``.
    """

    cpu_request: float | None = pydantic.Field(None, gt=0, le=1024, description="Cores.")
    cpu_limit: float | None = pydantic.Field(None, gt=0, le=1024, description="Cores.")
    memory_request_gb: float | None = pydantic.Field(None, gt=0, le=16_384)
    memory_limit_gb: float | None = pydantic.Field(None, gt=0, le=16_384)
    gpu_count: int | None = pydantic.Field(
        None, ge=0, le=16, description="Accelerators for the step (0: none)."
    )
    gpu_type: str | None = pydantic.Field(
        None,
        min_length=1,
        description="Accelerator resource: 'nvidia.com/gpu' on Kubeflow Pipelines; a Vertex "
        "accelerator type (e.g. NVIDIA_TESLA_T4) on Vertex AI Pipelines. Default nvidia.com/gpu.",
    )
    node_selector: dict[str, str] = pydantic.Field(
        default_factory=dict, description="Node labels the step's pod must match."
    )
    tolerations: list[Toleration] = pydantic.Field(default_factory=list)
    env: dict[str, str] = pydantic.Field(
        default_factory=dict, description="Plain (non-secret) environment variables."
    )
    volumes: list[PvcMount] = pydantic.Field(
        default_factory=list, description="PersistentVolumeClaims to mount."
    )

    @pydantic.field_validator("node_selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if not _LABEL_KEY.match(key):
                raise ValueError(f"node_selector key {key!r} is not a valid Kubernetes label key")
            if not _LABEL_VALUE.match(label):
                raise ValueError(f"node_selector value {label!r} is not a valid label value")
        return value

    @pydantic.field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"env name {name!r} is not a valid environment variable name")
            if name in _RESERVED_ENV:
                raise ValueError(f"env {name} is set by the image or by KFP; do not override it")
        return value

    @pydantic.model_validator(mode="after")
    def _requests_within_limits(self) -> StepSettings:
        if self.cpu_request and self.cpu_limit and self.cpu_request > self.cpu_limit:
            raise ValueError(f"cpu_request {self.cpu_request} exceeds cpu_limit {self.cpu_limit}")
        if (
            self.memory_request_gb
            and self.memory_limit_gb
            and self.memory_request_gb > self.memory_limit_gb
        ):
            raise ValueError(
                f"memory_request_gb {self.memory_request_gb} exceeds memory_limit_gb "
                f"{self.memory_limit_gb}"
            )
        return self

    def merged(self, override: StepSettings) -> StepSettings:
        """``self`` with every field ``override`` sets replacing it (maps are merged by key)."""
        data = self.model_dump()
        for name in override.model_fields_set:
            value = getattr(override, name)
            if name in ("node_selector", "env"):
                data[name] = {**data[name], **value}
            elif name in ("tolerations", "volumes"):
                data[name] = [*data[name], *(item.model_dump() for item in value)]
            else:
                data[name] = value
        return StepSettings.model_validate(data)

    def is_empty(self) -> bool:
        return self == StepSettings()


class SigningKeySecret(StrictModel):
    """The Kubernetes Secret holding the OTA signing key: referenced by name, never inlined.

    With ``expose_as: file`` (default) the secret is mounted read-only at ``mount_path`` in the matching
    steps, so the Pusher reads it with ``signing_key_path: <mount_path>/<secret_key>``; with
    ``expose_as: env`` the key is put in ``env_var`` (``signing_key_env``).
    """

    secret_name: str = pydantic.Field("tfxopt-ota-signing-key", description="Secret name.")
    secret_key: str = pydantic.Field("private_key.pem", description="Key inside the Secret.")
    expose_as: Literal["file", "env"] = "file"
    mount_path: str = pydantic.Field("/var/run/secrets/tfxopt/signing", pattern=r"^/.+")
    env_var: str = pydantic.Field(
        "TFXOPT_OTA_SIGNING_KEY",
        pattern=_ENV_NAME.pattern,
        description="With expose_as env: the variable (the Pusher's signing_key_env, and what "
        "tfxopt promote/rollback read by default).",
    )
    steps: list[str] = pydantic.Field(
        default_factory=lambda: ["*Pusher*"],
        min_length=1,
        description="Patterns of the steps that sign (only those see the key).",
    )

    @pydantic.field_validator("secret_name")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        return _check_name(value, "secret_name")

    @pydantic.field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str) -> str:
        if not _SECRET_KEY.match(value):
            raise ValueError(f"secret_key {value!r} may hold only letters, digits, '-', '_', '.'")
        return value

    @property
    def file_path(self) -> str:
        """Where the key file appears inside a step (``expose_as: file``)."""
        return posixpath.join(self.mount_path, self.secret_key)


class KubeflowConfig(StrictModel):
    """How the pipeline is compiled for, and submitted to, Kubeflow Pipelines (or Vertex AI)."""

    image: str = pydantic.Field(
        "tfx-optimize:0.1.0",
        min_length=1,
        description="Component image (k8s/Dockerfile) every step runs in.",
    )
    pipeline_root: str | None = pydantic.Field(
        None,
        description="Default root for the artifacts of a run (gs://... ; TFX executors read and write "
        "artifact URIs with tf.io.gfile). Each run may override it; None: the cluster default.",
    )
    examples_uri: str | None = pydantic.Field(
        None, description="Default of the examples_uri runtime parameter (None: required per run)."
    )
    output_format: Literal["yaml", "json"] = pydantic.Field(
        "yaml",
        description="yaml: a PipelineSpec for Kubeflow Pipelines; json: a PipelineJob for Vertex AI.",
    )
    experiment: str = pydantic.Field("tfxopt", min_length=1, description="KFP experiment of runs.")
    service_account: str | None = pydantic.Field(
        None, description="Kubernetes service account the runs' pods use (None: KFP's default)."
    )
    defaults: StepSettings = pydantic.Field(
        default_factory=StepSettings, description="Applied to every container step."
    )
    steps: dict[str, StepSettings] = pydantic.Field(
        default_factory=dict,
        description="Step id or shell pattern -> settings over the defaults (in file order).",
    )
    signing_key: SigningKeySecret | None = pydantic.Field(
        None, description="The OTA signing key Secret (None: no step gets a key)."
    )

    @pydantic.field_validator("service_account")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        return None if value is None else _check_name(value, "service_account")

    def settings_for(self, step_id: str) -> StepSettings:
        """The merged settings of one step: the defaults, then each matching pattern in order."""
        import fnmatch

        settings = self.defaults
        for pattern, override in self.steps.items():
            if fnmatch.fnmatchcase(step_id, pattern):
                settings = settings.merged(override)
        return settings
