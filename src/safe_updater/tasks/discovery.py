"""Tasks that find assets: one inventory call each."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from safe_updater.domain.assets import Asset
from safe_updater.runtime import current_runtime
from safe_updater.tasks.retry import TRANSIENT_RETRIES


@task(
    name="resolve-asset",
    task_run_name="resolve {asset_id}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def resolve_asset(asset_id: str) -> Asset:
    """Read the asset from its host or cluster now (not from the store: it may have changed)."""
    return current_runtime().find_asset(asset_id)


@task(
    name="scan-target",
    task_run_name="scan {kind}:{target}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def scan_target(kind: str, target: str) -> list[Asset]:
    """List the opted-in assets of one target and record them in the store."""
    runtime = current_runtime()
    for inventory in runtime.inventories:
        if inventory.kind.value == kind and inventory.target == target:
            assets = inventory.list_assets()
            runtime.store.assets.upsert(assets)
            runtime.store.assets.remove_missing(f"{kind}:{target}", {asset.id for asset in assets})
            return assets
    return []


@task(name="list-targets", cache_policy=NO_CACHE)
def list_targets() -> list[tuple[str, str]]:
    """(kind, target) of every configured Docker host and Kubernetes cluster."""
    return [(inv.kind.value, inv.target) for inv in current_runtime().inventories]
