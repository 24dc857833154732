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

    The message is one line naming the failed step(s) and the cause; the cause is chained.
    """

    def __init__(self, steps: list[str], cause: BaseException):
        self.steps = steps
        text = (str(cause).strip().splitlines() or [""])[0][:500]
        super().__init__(
            f"step {', '.join(steps) or '(unknown)'} failed: {type(cause).__name__}: {text} "
            "(run the same command again to resume: finished steps are reused from the cache)"
        )
