"""Typed, validated configuration: unknown keys and out-of-range values fail with the field's name."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic

from components.common.errors import ConfigError

T = TypeVar("T", bound="StrictModel")


class StrictModel(pydantic.BaseModel):
    """Base for every config object: unknown keys are errors, values are immutable."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @classmethod
    def parse(cls: type[T], data: Any, where: str = "") -> T:
        """Validates ``data`` (a dict or a JSON string), raising ConfigError that names each field."""
        try:
            if isinstance(data, str | bytes):
                return cls.model_validate_json(data)
            return cls.model_validate(data if data is not None else {})
        except pydantic.ValidationError as e:
            raise ConfigError(format_validation_error(e, where)) from None


def format_validation_error(error: pydantic.ValidationError, where: str = "") -> str:
    """One line per problem, ``where.field.path: message (got value)``."""
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"])
        full = ".".join(p for p in (where, path) if p)
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = (
                "unknown key (check the spelling against docs/config.md, the config reference)"
            )
        got = item.get("input")
        suffix = ""
        if item["type"] != "extra_forbidden" and not isinstance(got, dict | list):
            suffix = f" (got {got!r})"
        lines.append(f"{full or '<root>'}: {message}{suffix}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def own_defaults(field: str, base: type[StrictModel], own: type[StrictModel]) -> Any:
    """A field validator for a section typed ``own`` (a subclass of ``base`` with other defaults).

    A plain ``base`` instance is accepted; what it leaves unset takes ``own``'s defaults (it is
    re-validated as ``own`` from the fields it set). Use as a class attribute of the config:
    ``_fine_tuning_defaults = own_defaults("fine_tuning", FineTuneConfig, PrunerFineTuneConfig)``.
    """

    def _own_defaults(cls, value):
        if isinstance(value, base) and not isinstance(value, own):
            return value.model_dump(exclude_unset=True)
        return value

    return pydantic.field_validator(field, mode="before")(classmethod(_own_defaults))
