"""Pydantic field types shared by the policy and the config models.

Validators here raise ``ValueError`` (not our error tree) on purpose: pydantic only collects
``ValueError``s into a ``ValidationError``, which the config loader turns into
``file:line: field: message`` lines. Anything else would escape as a traceback.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

from safe_updater.domain.durations import format_duration, parse_duration
from safe_updater.domain.errors import InvalidInputError


def as_value_error(error: InvalidInputError) -> ValueError:
    """Our error as the ``ValueError`` pydantic expects, keeping the fix in the message."""
    text = error.message
    if error.hint:
        text = f"{text}; {error.hint}"
    return ValueError(text)


def _to_duration(value: Any) -> timedelta:
    if value is None:
        raise ValueError("a duration is required; write durations like 90s, 5m, 1h30m or 2d")
    try:
        return parse_duration(value)
    except InvalidInputError as error:
        raise as_value_error(error) from None


def _split_list(value: Any) -> Any:
    # A comma-separated string is accepted wherever a list of words is, so that the same text
    # works in a label value and in the YAML file.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A duration written ``90s``, ``5m``, ``1h30m``, ``2d`` or as seconds; dumped back as text."""

WordList = Annotated[list[str], BeforeValidator(_split_list)]
"""A list of strings, also accepted as one comma-separated string."""
