"""``StateStore``: the project's own database, one object holding every repository."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine

from safe_updater.adapters.store.assets import AssetRepository
from safe_updater.adapters.store.audit import AuditLog
from safe_updater.adapters.store.budgets import RequestBudgets
from safe_updater.adapters.store.database import (
    Database,
    create_store_engine,
    normalize_url,
    redacted,
    translated_errors,
)
from safe_updater.adapters.store.journal import Journal
from safe_updater.adapters.store.locks import AssetLocks
from safe_updater.adapters.store.migrate import current_revision, upgrade_to_head
from safe_updater.adapters.store.quarantine import Pins, Quarantine

log = logging.getLogger(__name__)


def _lock_dir(engine: Engine) -> Path | None:
    """Beside a SQLite file: ``state.db.locks/``; None for in-memory SQLite and PostgreSQL."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    path = Path(database)
    return path.with_name(path.name + ".locks")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class StateStore:
    """Journal, quarantine, pins, audit log, inventory and request budgets in one database.

    Open with :meth:`open`; the object is safe to share between threads (each call takes a
    pooled connection for one transaction) and any number of processes may open the same URL.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        """Wrap an engine whose database is already at head; most callers want :meth:`open`."""
        self._db = Database(engine, clock or _utc_now)
        self.journal = Journal(self._db)
        self.quarantine = Quarantine(self._db)
        self.pins = Pins(self._db)
        self.audit = AuditLog(self._db)
        self.assets = AssetRepository(self._db)
        self.budgets = RequestBudgets(self._db)
        self.locks = AssetLocks(self._db, _lock_dir(engine))

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], datetime] | None = None) -> StateStore:
        """Connect to ``url`` (creating a SQLite file's directory) and migrate it to head.

        Raises TransientError when the database cannot be reached or stays locked, and
        InvalidInputError for a URL that is not a SQLite or PostgreSQL database.
        """
        parsed = normalize_url(url)
        engine = create_store_engine(parsed)
        try:
            with translated_errors(f"open state store {redacted(parsed)}"):
                upgrade_to_head(engine)
        except BaseException:
            engine.dispose()
            raise
        log.debug("state store %s is at schema head", redacted(parsed))
        return cls(engine, clock=clock)

    @property
    def engine(self) -> Engine:
        return self._db.engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect

    def schema_revision(self) -> str | None:
        with self._db.connect("read schema revision") as conn:
            return current_revision(conn)

    def close(self) -> None:
        """Release every pooled connection; the object must not be used afterwards."""
        self._db.engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
