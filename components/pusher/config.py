"""Pusher configuration: where a blessed model goes (serving repositories, OTA channels)."""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from components.common.config import StrictModel

# One set of name rules for the publisher and the device client (standard library only there).
# A serving label follows the channel rule. <base>/<model_name>/releases/ holds the release
# records, so "releases" is no channel.
from components.pusher.ota_fetch import CHANNEL_PATTERN, MODEL_NAME_PATTERN, RESERVED_CHANNELS

VERSION_PATTERN = r"^\d{1,9}(\.\d{1,9}){0,3}$"


class ServingDestination(StrictModel):
    """A TF Serving / KServe model repository: ``<base_directory>/<model_name>/<version>/``."""

    base_directory: str = pydantic.Field(
        ..., min_length=1, description="Repository root: a local path or any tf.io.gfile URL."
    )
    labels: list[str] = pydantic.Field(
        default_factory=lambda: ["canary"],
        description="Version labels pointed at the pushed version. The first push into an empty "
        "repository also gets `stable`, so clients always have a stable version to ask for.",
    )
    keep_last: int | None = pydantic.Field(
        5,
        ge=1,
        le=10_000,
        description="Versions kept on disk (labelled versions and each label's rollback target are "
        "always kept). None keeps every version.",
    )
    server_base_directory: str | None = pydantic.Field(
        None,
        description="The repository root as TF Serving sees it (e.g. `/models` inside its "
        "container); defaults to base_directory.",
    )
    config_file: str | None = pydantic.Field(
        None,
        description="The model_config_list file to write; default `<base_directory>/models.config`.",
    )

    @pydantic.field_validator("labels")
    @classmethod
    def _labels_valid(cls, labels: list[str]) -> list[str]:
        import re

        for label in labels:
            if not re.match(CHANNEL_PATTERN, label):
                raise ValueError(
                    f"label {label!r} must be lower-case letters, digits, '_' or '-' "
                    "(TF Serving label syntax)"
                )
        if len(set(labels)) != len(labels):
            raise ValueError("labels must not repeat")
        return labels


class OtaDestination(StrictModel):
    """An over-the-air channel for devices: ``<base_directory>/<model_name>/<channel>/``."""

    base_directory: str = pydantic.Field(
        ..., min_length=1, description="Channel root: a local path or any tf.io.gfile URL."
    )
    channel: str = pydantic.Field(
        "canary", pattern=CHANNEL_PATTERN, description="e.g. canary, beta."
    )
    rollout_percentage: float = pydantic.Field(
        100.0, ge=0.0, le=100.0, description="Share of devices (by stable hash of id) to update."
    )
    min_app_version: str = pydantic.Field(
        "0", pattern=VERSION_PATTERN, description="Oldest app version that may take this model."
    )
    expires_in_days: float = pydantic.Field(
        30.0, gt=0.0, le=3650.0, description="Devices reject the manifest after this long."
    )
    signing_key_path: str | None = pydantic.Field(
        None, description="Ed25519 private key file (PEM PKCS8, or base64 of the 32-byte seed)."
    )
    signing_key_env: str | None = pydantic.Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the key (e.g. from a Kubernetes secret).",
    )
    extra_signing_key_paths: list[str] = pydantic.Field(
        default_factory=list,
        description="More Ed25519 private key files that sign with the key above, for a "
        "repository whose roles need several signatures (a threshold). A new repository "
        "created by this push needs all the keys given; an existing one, the threshold its "
        "root.json sets.",
    )
    extra_signing_key_envs: list[str] = pydantic.Field(
        default_factory=list,
        description="Environment variables holding more keys (as extra_signing_key_paths).",
    )
    missing_tflite: Literal["convert_float32", "refuse"] = pydantic.Field(
        "convert_float32",
        description="When the model has no Format-TFLite flavour: convert the blessed SavedModel "
        "to float32 TFLite (recorded in the manifest), or refuse the push.",
    )

    @pydantic.field_validator("channel")
    @classmethod
    def _not_reserved(cls, channel: str) -> str:
        if channel in RESERVED_CHANNELS:
            raise ValueError(f"{channel!r} is reserved for the release records; pick another name")
        return channel

    @pydantic.field_validator("extra_signing_key_paths")
    @classmethod
    def _paths_valid(cls, paths: list[str]) -> list[str]:
        if any(not p for p in paths):
            raise ValueError("an extra signing key path is empty")
        if len(set(paths)) != len(paths):
            raise ValueError("extra_signing_key_paths must not repeat (a threshold counts keys)")
        return paths

    @pydantic.field_validator("extra_signing_key_envs")
    @classmethod
    def _envs_valid(cls, names: list[str]) -> list[str]:
        import re

        for name in names:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"{name!r} is not an environment variable name")
        if len(set(names)) != len(names):
            raise ValueError("extra_signing_key_envs must not repeat (a threshold counts keys)")
        return names

    @pydantic.model_validator(mode="after")
    def _one_key_source(self) -> OtaDestination:
        if bool(self.signing_key_path) == bool(self.signing_key_env):
            raise ValueError(
                "set exactly one of signing_key_path or signing_key_env (manifests are always "
                "signed; create a key with `tfxopt ota-keygen`)"
            )
        return self


class PusherConfig(StrictModel):
    """What the Pusher pushes where. At least one destination is required."""

    model_name: str = pydantic.Field(
        ..., pattern=MODEL_NAME_PATTERN, description="Model name in the repository and channels."
    )
    serving: list[ServingDestination] = pydantic.Field(default_factory=list)
    ota: list[OtaDestination] = pydantic.Field(default_factory=list)
    metrics: dict[str, Any] = pydantic.Field(
        default_factory=dict,
        description="Extra key metrics recorded with the push (override those found in the "
        "blessing's evaluation.json).",
    )
    metrics_path: str | None = pydantic.Field(
        None, description="A JSON file of key metrics to record with the push."
    )

    @pydantic.model_validator(mode="after")
    def _has_destination(self) -> PusherConfig:
        if not self.serving and not self.ota:
            raise ValueError("configure at least one destination under `serving` or `ota`")
        return self
