"""The journal's aggregates for /metrics: kept current on every open and close, rebuilt on demand.

A scrape used to compute counts and durations from the ``attempts`` rows, which cost ~150 ms at
100,000 rows. These tables (``attempt_totals``, ``attempt_durations``, ``latest_attempts``;
revision 0003; ``attempt_verify_durations``, revision 0004) are updated in the same transaction
as the attempt row, so they are exactly as current as the journal, for every writer (flow runs,
the CLI, other hosts on PostgreSQL). Closed attempts never change again, which is what makes
adding them up once enough.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from safe_updater.adapters.store.database import Database, dialect_insert
from safe_updater.adapters.store.schema import (
    assets,
    attempt_durations,
    attempt_totals,
    attempt_verify_durations,
    attempts,
    latest_attempts,
    quarantine,
)


def duration_key(seconds: float) -> int:
    """Whole seconds rounded up (never below 0), then up to two significant digits.

    ``key(d)`` is the smallest number with at most two significant digits that is >= ceil(d),
    so for every such bound ``b``: ``d <= b`` iff ``key(d) <= b``. Other bounds (1250) are off
    by at most one step (10 % of the value).
    """
    whole = max(0, math.ceil(seconds))
    if whole < 100:
        return whole
    step = int(10 ** (len(str(whole)) - 2))
    return -(-whole // step) * step


def day_of(moment: datetime) -> int:
    """The UTC date of ``moment`` as a proleptic ordinal (``attempt_durations.day``)."""
    return moment.astimezone(UTC).date().toordinal()


def start_of_day(day: int) -> datetime:
    return datetime.combine(date.fromordinal(day), datetime.min.time(), tzinfo=UTC)


def record_open(
    db: Database, conn: Connection, asset_id: str, attempt_id: int, started_at: datetime
) -> None:
    """The new attempt is its asset's newest unless a later one (a skewed clock) exists."""
    stmt = dialect_insert(db, latest_attempts).values(
        asset_id=asset_id, attempt_id=attempt_id, started_at=started_at, outcome=None
    )
    newer = or_(
        stmt.excluded.started_at > latest_attempts.c.started_at,
        and_(
            stmt.excluded.started_at == latest_attempts.c.started_at,
            stmt.excluded.attempt_id > latest_attempts.c.attempt_id,
        ),
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["asset_id"],
            set_={
                "attempt_id": stmt.excluded.attempt_id,
                "started_at": stmt.excluded.started_at,
                "outcome": stmt.excluded.outcome,
            },
            where=newer,
        )
    )


def record_close(
    db: Database,
    conn: Connection,
    *,
    attempt_id: int,
    asset_id: str,
    change_type: str,
    outcome: str,
    started_at: datetime,
    finished_at: datetime,
    verify_seconds: float | None = None,
    to_version: str | None = None,
) -> None:
    """Count a closed attempt: totals, its duration, its verification (when it got a health
    verdict), the asset's newest outcome; and settle the asset's pending update (see
    :func:`settle_pending`)."""
    totals = dialect_insert(db, attempt_totals).values(
        outcome=outcome, change_type=change_type, count=1
    )
    conn.execute(
        totals.on_conflict_do_update(
            index_elements=["outcome", "change_type"],
            set_={"count": attempt_totals.c.count + 1},
        )
    )
    _add_duration(
        db, conn, attempt_durations, started_at, outcome, (finished_at - started_at).total_seconds()
    )
    if verify_seconds is not None:
        _add_duration(db, conn, attempt_verify_durations, started_at, outcome, verify_seconds)
    conn.execute(
        update(latest_attempts)
        .where(latest_attempts.c.asset_id == asset_id)
        .where(latest_attempts.c.attempt_id == attempt_id)
        .values(outcome=outcome)
    )
    if to_version is not None:
        settle_pending(conn, asset_id, to_version, outcome)


def _add_duration(
    db: Database,
    conn: Connection,
    table: Table,
    started_at: datetime,
    outcome: str,
    seconds: float,
) -> None:
    seconds = max(0.0, seconds)
    stmt = dialect_insert(db, table).values(
        day=day_of(started_at),
        outcome=outcome,
        seconds=duration_key(seconds),
        count=1,
        total=seconds,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["day", "outcome", "seconds"],
            set_={"count": table.c.count + 1, "total": table.c.total + stmt.excluded.total},
        )
    )


def settle_pending(conn: Connection, asset_id: str, to_version: str, outcome: str) -> None:
    """The scan's pending update of the asset is no longer pending once an attempt to that
    version closes ``updated``, or closes with the version quarantined (rolled back after it
    failed verification): the policy will not offer it again. Otherwise (a failed preflight or
    apply, a request waiting for approval, a rejection) the next run may still try it, so it
    stays until the next scan says otherwise."""
    stmt = (
        update(assets)
        .where(assets.c.id == asset_id)
        .where(assets.c.pending_target == to_version)
        .values(pending_action=None, pending_change_type=None, pending_target=None)
    )
    if outcome != "updated":
        # Quarantined before the close: rollback_and_quarantine runs before the attempt closes.
        stmt = stmt.where(
            exists().where(quarantine.c.asset_id == asset_id, quarantine.c.version == to_version)
        )
    conn.execute(stmt)


def rebuild(conn: Connection) -> None:
    """Recompute every aggregate from the ``attempts`` rows (after a bulk load or a restore
    of the table alone). Streams the closed rows once; the result is small."""
    for table in (attempt_totals, attempt_durations, attempt_verify_durations, latest_attempts):
        conn.execute(delete(table))
    conn.execute(
        insert(attempt_totals).from_select(
            ["outcome", "change_type", "count"],
            select(attempts.c.outcome, attempts.c.change_type, func.count())
            .where(attempts.c.outcome.is_not(None))
            .group_by(attempts.c.outcome, attempts.c.change_type),
        )
    )
    newer = attempts.alias("newer")
    later = exists().where(
        newer.c.asset_id == attempts.c.asset_id,
        or_(
            newer.c.started_at > attempts.c.started_at,
            and_(newer.c.started_at == attempts.c.started_at, newer.c.id > attempts.c.id),
        ),
    )
    conn.execute(
        insert(latest_attempts).from_select(
            ["asset_id", "attempt_id", "started_at", "outcome"],
            select(
                attempts.c.asset_id, attempts.c.id, attempts.c.started_at, attempts.c.outcome
            ).where(~later),
        )
    )
    closed = (
        select(attempts.c.outcome, attempts.c.started_at, attempts.c.finished_at)
        .where(attempts.c.outcome.is_not(None))
        .where(attempts.c.finished_at.is_not(None))
    )
    # Streamed (a server-side cursor on PostgreSQL), set on the statement: setting it on the
    # connection would stream every later statement of this transaction too.
    buckets = durations_by_key(conn.execute(closed.execution_options(yield_per=5000)))
    _insert_buckets(conn, attempt_durations, buckets)
    verified = (
        select(attempts.c.outcome, attempts.c.started_at, attempts.c.verify_seconds)
        .where(attempts.c.outcome.is_not(None))
        .where(attempts.c.verify_seconds.is_not(None))
    )
    buckets = verify_durations_by_key(conn.execute(verified.execution_options(yield_per=5000)))
    _insert_buckets(conn, attempt_verify_durations, buckets)


def _insert_buckets(
    conn: Connection, table: Table, buckets: dict[tuple[int, str, int], tuple[int, float]]
) -> None:
    if buckets:
        conn.execute(
            insert(table),
            [
                {"day": d, "outcome": o, "seconds": s, "count": n, "total": t}
                for (d, o, s), (n, t) in buckets.items()
            ],
        )


def durations_by_key(
    rows: Iterable[Any],
) -> dict[tuple[int, str, int], tuple[int, float]]:
    """``(outcome, started_at, finished_at)`` rows -> ``(day, outcome, key) -> (count, sum)``."""
    buckets: dict[tuple[int, str, int], tuple[int, float]] = {}
    for outcome, started_at, finished_at in rows:
        seconds = max(0.0, (finished_at - started_at).total_seconds())
        key = (day_of(started_at), str(outcome), duration_key(seconds))
        n, total = buckets.get(key, (0, 0.0))
        buckets[key] = (n + 1, total + seconds)
    return buckets


def verify_durations_by_key(
    rows: Iterable[Any],
) -> dict[tuple[int, str, int], tuple[int, float]]:
    """``(outcome, started_at, verify_seconds)`` rows -> ``(day, outcome, key) -> (count, sum)``."""
    buckets: dict[tuple[int, str, int], tuple[int, float]] = {}
    for outcome, started_at, verify_seconds in rows:
        seconds = max(0.0, float(verify_seconds))
        key = (day_of(started_at), str(outcome), duration_key(seconds))
        n, total = buckets.get(key, (0, 0.0))
        buckets[key] = (n + 1, total + seconds)
    return buckets
