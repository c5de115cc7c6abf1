"""Verify durations and pending updates for /metrics.

``attempts.verify_started_at``/``verify_seconds`` (the verifying phase of each attempt) and the
``attempt_verify_durations`` aggregate, kept by the journal like ``attempt_durations``; and
``assets.pending_*``: the update the newest scan found for each asset, written by the scan.

What an existing store can give: an attempt that is in the verifying phase now entered it at
its ``updated_at`` (nothing else writes an attempt in between), so its verification is timed
when its verdict comes. Closed attempts never recorded when verification began, so the verify
histogram starts empty; the pending updates appear with the next scan.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from safe_updater.adapters.store.schema import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING_INDEX = "ix_assets_pending_action_pending_change_type"

# The revision's own copy of the columns it touches: later code may change, this must not.
_attempts = sa.table(
    "attempts",
    sa.column("phase", sa.String()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("verify_started_at", UTCDateTime()),
)


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: both backends add a nullable column in place, while a
    # batch "move and copy" of attempts on SQLite would have to rebuild its partial index.
    op.add_column("attempts", sa.Column("verify_started_at", UTCDateTime(), nullable=True))
    op.add_column("attempts", sa.Column("verify_seconds", sa.Float(), nullable=True))
    op.add_column("assets", sa.Column("pending_action", sa.String(16), nullable=True))
    op.add_column("assets", sa.Column("pending_change_type", sa.String(32), nullable=True))
    op.add_column("assets", sa.Column("pending_target", sa.String(255), nullable=True))
    op.create_index(PENDING_INDEX, "assets", ["pending_action", "pending_change_type"])
    op.create_table(
        "attempt_verify_durations",
        sa.Column("day", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("seconds", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("day", "outcome", "seconds", name="pk_attempt_verify_durations"),
    )
    a = _attempts
    op.execute(
        sa.update(a).where(a.c.phase == "verifying").values(verify_started_at=a.c.updated_at)
    )


def downgrade() -> None:
    op.drop_table("attempt_verify_durations")
    op.drop_index(PENDING_INDEX, table_name="assets")
    # DROP COLUMN needs SQLite 3.35 or later (2021); only tests and emergencies go down.
    for column in ("pending_target", "pending_change_type", "pending_action"):
        op.drop_column("assets", column)
    for column in ("verify_seconds", "verify_started_at"):
        op.drop_column("attempts", column)
