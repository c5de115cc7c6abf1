"""``scan_inventory``: find every opted-in asset, ask registries what is newer, and plan.

The plan (current, target, change type, action, reasons for every asset) is the run's table
artifact; nothing is changed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from safe_updater.domain.assets import Asset
from safe_updater.domain.errors import SafeUpdaterError
from safe_updater.tasks.detection import fetch_candidates
from safe_updater.tasks.discovery import list_targets, scan_target
from safe_updater.tasks.gating import decide_update, effective_policy


@flow(
    name="scan-inventory",
    flow_run_name="scan",
    description=(
        "Find opted-in assets on every target, look up newer versions, and plan what to do."
    ),
)
def scan_inventory(evaluate: bool = True) -> list[dict[str, Any]]:
    logger = get_run_logger()
    assets: list[Asset] = []
    for kind, target in list_targets():
        try:
            assets.extend(scan_target(kind, target))
        except SafeUpdaterError as error:
            logger.error("scan of %s:%s failed: %s", kind, target, error)
    plan = [plan_asset(asset) if evaluate else _row(asset) for asset in assets]
    if plan:
        create_table_artifact(
            table=plan, key="scan-plan", description=f"{len(plan)} assets and what would change"
        )
    pending = sum(1 for row in plan if row.get("target"))
    create_markdown_artifact(
        markdown=f"# Scan\n\n{len(plan)} assets, {pending} with an update available.",
        key="scan-summary",
    )
    return plan


def plan_asset(asset: Asset) -> dict[str, Any]:
    row = _row(asset)
    try:
        policy = effective_policy(asset)
        candidates = fetch_candidates(asset, with_release_times=policy.min_release_age is not None)
        decision = decide_update(asset, candidates, policy)
    except SafeUpdaterError as error:
        row["action"] = "error"
        row["reasons"] = str(error)
        return row
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


def _row(asset: Asset) -> dict[str, Any]:
    return {
        "asset": asset.id,
        "current": asset.current_version,
        "target": None,
        "change_type": None,
        "action": None,
        "reasons": "",
    }


def _text(value: object) -> str | None:
    return None if value is None else str(getattr(value, "value", value))
