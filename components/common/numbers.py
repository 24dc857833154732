"""Small helpers for the numbers in our JSON records: checking, reading, comparing, formatting.

A leaf module: it imports nothing of ours but :mod:`components.common.keys` (itself a leaf), so
the Evaluator, the run report's builder, its page and its plots, and the text summary can all use
it without importing each other.
"""

from __future__ import annotations

import math

from components.common.keys import BASELINE  # noqa: F401 - re-exported for the readers


def finite(value) -> bool:
    """True for an int or float (not bool) that is neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def finite_or_none(value):
    """``value`` when :func:`finite`, else None (what a JSON record holds for a missing number)."""
    return value if finite(value) else None


def get_path(record, *path):
    """``record[path[0]][path[1]]...``, or None where a level is missing or not a dict."""
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats: smaller-or-equal x and larger-or-equal y, one of
    them strictly (x is a cost such as size or latency, y is accuracy). Sorted by x."""
    usable = {n: p for n, p in points.items() if finite(p[0]) and finite(p[1])}
    front = []
    for name, (x, y) in usable.items():
        dominated = any(
            ox <= x and oy >= y and (ox < x or oy > y)
            for other, (ox, oy) in usable.items()
            if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: (usable[n][0], -usable[n][1]))


def fmt_bytes(n) -> str:
    """``1.2 MB``, ``3.4 KB``, ``56 B`` (decimal units); ``-`` for a missing number."""
    if not finite(n):
        return "-"
    for unit, size in (("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_percent(fraction, digits: int = 2) -> str:
    """A fraction as a percentage (``0.9876`` -> ``98.76%``); ``-`` for a missing number."""
    return f"{100 * fraction:.{digits}f}%" if finite(fraction) else "-"


def fmt_ms(milliseconds, digits: int = 3) -> str:
    """Milliseconds with ``digits`` decimals; ``-`` for a missing number."""
    return f"{milliseconds:.{digits}f}" if finite(milliseconds) else "-"


def fmt_value(value) -> str:
    """Any record value in a table cell: floats to 4 significant digits, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)
