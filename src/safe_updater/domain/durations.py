"""Durations as people write them in config files and labels: ``90s``, ``5m``, ``1h30m``, ``2d``."""

from __future__ import annotations

from datetime import timedelta

from safe_updater.domain.errors import InvalidInputError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_MAX_LENGTH = 64


def parse_duration(text: str | int | float | timedelta, *, field: str | None = None) -> timedelta:
    """Parse ``90s``, ``5m``, ``1h30m``, ``250ms``, ``2d`` or a plain number of seconds.

    One left-to-right pass, no regex, so hostile input costs linear time.
    """
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise _bad(str(text), field)
        return timedelta(seconds=float(text))
    if not isinstance(text, str):
        raise _bad(repr(text), field)
    raw = text.strip()
    if not raw or len(raw) > _MAX_LENGTH:
        raise _bad(text, field)
    try:
        return timedelta(seconds=float(raw)) if float(raw) >= 0 else _raise(_bad(text, field))
    except ValueError:
        pass
    total = 0.0
    i = 0
    n = len(raw)
    while i < n:
        start = i
        while i < n and (raw[i].isdigit() or raw[i] == "."):
            i += 1
        number = raw[start:i]
        unit_start = i
        while i < n and raw[i].isalpha():
            i += 1
        unit = raw[unit_start:i].lower()
        if not number or unit not in _UNITS or number.count(".") > 1:
            raise _bad(text, field)
        total += float(number) * _UNITS[unit]
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def _raise(error: InvalidInputError) -> timedelta:
    raise error


def _bad(text: str, field: str | None) -> InvalidInputError:
    return InvalidInputError(
        f"{text[:_MAX_LENGTH]!r} is not a duration",
        hint="write durations like 90s, 5m, 1h30m or 2d",
        field=field,
    )
