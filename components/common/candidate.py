"""Failure isolation of candidate steps: a candidate whose own work fails is a rejected candidate.

Candidates are alternatives, so one failing is a verdict on that candidate, not on the run. A
candidate step (a Quantizer branch, a candidate's Profiler) built with ``isolate_failures`` does
not fail when its own work fails: it succeeds and writes its output artifact *marked failed*,
custom properties ``failed`` = 1, ``failure_step``, ``failure_reason``, ``failure_summary``,
``failure_component`` (names in :mod:`components.common.keys`) and the record
``candidate_failure.json`` (no model files); the exec property ``isolate_failures`` = 1 turns it
on. A step downstream (the candidate's Profiler) passes the mark on without loading anything, and the Evaluator rejects
the candidate with its summary (``failed: verification, mean abs diff 0.0412 > 0.01``). The step
succeeded, so it works the same on every runner (LocalDagRunner, Kubeflow Pipelines) and TFX caches
it like any result: a rerun with the same inputs and configuration reuses the failure, a changed
configuration runs the step again.

Which errors count as a candidate's failure (the rule, :func:`is_candidate_failure`):

- :class:`~components.common.errors.CandidateError`: the candidate's conversion
  (``ConversionError``), verification (``ConversionVerificationError``) or measurement
  (``MeasurementError``) failed;
- :class:`~components.common.errors.ModelInputError`: the model this branch got cannot go through
  this step (a layer tfmot cannot quantize in this mode, ops an integer mode leaves in float).

Not counted, so they still fail the step and the run: ``ConfigError`` and ``DataError`` (the
configuration or the shared Examples are wrong: preflight catches them before the run, and every
rerun would fail the same way), and every other exception (a bug, out of memory, a full disk, a
killed process: the orchestrator retries or reports those; they say nothing about the candidate).

Nothing here imports TFX or TensorFlow at module level: the Evaluator's core reads failures on
plain paths with :func:`read_failure`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence

from components.common import artifact_output, keys
from components.common.errors import CandidateError, ModelInputError

log = logging.getLogger(__name__)

FORMAT = "tfxopt.candidate_failure/v1"
MAX_REASON_CHARS = 1000
MAX_DETAIL_CHARS = 200


def is_candidate_failure(error: BaseException) -> bool:
    """True for the errors that are a verdict on one candidate (the rule in the module doc)."""
    return isinstance(error, CandidateError | ModelInputError)


def _first_sentence(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    cut = line.find(". ")
    return (line[:cut] if cut > 0 else line).rstrip(".")


def failure_record(step: str, component: str, reason: str, detail: str | None = None, **extra):
    """A failure record: where it failed, the full reason and the one-line summary."""
    detail = (detail or _first_sentence(reason) or "no detail")[:MAX_DETAIL_CHARS]
    return {
        "format": FORMAT,
        "failed": True,
        "step": step,
        "component": component,
        "reason": reason,
        "detail": detail,
        "summary": f"failed: {step}, {detail}",
        **extra,
    }


def failure_from_error(error: BaseException, component: str, default_step: str) -> dict:
    """The record of a candidate failure raised by ``component`` (its step from the error)."""
    step = error.step if isinstance(error, CandidateError) else default_step
    detail = error.detail if isinstance(error, CandidateError) else None
    return failure_record(
        step, component, str(error), detail, error_type=type(error).__name__, upstream=None
    )


def read_failure(uri: str | None) -> dict | None:
    """The failure record of an artifact directory, or None when it holds none (or no ``uri``)."""
    if not uri:
        return None
    import tensorflow as tf

    path = os.path.join(uri, keys.CANDIDATE_FAILURE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        record = json.load(f)
    return record if isinstance(record, dict) and record.get("failed") else None


def passed_through(upstream: dict, input_uri: str, component: str, note: str) -> dict:
    """The record a step downstream of a failed artifact writes: the upstream failure, unchanged."""
    return {
        **upstream,
        "upstream": {"component": upstream.get("component"), "uri": input_uri},
        "passed_through_by": component,
        "note": note,
    }


def write_failure(output, record: dict, record_file: str | None = None, extra=None) -> None:
    """Marks the output artifact failed: nothing but the record in it, and the properties.

    Args:
      output: the TFX output artifact (its directory is emptied first: no model files).
      record: from :func:`failure_from_error` or :func:`passed_through`.
      record_file: the step's own record name (e.g. ``profile.json``), written with the same
        content so readers of that file find it marked failed too.
      extra: more custom properties (e.g. the quantization mode).
    """
    from components.common import properties

    artifact_output.empty(output.uri)
    for name in {keys.CANDIDATE_FAILURE_FILE, record_file or keys.CANDIDATE_FAILURE_FILE}:
        properties.write_json(output.uri, name, record)
    properties.set_properties(
        output,
        {
            keys.FAILED_PROPERTY: 1,
            keys.FAILURE_STEP_PROPERTY: record["step"],
            keys.FAILURE_REASON_PROPERTY: record["reason"][:MAX_REASON_CHARS],
            keys.FAILURE_SUMMARY_PROPERTY: record["summary"],
            keys.FAILURE_COMPONENT_PROPERTY: record["component"],
            keys.UPSTREAM_FAILED_PROPERTY: 1 if record.get("upstream") else None,
            **(extra or {}),
        },
    )


def run_isolated(
    work: Callable[[], None],
    output,
    *,
    component: str,
    default_step: str,
    isolate: bool,
    inputs: Sequence = (),
    record_file: str | None = None,
    skipped_note: str = "not run: upstream failed",
    extra: dict | None = None,
) -> dict | None:
    """Runs a candidate step's ``work``; a failed input or a candidate failure marks ``output``.

    Args:
      work: writes the step's normal output (called only when no input is marked failed).
      output: the output artifact.
      component: the step's component name, for the record.
      default_step: the failure step of a ``ModelInputError`` (e.g. ``quantization``).
      isolate: record candidate failures instead of raising them; an input marked failed is
        passed on either way (there is nothing to load).
      inputs: the input artifacts that may carry a failure mark (model inputs).
    Returns:
      The failure record written, or None when ``work`` succeeded.
    Raises:
      Whatever ``work`` raises that is not a candidate failure, or anything when not isolating.
    """
    for artifact in inputs:
        upstream = read_failure(artifact.uri)
        if upstream is not None:
            record = passed_through(upstream, artifact.uri, component, skipped_note)
            write_failure(output, record, record_file, extra)
            log.warning("%s: %s (%s)", component, skipped_note, upstream.get("summary"))
            return record
    try:
        work()
        return None
    except Exception as e:
        if not (isolate and is_candidate_failure(e)):
            raise
        record = failure_from_error(e, component, default_step)
    write_failure(output, record, record_file, extra)
    log.warning("%s: candidate rejected, %s\n%s", component, record["summary"], record["reason"])
    return record
