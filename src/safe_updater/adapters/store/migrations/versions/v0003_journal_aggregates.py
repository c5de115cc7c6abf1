"""Aggregates of the journal for /metrics, filled from the existing attempts.

``attempt_totals`` (closed attempts by outcome and change type), ``attempt_durations`` (by start
day, outcome and rounded duration) and ``latest_attempts`` (each asset's newest attempt), kept
current by the journal from now on, so a scrape no longer reads every attempt row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC

import sqlalchemy as sa
from alembic import op

from safe_updater.adapters.store.schema import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The revision keeps its own copy of the attempts columns it reads and of the duration key
# (aggregates.duration_key): later code may change, this backfill must not.
_attempts = sa.table(
    "attempts",
    sa.column("id", sa.Integer()),
    sa.column("asset_id", sa.String()),
    sa.column("change_type", sa.String()),
    sa.column("outcome", sa.String()),
    sa.column("started_at", UTCDateTime()),
    sa.column("finished_at", UTCDateTime()),
)


def _key(seconds: float) -> int:
    whole = max(0, math.ceil(seconds))
    if whole < 100:
        return whole
    step = int(10 ** (len(str(whole)) - 2))
    return -(-whole // step) * step


def upgrade() -> None:
    totals = op.create_table(
        "attempt_totals",
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("change_type", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("outcome", "change_type", name="pk_attempt_totals"),
    )
    durations = op.create_table(
        "attempt_durations",
        sa.Column("day", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("seconds", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("day", "outcome", "seconds", name="pk_attempt_durations"),
    )
    latest = op.create_table(
        "latest_attempts",
        sa.Column("asset_id", sa.String(512), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("asset_id", name="pk_latest_attempts"),
    )
    op.create_index("ix_latest_attempts_outcome", "latest_attempts", ["outcome"])

    a = _attempts
    op.execute(
        sa.insert(totals).from_select(
            ["outcome", "change_type", "count"],
            sa.select(a.c.outcome, a.c.change_type, sa.func.count())
            .where(a.c.outcome.is_not(None))
            .group_by(a.c.outcome, a.c.change_type),
        )
    )
    newer = a.alias("newer")
    later = sa.exists().where(
        newer.c.asset_id == a.c.asset_id,
        sa.or_(
            newer.c.started_at > a.c.started_at,
            sa.and_(newer.c.started_at == a.c.started_at, newer.c.id > a.c.id),
        ),
    )
    op.execute(
        sa.insert(latest).from_select(
            ["asset_id", "attempt_id", "started_at", "outcome"],
            sa.select(a.c.asset_id, a.c.id, a.c.started_at, a.c.outcome).where(~later),
        )
    )
    # Durations in Python: rounding to two significant digits is not portable SQL. One pass
    # over the closed rows, streamed; the result is a few hundred rows per day.
    conn = op.get_bind()
    closed = (
        sa.select(a.c.outcome, a.c.started_at, a.c.finished_at)
        .where(a.c.outcome.is_not(None))
        .where(a.c.finished_at.is_not(None))
    )
    buckets: dict[tuple[int, str, int], list[float]] = {}
    # yield_per on the statement, not the connection: the alembic version UPDATE that follows
    # must not go through a server-side cursor.
    streamed = closed.execution_options(yield_per=5000)
    for outcome, started_at, finished_at in conn.execute(streamed):
        seconds = max(0.0, (finished_at - started_at).total_seconds())
        key = (started_at.astimezone(UTC).date().toordinal(), str(outcome), _key(seconds))
        entry = buckets.setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds
    if buckets:
        op.bulk_insert(
            durations,
            [
                {"day": d, "outcome": o, "seconds": s, "count": int(n), "total": t}
                for (d, o, s), (n, t) in buckets.items()
            ],
        )


def downgrade() -> None:
    op.drop_index("ix_latest_attempts_outcome", table_name="latest_attempts")
    op.drop_table("latest_attempts")
    op.drop_table("attempt_durations")
    op.drop_table("attempt_totals")
