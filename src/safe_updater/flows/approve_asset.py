"""Deciding an update that waits for approval outside a paused run (``approve ASSET``)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from safe_updater.domain.errors import NotFoundError
from safe_updater.domain.journal import Outcome
from safe_updater.domain.plans import UpdateResult
from safe_updater.flows.update_asset import update_asset
from safe_updater.tasks.journaling import audit, close_attempt, open_attempt
from safe_updater.tasks.queries import recent_attempts


@flow(name="decide-waiting-update", flow_run_name="{approver} decides {asset_id}")
def decide_waiting_update(
    asset_id: str, approve: bool, approver: str, reason: str = ""
) -> dict[str, Any]:
    """Approve (apply and verify) or reject the newest update request of ``asset_id``."""
    history = recent_attempts(asset_id, limit=1)
    if not history or history[0].outcome is not Outcome.AWAITING_APPROVAL:
        raise NotFoundError(
            f"no update of {asset_id} is waiting for approval",
            hint=f"run `safe-updater update {asset_id}` first; see `safe-updater history "
            f"{asset_id}`",
        )
    request = history[0]
    if approve:
        audit(
            "approval.approved",
            asset_id,
            approver,
            {"attempt": request.id, "to": request.to_version, "reason": reason},
        )
        return update_asset(
            asset_id,
            to_version=request.to_version,
            approval="defer",
            approved_by=approver,
            actor=approver,
        )
    why = f"rejected by {approver}" + (f": {reason}" if reason else "")
    attempt = open_attempt(
        asset_id,
        request.from_version,
        request.to_version,
        request.change_type,
        f"reject:{request.id}",
        None,
    )
    close_attempt(attempt.id, Outcome.REJECTED, why)
    audit(
        "approval.rejected",
        asset_id,
        approver,
        {"attempt": request.id, "to": request.to_version, "reason": reason},
    )
    return UpdateResult(
        asset=asset_id,
        outcome=Outcome.REJECTED.value,
        from_version=request.from_version,
        to_version=request.to_version,
        change_type=request.change_type,
        attempt_id=attempt.id,
        reasons=[why],
    ).to_json_dict()
