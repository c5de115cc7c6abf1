"""``update_asset``: decide, approve, preflight, snapshot, apply, verify, commit or roll back.

Orchestration only: every step is a task, every side effect is preceded by a durable journal
write (see :mod:`safe_updater.flows.steps`), and every outcome is recorded in the journal, the
audit chain, a run artifact and an event.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from safe_updater.domain.assets import Asset
from safe_updater.domain.errors import InvalidInputError, PolicyViolationError
from safe_updater.domain.journal import Outcome
from safe_updater.domain.policy import QUARANTINED_REASON, Decision, EffectivePolicy
from safe_updater.domain.versions import ChangeType, classify
from safe_updater.flows.approval import ApprovalWaitLost, keep_request, wait_for_approval
from safe_updater.flows.recover_updates import recover_updates
from safe_updater.flows.steps import (
    apply_and_verify,
    finish_without_change,
    record_awaiting_approval,
    record_closed_attempt,
    reports_published_afterwards,
)
from safe_updater.tasks.detection import fetch_candidates
from safe_updater.tasks.discovery import resolve_asset
from safe_updater.tasks.fleet import NOT_STARTED, SlotsUnavailable, holding_slots
from safe_updater.tasks.gating import decide_update, effective_policy, rollback_budget_exhausted
from safe_updater.tasks.journaling import audit
from safe_updater.tasks.queries import find_open_attempts
from safe_updater.tasks.recording import emit_update_event
from safe_updater.tasks.settings import approval_poll_interval

ApprovalMode = Literal["pause", "defer"]


@flow(
    name="update-asset",
    flow_run_name="update {asset_id}",
    description="Update one asset safely: decide, approve, apply, verify, commit or roll back.",
    # a fleet run reads the outcome of runs that workers executed
    persist_result=True,
)
def update_asset(
    asset_id: str,
    to_version: str | None = None,
    dry_run: bool = False,
    approval: ApprovalMode = "pause",
    approved_by: str | None = None,
    actor: str = "safe-updater",
    planned_version: str | None = None,
    concurrency_limits: list[str] | None = None,
) -> dict[str, Any]:
    """Update ``asset_id`` to the best version its policy allows (or to ``to_version``).

    Args:
        asset_id: e.g. ``docker:local/web``.
        to_version: apply exactly this version: an operator's explicit choice, so no policy
            action or approval is asked, but quarantine and downgrade rules still hold.
        dry_run: decide and report only.
        approval: ``pause`` waits in this run for the Prefect UI form (or ``safe-updater
            approve RUN_ID``); ``defer`` records that approval is needed and returns.
        approved_by: who approved outside this run: ``to_version``, or the update a fleet
            plan approved (checked against the policy's approvers; a quorum above one still
            asks the rest).
        actor: who started the run, for the audit log.
        planned_version: the target a fleet plan chose; if the policy now picks another
            version the run skips, so nothing is applied that the plan (and its approver)
            did not show.
        concurrency_limits: Prefect global concurrency limits to hold a slot of for the
            whole run (the fleet passes its global, per-target and per-asset limits).
    """
    try:
        with reports_published_afterwards(), holding_slots(concurrency_limits or []) as held:
            result = _update(
                asset_id, to_version, dry_run, approval, approved_by, actor, planned_version
            )
    except SlotsUnavailable as error:
        get_run_logger().error("%s: %s", asset_id, error)
        return {"asset": asset_id, "outcome": NOT_STARTED, "reasons": [f"{error}"]}
    result.update(held)
    return result


def _update(
    asset_id: str,
    to_version: str | None,
    dry_run: bool,
    approval: ApprovalMode,
    approved_by: str | None,
    actor: str,
    planned_version: str | None,
) -> dict[str, Any]:
    run_id = _flow_run_id()
    logger = get_run_logger()

    if find_open_attempts(asset_id):
        logger.warning("%s has an unfinished attempt from an earlier run; finishing it", asset_id)
        recover_updates(asset_id=asset_id, actor=actor)

    asset = resolve_asset(asset_id)
    policy = effective_policy(asset)
    if approved_by is not None:
        _check_approver(asset, policy, approved_by)
    candidates = fetch_candidates(asset, with_release_times=policy.min_release_age is not None)
    decision = decide_update(asset, candidates, policy)
    reasons = list(decision.reasons)

    target, change_type, needs_approval = _choose_target(asset, decision, to_version, reasons)
    if target is None:
        reasons += _held_back(decision)
        return finish_without_change(asset, decision, Outcome.NO_UPDATE, reasons, run_id)

    def skipped() -> dict[str, Any]:
        return finish_without_change(
            asset,
            decision,
            Outcome.SKIPPED,
            reasons,
            run_id,
            target=target,
            change_type=change_type,
        )

    if planned_version is not None and target != planned_version:
        reasons.append(
            f"the fleet plan chose {planned_version} but the policy now picks {target}; "
            "skipped so that only planned changes apply (the next run plans again)"
        )
        return skipped()

    if to_version is None:
        halted = rollback_budget_exhausted(asset_id)
        if halted:
            reasons.append(halted)
        if halted or not decision.window_open:
            return skipped()

    if dry_run:
        how = "after approval" if needs_approval else "now"
        reasons.append(
            f"dry run: would update {asset.current_version} -> {target} ({change_type}) {how}"
        )
        return skipped()

    approvers = [approved_by] if approved_by else []
    if needs_approval and approved_by is not None and policy.approval.quorum <= 1:
        reasons.append(f"approved by {approved_by} in the fleet plan")
        needs_approval = False
    if needs_approval:
        if approval == "defer":
            return record_awaiting_approval(
                asset, decision, target, change_type, reasons, run_id, actor
            )
        emit_update_event(
            "awaiting-approval",
            asset.id,
            {"from": asset.current_version, "to": target, "change_type": change_type},
            run_id,
        )
        try:
            outcome = wait_for_approval(
                asset.id,
                _approval_description(asset, target, change_type, reasons),
                policy.approval,
                poll_interval=approval_poll_interval(),
                requested_by=actor,
            )
        except ApprovalWaitLost as lost:
            keep_request(asset, target, change_type, run_id, actor, lost)
            raise
        if outcome.state != "approved":
            final = Outcome.REJECTED if outcome.state == "rejected" else Outcome.EXPIRED
            why = f"approval {outcome.state}" + (f": {outcome.reason}" if outcome.reason else "")
            reasons.append(why)
            attempt = record_closed_attempt(asset, target, change_type, run_id, final, why)
            emit_update_event("rejected", asset.id, {"to": target, "state": outcome.state}, run_id)
            return finish_without_change(
                asset,
                decision,
                final,
                reasons,
                run_id,
                target=target,
                change_type=change_type,
                attempt_id=attempt.id,
            )
        approvers = outcome.approvers

    result = apply_and_verify(
        asset, target, change_type, decision, reasons, run_id, actor=actor, approvers=approvers
    )
    return result.to_json_dict()


def _check_approver(asset: Asset, policy: EffectivePolicy, approver: str) -> None:
    allowed = policy.approval.approvers
    if allowed and approver not in allowed:
        audit("approval.refused", asset.id, approver, {"reason": "not a configured approver"})
        raise PolicyViolationError(
            f"{approver} may not approve updates of {asset.id}",
            hint=f"approvers for this asset: {', '.join(allowed)}",
        )


def _choose_target(
    asset: Asset, decision: Decision, to_version: str | None, reasons: list[str]
) -> tuple[str | None, str, bool]:
    """(target, change type, needs approval) from the decision or the operator's choice."""
    if to_version is not None:
        verdict = next((c for c in decision.candidates if c.tag == to_version), None)
        if verdict is None:
            raise InvalidInputError(
                f"{to_version!r} is not a tag of {asset.image or asset.chart}",
                hint="pick a tag from `safe-updater evaluate` or the registry",
            )
        if verdict.reason == QUARANTINED_REASON:
            raise PolicyViolationError(
                f"{to_version} is quarantined for {asset.id} after a failed update",
                hint=f"clear it first: safe-updater quarantine clear {asset.id} "
                f"--version {to_version}",
            )
        change = classify(asset.current_version, to_version)
        if change in (ChangeType.DOWNGRADE, ChangeType.NONE, ChangeType.INCOMPARABLE):
            raise PolicyViolationError(
                f"{asset.current_version} -> {to_version} is a {change.value}, not an update",
                hint=f"use `safe-updater rollback {asset.id} --to {to_version}` to go back",
            )
        reasons.append(f"{to_version} requested by the operator")
        return to_version, change.value, False
    if decision.auto_target is not None:
        if decision.approval_target is not None:
            reasons.append(
                f"{decision.approval_target} waits for approval; it is offered "
                f"once {decision.auto_target} runs"
            )
        return decision.auto_target, _change_name(decision.auto_change_type), False
    if decision.approval_target is not None:
        return decision.approval_target, _change_name(decision.approval_change_type), True
    return None, "none", False


def _held_back(decision: Decision, limit: int = 5) -> list[str]:
    """The newer tags the policy kept back, so "no update" explains itself."""
    upgrades = {ChangeType.MAJOR, ChangeType.MINOR, ChangeType.PATCH, ChangeType.PRERELEASE}
    return [
        f"{c.tag}: {c.reason}"
        for c in decision.candidates
        if not c.accepted and c.change_type in upgrades
    ][:limit]


def _change_name(change: object) -> str:
    return str(getattr(change, "value", change) or "none")


def _approval_description(asset: Asset, target: str, change_type: str, reasons: list[str]) -> str:
    lines = [f"### Approve {asset.id}: {asset.current_version} -> {target} ({change_type})?", ""]
    lines += [f"- {reason}" for reason in reasons[-5:]]
    lines += ["", "Tick **approve** and enter your name to apply it; leave it unticked to reject."]
    return "\n".join(lines)


def _flow_run_id() -> str | None:
    value = flow_run.id
    return str(value) if value else None
