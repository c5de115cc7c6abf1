"""Human approval: pause the run with a typed form until a quorum approves, anyone rejects, or
the deadline passes."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
from prefect import get_run_logger, pause_flow_run
from prefect.exceptions import FlowPauseTimeout, PrefectHTTPStatusError
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES
from pydantic import BaseModel, Field

from safe_updater.domain.assets import Asset
from safe_updater.domain.errors import TransientError
from safe_updater.domain.policy import ApprovalRule
from safe_updater.flows.steps import record_approval_request
from safe_updater.tasks.journaling import audit


class ApprovalWaitLost(TransientError):
    """The Prefect server stopped answering while the run waited for approval, for longer than
    its client retries (``PREFECT_CLIENT_MAX_RETRIES``) cover. Nothing was decided or changed;
    :func:`keep_request` records the request so that ``safe-updater approve ASSET`` can
    decide it later."""


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
        except (httpx.TransportError, PrefectHTTPStatusError) as error:
            if isinstance(error, PrefectHTTPStatusError) and error.response.status_code < 500:
                raise
            raise _wait_lost(error, time.monotonic() - started, approved) from error
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


def _wait_lost(error: Exception, waited: float, approved: list[str]) -> ApprovalWaitLost:
    so_far = f"; approvals given before: {', '.join(approved)}" if approved else ""
    return ApprovalWaitLost(
        f"the Prefect server at {PREFECT_API_URL.value()} stopped answering while this run "
        f"waited for approval ({type(error).__name__}: {str(error)[:200]}, after "
        f"{PREFECT_CLIENT_MAX_RETRIES.value()} retries, {waited:.0f} s into the wait); "
        f"nothing was applied{so_far}"
    )


def keep_request(
    asset: Asset,
    target: str,
    change_type: str,
    run_id: str | None,
    actor: str,
    lost: ApprovalWaitLost,
) -> None:
    """Close the lost wait as a deferred request (``awaiting_approval`` in the journal, which
    ``safe-updater history`` shows); ``safe-updater approve ASSET`` then decides it. The journal
    and audit log live in our store, not in Prefect, so they can be written while the server
    is away; the paused Prefect run itself is orphaned and stays Paused in the UI."""
    why = (
        f"{lost.message}; the request is kept: approve it with `safe-updater approve "
        f"{asset.id}` (or reject it) once the Prefect server answers again"
    )
    get_run_logger().error("%s", why)
    record_approval_request(
        asset,
        target,
        change_type,
        run_id,
        actor,
        why,
        audit_reason="the Prefect server was lost while the run waited for approval",
    )
    lost.message = why
    lost.hint = (
        f"start the Prefect server again, then `safe-updater history {asset.id}` shows the "
        "request and `safe-updater approve ASSET` applies it; see "
        "docs/runbooks/dependency-outage.md"
    )


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
