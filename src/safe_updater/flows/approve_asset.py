"""Deciding an update that waits for approval outside a paused run (``approve ASSET``)."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from safe_updater.domain.errors import NotFoundError, PolicyViolationError
from safe_updater.domain.journal import AttemptRecord, Outcome
from safe_updater.domain.plans import UpdateResult
from safe_updater.domain.policy import NOT_AN_APPROVER, SELF_APPROVAL, ApprovalRule
from safe_updater.flows.update_asset import update_asset
from safe_updater.runtime import current_runtime
from safe_updater.tasks.discovery import resolve_asset
from safe_updater.tasks.gating import effective_policy
from safe_updater.tasks.journaling import audit, close_attempt, open_attempt
from safe_updater.tasks.queries import recent_attempts
from safe_updater.tasks.retry import TRANSIENT_RETRIES

UNKNOWN_REQUESTER = (
    "who asked for this update is not recorded, so self-approval cannot be ruled out"
)


@flow(name="decide-waiting-update", flow_run_name="{approver} decides {asset_id}")
def decide_waiting_update(
    asset_id: str, approve: bool, approver: str, reason: str = ""
) -> dict[str, Any]:
    """Approve (apply and verify) or reject the newest update request of ``asset_id``.

    The decision is checked against the asset's approval rule first; a refused one is recorded
    as ``approval.refused`` and raises, and the request keeps waiting for a valid decision.
    """
    history = recent_attempts(asset_id, limit=1)
    if not history or history[0].outcome is not Outcome.AWAITING_APPROVAL:
        raise NotFoundError(
            f"no update of {asset_id} is waiting for approval",
            hint=f"run `safe-updater update {asset_id}` first; see `safe-updater history "
            f"{asset_id}`",
        )
    request = history[0]
    approver = approver.strip()
    _check_decision(request, approve, approver, reason)
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


def _check_decision(request: AttemptRecord, approve: bool, approver: str, reason: str) -> None:
    """Refuse (record, then raise) a decision the asset's approval rule does not accept."""
    rule = effective_policy(resolve_asset(request.asset_id)).approval
    requested_by = requester(request.asset_id, request.id)
    refused = rule.refusal(approver, approve=approve, requested_by=requested_by)
    if refused is None and approve and requested_by is None and not rule.allow_self_approval:
        refused = UNKNOWN_REQUESTER  # fail closed: the rule is a control, not a convenience
    if refused is None:
        return
    audit(
        "approval.refused",
        request.asset_id,
        approver or "unknown",
        {
            "attempt": request.id,
            "to": request.to_version,
            "approve": approve,
            "reason": refused,
            "requested_by": requested_by,
            "stated_reason": reason,
        },
    )
    verb = "approve" if approve else "reject"
    raise PolicyViolationError(
        f"{approver or 'an unnamed approver'} may not {verb} the update of {request.asset_id} "
        f"to {request.to_version}: {refused}",
        hint=_refusal_hint(rule, refused, request.asset_id),
    )


def _refusal_hint(rule: ApprovalRule, refused: str, asset_id: str) -> str:
    if refused == NOT_AN_APPROVER:
        return f"approvers for this asset: {', '.join(rule.approvers)}"
    if refused == SELF_APPROVAL:
        return "another approver must approve it (the policy sets allow_self_approval: false)"
    if refused == UNKNOWN_REQUESTER:
        return f"request it again with `safe-updater update {asset_id}`"
    return "give your name with --as"


@task(
    name="approval-requester",
    task_run_name="requester of #{attempt_id}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def requester(asset_id: str, attempt_id: int) -> str | None:
    """Who started the run that asked for approval: the actor of its ``approval.requested``
    record in the audit chain (None if the newest such record is not this request's)."""
    record = current_runtime().store.audit.latest("approval.requested", asset_id=asset_id)
    if record is None or record.data.get("attempt") != attempt_id:
        return None
    return record.actor
