"""Maintenance windows: when an update may be applied without a person present.

Two forms, each in an IANA time zone (default UTC):

- a daily time range ``HH:MM-HH:MM``, optionally on some days (``mon-fri``); a range whose end is
  before its start crosses midnight (``22:00-02:00``) and belongs to the day it starts on; equal
  start and end mean a whole day from that time;
- a cron start (5 fields, ``0 2 * * 1-5``) plus a duration (``2h``); day-of-month and
  day-of-week combine with OR when both are restricted, as in Vixie cron.

As one string (labels, short config entries)::

    22:00-02:00                          every day, UTC
    mon-fri 22:00-02:00 Europe/Berlin    days, range, zone
    0 2 * * 1-5 for 2h America/New_York  cron, duration, zone ("for" is optional)

Time ranges are wall-clock times in the zone, so they follow daylight saving; a cron window lasts
its duration in elapsed time from its (wall-clock) start. Reading the zone database through
:mod:`zoneinfo` is the one file access here; it is static data, not state, so the module stays pure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safe_updater.domain.durations import format_duration, parse_duration
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.fields import Duration, as_value_error

MAX_WINDOW_DURATION = timedelta(days=7)
# Far enough ahead to find a cron start that only exists on 29 February.
_SEARCH_DAYS = 366 * 8 + 2
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_HINT = (
    "write 'HH:MM-HH:MM [days] [Area/City]' (e.g. 'mon-fri 22:00-02:00 Europe/Berlin') or "
    "'<cron> for <duration> [Area/City]' (e.g. '0 2 * * 1-5 for 2h UTC')"
)


class MaintenanceWindow(BaseModel):
    """One recurring window. Build it from a mapping or from the one-string form."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time: str | None = Field(
        default=None, description="Daily range 'HH:MM-HH:MM'; may cross midnight ('22:00-02:00')."
    )
    days: str | None = Field(
        default=None,
        description="With 'time': the days the range starts on, e.g. 'mon-fri' or 'sat,sun'.",
    )
    cron: str | None = Field(
        default=None, description="Cron start, 5 fields: minute hour day-of-month month weekday."
    )
    duration: Duration | None = Field(
        default=None, description="With 'cron': how long the window stays open, e.g. '2h'."
    )
    timezone: str = Field(default="UTC", description="IANA zone, e.g. 'Europe/Berlin'.")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return _split_text(value)
            except InvalidInputError as error:
                raise as_value_error(error) from None
        return value

    @model_validator(mode="after")
    def _check(self) -> MaintenanceWindow:
        try:
            _compile(self.time, self.days, self.cron, self.duration, self.timezone)
        except InvalidInputError as error:
            raise as_value_error(error) from None
        return self

    @classmethod
    def parse(cls, text: str) -> MaintenanceWindow:
        """Parse the one-string form; raise :class:`InvalidInputError` with the accepted forms."""
        fields = _split_text(text)
        _compile(
            fields.get("time"),
            fields.get("days"),
            fields.get("cron"),
            _duration_or_none(fields.get("duration")),
            fields.get("timezone", "UTC"),
        )
        return cls.model_validate(fields)

    def is_open(self, now: datetime) -> bool:
        """Whether the window is open at ``now`` (timezone-aware)."""
        return self._compiled.is_open(_aware(now))

    def next_open(self, now: datetime) -> datetime | None:
        """``now`` if open, else the next opening (in the window's zone); ``None`` if never."""
        return self._compiled.next_open(_aware(now))

    def __str__(self) -> str:
        if self.cron is not None:
            assert self.duration is not None  # checked by _compile
            return f"{self.cron} for {format_duration(self.duration)} {self.timezone}"
        days = f"{self.days} " if self.days else ""
        return f"{days}{self.time} {self.timezone}"

    @property
    def _compiled(self) -> _Compiled:
        return _compile(self.time, self.days, self.cron, self.duration, self.timezone)


def any_open(windows: list[MaintenanceWindow], now: datetime) -> bool:
    """No windows means always open; otherwise open when any window is."""
    return not windows or any(window.is_open(now) for window in windows)


def next_opening(windows: list[MaintenanceWindow], now: datetime) -> datetime | None:
    """The earliest time at or after ``now`` when any of ``windows`` is open."""
    openings = [t for t in (w.next_open(now) for w in windows) if t is not None]
    return min(openings, key=lambda t: t.astimezone(UTC)) if openings else None


def parse_windows(text: str) -> list[MaintenanceWindow]:
    """Several windows in one string, separated by ``;`` (commas belong to cron lists)."""
    stripped = text.strip().lower()
    if stripped in ("", "always", "any", "none"):
        return []
    return [MaintenanceWindow.parse(part) for part in text.split(";") if part.strip()]


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        # A naive time here would silently mean the server's zone; make the caller say.
        raise ValueError("maintenance windows need a timezone-aware 'now'")
    return now


def _duration_or_none(value: str | None) -> timedelta | None:
    if value is None:
        return None
    return parse_duration(value, field="window duration")


def _split_text(text: str) -> dict[str, str]:
    """The one-string form as the mapping form's fields."""
    tokens = text.split()
    if not tokens or len(text) > 200:
        raise InvalidInputError(
            f"maintenance window {text[:60]!r} is empty or too long", hint=_HINT
        )
    fields: dict[str, str] = {}
    if tokens[-1] == "UTC" or "/" in tokens[-1]:
        fields["timezone"] = tokens.pop()
    ranges = [i for i, token in enumerate(tokens) if _looks_like_range(token)]
    if ranges:
        if len(ranges) > 1 or ranges[0] != len(tokens) - 1 or len(tokens) > 2:
            raise InvalidInputError(f"maintenance window {text!r} is not understood", hint=_HINT)
        fields["time"] = tokens[-1]
        if len(tokens) == 2:
            fields["days"] = tokens[0]
        return fields
    if len(tokens) < 6:
        raise InvalidInputError(f"maintenance window {text!r} is not understood", hint=_HINT)
    fields["cron"] = " ".join(tokens[:5])
    rest = tokens[5:]
    if rest and rest[0].lower() == "for":
        rest = rest[1:]
    if len(rest) != 1:
        raise InvalidInputError(
            f"maintenance window {text!r} needs one duration after the cron fields", hint=_HINT
        )
    fields["duration"] = rest[0]
    return fields


def _looks_like_range(token: str) -> bool:
    return ":" in token and "-" in token


@dataclass(frozen=True)
class _Compiled:
    zone: tzinfo
    days: frozenset[int]  # cron weekday numbers, 0 = Sunday
    start: time | None = None
    end: time | None = None
    minutes: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()
    month_days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    month_days_any: bool = True
    weekdays_any: bool = True
    duration: timedelta = timedelta(0)

    def is_open(self, now: datetime) -> bool:
        if self.start is not None:
            return self._range_open(now)
        earliest = now - self.duration
        for start in self._cron_starts(earliest.astimezone(self.zone).date(), now):
            start_utc = start.astimezone(UTC)
            if start_utc <= now < start_utc + self.duration:
                return True
        return False

    def next_open(self, now: datetime) -> datetime | None:
        if self.is_open(now):
            return now.astimezone(self.zone)
        if self.start is not None:
            today = now.astimezone(self.zone).date()
            for offset in range(8):
                day = today + timedelta(days=offset)
                if _weekday(day) in self.days:
                    opening = datetime.combine(day, self.start, tzinfo=self.zone)
                    if opening.astimezone(UTC) >= now:
                        return opening
            return None
        first_day = now.astimezone(self.zone).date()
        last = now + timedelta(days=_SEARCH_DAYS)
        for start in self._cron_starts(first_day, last):
            if start.astimezone(UTC) >= now:
                return start
        return None

    def _range_open(self, now: datetime) -> bool:
        assert self.start is not None and self.end is not None
        local = now.astimezone(self.zone)
        at, today = local.time().replace(tzinfo=None), local.date()
        yesterday = today - timedelta(days=1)
        started_today = _weekday(today) in self.days and at >= self.start
        if self.start < self.end:
            return started_today and at < self.end
        # Crossing midnight (or a whole day when start == end): the part after midnight belongs
        # to the window that started yesterday.
        return started_today or (_weekday(yesterday) in self.days and at < self.end)

    def _cron_starts(self, first_day: date, until: datetime) -> Iterator[datetime]:
        """Cron start times from ``first_day`` (local) on, in order, up to ``until``."""
        day = first_day
        last_day = until.astimezone(self.zone).date()
        while day <= last_day:
            if self._day_matches(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        start = datetime.combine(day, time(hour, minute), tzinfo=self.zone)
                        if start.astimezone(UTC) > until:
                            return
                        yield start
            day += timedelta(days=1)

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month_days = day.day in self.month_days
        in_weekdays = _weekday(day) in self.days
        if self.month_days_any or self.weekdays_any:
            return in_month_days and in_weekdays
        return in_month_days or in_weekdays


def _weekday(day: date) -> int:
    return day.isoweekday() % 7


@lru_cache(maxsize=256)
def _compile(
    time_range: str | None,
    days: str | None,
    cron: str | None,
    duration: timedelta | None,
    timezone: str,
) -> _Compiled:
    zone = _zone(timezone)
    if (time_range is None) == (cron is None):
        raise InvalidInputError("a maintenance window needs either 'time' or 'cron'", hint=_HINT)
    if time_range is not None:
        if duration is not None:
            raise InvalidInputError(
                "'duration' goes with 'cron'; a 'time' range has its own end", hint=_HINT
            )
        start_text, sep, end_text = time_range.partition("-")
        if not sep:
            raise InvalidInputError(f"{time_range!r} is not HH:MM-HH:MM", hint=_HINT)
        weekdays = _field(days, 0, 7, _WEEKDAYS, "days") if days else frozenset(range(7))
        return _Compiled(
            zone=zone,
            days=frozenset(d % 7 for d in weekdays),
            start=_clock(start_text),
            end=_clock(end_text),
        )
    assert cron is not None
    if days is not None:
        raise InvalidInputError("'days' goes with 'time'; put the weekdays in the cron", hint=_HINT)
    if duration is None or duration <= timedelta(0) or duration > MAX_WINDOW_DURATION:
        raise InvalidInputError(
            f"cron window {cron!r} needs a duration between 1s and 7d", hint=_HINT
        )
    parts = cron.split()
    if len(parts) != 5:
        raise InvalidInputError(f"cron {cron!r} does not have 5 fields", hint=_HINT)
    minute, hour, month_day, month, weekday = parts
    return _Compiled(
        zone=zone,
        minutes=tuple(sorted(_field(minute, 0, 59, (), "minute"))),
        hours=tuple(sorted(_field(hour, 0, 23, (), "hour"))),
        month_days=_field(month_day, 1, 31, (), "day of month"),
        months=_field(month, 1, 12, _MONTHS, "month", name_base=1),
        days=frozenset(d % 7 for d in _field(weekday, 0, 7, _WEEKDAYS, "day of week")),
        month_days_any=month_day.startswith("*"),
        weekdays_any=weekday.startswith("*"),
        duration=duration,
    )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"unknown time zone {name!r}", hint="use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _clock(text: str) -> time:
    hours, sep, minutes = text.strip().partition(":")
    if (
        sep
        and hours.isdigit()
        and minutes.isdigit()
        and len(minutes) == 2
        and int(hours) < 24
        and int(minutes) < 60
    ):
        return time(int(hours), int(minutes))
    raise InvalidInputError(f"{text!r} is not a time of day HH:MM", hint=_HINT)


def _field(
    text: str, low: int, high: int, names: tuple[str, ...], what: str, *, name_base: int = 0
) -> frozenset[int]:
    """One cron field: ``*``, ``a``, ``a-b``, each optionally ``/step``, joined by commas."""
    values: set[int] = set()
    for item in text.lower().split(","):
        body, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _bad_field(text, what)
            step = int(step_text)
        if body == "*":
            first, last = low, high
        else:
            first_text, dash, last_text = body.partition("-")
            first = _value(first_text, low, high, names, name_base, text, what)
            last = _value(last_text, low, high, names, name_base, text, what) if dash else first
            if slash and not dash:
                last = high
            if last < first:
                raise _bad_field(text, what)
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(
    text: str, low: int, high: int, names: tuple[str, ...], base: int, field: str, what: str
) -> int:
    if text in names:
        return names.index(text) + base
    if text.isdigit() and low <= int(text) <= high:
        return int(text)
    raise _bad_field(field, what)


def _bad_field(text: str, what: str) -> InvalidInputError:
    return InvalidInputError(
        f"{text!r} is not a valid {what} field",
        hint="use *, a number, a range a-b, a step */n or a list a,b (names like mon or jan work)",
    )
