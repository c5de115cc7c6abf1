"""The update journal: one row per attempt, advanced (and committed) before each side effect."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Integer,
    RowMapping,
    Select,
    Table,
    cast,
    func,
    insert,
    literal_column,
    select,
    update,
)

from safe_updater.adapters.store import aggregates
from safe_updater.adapters.store.database import Database
from safe_updater.adapters.store.jsondata import to_plain
from safe_updater.adapters.store.schema import (
    attempt_durations,
    attempt_totals,
    attempt_verify_durations,
    attempts,
    latest_attempts,
)
from safe_updater.domain.assets import AssetId
from safe_updater.domain.errors import ConflictError, InvalidInputError, NotFoundError
from safe_updater.domain.journal import AttemptRecord, Outcome, Phase

MAX_HISTORY_LIMIT = 10_000

# Written with a literal, not a bound parameter, so that SQLite can prove the query's WHERE
# implies the partial index's (phase <> 'closed') and use it: open rows are few, closed many.
OPEN_PREDICATE = attempts.c.phase != literal_column("'closed'")

# The moves out of the verifying phase that carry a health verdict: healthy -> committing,
# unhealthy -> rolling_back. The time spent verifying is measured up to them.
VERDICT_PHASES = frozenset({Phase.COMMITTING, Phase.ROLLING_BACK})


def _record(row: RowMapping) -> AttemptRecord:
    return AttemptRecord(
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        asset_id=AssetId(row["asset_id"]),
        from_version=row["from_version"],
        to_version=row["to_version"],
        change_type=row["change_type"],
        phase=Phase(row["phase"]),
        outcome=None if row["outcome"] is None else Outcome(row["outcome"]),
        reason=row["reason"],
        flow_run_id=row["flow_run_id"],
        snapshot=row["snapshot"] or {},
        applied=row["applied"] or {},
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )


class Journal:
    """Attempts of updates, the record crash recovery works from.

    Every write commits before the method returns, so when the caller goes on to make the side
    effect the phase names, a crash at any later point leaves a row that says so.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- writes -----------------------------------------------------------------------------

    def open_attempt(
        self,
        *,
        asset_id: str,
        from_version: str,
        to_version: str,
        change_type: str,
        idempotency_key: str,
        flow_run_id: str | None = None,
    ) -> AttemptRecord:
        """Open an attempt, or return the one already opened with ``idempotency_key``.

        Raises ConflictError when another attempt of the asset is still open: finishing or
        rolling that one back comes first (``safe-updater recover``).
        """
        if not idempotency_key:
            raise InvalidInputError("an attempt needs an idempotency key", field="idempotency_key")
        now = self._db.clock()
        try:
            with self._db.write("open attempt") as conn:
                existing = self._by_key(conn, idempotency_key)
                if existing is not None:
                    return existing
                blocking = self._open_for(conn, asset_id)
                if blocking:
                    raise _open_conflict(asset_id, blocking[0].id)
                row = (
                    conn.execute(
                        insert(attempts)
                        .values(
                            idempotency_key=idempotency_key,
                            asset_id=asset_id,
                            from_version=from_version,
                            to_version=to_version,
                            change_type=change_type,
                            phase=Phase.OPENED.value,
                            flow_run_id=flow_run_id,
                            snapshot={},
                            applied={},
                            started_at=now,
                            updated_at=now,
                        )
                        .returning(*attempts.c)
                    )
                    .mappings()
                    .one()
                )
                aggregates.record_open(self._db, conn, asset_id, row["id"], now)
                return _record(row)
        except ConflictError as exc:
            # On PostgreSQL a concurrent writer with the same key may have committed between
            # our reads (SQLite serializes writers, so there the checks above are exact); a
            # unique index then stops our insert: same key -> idempotent; same asset -> busy.
            with self._db.read("open attempt") as conn:
                existing = self._by_key(conn, idempotency_key)
                if existing is not None:
                    return existing
                blocking = self._open_for(conn, asset_id)
            if exc.__cause__ is not None and blocking:
                raise _open_conflict(asset_id, blocking[0].id) from exc
            raise

    def advance(
        self,
        attempt_id: int,
        phase: Phase,
        *,
        snapshot: dict[str, Any] | None = None,
        applied: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> AttemptRecord:
        """Move an open attempt to ``phase`` (any order: recovery may go back to verifying).

        ``snapshot``/``applied`` replace the stored ones when given; None keeps them.
        Entering ``verifying`` starts the attempt's verify clock; the move from there to
        ``committing`` or ``rolling_back`` (the verdict) stores the seconds in between, which
        :meth:`close` counts in the verify histogram.
        """
        if phase is Phase.CLOSED:
            raise InvalidInputError(
                "an attempt is closed with Journal.close(), which records its outcome",
                field="phase",
            )
        now = self._db.clock()
        values: dict[str, Any] = {"phase": phase.value, "updated_at": now}
        if snapshot is not None:
            values["snapshot"] = to_plain(snapshot, field="snapshot")
        if applied is not None:
            values["applied"] = to_plain(applied, field="applied")
        if reason is not None:
            values["reason"] = reason
        with self._db.write("advance attempt") as conn:
            current_row = self._row(conn, attempt_id)
            current = _record(current_row)
            if not current.is_open:
                raise ConflictError(
                    f"attempt #{attempt_id} is closed ({current.outcome}); it cannot move to "
                    f"{phase.value}",
                    hint="open a new attempt",
                )
            values.update(_verify_timing(current, current_row, phase, now))
            row = (
                conn.execute(
                    update(attempts)
                    .where(attempts.c.id == attempt_id)
                    .values(**values)
                    .returning(*attempts.c)
                )
                .mappings()
                .one()
            )
            return _record(row)

    def close(self, attempt_id: int, outcome: Outcome, reason: str) -> AttemptRecord:
        """Record the outcome. Closing again with the same outcome changes nothing."""
        with self._db.write("close attempt") as conn:
            current_row = self._row(conn, attempt_id)
            current = _record(current_row)
            if not current.is_open:
                if current.outcome is outcome:
                    return current
                raise ConflictError(
                    f"attempt #{attempt_id} is already closed as {current.outcome}, "
                    f"not {outcome.value}"
                )
            now = self._db.clock()
            row = (
                conn.execute(
                    update(attempts)
                    .where(attempts.c.id == attempt_id)
                    .values(
                        phase=Phase.CLOSED.value,
                        outcome=outcome.value,
                        reason=reason,
                        updated_at=now,
                        finished_at=now,
                    )
                    .returning(*attempts.c)
                )
                .mappings()
                .one()
            )
            aggregates.record_close(
                self._db,
                conn,
                attempt_id=attempt_id,
                asset_id=current.asset_id,
                change_type=current.change_type,
                outcome=outcome.value,
                started_at=current.started_at,
                finished_at=now,
                verify_seconds=current_row["verify_seconds"],
                to_version=current.to_version,
            )
            return _record(row)

    def rebuild_aggregates(self) -> None:
        """Recompute the metrics aggregates from the attempt rows: after rows were written
        around :meth:`open_attempt`/:meth:`close` (a bulk load, a restore of that table alone)."""
        with self._db.write("rebuild journal aggregates") as conn:
            aggregates.rebuild(conn)

    # -- reads ------------------------------------------------------------------------------

    def get(self, attempt_id: int) -> AttemptRecord:
        with self._db.read("read attempt") as conn:
            return self._get(conn, attempt_id)

    def get_by_key(self, idempotency_key: str) -> AttemptRecord | None:
        with self._db.read("read attempt") as conn:
            return self._by_key(conn, idempotency_key)

    def find_open(self, asset_id: str | None = None) -> list[AttemptRecord]:
        """Attempts not closed yet, oldest first (the order recovery should take them in)."""
        with self._db.read("find open attempts") as conn:
            return self._open_for(conn, asset_id)

    def history_statement(
        self, asset_id: str | None = None, *, limit: int = 100, since: datetime | None = None
    ) -> Select[Any]:
        """The query behind :meth:`history`; public so tests and benchmarks can EXPLAIN it."""
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise InvalidInputError(
                f"limit must be between 1 and {MAX_HISTORY_LIMIT}", field="limit"
            )
        stmt = select(attempts)
        if asset_id is not None:
            stmt = stmt.where(attempts.c.asset_id == asset_id)
        if since is not None:
            stmt = stmt.where(attempts.c.started_at >= since)
        # Matches the (asset_id,) started_at, id indexes, walked backwards: no sort step.
        return stmt.order_by(attempts.c.started_at.desc(), attempts.c.id.desc()).limit(limit)

    def history(
        self, asset_id: str | None = None, *, limit: int = 100, since: datetime | None = None
    ) -> list[AttemptRecord]:
        """Attempts newest first, optionally of one asset and since a time."""
        stmt = self.history_statement(asset_id, limit=limit, since=since)
        with self._db.read("read history") as conn:
            return [_record(row) for row in conn.execute(stmt).mappings()]

    def count(
        self,
        *,
        asset_id: str | None = None,
        outcome: Outcome | None = None,
        since: datetime | None = None,
    ) -> int:
        stmt = select(func.count()).select_from(attempts)
        if asset_id is not None:
            stmt = stmt.where(attempts.c.asset_id == asset_id)
        if outcome is not None:
            stmt = stmt.where(attempts.c.outcome == outcome.value)
        if since is not None:
            stmt = stmt.where(attempts.c.started_at >= since)
        with self._db.read("count attempts") as conn:
            return int(conn.execute(stmt).scalar_one())

    def stats(self, *, since: datetime | None = None) -> dict[str, int]:
        """Closed attempts per outcome (every outcome present, zeros included)."""
        stmt = (
            select(attempts.c.outcome, func.count())
            .where(attempts.c.outcome.is_not(None))
            .group_by(attempts.c.outcome)
        )
        if since is not None:
            stmt = stmt.where(attempts.c.started_at >= since)
        counts = {outcome.value: 0 for outcome in Outcome}
        with self._db.read("attempt stats") as conn:
            for outcome, n in conn.execute(stmt):
                counts[str(outcome)] = int(n)
        return counts

    # -- aggregates for metrics --------------------------------------------------------------
    # Read from the aggregate tables kept by open_attempt() and close() (aggregates.py), so a
    # scrape costs the same with 1,000 or 1,000,000 journal rows.

    def outcome_counts(self) -> dict[tuple[str, str], int]:
        """Closed attempts since the store was created, by ``(outcome, change_type)``."""
        stmt = select(
            attempt_totals.c.outcome, attempt_totals.c.change_type, attempt_totals.c.count
        )
        with self._db.read("count attempts by outcome") as conn:
            return {(str(o), str(c)): int(n) for o, c, n in conn.execute(stmt) if n}

    def count_open(self) -> int:
        """Attempts not closed yet (counted from the partial index of open rows)."""
        stmt = select(func.count()).select_from(attempts).where(OPEN_PREDICATE)
        with self._db.read("count open attempts") as conn:
            return int(conn.execute(stmt).scalar_one())

    def count_awaiting_approval(self) -> int:
        """Assets whose newest attempt waits for approval (a later attempt settles it)."""
        stmt = (
            select(func.count())
            .select_from(latest_attempts)
            .where(latest_attempts.c.outcome == Outcome.AWAITING_APPROVAL.value)
        )
        with self._db.read("count pending approvals") as conn:
            return int(conn.execute(stmt).scalar_one())

    def duration_histogram(
        self,
        buckets: tuple[float, ...],
        *,
        since: datetime,
        outcomes: tuple[Outcome, ...] = (Outcome.UPDATED, Outcome.ROLLED_BACK, Outcome.FAILED),
    ) -> dict[str, tuple[list[int], int, float]]:
        """Durations (finished - started, seconds) of attempts started since ``since``, by outcome.

        Returns ``outcome -> (cumulative count per upper bound in buckets, count, sum)``. Whole
        days after ``since`` come from ``attempt_durations`` (a few hundred rows a day at most);
        the part of ``since``'s own day after it from the attempt rows, so the window is exact.
        Bucket bounds that are whole seconds with at most two significant digits (all of
        ``metrics.DURATION_BUCKETS``) are exact; others may count a duration one step (10 %) up.
        """
        seconds = self._seconds_between(attempts.c.started_at, attempts.c.finished_at)
        return self._histogram(
            "attempt durations",
            attempt_durations,
            seconds,
            attempts.c.finished_at.is_not(None),
            buckets,
            since=since,
            outcomes=outcomes,
        )

    def verify_histogram(
        self,
        buckets: tuple[float, ...],
        *,
        since: datetime,
        outcomes: tuple[Outcome, ...] = (Outcome.UPDATED, Outcome.ROLLED_BACK, Outcome.FAILED),
    ) -> dict[str, tuple[list[int], int, float]]:
        """Like :meth:`duration_histogram`, for the verifying phase: the seconds from entering
        ``verifying`` to the verdict, of closed attempts that got one, by the attempt's
        outcome (``updated`` when healthy, ``rolled_back`` when not; a manual rollback closes
        ``rolled_back`` when healthy and ``failed`` when not). Whole days from
        ``attempt_verify_durations``, the rest of ``since``'s day from the attempt rows."""
        return self._histogram(
            "verify durations",
            attempt_verify_durations,
            attempts.c.verify_seconds,
            attempts.c.verify_seconds.is_not(None),
            buckets,
            since=since,
            outcomes=outcomes,
        )

    def _histogram(
        self,
        what: str,
        rolled_table: Table,
        seconds: ColumnElement[float],
        measured: ColumnElement[bool],
        buckets: tuple[float, ...],
        *,
        since: datetime,
        outcomes: tuple[Outcome, ...],
    ) -> dict[str, tuple[list[int], int, float]]:
        names = [o.value for o in outcomes]
        first_day = aggregates.day_of(since)
        rolled = (
            select(
                rolled_table.c.outcome,
                rolled_table.c.seconds,
                func.sum(rolled_table.c.count),
                func.sum(rolled_table.c.total),
            )
            .where(rolled_table.c.day > first_day)
            .where(rolled_table.c.outcome.in_(names))
            .group_by(rolled_table.c.outcome, rolled_table.c.seconds)
        )
        # Grouped by whole seconds rounded up, from whole milliseconds: SQLite's julianday()
        # arithmetic makes 10 s into 10.00001 s, which a bare ceil would count as 11 s.
        whole = (cast(func.round(seconds * 1000.0), Integer) + 999) // 1000
        partial = (
            select(attempts.c.outcome, whole, func.count(), func.sum(seconds))
            .where(attempts.c.outcome.in_(names))
            .where(attempts.c.started_at >= since)
            .where(attempts.c.started_at < aggregates.start_of_day(first_day + 1))
            .where(measured)
            .group_by(attempts.c.outcome, whole)
        )
        result: dict[str, tuple[list[int], int, float]] = {}
        with self._db.read(what, snapshot=True) as conn:
            groups = [*conn.execute(rolled), *conn.execute(partial)]
        for outcome, ceiling, count, total in groups:
            cumulative, n, acc = result.get(str(outcome), ([0] * len(buckets), 0, 0.0))
            for i, bound in enumerate(buckets):
                if max(0, int(ceiling or 0)) <= bound:
                    cumulative[i] += int(count)
            result[str(outcome)] = (cumulative, n + int(count), acc + max(0.0, float(total or 0)))
        return result

    def _seconds_between(self, start: Any, end: Any) -> ColumnElement[float]:
        if self._db.is_sqlite:
            # Naive UTC text on SQLite: julianday() reads it; days -> seconds.
            return cast((func.julianday(end) - func.julianday(start)) * 86400.0, Float)
        return cast(func.extract("epoch", end - start), Float)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _get(conn: Connection, attempt_id: int) -> AttemptRecord:
        return _record(Journal._row(conn, attempt_id))

    @staticmethod
    def _row(conn: Connection, attempt_id: int) -> RowMapping:
        """The attempt's row with every column (the verify timing is not in AttemptRecord)."""
        row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).mappings().first()
        if row is None:
            raise NotFoundError(
                f"attempt #{attempt_id} does not exist", hint="see `safe-updater history`"
            )
        return row

    @staticmethod
    def _by_key(conn: Connection, key: str) -> AttemptRecord | None:
        row = (
            conn.execute(select(attempts).where(attempts.c.idempotency_key == key))
            .mappings()
            .first()
        )
        return None if row is None else _record(row)

    @staticmethod
    def _open_for(conn: Connection, asset_id: str | None) -> list[AttemptRecord]:
        stmt = select(attempts).where(OPEN_PREDICATE)
        if asset_id is not None:
            stmt = stmt.where(attempts.c.asset_id == asset_id)
        # Sorted here, not by ORDER BY id: SQLite would rather walk the whole table in rowid
        # order than sort the handful of rows the partial index yields.
        return sorted((_record(row) for row in conn.execute(stmt).mappings()), key=lambda a: a.id)


def _verify_timing(
    current: AttemptRecord, row: RowMapping, phase: Phase, now: datetime
) -> dict[str, Any]:
    """The verify columns to write when ``current`` moves to ``phase`` at ``now``."""
    if phase is Phase.VERIFYING and current.phase is not Phase.VERIFYING:
        # A new verification (recovery may come back here): its own clock, no verdict yet. A
        # retried write of the same move (already verifying) keeps the first start.
        return {"verify_started_at": now, "verify_seconds": None}
    started = row["verify_started_at"]
    if phase in VERDICT_PHASES and current.phase is Phase.VERIFYING and started is not None:
        # Store clocks of different hosts may disagree: never a negative duration.
        return {"verify_seconds": max(0.0, (now - started).total_seconds())}
    return {}


def _open_conflict(asset_id: str, attempt_id: int) -> ConflictError:
    return ConflictError(
        f"asset {asset_id} has an open attempt #{attempt_id}; run `safe-updater recover`"
    )
