"""Markdown pieces every RESULTS.md section renderer shares (a leaf: imports nothing of ours)."""

from __future__ import annotations


def row(cells) -> str:
    """One table row: ``| a | b |``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(headers, rows) -> list[str]:
    """A Markdown table's lines: the header, the ``---`` rule, one line per row."""
    return [row(headers), row(["---"] * len(headers)), *[row(r) for r in rows]]


def failed(title: str, error: str) -> list[str]:
    """The lines of a section whose benchmark failed: its heading and the error."""
    return [title, "", f"Failed: {error}", ""]
