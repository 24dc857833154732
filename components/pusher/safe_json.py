"""JSON from untrusted bytes, with its size, nesting depth and numbers bounded before parsing.

``json.loads`` recurses once per nesting level (a few thousand ``[`` raise ``RecursionError``),
turns ``1e999`` into infinity, accepts ``NaN`` and keeps the last of duplicate keys. The device
client reads manifests and signature files from a server it does not trust, so every such document
goes through :func:`loads`: standard library only (it runs on devices).
"""

from __future__ import annotations

import json
import math
import re

MAX_DEPTH = 32
MAX_INT_DIGITS = 19  # every int64 fits; sequence and version numbers are far smaller
# A JSON string with its escapes, removed before brackets are counted as it may hold any. The
# closing quote is optional so that an unterminated string cannot make the match backtrack
# (quadratic time); json.loads refuses such a document anyway.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class JsonLimitError(ValueError):
    """A document is too large, too deep, not UTF-8 JSON, or holds a number out of bounds."""


def nesting_depth(data: bytes, stop_above: int = MAX_DEPTH) -> int:
    """The deepest ``[``/``{`` nesting in ``data`` (counting stops once above ``stop_above``)."""
    skeleton = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in skeleton:
        depth += 1 if byte in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > stop_above:
                break
    return deepest


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonLimitError(f"integer of {len(text)} digits is out of bounds")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonLimitError(f"number {text[:40]} is out of bounds")
    return value


def _no_constant(name: str):
    raise JsonLimitError(f"{name} is not a JSON number")


def _unique_keys(pairs: list) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        raise JsonLimitError("an object repeats a key")
    return record


def loads(data: bytes, what: str, max_bytes: int, max_depth: int = MAX_DEPTH):
    """Parses ``data`` as strict UTF-8 JSON after checking its size and nesting depth.

    Args:
      data: the document's bytes as fetched.
      what: its name, for messages (e.g. ``"manifest.json.sig"``).
      max_bytes: the largest document accepted.
      max_depth: the deepest nesting of arrays and objects accepted.

    Raises:
      JsonLimitError: naming ``what`` and the bound it broke, or saying it is not JSON.
    """
    if len(data) > max_bytes:
        raise JsonLimitError(f"{what} is larger than {max_bytes} bytes")
    depth = nesting_depth(data, max_depth)
    if depth > max_depth:
        raise JsonLimitError(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(
            data.decode("utf-8"),
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except JsonLimitError as e:
        raise JsonLimitError(f"{what}: {e}") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError included
        raise JsonLimitError(f"{what} is not UTF-8 JSON ({type(e).__name__}: {e})") from None
