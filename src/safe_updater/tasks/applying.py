"""Tasks that change assets: preflight, snapshot, apply, commit, roll back.

They run inside the flow's per-asset lock (:mod:`safe_updater.tasks.locks`).

``apply`` is not retried automatically: it is resumable, but whether to resume or roll back is the
flow's decision, taken from the journal.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from safe_updater.domain.assets import Asset
from safe_updater.domain.journal import Phase
from safe_updater.domain.plans import AppliedChange, Snapshot
from safe_updater.failpoints import failpoint
from safe_updater.runtime import current_runtime
from safe_updater.tasks.retry import TRANSIENT_RETRIES


@task(
    name="preflight",
    task_run_name="preflight {asset.id} -> {target}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def preflight_update(asset: Asset, target: str) -> None:
    """Make sure the target can be applied (image pulls, chart renders) before touching anything."""
    runtime = current_runtime()
    runtime.updater_for(asset).preflight(asset, target)
    failpoint("after-pull")


@task(
    name="snapshot", task_run_name="snapshot {asset.id}", cache_policy=NO_CACHE, **TRANSIENT_RETRIES
)
def snapshot_asset(asset: Asset) -> Snapshot:
    return current_runtime().updater_for(asset).snapshot(asset)


@task(name="apply-update", task_run_name="apply {asset.id} -> {target}", cache_policy=NO_CACHE)
def apply_update(asset: Asset, snapshot: Snapshot, target: str) -> AppliedChange:
    applied = current_runtime().updater_for(asset).apply(asset, snapshot, target)
    failpoint("after-apply")
    return applied


@task(
    name="commit-update",
    task_run_name="commit {asset.id}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def commit_update(asset: Asset, snapshot: Snapshot, applied: AppliedChange) -> None:
    current_runtime().updater_for(asset).commit(asset, snapshot, applied)


@task(
    name="rollback-update",
    task_run_name="rollback {asset.id} -> {snapshot.version}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def rollback_update(
    asset: Asset,
    snapshot: Snapshot,
    applied: AppliedChange | None,
    attempt_id: int | None = None,
    reason: str | None = None,
) -> str | None:
    """Restore the snapshot; returns the version serving afterwards, read from the system.

    With ``attempt_id``, the journal's ``rolling_back`` phase (and ``reason``) is written here,
    just before the rollback: one task instead of two between the verdict and the old version
    serving again.
    """
    runtime = current_runtime()
    if attempt_id is not None:
        runtime.store.journal.advance(attempt_id, Phase.ROLLING_BACK, reason=reason)
        failpoint("after-phase:rolling_back")
    updater = runtime.updater_for(asset)
    updater.rollback(asset, snapshot, applied)
    return updater.running_version(asset)
