"""Human approval: pause the run with a typed form until a quorum approves, anyone rejects, or
the deadline passes."""

from __future__ import annotations

import time
from datetime import timedelta

from prefect import get_run_logger, pause_flow_run
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from pydantic import BaseModel, Field

from safe_updater.domain.policy import ApprovalRule
from safe_updater.tasks.journaling import audit


class ApprovalInput(RunInput):
    """The form the Prefect UI shows on a paused update run."""

    approve: bool = Field(description="Approve the update (unchecked rejects it).")
    approver: str = Field(description="Who decides; must be a configured approver.")
    reason: str = Field(default="", description="Why; recorded in the audit log.")


class ApprovalOutcome(BaseModel):
    state: str  # approved | rejected | expired
    approvers: list[str] = Field(default_factory=list)
    reason: str = ""


def wait_for_approval(
    asset_id: str | None,
    description: str,
    rule: ApprovalRule,
    *,
    poll_interval: timedelta,
    requested_by: str | None = None,
) -> ApprovalOutcome:
    """Pause until ``rule.quorum`` distinct allowed approvers approve, or one rejects.

    ``requested_by`` is who started the update: with ``allow_self_approval: false`` their
    approval is refused. Refused input (a stranger, a self-approval, no name) is logged and
    recorded as ``approval.refused``, and the run keeps waiting for a valid decision.

    A pause that times out leaves the Prefect run Failed ("never resumed") whatever we do next;
    the outcome is still recorded in our journal and audit log.
    """
    logger = get_run_logger()
    approved: list[str] = []
    remaining = rule.deadline.total_seconds()
    if not rule.allow_self_approval and requested_by:
        description += f"\n\n{requested_by} started this update and may not approve it."
    while len(approved) < rule.quorum:
        if remaining <= 0:
            return _at_deadline(asset_id, rule, approved, "deadline passed")
        form = ApprovalInput.with_initial_data(
            description=description + _progress(approved, rule.quorum), approve=False
        )
        started = time.monotonic()
        try:
            answer = pause_flow_run(
                wait_for_input=form,
                timeout=max(1, int(remaining)),
                poll_interval=max(1, int(poll_interval.total_seconds())),
                key=f"approval-{len(approved) + 1}-{int(started * 1000)}",
            )
        except FlowPauseTimeout:
            return _at_deadline(asset_id, rule, approved, f"no decision within {rule.deadline}")
        remaining -= time.monotonic() - started
        assert answer is not None
        who = answer.approver.strip()
        refused = rule.refusal(who, approve=answer.approve, requested_by=requested_by)
        if refused is not None:
            logger.warning("refused approval input from %r: %s", who, refused)
            audit(
                "approval.refused",
                asset_id,
                who or "unknown",
                {"reason": refused, "approve": answer.approve, "requested_by": requested_by},
            )
            continue
        if not answer.approve:
            audit("approval.rejected", asset_id, who, {"reason": answer.reason})
            return ApprovalOutcome(state="rejected", approvers=[who], reason=answer.reason)
        if who in approved:
            logger.warning("%s already approved; a quorum needs distinct approvers", who)
            continue
        approved.append(who)
        audit("approval.approved", asset_id, who, {"reason": answer.reason})
    return ApprovalOutcome(state="approved", approvers=approved)


def _progress(approved: list[str], quorum: int) -> str:
    if quorum <= 1:
        return ""
    return f"\n\nApprovals so far: {len(approved)}/{quorum} ({', '.join(approved) or 'none'})."


# The approver recorded when the policy itself approves at the deadline.
TIMEOUT_APPROVER = "timeout_action"


def _at_deadline(
    asset_id: str | None, rule: ApprovalRule, approved: list[str], why: str
) -> ApprovalOutcome:
    """``timeout_action``: reject (expired), or approve as the policy says.

    The Prefect run still ends Failed ("never resumed") after a timed-out pause, even when the
    update then applies; the journal and the audit chain hold the real outcome."""
    if rule.timeout_action != "approve":
        return ApprovalOutcome(state="expired", approvers=approved, reason=why)
    get_run_logger().warning("%s; the policy's timeout_action approves", why)
    audit(
        "approval.approved",
        asset_id,
        TIMEOUT_APPROVER,
        {"reason": f"{why}; timeout_action: approve", "earlier_approvers": approved},
    )
    return ApprovalOutcome(
        state="approved",
        approvers=[*approved, TIMEOUT_APPROVER],
        reason=f"{why}; approved by timeout_action",
    )
