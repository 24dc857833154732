"""Markdown pieces every RESULTS.md section renderer shares (a leaf: imports nothing of ours)."""

from __future__ import annotations

import re

_ISSUE_REFERENCE = re.compile(r"\s*\((?:see )?issues? #?\d+(?: and #?\d+)?\)", re.IGNORECASE)


def row(cells) -> str:
    """One table row: ``| a | b |``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(headers, rows) -> list[str]:
    """A Markdown table's lines: the header, the ``---`` rule, one line per row."""
    return [row(headers), row(["---"] * len(headers)), *[row(r) for r in rows]]


def failed(title: str, error: str) -> list[str]:
    """The lines of a section whose benchmark failed: its heading and the error."""
    return [title, "", f"Failed: {error}", ""]


def plain(text: str) -> str:
    """``text`` without parenthetical references to the project's issue numbers ("(issue 22)"),
    which old results carry in their descriptions and readers cannot follow."""
    return _ISSUE_REFERENCE.sub("", text)
