"""The store's tables as SQLAlchemy Core metadata.

The Alembic migrations in ``migrations/versions`` create exactly these tables; a test compares
the migrated database with this metadata, so the two cannot drift apart silently.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names, so migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first audit record, and the chain head's hash while the log is empty."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL keeps ``timestamptz``. SQLite has no time zones: values are stored as naive UTC
    text (which sorts chronologically) and get ``tzinfo=UTC`` back on the way out. Naive values
    are refused on the way in, because guessing their zone is how audit timestamps go wrong.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("the state store only takes timezone-aware datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


assets = Table(
    "assets",
    metadata,
    Column("id", String(512), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("target", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("current_version", String(255), nullable=False),
    # The whole Asset model as JSON: new model fields need no migration; the columns above are
    # the ones queries filter on.
    Column("data", JSON, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    # The update the newest scan that could plan this asset found for it (revision 0004):
    # action "auto" or "approve", NULL when none. Kept on the asset row so that an asset the
    # scan removes takes its pending update with it; /metrics counts them from the index.
    Column("pending_action", String(16), nullable=True),
    Column("pending_change_type", String(32), nullable=True),
    Column("pending_target", String(255), nullable=True),
    Index(None, "kind"),
    Index(None, "target"),
    Index(None, "pending_action", "pending_change_type"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(255), nullable=False),
    Column("asset_id", String(512), nullable=False),
    Column("from_version", String(255), nullable=False),
    Column("to_version", String(255), nullable=False),
    Column("change_type", String(32), nullable=False),
    Column("phase", String(32), nullable=False),
    Column("outcome", String(32), nullable=True),
    Column("reason", Text, nullable=True),
    Column("flow_run_id", String(64), nullable=True),
    Column("snapshot", JSON, nullable=False),
    Column("applied", JSON, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # Verification (revision 0004): set when the attempt enters the verifying phase, and the
    # seconds from then to the verdict (the move to committing or rolling_back), so the health
    # monitoring time survives the process that watched it.
    Column("verify_started_at", UTCDateTime, nullable=True),
    Column("verify_seconds", Float, nullable=True),
    UniqueConstraint("idempotency_key"),
    # history(): newest first, overall and per asset; both walk an index in order and stop
    # after `limit` rows instead of sorting the table.
    Index("ix_attempts_started_at_id", "started_at", "id"),
    Index("ix_attempts_asset_id_started_at_id", "asset_id", "started_at", "id"),
    # stats() and count(outcome=...): counted from this index alone, without reading rows.
    Index("ix_attempts_outcome_started_at", "outcome", "started_at"),
    # /metrics (revision 0002): counts by outcome and change type, and the duration histogram,
    # read from this index alone: a scrape never loads journal rows.
    Index(
        "ix_attempts_outcome_change_type_started_at_finished_at",
        "outcome",
        "change_type",
        "started_at",
        "finished_at",
    ),
    # At most one open attempt per asset, enforced by the database for every writer (flow runs,
    # CLI, other hosts on PostgreSQL): a partial unique index over the rows not yet closed.
    Index(
        "uq_attempts_open_asset_id",
        "asset_id",
        unique=True,
        sqlite_where=text("phase <> 'closed'"),
        postgresql_where=text("phase <> 'closed'"),
    ),
)

# Aggregates of the journal for /metrics (revision 0003), kept by Journal.open_attempt() and
# Journal.close() in the same transaction as the attempt row, so a scrape reads a few hundred
# rows however long the journal grows (docs/metrics.md).

attempt_totals = Table(
    "attempt_totals",
    metadata,
    # Closed attempts since the store was created, by outcome and change type.
    Column("outcome", String(32), primary_key=True),
    Column("change_type", String(32), primary_key=True),
    Column("count", Integer, nullable=False),
)

attempt_durations = Table(
    "attempt_durations",
    metadata,
    # Closed attempts by the UTC day they started (date ordinal), outcome and duration: whole
    # seconds rounded up, then up to two significant digits, so a day has a few hundred rows
    # at most and any bucket bound with two significant digits (5, 30, 120, 1800...) is exact.
    Column("day", Integer, primary_key=True, autoincrement=False),
    Column("outcome", String(32), primary_key=True),
    Column("seconds", Integer, primary_key=True, autoincrement=False),
    Column("count", Integer, nullable=False),
    Column("total", Float, nullable=False),
)

attempt_verify_durations = Table(
    "attempt_verify_durations",
    metadata,
    # Like attempt_durations, for the verifying phase (revision 0004): closed attempts that got
    # a health verdict, by the UTC day the attempt started, outcome and rounded verify seconds.
    Column("day", Integer, primary_key=True, autoincrement=False),
    Column("outcome", String(32), primary_key=True),
    Column("seconds", Integer, primary_key=True, autoincrement=False),
    Column("count", Integer, nullable=False),
    Column("total", Float, nullable=False),
)

latest_attempts = Table(
    "latest_attempts",
    metadata,
    # Each asset's newest attempt (by started_at, id) and its outcome (NULL while open):
    # "pending approvals" counts the assets whose newest attempt waits for approval.
    Column("asset_id", String(512), primary_key=True),
    Column("attempt_id", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("outcome", String(32), nullable=True),
    Index(None, "outcome"),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("asset_id", String(512), nullable=False),
    Column("version", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("attempt_id", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("asset_id", "version"),
)

pins = Table(
    "pins",
    metadata,
    Column("asset_id", String(512), primary_key=True),
    Column("version", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    # Assigned by the writer as head + 1 under the chain lock, never by a sequence: a gap
    # must mean a deleted record, not a rolled-back transaction.
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("event", String(128), nullable=False),
    Column("asset_id", String(512), nullable=True),
    Column("actor", String(255), nullable=False),
    Column("data", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    # One row (id 1): the last seq and hash. Appenders lock it, which serializes them, and
    # verify() compares it with the log, which catches a truncated tail.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

request_budgets = Table(
    "request_budgets",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

registry_requests = Table(
    "registry_requests",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("status", Integer, primary_key=True, autoincrement=False),
    Column("count", Integer, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
)
