"""Engine set-up, transactions and error translation shared by every repository of the store.

SQLite: WAL and a busy timeout let flow runs and the CLI share one file from several processes;
pysqlite's own transaction handling is switched off so that write transactions can start with
``BEGIN IMMEDIATE`` (take the write lock first, then read), which is what keeps read-then-write
sequences such as the audit chain's "read head, append" free of races.
PostgreSQL: psycopg 3; writers that need serializing lock a row (``SELECT … FOR UPDATE``).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.pool import StaticPool

from safe_updater.domain.errors import ConflictError, InvalidInputError, TransientError

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another process's write lock before giving up.

Long enough for any single store transaction (they are all small), short enough that a stuck
process surfaces as a TransientError the caller's retry policy can see.
"""

SQLITE_BEGIN_OPTION = "safe_updater_sqlite_begin"

_STORE_HINT = (
    "check that the database is reachable and not locked; tasks retry on their own, and an "
    "attempt left open is finished by `safe-updater recover` once the store is back"
)


def normalize_url(url: str) -> URL:
    """Parse a store URL; pick psycopg 3 for PostgreSQL and expand ``~`` in SQLite paths."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInputError(
            "the state store URL is not a database URL",
            hint="use sqlite:///path/to/state.db or postgresql://user@host:port/dbname",
            field="state.url",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.get_driver_name() in ("psycopg2", "psycopg"):
        # Only psycopg 3 is a dependency; plain "postgresql://" would pick psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        if parsed.database and parsed.database.startswith("~"):
            parsed = parsed.set(database=str(Path(parsed.database).expanduser()))
    else:
        raise InvalidInputError(
            f"the state store does not support {backend!r} databases",
            hint="use a sqlite:/// or postgresql:// URL",
            field="state.url",
        )
    return parsed


def redacted(url: URL) -> str:
    """The URL as it may appear in messages: never with its password."""
    return url.render_as_string(hide_password=True)


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url.query)


def create_store_engine(url: URL) -> Engine:
    """An engine configured for concurrent use of the store by several processes."""
    if url.get_backend_name() == "sqlite":
        if not _is_memory(url) and url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if _is_memory(url):
            # One shared connection, or every connection would see its own empty database.
            kwargs["poolclass"] = StaticPool
        try:
            engine = create_engine(url, **kwargs)
        except NoSuchModuleError as exc:  # pragma: no cover - sqlite3 ships with CPython
            raise InvalidInputError(f"cannot open {redacted(url)}") from exc
        _configure_sqlite(engine, memory=_is_memory(url))
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except NoSuchModuleError as exc:
        raise InvalidInputError(
            f"no database driver for {redacted(url)}", hint="install psycopg[binary]"
        ) from exc


def _configure_sqlite(engine: Engine, *, memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below); pysqlite's implicit transactions would defeat it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # The busy timeout first: every later statement, the WAL switch included, waits for
            # other processes' locks instead of failing at once.
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if not memory:
                _switch_to_wal(cursor)
            # FULL: a journal row written before a side effect survives power loss too, not
            # only a crash of the process.
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL`` on a database that several new connections open at once.

    Changing the journal mode needs an exclusive lock and SQLite does not always wait for it
    (it answers "database is locked" at once), so the switch is retried for a bounded time.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn SQLAlchemy errors into the project's tree, chained with ``from``.

    Messages carry the driver's first line only: never SQL parameters, which hold user data.
    """
    try:
        yield
    except IntegrityError as exc:
        raise ConflictError(f"{what}: the change conflicts with stored data") from exc
    except OperationalError as exc:
        raise TransientError(
            f"{what}: the state store is unavailable ({_first_line(exc)})",
            hint=_STORE_HINT,
        ) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise TransientError(
                f"{what}: the state store is unavailable: lost the connection ({_first_line(exc)})",
                hint=_STORE_HINT,
            ) from exc
        raise


def _first_line(exc: DBAPIError) -> str:
    text = str(exc.orig) if exc.orig is not None else type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


class Database:
    """The engine plus the clock; hands out read and write transactions."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock
        self.dialect = engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def read(self, what: str, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction.

        ``snapshot``: every statement sees the same state (PostgreSQL REPEATABLE READ; SQLite
        read transactions in WAL mode always do).
        """
        with translated_errors(what), self.engine.connect() as conn:
            if snapshot and not self.is_sqlite:
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def write(self, what: str) -> Iterator[Connection]:
        """A write transaction, committed when the block ends without an exception.

        On SQLite it starts with ``BEGIN IMMEDIATE``: the write lock is taken before the first
        read, so two writers never both read the same state and then both write.
        """
        with translated_errors(what), self.engine.connect() as conn:
            if self.is_sqlite:
                conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            with conn.begin():
                yield conn

    @contextmanager
    def connect(self, what: str, *, write: bool = False) -> Iterator[Connection]:
        """A connection without a transaction started, for callers that manage it themselves."""
        with translated_errors(what), self.engine.connect() as conn:
            if write and self.is_sqlite:
                conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            yield conn


def dialect_insert(db: Database, table: Table) -> PgInsert | SqliteInsert:
    """An INSERT that knows ``ON CONFLICT`` (both backends spell it the same way)."""
    if db.is_sqlite:
        return sqlite_insert(table)
    return pg_insert(table)
