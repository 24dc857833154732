"""User-facing errors: each names what is wrong and what to do, and is raised before heavy work."""


class TfxOptError(ValueError):
    """Base class for errors caused by user input (models, examples, configuration)."""


class ConfigError(TfxOptError):
    """A configuration value is missing, unknown or out of range."""


class ModelInputError(TfxOptError):
    """A model path does not hold a model we can use."""


class DataError(TfxOptError):
    """Examples are missing, empty or do not match the data configuration."""
