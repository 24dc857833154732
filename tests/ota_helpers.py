"""Helpers shared by the OTA tests."""

from __future__ import annotations

import json
import os
import shutil


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


def serve_release_of(channel_dir: str, other_channel_dir: str, sequence: int) -> None:
    """Serves another channel's validly signed ``sequence`` (and its files) at ``channel_dir``."""
    for suffix in ("", ".sig"):
        shutil.copy(
            os.path.join(other_channel_dir, "history", f"{sequence}.json{suffix}"),
            os.path.join(channel_dir, f"manifest.json{suffix}"),
        )
    manifest = json.load(open(os.path.join(channel_dir, "manifest.json")))
    for entry in manifest["files"]:
        shutil.copy(
            os.path.join(other_channel_dir, entry["path"]), os.path.join(channel_dir, entry["path"])
        )
