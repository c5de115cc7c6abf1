"""Maintenance windows: daily ranges (incl. crossing midnight), cron + duration, time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.windows import (
    MaintenanceWindow,
    any_open,
    next_opening,
    parse_windows,
)

BERLIN = ZoneInfo("Europe/Berlin")
NY = ZoneInfo("America/New_York")


def at(text: str, zone: Any = UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


# 2025-03-03 is a Monday.
@pytest.mark.parametrize(
    ("spec", "now", "is_open", "next_open"),
    [
        ("09:00-17:00", at("2025-03-03T08:59"), False, at("2025-03-03T09:00")),
        ("09:00-17:00", at("2025-03-03T09:00"), True, None),
        ("09:00-17:00", at("2025-03-03T16:59"), True, None),
        ("09:00-17:00", at("2025-03-03T17:00"), False, at("2025-03-04T09:00")),
        # crossing midnight
        ("22:00-02:00", at("2025-03-03T23:30"), True, None),
        ("22:00-02:00", at("2025-03-04T01:59"), True, None),
        ("22:00-02:00", at("2025-03-04T02:00"), False, at("2025-03-04T22:00")),
        ("22:00-02:00", at("2025-03-03T21:59"), False, at("2025-03-03T22:00")),
        # days are the start day: Friday night runs into Saturday, Saturday night does not start
        ("mon-fri 22:00-02:00", at("2025-03-08T01:00"), True, None),
        ("mon-fri 22:00-02:00", at("2025-03-08T23:00"), False, at("2025-03-10T22:00")),
        ("mon-fri 22:00-02:00", at("2025-03-10T01:00"), False, at("2025-03-10T22:00")),
        ("sat,sun 10:00-12:00", at("2025-03-03T11:00"), False, at("2025-03-08T10:00")),
        # equal start and end: a whole day from that time
        ("06:00-06:00", at("2025-03-03T05:00"), True, None),
        # time zones: 22:00 in Berlin is 21:00 UTC in winter, 20:00 UTC in summer
        ("22:00-02:00 Europe/Berlin", at("2025-03-03T21:30"), True, None),
        (
            "22:00-02:00 Europe/Berlin",
            at("2025-03-03T20:30"),
            False,
            at("2025-03-03T22:00", BERLIN),
        ),
        ("22:00-02:00 Europe/Berlin", at("2025-07-01T20:30"), True, None),
        ("mon 09:00-10:00 America/New_York", at("2025-03-03T14:30"), True, None),
        (
            "mon 09:00-10:00 America/New_York",
            at("2025-03-03T09:30"),
            False,
            at("2025-03-03T09:00", NY),
        ),
    ],
)
def test_time_range_windows(
    spec: str, now: datetime, is_open: bool, next_open: datetime | None
) -> None:
    window = MaintenanceWindow.parse(spec)
    assert window.is_open(now) is is_open
    expected = now if is_open else next_open
    assert window.next_open(now) == expected


@pytest.mark.parametrize(
    ("spec", "now", "is_open", "next_open"),
    [
        ("0 2 * * 1-5 for 2h", at("2025-03-03T02:30"), True, None),
        ("0 2 * * 1-5 for 2h", at("2025-03-03T04:00"), False, at("2025-03-04T02:00")),
        ("0 2 * * 1-5 2h", at("2025-03-08T03:00"), False, at("2025-03-10T02:00")),  # Saturday
        # a window started yesterday evening is still open after midnight
        ("0 23 * * fri for 4h", at("2025-03-08T02:59"), True, None),
        ("30 */6 * * * for 30m", at("2025-03-03T12:45"), True, None),
        ("30 */6 * * * for 30m", at("2025-03-03T13:00"), False, at("2025-03-03T18:30")),
        # day-of-month OR day-of-week when both are restricted (Vixie cron)
        ("0 0 1 * mon for 1h", at("2025-03-10T00:30"), True, None),  # a Monday
        ("0 0 1 * mon for 1h", at("2025-04-01T00:30"), True, None),  # the 1st (a Tuesday)
        ("0 0 1 * mon for 1h", at("2025-03-11T00:30"), False, at("2025-03-17T00:00")),
        ("0 0 1 jan,jul * for 1d", at("2025-03-03T00:00"), False, at("2025-07-01T00:00")),
        ("0 0 29 2 * for 1h", at("2025-03-01T00:00"), False, at("2028-02-29T00:00")),
        # zone: 02:00 Berlin (winter) is 01:00 UTC
        ("0 2 * * * for 1h Europe/Berlin", at("2025-01-10T01:30"), True, None),
        (
            "0 2 * * * for 1h Europe/Berlin",
            at("2025-01-10T02:30"),
            False,
            at("2025-01-11T02:00", BERLIN),
        ),
    ],
)
def test_cron_windows(spec: str, now: datetime, is_open: bool, next_open: datetime | None) -> None:
    window = MaintenanceWindow.parse(spec)
    assert window.is_open(now) is is_open
    assert window.next_open(now) == (now if is_open else next_open)


def test_cron_that_never_fires_has_no_next_opening() -> None:
    window = MaintenanceWindow.parse("0 0 31 2 * for 1h")
    assert window.next_open(at("2025-01-01T00:00")) is None


def test_mapping_form_and_string_form_agree() -> None:
    mapping = MaintenanceWindow.model_validate(
        {"cron": "0 2 * * 1-5", "duration": "2h", "timezone": "Europe/Berlin"}
    )
    assert mapping == MaintenanceWindow.parse("0 2 * * 1-5 for 2h Europe/Berlin")
    daily = MaintenanceWindow.model_validate("mon-fri 22:00-02:00 Europe/Berlin")
    assert daily.time == "22:00-02:00" and daily.days == "mon-fri"
    assert str(daily) == "mon-fri 22:00-02:00 Europe/Berlin"


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "25:00-02:00",
        "22:00-2",
        "22:00-02:00 Mars/Olympus",
        "funday 22:00-02:00",
        "0 2 * * 1-5",  # cron without a duration
        "0 2 * * 1-5 for 8d",  # longer than a week
        "0 2 * * for 2h",  # four fields
        "61 2 * * * for 1h",
        "0 2 * * 5-1 for 1h",  # reversed range
        "0 2 */0 * * for 1h",
    ],
)
def test_bad_windows(spec: str) -> None:
    with pytest.raises(InvalidInputError):
        MaintenanceWindow.parse(spec)


@pytest.mark.parametrize(
    "data",
    [
        {"time": "22:00-02:00", "cron": "0 2 * * *"},
        {"time": "22:00-02:00", "duration": "1h"},
        {"cron": "0 2 * * *", "duration": "1h", "days": "mon"},
        {},
        {"time": "22:00-02:00", "zone": "UTC"},  # unknown key
    ],
)
def test_inconsistent_mappings_are_validation_errors(data: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        MaintenanceWindow.model_validate(data)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        MaintenanceWindow.parse("22:00-02:00").is_open(datetime(2025, 3, 3, 23, 0))


def test_several_windows() -> None:
    windows = parse_windows("mon 09:00-10:00 ; 0 20 * * * for 1h")
    assert len(windows) == 2
    monday_night = at("2025-03-03T20:30")
    assert any_open(windows, monday_night)
    tuesday_morning = at("2025-03-04T09:30")
    assert not any_open(windows, tuesday_morning)
    assert next_opening(windows, tuesday_morning) == at("2025-03-04T20:00")
    assert parse_windows("always") == [] and any_open([], tuesday_morning)


def test_dst_spring_forward_cron_window_lasts_its_elapsed_duration() -> None:
    # 2025-03-30 02:00 does not exist in Berlin; the window starts at the wall time's mapping
    # and still lasts one hour of real time.
    window = MaintenanceWindow.parse("0 1 * * * for 2h Europe/Berlin")
    start = datetime(2025, 3, 30, 1, 0, tzinfo=BERLIN).astimezone(UTC)
    assert window.is_open(start + timedelta(minutes=119))
    assert not window.is_open(start + timedelta(minutes=120))
