"""One change at a time per asset, across processes and hosts.

A run holds its asset's lock from opening the journal row until closing it. The lock lives in
the state store (``flock`` beside a SQLite file, a PostgreSQL session advisory lock) and dies
with the process holding it, so after a ``kill -9`` the next run or ``safe-updater recover``
takes it over at once, while a run that is still alive elsewhere is left alone. Helm does not
refuse a rollback while another helm operation on the release runs: this lock is what keeps two
of our operations off one release.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from safe_updater.runtime import current_runtime

# A second run for the same asset waits this long before giving up with a clear message: long
# enough to ride out a recovery finishing, short enough not to queue stale decisions.
ATTEMPT_LOCK_WAIT_SECONDS = 10.0


@contextmanager
def asset_lock(asset_id: str, *, timeout: float = ATTEMPT_LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the asset's lock; ConflictError when another live run keeps it past ``timeout``."""
    with current_runtime().store.locks.hold(asset_id, timeout=timeout):
        yield
