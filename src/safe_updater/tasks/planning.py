"""The scan's planning task: one registry look-up per repository, a decision per asset.

``update_asset`` decides one asset with three tasks (policy, candidates, decision), which reads
well in its run graph. A scan of a fleet would make that three task runs per asset; this task
does the same work for every asset of one repository in one run, asks the registry once, and
parses the repository's tags once for all of them (see docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from safe_updater.adapters.store.assets import PendingUpdate
from safe_updater.domain.assets import Asset, AssetKind
from safe_updater.domain.errors import SafeUpdaterError
from safe_updater.domain.policy import Decision, decide, resolve_policy
from safe_updater.domain.versions import ParsedTags, parse_tags
from safe_updater.runtime import current_runtime
from safe_updater.tasks.detection import candidates_for
from safe_updater.tasks.gating import asset_context, asset_group
from safe_updater.tasks.retry import TRANSIENT_RETRIES

if TYPE_CHECKING:
    pass


# Asking a registry for a config blob costs a request per tag: only the newest few need an age.
_MAX_AGE_LOOKUPS = 10


def group_by_repository(assets: Sequence[Asset]) -> dict[str, list[Asset]]:
    """Assets by target and the repository (or chart) they update from, in first-seen order.

    Version sources are configured per target, so assets of two targets never share a group;
    the registry client's cache still asks a registry once for a repository used on both."""
    groups: dict[str, list[Asset]] = {}
    for asset in assets:
        repository = asset.image.name if asset.image is not None else asset.chart or asset.id
        groups.setdefault(f"{asset.kind.value}:{asset.target}:{repository}", []).append(asset)
    return groups


@task(
    name="plan-repository",
    task_run_name="plan {repository}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def plan_repository(repository: str, assets: list[Asset]) -> list[dict[str, Any]]:
    """Ask the registry once for ``repository`` and decide for each of its assets.

    A registry that cannot answer fails the task (transient errors are retried, then the flow
    marks the repository's assets as errors); a problem of one asset (a bad policy label, an
    unparsable tag, a failed digest look-up) becomes that asset's ``error`` row.
    """
    runtime = current_runtime()
    if not assets:
        return []
    source = runtime.versions_for(assets[0])
    tags = source.list_versions(assets[0])  # once for all the assets of the repository
    ids = {asset.id for asset in assets}
    pins = {pin.asset_id: pin.version for pin in runtime.store.pins.list() if pin.asset_id in ids}
    quarantined: dict[str, set[str]] = {}
    for entry in runtime.store.quarantine.list():
        if entry.asset_id in ids:
            quarantined.setdefault(entry.asset_id, set()).add(entry.version)
    now = runtime.clock()
    parsed: dict[tuple[tuple[str, ...], bool], ParsedTags] = {}
    rows = []
    for asset in assets:
        try:
            context = asset_context(asset)
            policy = resolve_policy(runtime.config.policy, context)
            if asset.id in pins:
                policy = policy.model_copy(update={"pin": pins[asset.id]})
            candidates = candidates_for(
                source, asset, tags, with_release_times=policy.min_release_age is not None
            )
            chart = asset.kind is AssetKind.HELM
            key = (tuple(candidates.tags), chart)
            if key not in parsed:
                parsed[key] = parse_tags(candidates.tags, chart=chart)
            decision = decide(
                context,
                asset.current_version,
                parsed[key],
                policy,
                now=now,
                quarantined=quarantined.get(asset.id, set()),
                release_times=candidates.release_times or None,
                digest_changed=candidates.digest_changed,
            )
        except SafeUpdaterError as error:
            rows.append(error_row(asset, error))
            continue
        rows.append(plan_row(asset, decision))
    return rows


def plan_row(asset: Asset, decision: Decision | None) -> dict[str, Any]:
    """The plan's row for one asset: target, change type, action and the reasons (just the
    asset when there is no decision: a scan without registry look-ups)."""
    row: dict[str, Any] = {
        "asset": asset.id,
        "group": asset_group(asset),
        "current": asset.current_version,
        "target": None,
        "change_type": None,
        "action": None,
        "window_open": True,
        "next_window": None,
        "reasons": "",
    }
    if decision is None:
        return row
    row["window_open"] = decision.window_open
    if decision.next_window is not None:
        row["next_window"] = decision.next_window.isoformat()
    if decision.auto_target:
        row.update(
            target=decision.auto_target, change_type=_text(decision.auto_change_type), action="auto"
        )
    elif decision.approval_target:
        row.update(
            target=decision.approval_target,
            change_type=_text(decision.approval_change_type),
            action="approve",
        )
    if row.get("target") and not decision.window_open:
        row["action"] = f"{row['action']} (waits for window)"
    row["reasons"] = "; ".join(decision.reasons)
    return row


def pending_updates(plan: Sequence[dict[str, Any]]) -> dict[str, PendingUpdate | None]:
    """Each planned asset's pending update from the plan's rows (None: nothing to do). Error
    rows are left out: a registry that did not answer says nothing about the asset, so the
    store keeps what the last scan that could plan it found."""
    pending: dict[str, PendingUpdate | None] = {}
    for row in plan:
        action = row.get("action")
        if action == "error":
            continue
        if row.get("target") and action:
            # "auto (waits for window)" is still an update the policy will apply.
            pending[row["asset"]] = PendingUpdate(
                action=str(action).split(" ", 1)[0],
                change_type=str(row.get("change_type") or ""),
                target=str(row["target"]),
            )
        else:
            pending[row["asset"]] = None
    return pending


@task(
    name="record-pending-updates",
    task_run_name="record {count} pending updates",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def record_pending_updates(pending: dict[str, PendingUpdate | None], count: int) -> None:
    """Store the scan's pending updates (``safe_updater_pending_updates``, read by /metrics
    in any process); ``count`` (how many are not None) only names the task run."""
    current_runtime().store.assets.record_pending(pending)


def error_row(asset: Asset, error: SafeUpdaterError) -> dict[str, Any]:
    row = plan_row(asset, None)
    row["action"] = "error"
    row["reasons"] = str(error)
    return row


def _text(value: object) -> str | None:
    return None if value is None else str(getattr(value, "value", value))
