"""The pipeline's Ed25519 OTA key: generate, load (file or environment variable), key ids.

The key signs the TUF metadata of OTA channels (through securesystemslib, ``tuf_repo.signer_for``)
and, derived to ECDSA P-256, their OMS bundles (``oms.derive_signing_key``).
:func:`verify_manifest` and :func:`signature_entry` are the retired ``manifest.json`` format's,
kept for ``tfxopt ota-migrate``. Only the standard library and ``cryptography`` are imported.

Key formats accepted everywhere: PEM (``-----BEGIN PRIVATE KEY-----`` PKCS8 /
``-----BEGIN PUBLIC KEY-----`` SubjectPublicKeyInfo), or the raw 32 bytes in base64 or hex (what a
Kubernetes secret or a CI variable most easily holds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from components.common.errors import ConfigError, TfxOptError

ALGORITHM = "ed25519"
SIGNATURES_FORMAT = "tfxopt.ota.signatures/1"


class SignatureVerificationError(TfxOptError):
    """A manifest, its signature or a file failed a check; the reason says which."""


def generate_private_key():
    """A new random Ed25519 private key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def private_key_pem(private_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _raw_public(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key) -> str:
    """A short stable id of a public key: the first 16 hex digits of sha256(raw key)."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def write_keypair(private_path: str, public_path: str | None = None) -> str:
    """Generates a key pair, writes the private key (mode 0600) and public key as PEM.

    Returns:
      The key id.
    Raises:
      ConfigError: when ``private_path`` exists already (keys are never overwritten).
    """
    if os.path.exists(private_path):
        raise ConfigError(f"{private_path} exists: refusing to overwrite a signing key.")
    public_path = public_path or private_path + ".pub"
    key = generate_private_key()
    os.makedirs(os.path.dirname(os.path.abspath(private_path)), exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
    with open(public_path, "wb") as f:
        f.write(public_key_pem(key.public_key()))
    return key_id(key.public_key())


def _raw_32(text: str) -> bytes | None:
    text = text.strip()
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            raw = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(raw) == 32:
            return raw
    return None


def parse_private_key(data: bytes | str, where: str):
    """An Ed25519 private key from PEM or base64/hex raw bytes; ``where`` names the source."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if "BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as e:
            raise ConfigError(
                f"{where}: not a readable unencrypted PEM private key ({e})."
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(
                f"{where}: the key is {type(key).__name__}, not Ed25519; create one with "
                "`tfxopt ota-keygen`."
            )
        return key
    raw = _raw_32(text)
    if raw is None:
        raise ConfigError(
            f"{where}: not an Ed25519 private key (expected PEM, or the 32-byte seed in base64 or "
            "hex); create one with `tfxopt ota-keygen`."
        )
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_private_key(path: str | None = None, env: str | None = None):
    """Loads the signing key from a file or an environment variable (checked before any push).

    Raises:
      ConfigError: naming the path or variable when it is missing, unreadable or malformed.
    """
    if path:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ConfigError(
                f"signing_key_path {path!r} cannot be read ({e.strerror}); create a key with "
                "`tfxopt ota-keygen` or mount the secret there."
            ) from None
        return parse_private_key(data, f"signing_key_path {path!r}")
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"signing_key_env: environment variable {env} is not set or empty; put the "
                "private key (PEM or base64 seed) in it."
            )
        return parse_private_key(value, f"signing_key_env {env}")
    raise ConfigError("no signing key: set signing_key_path or signing_key_env.")


def load_private_keys(
    path: str | None = None, env: str | None = None, extra_paths=(), extra_envs=()
) -> list:
    """The signing key and the extra keys of a threshold, primary first (checked before any push).

    Raises:
      ConfigError: naming the field and the path or variable of a key that is missing,
        unreadable or malformed, or of a key given twice (a threshold counts distinct keys).
    """
    keys = [(None, load_private_key(path, env))]
    for field, sources in (
        ("extra_signing_key_paths", [(p, None) for p in extra_paths]),
        ("extra_signing_key_envs", [(None, e) for e in extra_envs]),
    ):
        for i, (p, e) in enumerate(sources):
            try:
                keys.append((f"{field}.{i}", load_private_key(p, e)))
            except ConfigError as err:
                raise ConfigError(f"{field}.{i}: {err}") from None
    seen = {}
    for where, key in keys:
        kid = key_id(key.public_key())
        if kid in seen:
            first = seen[kid] or "the signing key"
            raise ConfigError(
                f"{where}: key {kid} is the same key as {first}; a threshold counts distinct "
                "keys: give each key once"
            )
        seen[kid] = where
    return [key for _, key in keys]


def parse_public_key(data: bytes | str, where: str):
    """An Ed25519 public key from PEM or base64/hex raw bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if "BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: not a readable PEM public key ({e}).") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{where}: the key is {type(key).__name__}, not Ed25519.")
        return key
    raw = _raw_32(text)
    if raw is None:
        raise ConfigError(f"{where}: not an Ed25519 public key (PEM, or 32 bytes base64/hex).")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key(path: str):
    """Loads a trusted public key file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"public key {path!r} cannot be read ({e.strerror}).") from None
    return parse_public_key(data, f"public key {path!r}")


def trusted_keys(public_keys) -> dict:
    """{key id: public key} for an iterable of public keys."""
    return {key_id(k): k for k in public_keys}


def signature_entry(private_key, manifest_bytes: bytes, sequence: int) -> dict:
    """One detached signature over the exact manifest bytes."""
    return {
        "key_id": key_id(private_key.public_key()),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "sequence": sequence,
        "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"),
    }


def verify_manifest(manifest_bytes: bytes, signatures: dict, trusted: dict) -> str:
    """Checks that a trusted key signed exactly ``manifest_bytes``.

    Args:
      manifest_bytes: the manifest as fetched, byte for byte.
      signatures: the parsed ``manifest.json.sig`` document.
      trusted: {key id: Ed25519PublicKey}.

    Returns:
      The id of the key whose signature verified.
    Raises:
      SignatureVerificationError: saying why (unsigned, tampered, unknown key, bad signature).
    """
    from cryptography.exceptions import InvalidSignature

    if not trusted:
        raise SignatureVerificationError("no trusted public key configured: refusing any manifest")
    if not isinstance(signatures, dict) or signatures.get("algorithm") != ALGORITHM:
        raise SignatureVerificationError("signature file is missing, malformed or not ed25519")
    entries = signatures.get("signatures")
    if not isinstance(entries, list) or not entries:
        raise SignatureVerificationError(
            "manifest is unsigned (no signatures in manifest.json.sig)"
        )
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    for_this = [e for e in entries if isinstance(e, dict) and e.get("manifest_sha256") == digest]
    if not for_this:
        raise SignatureVerificationError(
            "no signature covers this manifest's bytes (the manifest was altered, or it is unsigned)"
        )
    untrusted, invalid = [], []
    for entry in for_this:
        kid = entry.get("key_id")
        key = trusted.get(kid)
        if key is None:
            untrusted.append(str(kid))
            continue
        try:
            key.verify(base64.b64decode(str(entry.get("signature", ""))), manifest_bytes)
            return kid
        except (InvalidSignature, binascii.Error, ValueError):
            invalid.append(str(kid))
    if invalid:
        raise SignatureVerificationError(
            f"signature by key {', '.join(invalid)} does not verify over the manifest bytes"
        )
    raise SignatureVerificationError(
        f"manifest signed only by untrusted key(s) {', '.join(untrusted)} "
        f"(trusted: {', '.join(sorted(trusted))})"
    )
