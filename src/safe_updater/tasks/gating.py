"""Tasks that decide: policy, quarantine, pins and the rollback budget."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from safe_updater.domain.assets import Asset
from safe_updater.domain.journal import Outcome
from safe_updater.domain.policy import (
    AssetContext,
    Decision,
    EffectivePolicy,
    decide,
    resolve_policy,
)
from safe_updater.runtime import current_runtime
from safe_updater.tasks.detection import Candidates


def asset_group(asset: Asset) -> str | None:
    """The config's ``assets.<glob>.group`` for the asset, else its group label."""
    return current_runtime().config.group_for(asset.id) or asset.group


def asset_context(asset: Asset) -> AssetContext:
    return AssetContext(
        asset_id=asset.id,
        kind=asset.kind,
        namespace=asset.namespace,
        group=asset_group(asset),
        name=asset.name,
        labels=asset.labels,
    )


@task(name="resolve-policy", task_run_name="policy of {asset.id}", cache_policy=NO_CACHE)
def effective_policy(asset: Asset) -> EffectivePolicy:
    """The policy for this asset: config default, overrides, labels, and a pin from the store."""
    runtime = current_runtime()
    policy = resolve_policy(runtime.config.policy, asset_context(asset))
    pin = runtime.store.pins.get(asset.id)
    if pin is not None:
        policy = policy.model_copy(update={"pin": pin.version})
    return policy


@task(name="decide-update", task_run_name="decide {asset.id}", cache_policy=NO_CACHE)
def decide_update(asset: Asset, candidates: Candidates, policy: EffectivePolicy) -> Decision:
    """Which version to apply now, which waits for approval, and why, tag by tag."""
    runtime = current_runtime()
    return decide(
        asset_context(asset),
        asset.current_version,
        candidates.tags,
        policy,
        now=runtime.clock(),
        quarantined=runtime.store.quarantine.versions(asset.id),
        release_times=candidates.release_times or None,
        digest_changed=candidates.digest_changed,
    )


@task(
    name="check-rollback-budget", task_run_name="rollback budget {asset_id}", cache_policy=NO_CACHE
)
def rollback_budget_exhausted(asset_id: str) -> str | None:
    """A reason to halt the asset when it was rolled back too often lately, else None."""
    runtime = current_runtime()
    rule = runtime.config.rollback
    since = runtime.clock() - rule.within
    count = runtime.store.journal.count(asset_id=asset_id, outcome=Outcome.ROLLED_BACK, since=since)
    if count >= rule.max_rollbacks:
        return (
            f"halted: {count} rollbacks since {since:%Y-%m-%d %H:%M} UTC reach the limit of "
            f"{rule.max_rollbacks}; fix the cause, then update by hand with "
            f"`safe-updater update {asset_id} --to TAG` or raise rollback.max_rollbacks"
        )
    return None
