"""The device client under 1,000 seeded mutations: it refuses, or accepts only a valid release.

Mutated: TUF metadata (timestamp, snapshot and the model's role: as bytes, so signatures or the
hashes that pin them no longer match, and re-signed with the trusted key, the snapshot and
timestamp re-signed over them, so the checks after the signatures are reached), the model file,
the OMS bundle (as bytes, and re-signed into the targets metadata so OMS verification is reached),
and the server's replies (a raw socket server on 127.0.0.1 answering one request with something
broken or not HTTP at all). Every check must return a result (no exception escapes
``DeviceClient.check``); every refusal must leave the device directory byte-identical; every
acceptance must install a model file genuinely published on digits/canary and a release naming
that model and channel. Run with ``-s`` to see the counts per mutation kind.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import re
import shutil
import socket
import struct
import threading

import pytest

from components.pusher import ota, signing, tuf_repo
from components.pusher.config import OtaDestination
from components.pusher.ota_client import (
    NOT_ELIGIBLE,
    REJECTED,
    UP_TO_DATE,
    UPDATED,
    DeviceClient,
)
from tests.ota_helpers import device_tree

SEED = 20261130
MODEL, CHANNEL = "digits", "canary"
PREFIX = f"/{MODEL}/{CHANNEL}"
TIMESTAMP = "metadata/timestamp.json"

# (family, kind, how many): 1,000 in all.
PLAN = [
    ("timestamp", "bitflip", 40),
    ("timestamp", "truncate", 20),
    ("timestamp", "nesting", 20),
    ("timestamp", "huge_number", 20),
    ("timestamp", "wrong_type", 20),
    ("snapshot", "bitflip", 30),
    ("snapshot", "truncate", 20),
    ("snapshot", "wrong_type", 30),
    ("role", "bitflip", 40),
    ("role", "truncate", 20),
    ("role", "wrong_type", 20),
    ("signed_role", "wrong_type", 40),
    ("signed_role", "critical", 60),
    ("signed_role", "huge_number", 50),
    ("signed_role", "nesting", 30),
    ("signed_role", "missing_field", 40),
    ("signed_role", "replay", 30),
    ("bundle", "bitflip", 30),
    ("signed_bundle", "bitflip", 70),
    ("signed_bundle", "truncate", 20),
    ("signed_bundle", "wrong_type", 30),
    ("model_file", "bitflip", 30),
    ("model_file", "truncate", 20),
    ("model_file", "extend", 10),
    ("server", "non_http", 30),
    ("server", "garbage", 30),
    ("server", "bad_status", 20),
    ("server", "close", 20),
    ("server", "reset", 20),
    ("server", "long_header", 10),
    ("server", "many_headers", 10),
    ("server", "incomplete_body", 30),
    ("server", "bad_chunked", 20),
    ("server", "http_error", 20),
    ("server", "redirect", 10),
    ("server", "oversize", 10),
    ("server", "tls_mismatch", 10),
    ("server", "silent", 10),
    ("server", "no_length", 10),
]
HASH_PINNED = ("snapshot", "role", "bundle", "model_file")  # every byte change is refused
# The release fields the client acts on: a wrong value is never accepted.
CRITICAL = (
    "format",
    "model_name",
    "channel",
    "sequence",
    "file",
    "min_app_version",
    "rollout_basis_points",
    "oms",
)

WRONG_TYPES = ["null", "true", '"x"', '""', "[]", "{}", "[1, 2]", '{"a": 1}', "1.5", "-1", "0"]
HUGE_NUMBERS = [
    "1" + "0" * 19,
    "9" * 400,
    "9" * 4301,
    "1" + "0" * 100_000,
    "-" + "9" * 50,
    "1e999",
    "-1e999",
    "1e308",
    "1.0e-400",
    "NaN",
    "Infinity",
    "-Infinity",
]
BAD_PATHS = ["../x", "/etc/passwd", "files/../../x", "%2e%2e/x", "files\\x", "", "a//b", "a:b"]


def nested(rng: random.Random) -> str:
    depth = rng.choice([31, 33, 200, 5_000, 200_000])
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


# --- JSON documents with raw text injected at a path ------------------------------------------


def _paths(doc, prefix=()):
    """Every (path) to a value in a JSON document, the document itself included."""
    yield prefix
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def inject(doc, path: tuple, raw: str | None) -> bytes:
    """``doc`` serialised with the value at ``path`` replaced by ``raw`` JSON text (None: removed)."""
    if not path:
        return raw.encode()
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if raw is None:
        del parent[path[-1]]
        return json.dumps(doc, indent=2).encode()
    parent[path[-1]] = "\x00INJECT\x00"
    return json.dumps(doc, indent=2).replace('"\\u0000INJECT\\u0000"', raw).encode()


def mutate_bytes(kind: str, data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data)) :]
    elif kind == "extend":
        data += rng.randbytes(rng.randint(1, 64))
    return bytes(data)


def mutate_document(kind: str, data: bytes, rng: random.Random) -> bytes:
    if kind in ("bitflip", "truncate"):
        return mutate_bytes(kind, data, rng)
    doc = json.loads(data)
    path = rng.choice(list(_paths(doc)))
    if kind == "missing_field":
        path = rng.choice([p for p in _paths(doc) if p and isinstance(p[-1], str)])
        return inject(doc, path, None)
    raw = {
        "nesting": lambda: nested(rng),
        "huge_number": lambda: rng.choice(HUGE_NUMBERS),
        "wrong_type": lambda: rng.choice(WRONG_TYPES),
        "bad_path": lambda: json.dumps(rng.choice(BAD_PATHS)),
    }[kind]()
    if kind == "bad_path":
        path = ("files", 0, "path")
    return inject(doc, path, raw)


# --- a raw socket server: valid HTTP, or one broken reply --------------------------------------


def _http(body: bytes, status: str = "200 OK", headers: str | None = None) -> bytes:
    if headers is None:
        headers = f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    return f"HTTP/1.1 {status}\r\n{headers}\r\n".encode("latin-1") + body


class RawServer:
    """Serves ``content`` (path -> bytes) over HTTP/1.1, except ``hostile``: (path, action)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.content: dict[str, bytes] = {}
        self.hostile = None
        self.held = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                self._serve(conn)
            except OSError:
                conn.close()

    @staticmethod
    def _request_path(conn) -> str | None:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk or chunk[:1] == b"\x16":  # closed, or a TLS ClientHello
                return None
            data += chunk
        parts = data.split(b"\r\n", 1)[0].split()
        return parts[1].decode("latin-1") if len(parts) > 1 else None

    def _serve(self, conn):
        path = self._request_path(conn)
        rel = path[1:] if path and path.startswith("/") else None
        if self.hostile and (path is None or self.hostile[0] == rel):
            action = self.hostile[1]
        elif rel in self.content:
            action = ("send", _http(self.content[rel]))
        else:
            action = ("send", _http(b"not found", "404 Not Found"))
        if action[0] == "hold":  # never answer: the client times out
            self.held.append(conn)
            return
        if action[0] == "reset":  # RST instead of FIN
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif action[0] == "send":
            conn.sendall(action[1])
        conn.close()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the serving thread
        self.sock.close()
        for conn in self.held:
            conn.close()
        self.thread.join(timeout=5)


def server_action(kind: str, body: bytes, url: str, rng: random.Random) -> tuple:
    """The broken reply of one ``server`` mutation to a request whose right answer is ``body``."""
    if kind in ("close", "reset", "silent"):
        return ({"silent": "hold"}.get(kind, kind),)
    replies = {
        "non_http": lambda: rng.choice(
            [b"SSH-2.0-OpenSSH_9.2\r\n", b"220 mail ESMTP\r\n", b"\x00\x01\x02\x03", b"<html>"]
            + [b"HTTP/2 200\r\n\r\n", b"ICY 200 OK\r\n\r\n"]
        ),
        "garbage": lambda: rng.randbytes(rng.randint(1, 2000)),
        "bad_status": lambda: (
            b"HTTP/1.1 "
            + rng.choice([b"abc OK", b"99999 X", b"-1 X", b"", b"2OO OK", b"200"])
            + b"\r\n\r\n"
        ),
        "long_header": lambda: b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
        "many_headers": lambda: b"HTTP/1.1 200 OK\r\n" + b"X-H: 1\r\n" * 150 + b"\r\n",
        "incomplete_body": lambda: _http(body)[: -rng.randint(1, max(1, len(body)))],
        "bad_chunked": lambda: _http(b"zz\r\n" + body, headers="Transfer-Encoding: chunked\r\n"),
        "http_error": lambda: _http(
            b"", rng.choice(["400 Bad", "403 Forbidden", "404 Not Found", "500 Oops", "503 Busy"])
        ),
        "redirect": lambda: _http(
            b"",
            "302 Found",
            f"Location: {rng.choice([url, 'file:///etc/passwd', 'ftp://x/y'])}\r\n"
            "Content-Length: 0\r\n",
        ),
        "oversize": lambda: _http(b"[" + b" " * (2 << 20) + b"]"),
        "tls_mismatch": lambda: _http(body),
        "no_length": lambda: b"HTTP/1.0 200 OK\r\n\r\n" + body,
    }
    return ("send", replies[kind]())


# --- the repository, the device and the oracle -------------------------------------------------


def _files(base: str) -> dict:
    served = {}
    for root, _, names in os.walk(base):
        for name in names:
            if name != ".lock":
                path = os.path.join(root, name)
                served[os.path.relpath(path, base).replace(os.sep, "/")] = open(path, "rb").read()
    return served


@pytest.fixture
def bench(tmp_path):
    """A device on sequence 1 of digits/canary; the repository then carries sequence 2."""
    rng = random.Random(SEED)
    key_path = tmp_path / "ota.key"
    key_path.write_text(rng.randbytes(32).hex())  # the raw seed, in hex
    private = signing.load_private_key(path=str(key_path))
    base = str(tmp_path / "ota")
    published = {}

    def push(model, payload, channel=CHANNEL):
        src = tmp_path / "payload.tflite"
        src.write_bytes(payload)
        dest = OtaDestination(base_directory=base, channel=channel, signing_key_path=str(key_path))
        ota.push_tflite(str(src), model, dest, metrics={"accuracy": 0.5})
        if (model, channel) == (MODEL, CHANNEL):
            published[hashlib.sha256(payload).hexdigest()] = payload

    push(MODEL, b"TFL3" + rng.randbytes(300))
    device_dir = str(tmp_path / "device")
    client = DeviceClient(device_dir, [private.public_key()], device_id="d-1", timeout_s=5)
    assert client.check(os.path.join(base, MODEL, CHANNEL)).status == UPDATED
    push(MODEL, b"TFL3" + rng.randbytes(300))
    for payload in (b"TFL3" + rng.randbytes(200), b"TFL3" + rng.randbytes(200)):
        push("other", payload)
    push(MODEL, b"TFL3" + rng.randbytes(250), channel="stable")
    baseline = str(tmp_path / "device-baseline")
    shutil.copytree(device_dir, baseline, symlinks=True)
    server = RawServer()
    repo = tuf_repo.Repository(base)
    state = repo.load()
    yield {
        "signer": tuf_repo.signer_for(private),
        "client": client,
        "fast_client": DeviceClient(device_dir, [private.public_key()], "d-1", timeout_s=0.2),
        "baseline": baseline,
        "server": server,
        "served_dir": str(tmp_path / "served"),
        "pristine": _files(base),
        "published": published,
        "snapshot": f"metadata/{state.snapshot.signed.version}.snapshot.json",
        "role": f"metadata/{state.roles[MODEL].signed.version}.{MODEL}.json",
        "other_role": f"metadata/{state.roles['other'].signed.version}.other.json",
        "bundle": next(
            f"{MODEL}/{CHANNEL}/{h}.model.sig"
            for h in [repo.release(state, MODEL, CHANNEL).custom["oms"]["sha256"]]
        ),
        "model_file": next(
            f"{MODEL}/{CHANNEL}/{h}.model.tflite"
            for h in [repo.release(state, MODEL, CHANNEL).hashes["sha256"]]
        ),
    }
    server.close()


def _sign(doc: dict, signer) -> bytes:
    """``doc`` with one signature over its canonical ``signed`` part (mutations included)."""
    from securesystemslib.formats import encode_canonical

    signature = signer.sign(encode_canonical(doc["signed"]).encode())
    doc["signatures"] = [signature.to_dict()]
    return json.dumps(doc, indent=1).encode()


def _meta(data: bytes, version: int) -> dict:
    return {
        "version": version,
        "length": len(data),
        "hashes": {"sha256": hashlib.sha256(data).hexdigest()},
    }


def resign_chain(bench, served: dict, role: str, role_bytes: bytes) -> None:
    """Publishes ``role_bytes`` as the model's role: snapshot and timestamp re-signed over it."""
    served[role] = role_bytes
    snapshot = json.loads(served[bench["snapshot"]])
    version = int(role.split("/")[1].split(".")[0])
    snapshot["signed"]["meta"][f"{MODEL}.json"] = _meta(role_bytes, version)
    snapshot_bytes = _sign(snapshot, bench["signer"])
    served[bench["snapshot"]] = snapshot_bytes
    timestamp = json.loads(served[TIMESTAMP])
    snap_version = snapshot["signed"]["version"]
    timestamp["signed"]["meta"]["snapshot.json"] = _meta(snapshot_bytes, snap_version)
    served[TIMESTAMP] = _sign(timestamp, bench["signer"])


def signed_role(bench, served: dict, mutate) -> None:
    """The model's role with ``mutate(doc) -> bytes`` applied, re-signed (when it still has a
    ``signed`` object that canonical JSON can encode) and chained into snapshot and timestamp."""
    role = bench["role"]
    mutated = mutate(json.loads(served[role]))
    try:
        doc = json.loads(mutated)
        mutated = _sign(doc, bench["signer"])
    except Exception:  # noqa: BLE001 - not JSON, no `signed`, floats: served unsigned
        pass
    resign_chain(bench, served, role, mutated)


def assert_valid_release(bench, client: DeviceClient) -> None:
    """The oracle for an acceptance: a genuinely published digits/canary model is installed."""
    installed = client.current_model_dir()
    data = open(os.path.join(installed, "model.tflite"), "rb").read()
    assert bench["published"].get(hashlib.sha256(data).hexdigest()) == data
    if os.path.exists(os.path.join(installed, "release.json")):
        release = json.load(open(os.path.join(installed, "release.json")))
        assert (release["model_name"], release["channel"]) == (MODEL, CHANNEL)
        assert isinstance(release["sequence"], int) and release["sequence"] >= 1


def _replay(bench, rng):
    """Another release entry, validly signed, under digits/canary."""
    other = json.loads(bench["pristine"][bench["other_role"]])["signed"]["targets"]
    entry = dict(rng.choice(list(other.values())))

    def mutate(doc):
        doc["signed"]["targets"][f"{MODEL}/{CHANNEL}/model.tflite"] = entry
        return json.dumps(doc).encode()

    return mutate


def _custom_paths(doc):
    return [
        ("signed", "targets", f"{MODEL}/{CHANNEL}/model.tflite", *p)
        for p in _paths(doc["signed"]["targets"][f"{MODEL}/{CHANNEL}/model.tflite"])
    ]


def build_mutation(bench, family: str, kind: str, rng: random.Random) -> tuple[dict, tuple | None]:
    """(what the repository serves, the server's broken reply or None)."""
    served = dict(bench["pristine"])
    if family in ("snapshot", "role", "model_file", "bundle"):
        rel = bench[family]
        mutate = mutate_bytes if family == "model_file" else mutate_document
        served[rel] = mutate(kind, served[rel], rng)
    elif family == "timestamp":
        served[TIMESTAMP] = mutate_document(kind, served[TIMESTAMP], rng)
    elif family == "signed_role" and kind == "replay":
        signed_role(bench, served, _replay(bench, rng))
    elif family == "signed_role":

        def mutate(doc):
            entry = ("signed", "targets", f"{MODEL}/{CHANNEL}/model.tflite", "custom")
            if kind == "critical":
                return inject(doc, (*entry, rng.choice(CRITICAL)), rng.choice(WRONG_TYPES))
            if kind == "missing_field":
                path = rng.choice([p for p in _custom_paths(doc) if isinstance(p[-1], str)])
                return inject(doc, path, None)
            path = rng.choice(_custom_paths(doc))
            raw = {
                "nesting": lambda: nested(rng),
                "huge_number": lambda: rng.choice(HUGE_NUMBERS),
                "wrong_type": lambda: rng.choice(WRONG_TYPES),
            }[kind]()
            return inject(doc, path, raw)

        signed_role(bench, served, mutate)
    elif family == "signed_bundle":
        rel = bench["bundle"]
        bundle = mutate_document(kind, served[rel], rng)
        new_rel = f"{MODEL}/{CHANNEL}/{hashlib.sha256(bundle).hexdigest()}.model.sig"
        served[new_rel] = bundle

        def mutate(doc):
            target = doc["signed"]["targets"][f"{MODEL}/{CHANNEL}/model.sig"]
            target.update(length=len(bundle), hashes={"sha256": new_rel.split("/")[-1][:64]})
            custom = doc["signed"]["targets"][f"{MODEL}/{CHANNEL}/model.tflite"]["custom"]
            custom["oms"].update(sha256=target["hashes"]["sha256"], length=len(bundle))
            return json.dumps(doc).encode()

        signed_role(bench, served, mutate)
    if family != "server":
        return served, None
    rel = rng.choice(
        [TIMESTAMP, bench["snapshot"], bench["role"], bench["model_file"], bench["bundle"]]
    )
    url = f"http://127.0.0.1:{bench['server'].port}/{rel}"
    return served, (rel, server_action(kind, served[rel], url, rng))


def deliver(bench, served: dict, hostile, index: int, kind: str) -> str:
    """Puts ``served`` where the client will look; returns the location to check."""
    server = bench["server"]
    server.content, server.hostile = served, hostile
    if hostile is not None or index % 2:
        scheme = "https" if kind == "tls_mismatch" else "http"
        return f"{scheme}://127.0.0.1:{server.port}{PREFIX}"
    directory = bench["served_dir"]
    shutil.rmtree(directory, ignore_errors=True)
    for rel, data in served.items():
        os.makedirs(os.path.dirname(os.path.join(directory, rel)), exist_ok=True)
        with open(os.path.join(directory, rel), "wb") as f:
            f.write(data)
    return os.path.join(directory, MODEL, CHANNEL)


def run_one(bench, family, kind, index, rng, baseline_tree, exception_types) -> str:
    served, hostile = build_mutation(bench, family, kind, rng)
    location = deliver(bench, served, hostile, index, kind)
    client = bench["fast_client"] if kind == "silent" else bench["client"]
    result = client.check(location)  # an exception here fails the test: none may escape
    assert result.status in (UPDATED, UP_TO_DATE, NOT_ELIGIBLE, REJECTED), result
    assert isinstance(result.reason, str) and "\n" not in result.reason
    exception_types.update(
        re.findall(r"\b([A-Z]\w*(?:Error|Line|Disconnected|Read)):", result.reason)
    )
    if result.status in (UPDATED, UP_TO_DATE):
        assert_valid_release(bench, client)
        shutil.rmtree(client.device_dir)  # back to sequence 1 for the next mutation
        shutil.copytree(bench["baseline"], client.device_dir, symlinks=True)
    else:
        assert device_tree(client.device_dir) == baseline_tree, (family, kind, result)
    return result.status


def print_counts(counts: dict) -> None:
    print(f"\n{'family':16} {'kind':16} {'refused':>8} {'accepted':>9} {'not_eligible':>13}")
    totals = collections.Counter()
    for (family, kind), seen in counts.items():
        accepted = seen[UPDATED] + seen[UP_TO_DATE]
        print(f"{family:16} {kind:16} {seen[REJECTED]:8d} {accepted:9d} {seen[NOT_ELIGIBLE]:13d}")
        totals.update(seen)
    print(
        f"total {sum(totals.values())}: refused {totals[REJECTED]}, accepted "
        f"{totals[UPDATED] + totals[UP_TO_DATE]} (all valid), not eligible {totals[NOT_ELIGIBLE]}"
    )


def test_a_thousand_mutations_are_refused_or_valid(bench, record_property):
    rng = random.Random(SEED)
    baseline_tree = device_tree(bench["client"].device_dir)
    counts, exception_types = {}, collections.Counter()
    index = 0
    for family, kind, how_many in PLAN:
        seen = counts.setdefault((family, kind), collections.Counter())
        for _ in range(how_many):
            seen[run_one(bench, family, kind, index, rng, baseline_tree, exception_types)] += 1
            index += 1
    print_counts(counts)
    print("exception types named in refusals:", dict(exception_types))
    record_property("ota_fuzz_counts", {f"{f}/{k}": dict(c) for (f, k), c in counts.items()})
    assert index == 1000
    for (family, kind), seen in counts.items():
        if family in HASH_PINNED:  # bytes whose hash the signed parent pins
            assert seen[REJECTED] == sum(seen.values()), (family, kind, seen)
    for kind in ("bitflip", "truncate"):  # OMS-signed bytes, the targets entry re-signed
        seen = counts[("signed_bundle", kind)]
        assert seen[REJECTED] == sum(seen.values()), (kind, seen)
    # Signed, but a wrong value in a field the client acts on: never installed.
    critical = counts[("signed_role", "critical")]
    assert critical[UPDATED] + critical[UP_TO_DATE] == 0, critical
    assert critical[REJECTED] >= 50, critical
    # Signed nesting beyond the bound: refused before parsing.
    assert counts[("signed_role", "nesting")][REJECTED] == 30
    # The network and protocol failures were all met, and reported by type.
    for name in ("BadStatusLine", "RemoteDisconnected", "IncompleteRead", "SSLError"):
        assert name in exception_types, name
    assert {"ConnectionResetError", "TimeoutError"} <= set(exception_types)


def test_ota_check_cli_refuses_a_non_http_server_in_one_line(bench, tmp_path, capsys):
    import argparse

    from components.pusher import commands

    public_path = tmp_path / "trusted.pub"
    public_path.write_bytes(signing.public_key_pem(bench["client"].trusted.popitem()[1]))
    parser = argparse.ArgumentParser(prog="tfxopt")
    commands.register(parser.add_subparsers(dest="command", required=True))
    hostile = (TIMESTAMP, ("send", b"\x00\x01 not http\r\n"))
    location = deliver(bench, bench["pristine"], hostile, 1, "non_http")
    argv = ["ota-check", location, "--public-key", str(public_path), "--device-id", "d-1"]
    args = parser.parse_args([*argv, "--device-dir", bench["client"].device_dir])
    before = device_tree(bench["client"].device_dir)
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("ota-check: rejected: ")
    assert "BadStatusLine" in out
    assert device_tree(bench["client"].device_dir) == before


def test_a_bug_inside_the_check_is_a_refusal_naming_its_type(bench, monkeypatch):
    from components.pusher import oms

    monkeypatch.setattr(oms, "verify_bundle", lambda *a: [][1])
    before = device_tree(bench["client"].device_dir)
    result = bench["client"].check(deliver(bench, bench["pristine"], None, 0, "bug"))
    assert result.status == REJECTED and "refused: IndexError: " in result.reason, result
    assert device_tree(bench["client"].device_dir) == before
