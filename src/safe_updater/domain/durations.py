"""Durations as people write them in config files and labels: ``90s``, ``5m``, ``1h30m``, ``2d``."""

from __future__ import annotations

import math
from datetime import timedelta

from safe_updater.domain.errors import InvalidInputError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_MAX_LENGTH = 64
_MAX_SECONDS = timedelta.max.total_seconds()
_NUMBER_CHARS = frozenset("0123456789.")


def parse_duration(text: str | int | float | timedelta, *, field: str | None = None) -> timedelta:
    """Parse ``90s``, ``5m``, ``1h30m``, ``250ms``, ``2d`` or a plain number of seconds.

    One left-to-right pass, no regex, so hostile input costs linear time.
    """
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float) and not isinstance(text, bool):
        return _seconds(text, str(text), field)
    if not isinstance(text, str):
        raise _bad(repr(text), field)
    raw = text.strip()
    if not raw or len(raw) > _MAX_LENGTH:
        raise _bad(text, field)
    try:
        plain = float(raw)
    except ValueError:
        pass
    else:
        return _seconds(plain, text, field)
    total = 0.0
    i = 0
    n = len(raw)
    while i < n:
        start = i
        # ASCII digits only: str.isdigit() also takes superscripts and other scripts' digits,
        # which float() then refuses with a bare ValueError or reads as nobody meant.
        while i < n and raw[i] in _NUMBER_CHARS:
            i += 1
        number = raw[start:i]
        unit_start = i
        while i < n and raw[i].isalpha():
            i += 1
        unit = raw[unit_start:i].lower()
        if not number.strip(".") or unit not in _UNITS or number.count(".") > 1:
            raise _bad(text, field)
        total += float(number) * _UNITS[unit]
    return _seconds(total, text, field)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def _seconds(value: float, text: str, field: str | None) -> timedelta:
    # NaN, infinity ('1e400', 'inf') and anything beyond timedelta's range (about 2.7 million
    # years) made timedelta() raise OverflowError, which escaped every caller's except clause.
    if not math.isfinite(value) or not 0 <= value <= _MAX_SECONDS:
        raise _bad(text, field)
    try:
        return timedelta(seconds=float(value))
    except OverflowError:  # the last day before the limit, rounded up by float
        raise _bad(text, field) from None


def _bad(text: str, field: str | None) -> InvalidInputError:
    return InvalidInputError(
        f"{text[:_MAX_LENGTH]!r} is not a duration",
        hint="write durations like 90s, 5m, 1h30m or 2d",
        field=field,
    )
