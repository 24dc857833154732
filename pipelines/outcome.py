"""What a finished command means for CI: the exit statuses, ``--json`` and ``--require-blessing``.

A leaf module (imports nothing of ours), shared by ``pipelines.cli`` and the commands it registers.

Exit statuses, the same for every command:

- 0: done (a run whose gate blessed nothing is done too, unless ``--require-blessing``);
- 1: a step failed while it ran, or no candidate could be built (the summary is still written);
- 2: bad input (command line, config, model, Examples, output directory), before any work;
- 3: ``--require-blessing`` and the gate blessed no candidate.
"""

from __future__ import annotations

import argparse

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_BLESSED = 3
EXIT_STATUSES = (
    "exit statuses: 0 done; 1 a step failed (or no candidate could be built); 2 bad input, "
    "nothing run; 3 --require-blessing and the gate blessed no candidate"
)


def version() -> str:
    """The installed package's version (``pyproject.toml``'s)."""
    from importlib import metadata

    try:
        return metadata.version("tfx-optimize")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def outcome_status(summary: dict, require_blessing: bool, all_failed: bool = False) -> int:
    """The exit status of a finished run from its summary: 1 when no candidate could be built,
    3 when ``require_blessing`` and nothing was blessed, else 0."""
    if all_failed:
        return EXIT_STEP_FAILED
    blessed = (summary.get("gate") or {}).get("blessed") is True
    if require_blessing and not blessed:
        return EXIT_NOT_BLESSED
    return EXIT_OK


def not_blessed_line(summary: dict) -> str:
    """What ``--require-blessing`` prints when it turns a finished run into exit status 3."""
    gate = summary.get("gate") or {}
    reason = gate.get("reason") or "the run has no gate (no evaluator section)"
    return f"tfxopt: error: not blessed (--require-blessing): {reason}"


def add_ci_flags(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--require-blessing``: what a CI job reads a run's outcome with."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the run summary (summary.json) as one JSON document on stdout; progress and "
        "logs go to stderr",
    )
    parser.add_argument(
        "--require-blessing",
        action="store_true",
        help="exit with status 3 when the gate blessed no candidate (default: 0, a verdict)",
    )
