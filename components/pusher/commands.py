"""``tfxopt promote``, ``rollback``, ``ota-check``, ``ota-keygen``, ``ota-migrate`` and
``ota-rotate-key``.

Nothing heavy is imported here at module level: ``register`` only builds argparse parsers, and
``ota-check`` never imports TensorFlow (it is the device-side client).
"""

from __future__ import annotations

import argparse
import json

DEFAULT_KEY_ENV = "TFXOPT_OTA_SIGNING_KEY"


def _add_signing_args(parser: argparse.ArgumentParser, extra: bool = False) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--signing-key-path", help="Ed25519 private key file (PEM or base64 seed)")
    group.add_argument(
        "--signing-key-env",
        help=f"environment variable holding the private key (default {DEFAULT_KEY_ENV})",
    )
    if extra:
        parser.add_argument(
            "--extra-signing-key-path",
            action="append",
            default=[],
            metavar="PATH",
            help="one more private key that signs too, for roles with a threshold above 1 "
            "(e.g. 2 of 2); repeatable",
        )
        parser.add_argument(
            "--extra-signing-key-env",
            action="append",
            default=[],
            metavar="VAR",
            help="an environment variable holding one more such key; repeatable",
        )
    parser.add_argument("--expires-in-days", type=float, default=30.0)


def _add_trust_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="PUBLIC_KEY",
        help="a public key the old manifests may be signed by; repeatable",
    )


class _NoTrust(argparse.Action):
    """``--trust`` on promote / rollback / ota-rotate-key: refused with the reason, before
    anything is read (it was accepted and ignored there)."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            "--trust applies to `tfxopt ota-migrate` only (old manifest.json channels); this "
            "command trusts the TUF repository's own root.json, never a key given on the command "
            "line: drop --trust (to change the repository's keys use `tfxopt ota-rotate-key`)"
        )


def _refuse_trust(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust", action=_NoTrust, help=argparse.SUPPRESS)


def _signing_keys(args) -> list:
    """The signing key, then the extra keys (``--extra-signing-key-*``), each once."""
    from components.pusher import signing

    return signing.load_private_keys(
        args.signing_key_path,
        None if args.signing_key_path else (args.signing_key_env or DEFAULT_KEY_ENV),
        getattr(args, "extra_signing_key_path", []),
        getattr(args, "extra_signing_key_env", []),
    )


def _signing_key(args):
    return _signing_keys(args)[0]


def _trusted(args) -> list:
    from components.pusher import signing

    return [signing.load_public_key(p) for p in args.trust]


def _print_ota(result) -> None:
    state = "published" if result.created else "already live (no new manifest)"
    print(
        f"{result.action}: {result.model_name}/{result.channel} sequence {result.sequence}, "
        f"model version {result.model_version}, signed by {result.key_id}: {state}\n"
        f"  {result.manifest_path}"
    )


def promote(args) -> int:
    """Publishes a channel's live release on another channel (or moves a serving label)."""
    if args.serving:
        from components.pusher import serving

        version = serving.promote_label(args.base, args.model_name, args.from_, args.to)
        print(
            f"promote: {args.model_name} label {args.to!r} -> version {version} (was {args.from_!r})"
        )
        return 0
    from components.pusher import ota

    key, *extra = _signing_keys(args)
    result = ota.promote(
        args.base,
        args.model_name,
        args.from_,
        args.to,
        key,
        rollout_percentage=args.rollout_percentage,
        expires_in_days=args.expires_in_days,
        min_app_version=args.min_app_version,
        extra_signing_keys=extra,
    )
    _print_ota(result)
    return 0


def rollback(args) -> int:
    """Points a channel (or a serving label) back at its previous release."""
    if args.serving:
        from components.pusher import serving

        version = serving.rollback_label(args.base, args.model_name, args.channel)
        print(f"rollback: {args.model_name} label {args.channel!r} -> version {version}")
        return 0
    from components.pusher import ota

    key, *extra = _signing_keys(args)
    result = ota.rollback(
        args.base,
        args.model_name,
        args.channel,
        key,
        rollout_percentage=args.rollout_percentage,
        expires_in_days=args.expires_in_days,
        extra_signing_keys=extra,
    )
    _print_ota(result)
    return 0


def ota_check(args) -> int:
    """Device side: check a channel once; exit 0, or 1 with one line giving the reason a check failed.

    The expected model and channel are the location's last two segments unless ``--model-name`` /
    ``--channel`` say otherwise.
    """
    from components.common.errors import ConfigError
    from components.pusher import signing
    from components.pusher.ota_client import DeviceClient

    try:
        client = DeviceClient(
            args.device_dir,
            [signing.load_public_key(p) for p in args.public_key],
            device_id=args.device_id,
            app_version=args.app_version,
            model_name=args.model_name,
            timeout_s=args.timeout,
            trusted_root=args.trusted_root,
        )
    except ConfigError as e:
        print(f"ota-check: rejected: {e}")
        return 1
    result = client.check(args.location, channel=args.channel)  # never raises
    print(f"ota-check: {result.status}: {result.reason}")
    if not result.ok:
        return 1  # one line: the reason
    if result.sequence is not None:
        print(f"  sequence {result.sequence}, model version {result.model_version}")
    if result.gate:
        print(f"  gate verdict (OMS-signed): {json.dumps(result.gate, sort_keys=True)}")
    print(f"  device model: {client.current_model_path() or 'none yet'}")
    return 0


def ota_migrate(args) -> int:
    """Publishes channels still in the old manifest format into the TUF repository, once."""
    from components.pusher import ota_legacy

    done = ota_legacy.migrate(
        args.base,
        _signing_key(args),
        trusted_public_keys=_trusted(args),
        expires_in_days=args.expires_in_days,
    )
    for result in done:
        _print_ota(result)
    print(
        f"ota-migrate: {len(done)} channel(s) published as TUF targets. The manifest.json format "
        "is deprecated: its files stay for devices on the old client until they update; new "
        "clients read metadata/."
    )
    return 0


def ota_rotate_key(args) -> int:
    """Replaces the repository's keys: a new root signed by the old and the new key."""
    from components.pusher import signing, tuf_repo

    old_keys = _signing_keys(args)
    old = old_keys[0]
    new = signing.load_private_key(path=args.new_signing_key_path)
    version = tuf_repo.rotate_keys(
        args.base,
        [tuf_repo.signer_for(k) for k in old_keys],
        [tuf_repo.signer_for(new)],
        expires_in_days=args.expires_in_days,
    )
    print(
        f"ota-rotate-key: root version {version} trusts key {signing.key_id(new.public_key())} "
        f"(signed by it and by {signing.key_id(old.public_key())}); devices follow on their next "
        "check"
    )
    return 0


def ota_keygen(args) -> int:
    """Creates the Ed25519 key pair that signs OTA channels (TUF roles and OMS bundles)."""
    from components.pusher import oms, signing

    key_id = signing.write_keypair(args.private_key, args.public_key)
    public = args.public_key or args.private_key + ".pub"
    oms_public = args.private_key + ".oms.pub"
    ec_key = oms.derive_signing_key(signing.load_private_key(path=args.private_key))
    with open(oms_public, "wb") as f:
        f.write(oms.public_key_pem(ec_key.public_key()))
    print(
        f"ota-keygen: key id {key_id}\n  private: {args.private_key} (keep secret)\n  public: "
        f"{public} (TUF; pin it with ota-check --public-key)\n  model-signing public key: "
        f"{oms_public} (ECDSA P-256 derived from the same secret; `model_signing verify key`)"
    )
    return 0


def register(subparsers) -> None:
    """Adds the OTA and label subcommands to a subparsers object."""
    p = subparsers.add_parser(
        "promote",
        help="publish an OTA channel's live release on another channel (or move a serving label)",
    )
    p.add_argument("base", help="OTA base directory (with --serving: the serving repository)")
    p.add_argument("model_name")
    p.add_argument("--from", dest="from_", required=True, help="source channel (or label)")
    p.add_argument("--to", required=True, help="target channel (or label)")
    p.add_argument("--serving", action="store_true", help="move a TF Serving version label")
    p.add_argument("--rollout-percentage", type=float, default=100.0)
    p.add_argument("--min-app-version", help="default: the source manifest's")
    _add_signing_args(p, extra=True)
    _refuse_trust(p)
    p.set_defaults(func=promote)

    r = subparsers.add_parser(
        "rollback", help="point an OTA channel (or a serving label) back at its previous release"
    )
    r.add_argument("base", help="OTA base directory (with --serving: the serving repository)")
    r.add_argument("model_name")
    r.add_argument("--channel", required=True, help="channel (or, with --serving, label)")
    r.add_argument("--serving", action="store_true", help="roll back a TF Serving version label")
    r.add_argument("--rollout-percentage", type=float, default=100.0)
    _add_signing_args(r, extra=True)
    _refuse_trust(r)
    r.set_defaults(func=rollback)

    c = subparsers.add_parser(
        "ota-check", help="device client: fetch, verify and install a channel's model"
    )
    c.add_argument("location", help="channel URL (http[s]://.../<model>/<channel>) or directory")
    c.add_argument(
        "--public-key",
        action="append",
        default=[],
        help="pinned public key: the repository's root.json is trusted on first contact only "
        "when signed by it; repeatable",
    )
    c.add_argument(
        "--trusted-root",
        help="the repository's root.json shipped with the app (TUF's trust anchor)",
    )
    c.add_argument("--device-dir", required=True, help="where the device keeps its models")
    c.add_argument("--device-id", help="rollout id (default: generated once in --device-dir)")
    c.add_argument("--app-version", default="0", help="compared with min_app_version")
    c.add_argument("--channel", help="expected channel (default: the location's last segment)")
    c.add_argument(
        "--model-name",
        help="expected model (default: the segment before the channel in the location); "
        "manifests for any other model are refused",
    )
    c.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    c.set_defaults(func=ota_check)

    k = subparsers.add_parser("ota-keygen", help="create an Ed25519 key pair for OTA manifests")
    k.add_argument("private_key", help="path of the private key to create (mode 0600)")
    k.add_argument("--public-key", help="path of the public key (default: PRIVATE_KEY.pub)")
    k.set_defaults(func=ota_keygen)

    m = subparsers.add_parser(
        "ota-migrate", help="publish channels in the old manifest.json format as TUF targets"
    )
    m.add_argument("base", help="OTA base directory")
    _add_signing_args(m)
    _add_trust_arg(m)
    m.set_defaults(func=ota_migrate)

    rk = subparsers.add_parser(
        "ota-rotate-key", help="replace the OTA repository's signing key (a new TUF root)"
    )
    rk.add_argument("base", help="OTA base directory")
    rk.add_argument("--new-signing-key-path", required=True, help="the new Ed25519 private key")
    _add_signing_args(rk, extra=True)
    _refuse_trust(rk)
    rk.set_defaults(func=ota_rotate_key)
