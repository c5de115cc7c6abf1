"""``rollback_asset``: a person takes an asset back to an earlier version.

The earlier version is applied and verified like any update; when it is healthy, the version
left behind is quarantined so the next scheduled run does not bring it straight back.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from safe_updater.domain.errors import InvalidInputError, NotFoundError
from safe_updater.domain.journal import Outcome
from safe_updater.domain.policy import Decision
from safe_updater.flows.steps import apply_and_verify
from safe_updater.tasks.discovery import resolve_asset
from safe_updater.tasks.queries import recent_attempts


@flow(
    name="rollback-asset",
    flow_run_name="rollback {asset_id}",
    description="Go back to the previous (or a chosen) version and verify it.",
)
def rollback_asset(
    asset_id: str,
    to_version: str | None = None,
    revision: int | None = None,
    actor: str = "safe-updater",
) -> dict[str, Any]:
    if revision is not None:
        raise InvalidInputError(
            "--revision applies to Helm releases only",
            hint=f"use --to VERSION for {asset_id}",
        )
    asset = resolve_asset(asset_id)
    target = to_version or _previous_version(asset_id, asset.current_version)
    if target == asset.current_version:
        raise InvalidInputError(f"{asset_id} already runs {target}")
    decision = Decision(
        asset_id=asset_id,
        current=asset.current_version,
        auto_target=None,
        auto_change_type=None,
        approval_target=None,
        approval_change_type=None,
        candidates=[],
        reasons=[],
        window_open=True,
        next_window=None,
    )
    reasons = [f"manual rollback by {actor}: {asset.current_version} -> {target}"]
    run_id = str(flow_run.id) if flow_run.id else None
    result = apply_and_verify(
        asset,
        target,
        "rollback",
        decision,
        reasons,
        run_id,
        actor=actor,
        approvers=[actor],
        success=Outcome.ROLLED_BACK,
        retire_version=asset.current_version,
    )
    return result.to_json_dict()


def _previous_version(asset_id: str, current: str) -> str:
    for attempt in recent_attempts(asset_id, limit=200):
        if attempt.outcome is Outcome.UPDATED and attempt.to_version == current:
            return attempt.from_version
    raise NotFoundError(
        f"no earlier version of {asset_id} is recorded (it was not updated by safe-updater to "
        f"{current})",
        hint=f"name one: safe-updater rollback {asset_id} --to VERSION",
    )
