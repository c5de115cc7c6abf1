"""The journal's aggregate tables (revision 0003): kept by open/close, equal to what the attempt
rows say, filled by the migration from an existing journal, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from safe_updater.adapters.store import StateStore
from safe_updater.adapters.store.aggregates import duration_key
from safe_updater.adapters.store.migrate import downgrade_to, head_revision, upgrade_to_head
from safe_updater.adapters.store.schema import attempts
from safe_updater.domain.journal import Outcome

if TYPE_CHECKING:
    from conftest import FakeClock

BOUNDS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
APPLIED = ("updated", "rolled_back", "failed")


def _attempt(
    store: StateStore, clock: FakeClock, asset_id: str, outcome: Outcome | None, seconds: float
) -> None:
    row = store.journal.open_attempt(
        asset_id=asset_id,
        from_version="1",
        to_version="2",
        change_type="minor" if seconds > 100 else "patch",
        idempotency_key=f"{asset_id}-{clock.now.isoformat()}",
    )
    clock.advance(seconds)
    if outcome is not None:
        store.journal.close(row.id, outcome, "test")


def _expected(store: StateStore, since: datetime) -> dict[str, tuple[list[int], int, float]]:
    """The histogram computed in Python from every attempt row (exact datetimes)."""
    stmt = select(attempts.c.outcome, attempts.c.started_at, attempts.c.finished_at).where(
        attempts.c.outcome.in_(APPLIED), attempts.c.started_at >= since
    )
    result: dict[str, tuple[list[int], int, float]] = {}
    with store.engine.connect() as conn:
        for outcome, started, finished in conn.execute(stmt):
            seconds = (finished - started).total_seconds()
            cumulative, n, total = result.get(outcome, ([0] * len(BOUNDS), 0, 0.0))
            for i, bound in enumerate(BOUNDS):
                cumulative[i] += seconds <= bound
            result[outcome] = (cumulative, n + 1, total + seconds)
    return result


def _same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want)
    for outcome, (cumulative, count, total) in want.items():
        assert got[outcome][:2] == (cumulative, count), outcome
        assert math.isclose(got[outcome][2], total, abs_tol=1e-3), outcome


def _journal_over_days(store: StateStore, clock: FakeClock) -> None:
    """Attempts over four days, durations on and beside every bound, one left open."""
    durations = [0.2, 5, 5.5, 10, 29.999, 60, 61, 300, 599, 600, 1800, 3599, 3601, 7200]
    outcomes = [Outcome.UPDATED, Outcome.ROLLED_BACK, Outcome.FAILED, Outcome.NO_UPDATE]
    for day in range(4):
        for i, seconds in enumerate(durations):
            asset = f"docker:h/app{(day * len(durations) + i) % 9}"
            _attempt(store, clock, asset, outcomes[(day + i) % len(outcomes)], seconds)
        clock.advance(6 * 3600)
    _attempt(store, clock, "docker:h/app0", Outcome.AWAITING_APPROVAL, 0)
    _attempt(store, clock, "docker:h/app1", Outcome.AWAITING_APPROVAL, 0)
    _attempt(store, clock, "docker:h/app1", None, 0)  # a newer attempt settles app1's request


def test_histogram_over_days_equals_the_rows(store: StateStore, clock: FakeClock) -> None:
    begin = clock.now
    _journal_over_days(store, clock)
    # Every cut: before everything, inside the first and a later day, at midnight, the end.
    cuts = [
        begin - timedelta(days=1),
        begin + timedelta(minutes=30),
        begin + timedelta(days=1, hours=14, minutes=7),
        datetime.combine((begin + timedelta(days=2)).date(), datetime.min.time(), tzinfo=UTC),
        clock.now + timedelta(seconds=1),
    ]
    for since in cuts:
        _same(store.journal.duration_histogram(BOUNDS, since=since), _expected(store, since))
    assert store.journal.count_awaiting_approval() == 1


def test_rebuild_gives_the_aggregates_the_writes_kept(store: StateStore, clock: FakeClock) -> None:
    _journal_over_days(store, clock)
    since = clock.now - timedelta(days=3, hours=2)
    kept = (
        store.journal.outcome_counts(),
        store.journal.count_awaiting_approval(),
        store.journal.duration_histogram(BOUNDS, since=since),
    )
    store.journal.rebuild_aggregates()
    rebuilt = (
        store.journal.outcome_counts(),
        store.journal.count_awaiting_approval(),
        store.journal.duration_histogram(BOUNDS, since=since),
    )
    assert rebuilt == kept
    assert kept[0][("no_update", "patch")] > 0 and kept[1] == 1


def test_upgrade_from_0002_fills_the_aggregates_from_existing_rows(store: StateStore) -> None:
    downgrade_to(store.engine, "0002")
    t0 = datetime(2026, 2, 1, 23, 0, tzinfo=UTC)
    rows = [
        # (asset, outcome, start offset s, duration s)
        ("a", "updated", 0, 42.0),
        ("a", "rolled_back", 7200, 90.0),  # the next day (UTC)
        ("b", "awaiting_approval", 100, 0.0),
        ("c", "awaiting_approval", 200, 0.0),
        ("c", "updated", 300, 5.0),
        ("d", None, 400, 0.0),  # open
    ]
    with store.engine.begin() as conn:
        for i, (asset, outcome, offset, seconds) in enumerate(rows):
            started = t0 + timedelta(seconds=offset)
            conn.execute(
                insert(attempts).values(
                    idempotency_key=f"k{i}",
                    asset_id=asset,
                    from_version="1",
                    to_version="2",
                    change_type="patch",
                    phase="closed" if outcome else "applying",
                    outcome=outcome,
                    snapshot={},
                    applied={},
                    started_at=started,
                    updated_at=started,
                    finished_at=started + timedelta(seconds=seconds) if outcome else None,
                )
            )
    upgrade_to_head(store.engine)
    assert store.schema_revision() == head_revision()
    journal = store.journal
    assert journal.outcome_counts() == {
        ("updated", "patch"): 2,
        ("rolled_back", "patch"): 1,
        ("awaiting_approval", "patch"): 2,
    }
    assert journal.count_awaiting_approval() == 1  # c's request was settled by its update
    histogram = journal.duration_histogram((10.0, 60.0, 120.0), since=t0 - timedelta(hours=1))
    assert histogram["updated"][:2] == ([1, 2, 2], 2)
    assert math.isclose(histogram["updated"][2], 47.0, abs_tol=1e-3)
    assert histogram["rolled_back"][:2] == ([0, 0, 1], 1)
    # From the second day on: only the rollback, read from the aggregate table.
    later = journal.duration_histogram((120.0,), since=t0 + timedelta(minutes=30))
    assert later == {"rolled_back": ([1], 1, 90.0)}


def test_an_attempt_opened_with_an_older_clock_does_not_hide_the_newest(
    store: StateStore, clock: FakeClock
) -> None:
    _attempt(store, clock, "docker:h/a", Outcome.AWAITING_APPROVAL, 0)
    clock.advance(-3600)  # another host, its clock an hour behind
    _attempt(store, clock, "docker:h/a", Outcome.REJECTED, 0)
    assert store.journal.count_awaiting_approval() == 1


def test_duration_key_keeps_two_digit_bounds_exact() -> None:
    assert [duration_key(s) for s in (-3, 0, 0.001, 5, 5.01, 99.5, 101, 999, 1001, 3601)] == [
        0,
        0,
        1,
        5,
        6,
        100,
        110,
        1000,
        1100,
        3700,
    ]
    for tenths in range(0, 40_000, 7):
        seconds = tenths / 10
        for bound in BOUNDS:
            assert (seconds <= bound) == (duration_key(seconds) <= bound), (seconds, bound)
