"""Revision 0004: the verifying phase's duration and the scan's pending updates, kept by the
journal and the inventory, equal to what the rows say, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import insert, select

from safe_updater.adapters.store import StateStore
from safe_updater.adapters.store.assets import PendingUpdate
from safe_updater.adapters.store.migrate import downgrade_to, head_revision, upgrade_to_head
from safe_updater.adapters.store.schema import assets, attempts
from safe_updater.domain.assets import Asset, AssetId, AssetKind, ImageRef
from safe_updater.domain.journal import Outcome, Phase

if TYPE_CHECKING:
    from conftest import FakeClock

BOUNDS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
APPLIED = ("updated", "rolled_back", "failed")


def _open(store: StateStore, clock: FakeClock, asset_id: str, to_version: str = "2") -> int:
    row = store.journal.open_attempt(
        asset_id=asset_id,
        from_version="1",
        to_version=to_version,
        change_type="patch",
        idempotency_key=f"{asset_id}-{to_version}-{clock.now.isoformat()}",
    )
    return row.id


def _verified(
    store: StateStore,
    clock: FakeClock,
    asset_id: str,
    verify: float,
    *,
    healthy: bool = True,
    to_version: str = "2",
) -> int:
    """An attempt through apply, ``verify`` seconds of monitoring, then commit or roll back."""
    attempt = _open(store, clock, asset_id, to_version)
    for phase in (Phase.PREFLIGHT, Phase.SNAPSHOTTED, Phase.APPLYING):
        store.journal.advance(attempt, phase)
        clock.advance(3)  # apply time: not part of the verification
    store.journal.advance(attempt, Phase.VERIFYING)
    clock.advance(verify)
    if healthy:
        store.journal.advance(attempt, Phase.COMMITTING)
        clock.advance(2)
        store.journal.close(attempt, Outcome.UPDATED, "healthy")
    else:
        store.journal.advance(attempt, Phase.ROLLING_BACK, reason="unhealthy")
        clock.advance(4)
        store.journal.close(attempt, Outcome.ROLLED_BACK, "rolled back")
    return attempt


def _verify_seconds(store: StateStore, attempt_id: int) -> float | None:
    with store.engine.connect() as conn:
        value: float | None = conn.execute(
            select(attempts.c.verify_seconds).where(attempts.c.id == attempt_id)
        ).scalar_one()
    return value


def _expected(store: StateStore, since: datetime) -> dict[str, tuple[list[int], int, float]]:
    """The verify histogram computed in Python from every attempt row."""
    stmt = select(attempts.c.outcome, attempts.c.verify_seconds).where(
        attempts.c.outcome.in_(APPLIED),
        attempts.c.started_at >= since,
        attempts.c.verify_seconds.is_not(None),
    )
    result: dict[str, tuple[list[int], int, float]] = {}
    with store.engine.connect() as conn:
        for outcome, seconds in conn.execute(stmt):
            cumulative, n, total = result.get(outcome, ([0] * len(BOUNDS), 0, 0.0))
            for i, bound in enumerate(BOUNDS):
                cumulative[i] += seconds <= bound
            result[outcome] = (cumulative, n + 1, total + seconds)
    return result


Histogram = dict[str, tuple[list[int], int, float]]


def _same(got: Histogram, want: Histogram) -> None:
    assert set(got) == set(want)
    for outcome, (cumulative, count, total) in want.items():
        assert got[outcome][:2] == (cumulative, count), outcome
        assert math.isclose(got[outcome][2], total, abs_tol=1e-3), outcome


# -- verify durations -------------------------------------------------------------------------


def test_verification_is_timed_from_verifying_to_the_verdict(
    store: StateStore, clock: FakeClock
) -> None:
    start = clock.now
    healthy = _verified(store, clock, "docker:h/a", 42)
    unhealthy = _verified(store, clock, "docker:h/b", 7, healthy=False)
    # Apply failed: rolled back without a verdict, so no verification to count.
    failed_apply = _open(store, clock, "docker:h/c")
    store.journal.advance(failed_apply, Phase.APPLYING)
    clock.advance(5)
    store.journal.advance(failed_apply, Phase.ROLLING_BACK, reason="apply failed")
    store.journal.close(failed_apply, Outcome.ROLLED_BACK, "apply failed")

    # The fake clock ticks 1 ms per reading: the verify time is the monitoring, to the ms.
    assert math.isclose(_verify_seconds(store, healthy) or 0, 42, abs_tol=0.01)
    assert math.isclose(_verify_seconds(store, unhealthy) or 0, 7, abs_tol=0.01)
    assert _verify_seconds(store, failed_apply) is None

    histogram = store.journal.verify_histogram((5.0, 10.0, 60.0), since=start)
    assert histogram["updated"][:2] == ([0, 0, 1], 1)
    assert math.isclose(histogram["updated"][2], 42, abs_tol=0.01)
    assert histogram["rolled_back"][:2] == ([0, 1, 1], 1)
    assert math.isclose(histogram["rolled_back"][2], 7, abs_tol=0.01)
    # The update-duration histogram still counts all three, open to close.
    assert store.journal.duration_histogram((3600.0,), since=start)["rolled_back"][1] == 2


def test_a_retried_move_keeps_the_clock_and_a_new_verification_restarts_it(
    store: StateStore, clock: FakeClock
) -> None:
    attempt = _open(store, clock, "docker:h/a")
    store.journal.advance(attempt, Phase.APPLYING)
    store.journal.advance(attempt, Phase.VERIFYING)
    clock.advance(10)
    # A task retried after its write committed writes the same phase again: same start.
    store.journal.advance(attempt, Phase.VERIFYING)
    clock.advance(20)
    store.journal.advance(attempt, Phase.COMMITTING)
    clock.advance(100)
    store.journal.advance(attempt, Phase.COMMITTING)  # a retried verdict write: no change
    assert math.isclose(_verify_seconds(store, attempt) or 0, 30, abs_tol=0.01)

    # Recovery may verify again: that verification is timed on its own.
    store.journal.advance(attempt, Phase.VERIFYING)
    assert _verify_seconds(store, attempt) is None
    clock.advance(12)
    store.journal.advance(attempt, Phase.ROLLING_BACK, reason="unhealthy")
    store.journal.close(attempt, Outcome.ROLLED_BACK, "rolled back")
    assert math.isclose(_verify_seconds(store, attempt) or 0, 12, abs_tol=0.01)


def test_closing_while_verifying_counts_no_verification(
    store: StateStore, clock: FakeClock
) -> None:
    start = clock.now
    attempt = _open(store, clock, "docker:h/a")
    store.journal.advance(attempt, Phase.VERIFYING)
    clock.advance(30)
    store.journal.close(attempt, Outcome.FAILED, "abandoned")  # no verdict was reached
    assert _verify_seconds(store, attempt) is None
    assert store.journal.verify_histogram(BOUNDS, since=start) == {}


def test_verify_histogram_over_days_equals_the_rows_and_survives_a_rebuild(
    store: StateStore, clock: FakeClock
) -> None:
    begin = clock.now
    durations = [0.2, 5, 5.5, 10, 29.999, 60, 61, 300, 599, 600, 1800, 3599, 3601]
    for day in range(3):
        for i, seconds in enumerate(durations):
            _verified(store, clock, f"docker:h/app{i % 5}", seconds, healthy=(day + i) % 3 != 0)
        clock.advance(8 * 3600)
    cuts = [
        begin - timedelta(days=1),
        begin + timedelta(hours=2),
        begin + timedelta(days=1, hours=3),
        datetime.combine((begin + timedelta(days=2)).date(), datetime.min.time(), tzinfo=UTC),
        clock.now,
    ]
    kept = []
    for since in cuts:
        got = store.journal.verify_histogram(BOUNDS, since=since)
        _same(got, _expected(store, since))
        kept.append(got)
    store.journal.rebuild_aggregates()
    assert [store.journal.verify_histogram(BOUNDS, since=since) for since in cuts] == kept


def test_upgrade_from_0003_keeps_timing_an_attempt_that_is_verifying(
    store: StateStore, clock: FakeClock
) -> None:
    downgrade_to(store.engine, "0003")
    t0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
    rows = [
        # (asset, phase, outcome, started, updated / finished)
        ("docker:h/a", "closed", "updated", t0, t0 + timedelta(seconds=90)),
        ("docker:h/b", "closed", "rolled_back", t0, t0 + timedelta(seconds=60)),
        # Entered verifying at its updated_at, before the upgrade; the verdict comes after.
        ("docker:h/c", "verifying", None, t0, t0 + timedelta(seconds=20)),
    ]
    with store.engine.begin() as conn:
        for i, (asset, phase, outcome, started, updated) in enumerate(rows):
            conn.execute(
                insert(attempts).values(
                    idempotency_key=f"k{i}",
                    asset_id=asset,
                    from_version="1",
                    to_version="2",
                    change_type="patch",
                    phase=phase,
                    outcome=outcome,
                    snapshot={},
                    applied={},
                    started_at=started,
                    updated_at=updated,
                    finished_at=updated if outcome else None,
                )
            )
    upgrade_to_head(store.engine)
    assert store.schema_revision() == head_revision()
    since = t0 - timedelta(days=1)
    # Closed attempts never recorded when verification began: nothing is made up.
    assert store.journal.verify_histogram(BOUNDS, since=since) == {}

    [open_attempt] = store.journal.find_open("docker:h/c")
    clock.now = t0 + timedelta(seconds=20 + 45)
    store.journal.advance(open_attempt.id, Phase.COMMITTING)
    store.journal.close(open_attempt.id, Outcome.UPDATED, "healthy")
    histogram = store.journal.verify_histogram(BOUNDS, since=since)
    assert histogram["updated"][:2] == ([0, 0, 0, 1, 1, 1, 1, 1, 1, 1], 1)
    assert math.isclose(histogram["updated"][2], 45, abs_tol=0.01)


# -- pending updates --------------------------------------------------------------------------


def _asset(name: str, target: str = "h") -> Asset:
    return Asset(
        id=AssetId(f"docker:{target}/{name}"),
        kind=AssetKind.DOCKER,
        target=target,
        name=name,
        image=ImageRef(registry="127.0.0.1:5000", repository="demo/web", tag="1.0.0"),
        current_version="1.0.0",
    )


def test_pending_updates_follow_each_scan(store: StateStore) -> None:
    store.assets.upsert([_asset(n) for n in ("a", "b", "c", "d")])
    assert store.assets.pending_counts() == {}
    store.assets.record_pending(
        {
            "docker:h/a": PendingUpdate("auto", "patch", "1.0.1"),
            "docker:h/b": PendingUpdate("auto", "patch", "1.0.2"),
            "docker:h/c": PendingUpdate("approve", "major", "2.0.0"),
            "docker:h/d": None,
            "docker:h/gone": PendingUpdate("auto", "patch", "9"),  # not in the inventory
        }
    )
    assert store.assets.pending_counts() == {("auto", "patch"): 2, ("approve", "major"): 1}

    # The next scan stores the inventory first (pending kept), then its plan: b has nothing
    # left, c's registry did not answer (not in the plan: keeps its last finding).
    store.assets.upsert([_asset(n) for n in ("a", "b", "c", "d")])
    assert store.assets.pending_counts() == {("auto", "patch"): 2, ("approve", "major"): 1}
    store.assets.record_pending(
        {"docker:h/a": PendingUpdate("auto", "minor", "1.1.0"), "docker:h/b": None}
    )
    assert store.assets.pending() == {
        "docker:h/a": PendingUpdate("auto", "minor", "1.1.0"),
        "docker:h/c": PendingUpdate("approve", "major", "2.0.0"),
    }
    # An asset the scan no longer finds takes its pending update with it.
    store.assets.remove_missing("docker:h", {"docker:h/a", "docker:h/b", "docker:h/d"})
    assert store.assets.pending_counts() == {("auto", "minor"): 1}


def test_closing_an_attempt_settles_the_pending_update_it_applied(
    store: StateStore, clock: FakeClock
) -> None:
    names = ("updated", "other", "quarantined", "apply_failed", "waiting")
    store.assets.upsert([_asset(n) for n in names])
    store.assets.record_pending(
        {f"docker:h/{n}": PendingUpdate("auto", "patch", "1.0.1") for n in names}
    )

    _verified(store, clock, "docker:h/updated", 10, to_version="1.0.1")
    _verified(store, clock, "docker:h/other", 10, to_version="1.0.5")  # not the scan's target
    # Rolled back after failing verification: quarantined (before the close), so settled.
    attempt = _open(store, clock, "docker:h/quarantined", "1.0.1")
    store.journal.advance(attempt, Phase.VERIFYING)
    store.journal.advance(attempt, Phase.ROLLING_BACK, reason="unhealthy")
    store.quarantine.add("docker:h/quarantined", "1.0.1", "failed verification", attempt)
    store.journal.close(attempt, Outcome.ROLLED_BACK, "rolled back")
    # Rolled back after the apply failed: not quarantined, the next run tries again.
    attempt = _open(store, clock, "docker:h/apply_failed", "1.0.1")
    store.journal.advance(attempt, Phase.ROLLING_BACK, reason="apply failed")
    store.journal.close(attempt, Outcome.ROLLED_BACK, "apply failed")
    attempt = _open(store, clock, "docker:h/waiting", "1.0.1")
    store.journal.close(attempt, Outcome.AWAITING_APPROVAL, "needs approval")

    assert set(store.assets.pending()) == {
        "docker:h/other",
        "docker:h/apply_failed",
        "docker:h/waiting",
    }


def test_pending_counts_read_the_index_alone(store: StateStore) -> None:
    store.assets.upsert([_asset(f"app{i}") for i in range(50)])
    with store.engine.connect() as conn:
        # New assets have no pending update until a scan plans them.
        assert conn.execute(select(assets.c.pending_action)).scalars().all() == [None] * 50
        if store.dialect != "sqlite":
            return  # PostgreSQL picks its plan by table statistics; the counts test covers it
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT pending_action, pending_change_type, count(*) "
            "FROM assets WHERE pending_action IS NOT NULL "
            "GROUP BY pending_action, pending_change_type"
        ).fetchall()
    assert any("COVERING INDEX ix_assets_pending_action" in str(row) for row in plan), plan
