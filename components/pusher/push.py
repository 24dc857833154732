"""One push of a blessed model to every configured destination (no TFX in here)."""

from __future__ import annotations

import logging
import shutil

from components.common import model_io
from components.common.errors import ConfigError
from components.pusher import ota, serving, signing, storage
from components.pusher.config import PusherConfig

log = logging.getLogger(__name__)


def preflight(model_uri: str, config: PusherConfig) -> dict:
    """Everything that can fail cheaply, checked before any byte is written anywhere.

    The OTA keys are loaded (the signing key and the extra keys of a threshold) and, where the
    destination's repository exists, checked against its roles: a missing, unreadable, malformed
    or wrong key, or too few keys for a threshold, fails here, before the serving push too.

    Returns:
      {"saved_model_dir": str or None, "signing_keys": [private key per OTA destination],
       "extra_signing_keys": [[more keys] per OTA destination]}.
    Raises:
      ModelInputError / ConfigError: naming the model path or the config field.
    """
    saved_model_dir = None
    # A TFLite-only model may go to OTA channels; serving (or a conversion) needs the SavedModel.
    if config.serving or not model_io.tflite_path(model_uri):
        saved_model_dir = model_io.validate_saved_model(model_uri, require_keras=False)
    signing_keys, extra_keys = [], []
    for i, destination in enumerate(config.ota):
        try:
            keys = destination_keys(destination)
            ota.check_signing_keys(destination.base_directory, config.model_name, keys)
        except ConfigError as e:
            raise ConfigError(f"pusher.ota.{i}: {e}") from None
        signing_keys.append(keys[0])
        extra_keys.append(keys[1:])
        if destination.missing_tflite == "refuse" and not model_io.tflite_path(model_uri):
            ota.resolve_tflite(model_uri, "refuse")  # raises the explanatory error
    return {
        "saved_model_dir": saved_model_dir,
        "signing_keys": signing_keys,
        "extra_signing_keys": extra_keys,
    }


def destination_keys(destination) -> list:
    """An OTA destination's private keys: ``signing_key_*`` first, then the extra ones."""
    return signing.load_private_keys(
        destination.signing_key_path,
        destination.signing_key_env,
        destination.extra_signing_key_paths,
        destination.extra_signing_key_envs,
    )


def push_model(
    model_uri: str,
    config: PusherConfig,
    metrics: dict | None = None,
    source: dict | None = None,
) -> dict:
    """Pushes ``model_uri`` to every serving and OTA destination of ``config``.

    Destinations are pushed one after the other; each is atomic and idempotent, so when one fails
    the run fails, and running it again completes the rest without duplicating what was done.

    Returns:
      {"serving": [ServingPush dicts], "ota": [OtaPush dicts], "metrics": ..., "tflite_source": ...}
    """
    checked = preflight(model_uri, config)
    metrics = dict(metrics or {})
    source = {"model_uri": model_uri, **(source or {})}
    record: dict = {"model_name": config.model_name, "metrics": metrics, "serving": [], "ota": []}
    for destination in config.serving:
        result = serving.push_saved_model(
            checked["saved_model_dir"], config.model_name, destination, metrics, source
        )
        log.info("serving push: %s (new: %s)", result.path, result.created)
        entry = result.to_dict()
        if checked["signing_keys"]:  # signed with the pipeline's (first OTA destination's) key
            entry["oms_bundle"] = sign_serving_version(
                result.path, checked["signing_keys"][0], ota.gate_verdict(metrics, source)
            )
        record["serving"].append(entry)
    if config.ota:
        # One flatbuffer for every channel; converted only when the artifact has none.
        how = config.ota[0].missing_tflite
        tflite_path, tflite_source, tmp = ota.resolve_tflite(model_uri, how)
        record["tflite_source"] = tflite_source
        try:
            for destination, key, extra in zip(
                config.ota, checked["signing_keys"], checked["extra_signing_keys"], strict=True
            ):
                result = ota.push_tflite(
                    tflite_path,
                    config.model_name,
                    destination,
                    signing_key=key,
                    extra_signing_keys=extra,
                    metrics=metrics,
                    source={**source, "tflite_source": tflite_source},
                )
                log.info("ota push: %s sequence %d", result.manifest_path, result.sequence)
                record["ota"].append(result.to_dict())
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
    return record


def sign_serving_version(version_dir: str, signing_key, gate: dict) -> str:
    """Signs a pushed SavedModel version with OMS: ``<model>/signatures/<version>.sig``, beside
    the version (outside it, so TF Serving and ``model_signing verify`` see only the model).

    Written once per version (an existing bundle is kept: it signed these same bytes first).
    """
    from components.pusher import oms

    model_dir, version = version_dir.rstrip("/").rsplit("/", 1)
    bundle_path = storage.join(model_dir, "signatures", f"{version}.sig")
    if not storage.exists(bundle_path):
        _, files = serving.saved_model_digest(version_dir)
        ec_key = oms.derive_signing_key(signing_key)
        name = f"{model_dir.rstrip('/').rsplit('/', 1)[-1]}/{version}"
        storage.atomic_write(bundle_path, oms.sign_directory(ec_key, name, files, gate))
    return bundle_path
