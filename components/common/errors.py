"""User-facing errors: each names what is wrong and what to do, and is raised before heavy work."""


class TfxOptError(ValueError):
    """Base class for errors caused by user input (models, examples, configuration)."""


class ConfigError(TfxOptError):
    """A configuration value is missing, unknown or out of range."""


class ModelInputError(TfxOptError):
    """A model path does not hold a model we can use."""


class DataError(TfxOptError):
    """Examples are missing, empty or do not match the data configuration."""


class StepFailed(RuntimeError):
    """A pipeline step failed while it ran (a fault, not a bad input caught beforehand).

    The message is ``<step>: <cause>`` on one line (the innermost error's message, with its type
    unless it is one of ours); the full traceback is in ``log_path`` and the cause is chained.
    """

    def __init__(self, steps: list[str], cause: BaseException, log_path: str | None = None):
        self.steps = steps
        self.cause = one_line_cause(cause)
        self.log_path = log_path
        super().__init__(f"{', '.join(steps) or 'pipeline'}: {self.cause}")


def one_line_cause(error: BaseException, limit: int = 600) -> str:
    """Why a step failed, in one line: the innermost error's message, typed unless it is ours."""
    while error.__cause__ is not None and not isinstance(error, TfxOptError):
        error = error.__cause__
    text = " ".join(str(error).split()) or "no message"
    text = text if len(text) <= limit else text[:limit] + " ..."
    return text if isinstance(error, TfxOptError) else f"{type(error).__name__}: {text}"


class CandidateError(TfxOptError):
    """One candidate's own work failed: its conversion, verification or measurement.

    A verdict on that candidate, not on the run: a candidate step built with failure isolation
    records it as a rejected candidate (see :mod:`components.common.candidate`).

    Attributes:
      step: the part of the candidate's work that failed (``verification``, ``conversion``,
        ``profiling``, ...); shown as ``failed: <step>, <detail>``.
      detail: a short account for tables (``max abs diff 0.703 > 0.683``); the message says more.
    """

    step = "candidate"

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


class ConversionError(CandidateError, ModelInputError):
    """TFLite conversion of a model failed (an op without a kernel for the mode, ...)."""

    step = "conversion"


class MeasurementError(CandidateError):
    """A model could not be run to measure it (its flatbuffer does not load or invoke)."""

    step = "profiling"
