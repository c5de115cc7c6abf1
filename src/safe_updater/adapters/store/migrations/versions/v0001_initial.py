"""Initial schema: assets, attempts (journal), quarantine, pins, audit log and head, budgets.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from safe_updater.adapters.store.schema import GENESIS_HASH, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Migrations keep their own copy of the open-attempt predicate: schema.py may change later,
# this revision must not.
_OPEN = sa.text("phase <> 'closed'")


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("id", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("current_version", sa.String(255), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_assets"),
    )
    op.create_index("ix_assets_kind", "assets", ["kind"])
    op.create_index("ix_assets_target", "assets", ["target"])

    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("asset_id", sa.String(512), nullable=False),
        sa.Column("from_version", sa.String(255), nullable=False),
        sa.Column("to_version", sa.String(255), nullable=False),
        sa.Column("change_type", sa.String(32), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("applied", sa.JSON(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
        sa.UniqueConstraint("idempotency_key", name="uq_attempts_idempotency_key"),
    )
    op.create_index("ix_attempts_started_at_id", "attempts", ["started_at", "id"])
    op.create_index(
        "ix_attempts_asset_id_started_at_id", "attempts", ["asset_id", "started_at", "id"]
    )
    op.create_index("ix_attempts_outcome_started_at", "attempts", ["outcome", "started_at"])
    op.create_index(
        "uq_attempts_open_asset_id",
        "attempts",
        ["asset_id"],
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("asset_id", sa.String(512), nullable=False),
        sa.Column("version", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
        sa.UniqueConstraint("asset_id", "version", name="uq_quarantine_asset_id_version"),
    )

    op.create_table(
        "pins",
        sa.Column("asset_id", sa.String(512), nullable=False),
        sa.Column("version", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("asset_id", name="pk_pins"),
    )

    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("event", sa.String(128), nullable=False),
        sa.Column("asset_id", sa.String(512), nullable=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    # The head row exists from the start, so appenders always have a row to lock.
    op.bulk_insert(
        audit_head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH, "updated_at": datetime.now(UTC)}]
    )

    op.create_table(
        "request_budgets",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_request_budgets"),
    )
    op.create_table(
        "registry_requests",
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("status", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("host", "status", name="pk_registry_requests"),
    )


def downgrade() -> None:
    for table in (
        "registry_requests",
        "request_budgets",
        "audit_head",
        "audit_log",
        "pins",
        "quarantine",
        "attempts",
        "assets",
    ):
        op.drop_table(table)
