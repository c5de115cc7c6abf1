"""An index for /metrics: attempts by outcome, change type and time, read without the rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_attempts_outcome_change_type_started_at_finished_at"


def upgrade() -> None:
    op.create_index(INDEX, "attempts", ["outcome", "change_type", "started_at", "finished_at"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="attempts")
