"""OpenSSF Model Signing (OMS) bundles for a model file or directory, and their verification.

A bundle is a Sigstore bundle (``application/vnd.dev.sigstore.bundle.v0.3+json``) holding a DSSE
envelope over an in-toto statement whose predicate (``https://model_signing/signature/v1.0``) lists
the file's sha256 (resource ``"."``, the model_signing library's name for a single-file model),
signed with ECDSA P-256 / SHA-256 and naming the key by the hint ``sha256(public key PEM)``. This is
what ``model_signing sign key`` writes, and ``model_signing verify key --signature <bundle>
--public_key <pem> <file>`` accepts it (tests/test_ota_tuf.py checks that with the library itself).

model_signing 1.x signs with elliptic-curve keys only, so the OMS key is an ECDSA P-256 key derived
from the pipeline's Ed25519 seed (HKDF-SHA256): one secret in the key file or variable, as before.
The statement's predicate carries ``tfxopt_gate``: the gate's verdict (candidate, metric, drop,
latency) the model was shipped on; v1.0 verifiers ignore fields they do not know.

We write the bundle here rather than through ``model_signing``'s API because that package needs
sigstore 4, tuf >= 6 and urllib3 2, which the pinned stack (kfp 2.5: urllib3 < 2) cannot import.
Standard library plus ``cryptography``, so devices can verify too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from components.common.errors import ConfigError
from components.pusher.signing import SignatureVerificationError

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
GATE_FIELD = "tfxopt_gate"
_HKDF_INFO = b"tfxopt model-signing ecdsa-p256 v1"
MAX_BUNDLE_BYTES = 1 << 20


def derive_signing_key(ed25519_private_key):
    """The OMS ECDSA P-256 private key derived from the pipeline's Ed25519 key (deterministic)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    seed = ed25519_private_key.private_bytes_raw()
    material = HKDF(hashes.SHA256(), 48, salt=None, info=_HKDF_INFO).derive(seed)
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 n
    scalar = int.from_bytes(material, "big") % (order - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def public_key_pem(ec_public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return ec_public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def statement(name: str, resources: list[tuple[str, str]], gate: dict | None = None) -> dict:
    """The in-toto statement model_signing writes, plus the gate's verdict.

    Args:
      name: the model's name (the file's, or the directory's).
      resources: (path relative to the model, sha256) of every file; ``"."`` for a single file.
      gate: the gate's verdict, or None.
    """
    resources = sorted(resources)
    joined = b"".join(bytes.fromhex(sha) for _, sha in resources)
    subject_digest = hashlib.sha256(joined).hexdigest()
    predicate = {
        "serialization": {
            "method": "files",
            "hash_type": "sha256",
            "allow_symlinks": False,
            "ignore_paths": [".github", ".gitattributes", ".gitignore", ".git"],
        },
        "resources": [
            {"name": path, "algorithm": "sha256", "digest": sha} for path, sha in resources
        ],
    }
    if gate:
        predicate[GATE_FIELD] = gate
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": subject_digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def sign_file(ec_private_key, file_name: str, file_sha256: str, gate: dict | None = None) -> bytes:
    """A Sigstore bundle (JSON bytes) signing one model file and the gate's verdict."""
    return sign_statement(ec_private_key, statement(file_name, [(".", file_sha256)], gate))


def sign_directory(ec_private_key, name: str, files: list[dict], gate: dict | None = None) -> bytes:
    """A bundle signing a model directory (e.g. a SavedModel version): ``files`` are its
    ``{path, sha256}`` (paths relative, ``/``-separated), every regular file in it."""
    resources = [(f["path"].replace("\\", "/"), f["sha256"]) for f in files]
    return sign_statement(ec_private_key, statement(name, resources, gate))


def sign_statement(ec_private_key, statement_doc: dict) -> bytes:
    """A Sigstore v0.3 bundle: DSSE envelope, ECDSA P-256 over the statement."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    payload = json.dumps(statement_doc, indent=2, sort_keys=True).encode()
    signature = ec_private_key.sign(_pae(payload), ec.ECDSA(hashes.SHA256()))
    hint = hashlib.sha256(public_key_pem(ec_private_key.public_key())).hexdigest()
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    return (json.dumps(bundle, indent=2) + "\n").encode()


def load_public_key(pem: bytes | str, where: str):
    """An ECDSA P-256 public key from PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: not a readable PEM public key ({e}).") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"{where}: not an ECDSA P-256 public key (the OMS key).")
    return key


def verify_bundle(bundle_bytes: bytes, ec_public_key, file_sha256: str) -> dict:
    """Checks a bundle as ``model_signing verify key`` does, for one file; returns the predicate.

    Raises:
      SignatureVerificationError: naming the failed check (malformed, other key, bad signature,
        another file's digest).
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from components.pusher import safe_json

    try:
        bundle = safe_json.loads(bundle_bytes, "OMS bundle", MAX_BUNDLE_BYTES)
        envelope = bundle["dsseEnvelope"]
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        payload_type = envelope["payloadType"]
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as e:
        raise SignatureVerificationError(f"OMS bundle is malformed ({type(e).__name__})") from None
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE or payload_type != PAYLOAD_TYPE:
        raise SignatureVerificationError("OMS bundle is not a v0.3 DSSE in-toto bundle")
    if hint != hashlib.sha256(public_key_pem(ec_public_key)).hexdigest():
        raise SignatureVerificationError("OMS bundle was signed by another key")
    try:
        ec_public_key.verify(signature, _pae(payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureVerificationError("OMS bundle signature does not verify") from None
    try:
        statement_doc = safe_json.loads(payload, "OMS statement", MAX_BUNDLE_BYTES)
        predicate = statement_doc["predicate"]
        resources = predicate["resources"]
        subject = statement_doc["subject"][0]["digest"]["sha256"]
        ok_type = statement_doc["predicateType"] == PREDICATE_TYPE
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise SignatureVerificationError(
            f"OMS statement is malformed ({type(e).__name__})"
        ) from None
    digests = [r.get("digest") for r in resources if isinstance(r, dict)]
    joined = hashlib.sha256(b"".join(bytes.fromhex(d) for d in digests if _is_hex(d)))
    if not ok_type or digests != [file_sha256] or subject != joined.hexdigest():
        raise SignatureVerificationError("OMS statement does not sign this model file")
    return predicate


def _is_hex(value) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )
