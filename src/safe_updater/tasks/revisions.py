"""Tasks for asset kinds with a revision history of their own (Helm releases): read it, and
make one of its revisions current again. One adapter call each."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from safe_updater.adapters.updater import RevisionEntry, RevisionUpdater
from safe_updater.domain.assets import Asset
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.plans import AppliedChange, Snapshot
from safe_updater.failpoints import failpoint
from safe_updater.runtime import Runtime, current_runtime
from safe_updater.tasks.retry import TRANSIENT_RETRIES


def revision_updater(runtime: Runtime, asset: Asset) -> RevisionUpdater:
    """The asset's updater if it keeps revisions, else a clear refusal."""
    updater = runtime.updater_for(asset)
    if not isinstance(updater, RevisionUpdater):
        raise InvalidInputError(
            f"{asset.id} has no revision history (--revision and --list apply to Helm releases)",
            hint=f"use --to VERSION for {asset.id}",
        )
    return updater


@task(
    name="release-history",
    task_run_name="history {asset.id}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def release_history(asset: Asset) -> list[RevisionEntry]:
    """The asset's kept revisions, oldest first."""
    return revision_updater(current_runtime(), asset).revisions(asset)


@task(
    name="apply-revision",
    task_run_name="apply {asset.id} revision {revision}",
    cache_policy=NO_CACHE,
)
def apply_revision(asset: Asset, snapshot: Snapshot, revision: int) -> AppliedChange:
    """Make ``revision`` current again (the apply step of a rollback to a chosen revision).

    Not retried automatically, like ``apply-update``: resume or roll back is the flow's call."""
    updater = revision_updater(current_runtime(), asset)
    applied = updater.apply_revision(asset, snapshot, revision)  # the flow holds the asset lock
    failpoint("after-apply")
    return applied
