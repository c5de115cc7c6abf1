"""Per-asset locks that die with the process holding them.

An update holds its asset's lock for the whole attempt, from opening the journal row to closing
it. A process that is killed (kill -9, OOM, a lost node) loses the lock at once, because the
operating system or the database ends it with the process: so ``recover`` can tell an attempt
whose owner is gone (lock free: finish it) from one still running elsewhere (lock held: leave it).

- SQLite (one host): ``flock`` on a file per asset next to the database; the kernel drops it
  when the holder's file descriptor closes, also on kill -9.
- PostgreSQL (any number of hosts): a session-level advisory lock on a dedicated connection; the
  server drops it when that connection ends, also when the holder dies.
- In-memory SQLite (tests): a lock inside this process.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, OperationalError

from safe_updater.adapters.store.database import Database, translated_errors
from safe_updater.domain.errors import ConflictError

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.2


def _key(asset_id: str) -> bytes:
    return hashlib.sha256(asset_id.encode()).digest()


class AssetLocks:
    def __init__(
        self,
        db: Database,
        lock_dir: Path | None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = db
        self._dir = lock_dir
        self._monotonic = monotonic
        self._sleep = sleep
        self._local: dict[str, threading.Lock] = {}
        self._local_guard = threading.Lock()

    @contextmanager
    def hold(self, asset_id: str, *, timeout: float = 0.0) -> Iterator[None]:
        """Hold the asset's lock; wait up to ``timeout`` seconds for it, else ConflictError."""
        if self._db.is_sqlite:
            acquire = self._flock if self._dir is not None else self._thread_lock
        else:
            acquire = self._advisory
        with acquire(asset_id, timeout):
            yield

    def is_held(self, asset_id: str) -> bool:
        """True while another process (or thread) holds the asset's lock."""
        try:
            with self.hold(asset_id):
                return False
        except ConflictError:
            return True

    def _wait(self, asset_id: str, timeout: float, try_once: Callable[[], bool]) -> None:
        deadline = self._monotonic() + timeout
        while not try_once():
            if self._monotonic() >= deadline:
                raise ConflictError(
                    f"{asset_id} is being changed by another run right now",
                    hint="wait for it to finish (see `safe-updater history`); if its process "
                    "died, the lock is already free and `safe-updater recover` finishes it",
                )
            self._sleep(_POLL_SECONDS)

    @contextmanager
    def _flock(self, asset_id: str, timeout: float) -> Iterator[None]:
        assert self._dir is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / f"{_key(asset_id).hex()[:32]}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:

            def try_once() -> bool:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            self._wait(asset_id, timeout, try_once)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def _thread_lock(self, asset_id: str, timeout: float) -> Iterator[None]:
        with self._local_guard:
            lock = self._local.setdefault(asset_id, threading.Lock())
        self._wait(asset_id, timeout, lambda: lock.acquire(blocking=False))
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def _advisory(self, asset_id: str, timeout: float) -> Iterator[None]:
        key = int.from_bytes(_key(asset_id)[:8], "big", signed=True)
        what = f"lock {asset_id}"
        with translated_errors(what), self._db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")

            def try_once() -> bool:
                return bool(
                    conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                )

            self._wait(asset_id, timeout, try_once)
            try:
                yield
            finally:
                self._unlock(conn, key, asset_id)

    @staticmethod
    def _unlock(conn: Connection, key: int, asset_id: str) -> None:
        """Release the advisory lock. If the server restarted or ended our session meanwhile,
        the lock already went with the session: that must not turn a finished attempt into a
        failed run, so it is logged, not raised."""
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        except DBAPIError as exc:
            if not exc.connection_invalidated and not isinstance(exc, OperationalError):
                raise
            log.warning(
                "the state store connection holding the lock of %s was lost (a PostgreSQL "
                "restart?); the lock went with it, so another run may have started meanwhile",
                asset_id,
            )
