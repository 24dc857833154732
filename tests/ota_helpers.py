"""Helpers shared by the OTA tests."""

from __future__ import annotations

import functools
import http.server
import os
import threading


def device_tree(directory: str) -> dict:
    """Every entry under a device directory: file bytes, symlink targets, directories."""
    tree = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if os.path.islink(path):
                tree[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                tree[rel] = ("dir",)
            else:
                tree[rel] = ("file", open(path, "rb").read())
    return tree


def repo_tree(base: str) -> dict:
    """Every file under an OTA base directory (lock files aside): {relative path: bytes}."""
    tree = {}
    for root, _, files in os.walk(base):
        for name in files:
            if name != ".lock":
                path = os.path.join(root, name)
                tree[os.path.relpath(path, base)] = open(path, "rb").read()
    return tree


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output readable
        pass


class StaticServer:
    """A threaded HTTP server on 127.0.0.1 serving a directory; ``close()`` stops it."""

    def __init__(self, directory: str):
        handler = functools.partial(_QuietHandler, directory=directory)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
