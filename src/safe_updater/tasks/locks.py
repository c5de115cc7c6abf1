"""One change at a time per asset, across processes and workers: a Prefect global concurrency
limit of 1 per asset, created on the server by the tool itself.

Helm does not refuse a rollback while another helm operation on the release is running, so this
lock, not helm, is what keeps two operations off one release.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress

from prefect.client.orchestration import get_client
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

# Waiting longer than a helm upgrade's timeout means something is stuck: fail and let the
# journal and `recover` take over rather than queue forever.
LOCK_TIMEOUT_SECONDS = 900
# The slot is a lease that this process renews in the background (every 3/4 of it) while it
# holds the lock. A process killed inside the lock (kill -9, OOM, a lost node) cannot release
# it: the server revokes the lease once it expires, so this bounds how long `recover` or the
# next run of the asset waits behind a dead holder. Prefect's default (300 s) left recovery
# stalled for five minutes after a crash.
LOCK_LEASE_SECONDS = 60


def asset_lock_name(asset_id: str) -> str:
    """A limit name the API accepts for any asset id, still readable in the UI."""
    readable = re.sub(r"[^a-z0-9-]+", "-", asset_id.lower()).strip("-")[:60]
    digest = hashlib.sha256(asset_id.encode()).hexdigest()[:8]
    return f"safe-updater-asset-{readable}-{digest}"


_ensured: set[tuple[str, int]] = set()


def ensure_limit(name: str, limit: int) -> None:
    """Create (or resize) the limit on the server, once per process."""
    if (name, limit) in _ensured:
        return
    # Upserts are not atomic: a concurrent caller may have created it first, which is fine.
    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.upsert_global_concurrency_limit_by_name(name, limit)
    _ensured.add((name, limit))


@contextmanager
def asset_lock(asset_id: str) -> Iterator[None]:
    name = asset_lock_name(asset_id)
    ensure_limit(name, 1)
    with ExitStack() as stack:
        try:
            stack.enter_context(_lease(name))
        except ConcurrencySlotAcquisitionError:
            # The server forgot the limit (its database was reset): create it again, once.
            _ensured.discard((name, 1))
            ensure_limit(name, 1)
            stack.enter_context(_lease(name))
        yield


def _lease(name: str) -> AbstractContextManager[object]:
    return concurrency(
        name,
        occupy=1,
        strict=True,
        timeout_seconds=LOCK_TIMEOUT_SECONDS,
        lease_duration=LOCK_LEASE_SECONDS,
    )
