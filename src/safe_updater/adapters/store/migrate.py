"""Schema migrations, run programmatically (there is no alembic.ini).

``StateStore.open`` calls :func:`upgrade_to_head` every time: it is a no-op at head and makes
a new release's schema appear without a separate step. Concurrent openers (two flow runs
starting on a fresh database) are serialized: SQLite by ``BEGIN IMMEDIATE`` around the whole
upgrade, PostgreSQL by a transaction-scoped advisory lock, and the threads of one process by a
lock of their own (Alembic's state is global); both backends have transactional
DDL, so a failed migration leaves the previous schema intact.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from safe_updater.adapters.store.database import SQLITE_BEGIN_OPTION

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "safe_updater_alembic_version"
"""Not Alembic's default ``alembic_version``: Prefect's server keeps its own revision there when
both share one PostgreSQL database."""

_PG_MIGRATION_LOCK = 0x5AFE_0001  # pg_advisory_xact_lock key, arbitrary but fixed

# Alembic keeps the running migration in module globals (``alembic.context``, ``alembic.op``):
# two threads migrating at once, even different databases, tear each other's state down. The
# database locks above serialize processes; this serializes the threads of one process.
_ALEMBIC = threading.Lock()


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migrations found in " + str(MIGRATIONS_DIR))
    return str(head)


def current_revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    rev = context.get_current_revision()
    return None if rev is None else str(rev)


def upgrade_to_head(engine: Engine) -> None:
    """Bring the database to the newest schema this package knows; idempotent."""
    with _ALEMBIC, engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            command.upgrade(alembic_config(conn), "head")


def downgrade_to(engine: Engine, revision: str) -> None:
    """Go back to ``revision`` (``"base"`` drops everything); for tests and emergencies."""
    with _ALEMBIC, engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), revision)
