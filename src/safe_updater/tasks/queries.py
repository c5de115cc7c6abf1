"""Read-only journal queries the flows branch on."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from safe_updater.domain.journal import AttemptRecord
from safe_updater.runtime import current_runtime
from safe_updater.tasks.retry import TRANSIENT_RETRIES


@task(
    name="find-open-attempts",
    task_run_name="open attempts {asset_id}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def find_open_attempts(asset_id: str | None = None) -> list[AttemptRecord]:
    """Attempts a crashed or killed run left open."""
    return current_runtime().store.journal.find_open(asset_id)


@task(
    name="recent-attempts",
    task_run_name="history {asset_id}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def recent_attempts(asset_id: str, limit: int = 50) -> list[AttemptRecord]:
    """The asset's attempts, newest first."""
    return current_runtime().store.journal.history(asset_id, limit=limit)
