"""The device client under 1,000 seeded mutations: it refuses, or accepts only a valid release.

Mutated: manifests (unsigned, so the signature no longer covers them, and re-signed with the trusted
key, so the checks after the signature are reached), signature files, model files, and the
server's replies (a raw socket server on 127.0.0.1 answering one request with something broken or
not HTTP at all). Every check must return a result (no exception escapes ``DeviceClient.check``);
every refusal must leave the device directory byte-identical; every acceptance must be a release
that verifies against the trusted key, names the expected model and channel, is not older than the
device's, has not expired and whose installed files have the manifest's sha256 and length.
Run with ``-s`` to see the counts per mutation kind.
"""

from __future__ import annotations

import collections
import datetime
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

from components.pusher import ota, signing
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
PUBLISHED = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
NOW = PUBLISHED + datetime.timedelta(hours=1)  # fixed key and times: the same counts every run
MODEL, CHANNEL = "digits", "canary"
PREFIX = f"/{MODEL}/{CHANNEL}/"
MANIFEST, SIGNATURE = "manifest.json", "manifest.json.sig"

# (family, kind, how many): 1,000 in all.
PLAN = [
    ("manifest", "bitflip", 60),
    ("manifest", "truncate", 40),
    ("manifest", "nesting", 20),
    ("manifest", "huge_number", 20),
    ("manifest", "wrong_type", 20),
    ("signed_manifest", "bitflip", 40),
    ("signed_manifest", "wrong_type", 80),
    ("signed_manifest", "huge_number", 50),
    ("signed_manifest", "nesting", 30),
    ("signed_manifest", "missing_field", 30),
    ("signed_manifest", "bad_path", 20),
    ("signed_manifest", "replay", 30),
    ("signature", "bitflip", 80),
    ("signature", "truncate", 40),
    ("signature", "nesting", 30),
    ("signature", "huge_number", 30),
    ("signature", "wrong_type", 60),
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
        rel = path[len(PREFIX) :] if path and path.startswith(PREFIX) else None
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


# --- the device, the channel and the oracle ----------------------------------------------------


@pytest.fixture
def bench(tmp_path):
    """A device on sequence 1 of digits/canary; the channel then carries sequence 2."""
    rng = random.Random(SEED)
    key_path = tmp_path / "ota.key"
    key_path.write_text(rng.randbytes(32).hex())  # the raw seed, in hex
    private = signing.load_private_key(path=str(key_path))
    base = str(tmp_path / "ota")

    def push(model, payload, channel=CHANNEL):
        src = tmp_path / "payload.tflite"
        src.write_bytes(payload)
        dest = OtaDestination(base_directory=base, channel=channel, signing_key_path=str(key_path))
        ota.push_tflite(str(src), model, dest, now=PUBLISHED)

    push(MODEL, b"TFL3" + rng.randbytes(300))
    device_dir = str(tmp_path / "device")
    client = DeviceClient(device_dir, [private.public_key()], device_id="d-1", timeout_s=5)
    assert client.check(os.path.join(base, MODEL, CHANNEL), now=NOW).status == UPDATED
    push(MODEL, b"TFL3" + rng.randbytes(300))
    for payload in (b"TFL3" + rng.randbytes(200), b"TFL3" + rng.randbytes(200)):
        push("other", payload)
    push(MODEL, b"TFL3" + rng.randbytes(250), channel="stable")
    baseline = str(tmp_path / "device-baseline")
    shutil.copytree(device_dir, baseline, symlinks=True)
    server = RawServer()
    yield {
        "base": base,
        "private": private,
        "client": client,
        "fast_client": DeviceClient(device_dir, [private.public_key()], "d-1", timeout_s=0.2),
        "baseline": baseline,
        "server": server,
        "served_dir": str(tmp_path / "served" / MODEL / CHANNEL),
        "pristine": channel_files(os.path.join(base, MODEL, CHANNEL)),
    }
    server.close()


def channel_files(channel_dir: str, sequence: int | None = None) -> dict:
    """What a channel serves: manifest, signatures and model files ({relative path: bytes})."""
    name = f"history/{sequence}.json" if sequence else MANIFEST
    read = lambda rel: open(os.path.join(channel_dir, rel), "rb").read()  # noqa: E731
    served = {MANIFEST: read(name), SIGNATURE: read(name + ".sig" if sequence else SIGNATURE)}
    for entry in json.loads(served[MANIFEST])["files"]:
        served[entry["path"]] = read(entry["path"])
    return served


def signed(private, data: bytes) -> bytes:
    entry = signing.signature_entry(private, data, 2)
    return json.dumps({"algorithm": signing.ALGORITHM, "signatures": [entry]}).encode()


def assert_valid_release(served: dict, client: DeviceClient, public) -> None:
    """The oracle for an acceptance: everything a device must be able to rely on holds."""
    data = served[MANIFEST]
    signing.verify_manifest(data, json.loads(served[SIGNATURE]), signing.trusted_keys([public]))
    manifest = json.loads(data)
    assert (manifest["model_name"], manifest["channel"]) == (MODEL, CHANNEL)
    assert isinstance(manifest["sequence"], int) and manifest["sequence"] >= 1
    expires = datetime.datetime.fromisoformat(manifest["expires"])
    assert expires > NOW
    installed = client.current_model_dir()
    for entry in manifest["files"]:
        blob = open(os.path.join(installed, entry["name"]), "rb").read()
        assert (hashlib.sha256(blob).hexdigest(), len(blob)) == (entry["sha256"], entry["length"])


def build_mutation(bench, family: str, kind: str, rng: random.Random) -> tuple[dict, tuple | None]:
    """(what the channel serves, the server's broken reply or None)."""
    served = dict(bench["pristine"])
    if family == "manifest":
        served[MANIFEST] = mutate_document(kind, served[MANIFEST], rng)
    elif family == "signature":
        served[SIGNATURE] = mutate_document(kind, served[SIGNATURE], rng)
    elif family == "model_file":
        rel = next(r for r in served if r.startswith("files/"))
        served[rel] = mutate_bytes(kind, served[rel], rng)
    elif family == "signed_manifest" and kind == "replay":
        model, channel, sequence = rng.choice(
            [
                ("other", CHANNEL, 1),
                ("other", CHANNEL, 2),
                (MODEL, "stable", 1),
                (MODEL, CHANNEL, 1),
            ]
        )
        served = channel_files(os.path.join(bench["base"], model, channel), sequence)
    elif family == "signed_manifest":
        served[MANIFEST] = mutate_document(kind, served[MANIFEST], rng)
        served[SIGNATURE] = signed(bench["private"], served[MANIFEST])
    if family != "server":
        return served, None
    rel = rng.choice(list(served))
    url = f"http://127.0.0.1:{bench['server'].port}{PREFIX}{rel}"
    return served, (rel, server_action(kind, served[rel], url, rng))


def deliver(bench, served: dict, hostile, index: int, kind: str) -> str:
    """Puts ``served`` where the client will look; returns the location to check."""
    server = bench["server"]
    server.content, server.hostile = served, hostile
    if hostile is not None or index % 2:
        scheme = "https" if kind == "tls_mismatch" else "http"
        return f"{scheme}://127.0.0.1:{server.port}{PREFIX.rstrip('/')}"
    directory = bench["served_dir"]
    shutil.rmtree(directory, ignore_errors=True)
    for rel, data in served.items():
        os.makedirs(os.path.dirname(os.path.join(directory, rel)), exist_ok=True)
        with open(os.path.join(directory, rel), "wb") as f:
            f.write(data)
    return directory


def run_one(bench, family, kind, index, rng, baseline_tree, exception_types) -> str:
    served, hostile = build_mutation(bench, family, kind, rng)
    location = deliver(bench, served, hostile, index, kind)
    client = bench["fast_client"] if kind == "silent" else bench["client"]
    result = client.check(location, now=NOW)  # an exception here fails the test: none may escape
    assert result.status in (UPDATED, UP_TO_DATE, NOT_ELIGIBLE, REJECTED), result
    assert isinstance(result.reason, str) and "\n" not in result.reason
    if result.reason.startswith("could not check the channel"):
        exception_types["(caught at the boundary)"] += 1
    exception_types.update(
        re.findall(r"\b([A-Z]\w*(?:Error|Line|Disconnected|Read)):", result.reason)
    )
    if result.status in (UPDATED, UP_TO_DATE):
        assert_valid_release(served, client, bench["private"].public_key())
        shutil.rmtree(client.device_dir)
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
    for (family, kind), seen in counts.items():  # unsigned, or bytes the manifest does not name
        if family in ("manifest", "model_file"):
            assert seen[REJECTED] == sum(seen.values()), (family, kind, seen)
    # The network and protocol failures the issue names were all met, and reported by type.
    for name in ("BadStatusLine", "RemoteDisconnected", "IncompleteRead", "SSLError"):
        assert name in exception_types, name
    assert {"ConnectionResetError", "TimeoutError"} <= set(exception_types)


@pytest.mark.parametrize(
    "case",
    ["deep_signature_file", "deep_signed_manifest", "non_http_reply", "unexpected_exception"],
)
def test_the_reported_crashes_are_refusals_naming_their_type(bench, case, monkeypatch):
    """The inputs issue 17 reports (RecursionError, BadStatusLine escaping check()), and a bug."""
    served, hostile, location_kind = dict(bench["pristine"]), None, 0
    if case == "deep_signature_file":
        served[SIGNATURE] = b'{"signatures": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        expect = "manifest.json.sig nests deeper than 32 levels"
    elif case == "deep_signed_manifest":
        served[MANIFEST] = b"[" * 100_000 + b"]" * 100_000
        served[SIGNATURE] = signed(bench["private"], served[MANIFEST])
        expect = "manifest.json nests deeper than 32 levels"
    elif case == "non_http_reply":
        hostile, expect = (MANIFEST, ("send", b"SSH-2.0-OpenSSH_9.2\r\n")), "BadStatusLine: "
    else:  # a bug anywhere inside the check: still a result, with the exception's type
        monkeypatch.setattr(signing, "verify_manifest", lambda *a: [][1])
        expect, location_kind = "could not check the channel: IndexError: ", 1
    before = device_tree(bench["client"].device_dir)
    location = deliver(bench, served, hostile, location_kind, case)
    result = bench["client"].check(location, now=NOW)
    assert result.status == REJECTED and expect in result.reason, result
    assert device_tree(bench["client"].device_dir) == before


def test_ota_check_cli_refuses_a_non_http_server_in_one_line(bench, tmp_path, capsys):
    import argparse

    from components.pusher import commands

    public_path = tmp_path / "trusted.pub"
    public_path.write_bytes(signing.public_key_pem(bench["private"].public_key()))
    parser = argparse.ArgumentParser(prog="tfxopt")
    commands.register(parser.add_subparsers(dest="command", required=True))
    hostile = (MANIFEST, ("send", b"\x00\x01 not http\r\n"))
    location = deliver(bench, bench["pristine"], hostile, 1, "non_http")
    argv = ["ota-check", location, "--public-key", str(public_path)]
    args = parser.parse_args([*argv, "--device-dir", bench["client"].device_dir])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("ota-check: rejected: could not fetch")
    assert "BadStatusLine" in out
