"""The shared steps of update and rollback runs: apply, verify, commit or roll back, record.

Every side effect is preceded by a durable journal write, so a crash anywhere leaves a row that
``recover_updates`` can finish.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Concatenate, ParamSpec, TypeVar

from prefect import get_run_logger

from safe_updater.domain.assets import Asset
from safe_updater.domain.errors import SafeUpdaterError
from safe_updater.domain.journal import AttemptRecord, Outcome, Phase
from safe_updater.domain.plans import AppliedChange, Snapshot, UpdateResult
from safe_updater.domain.policy import Decision
from safe_updater.flows.recover_updates import (
    FAILED_VERIFICATION,
    NOT_QUARANTINED,
    rollback_and_quarantine,
)
from safe_updater.flows.reporting import report_rows, summary_markdown
from safe_updater.tasks.applying import (
    apply_update,
    commit_update,
    preflight_update,
    snapshot_asset,
)
from safe_updater.tasks.health import HealthReport, monitor_health
from safe_updater.tasks.journaling import (
    advance_attempt,
    audit,
    close_attempt,
    open_attempt,
    quarantine_version,
)
from safe_updater.tasks.locks import asset_lock
from safe_updater.tasks.recording import emit_update_event, publish_report

P = ParamSpec("P")
R = TypeVar("R")

_Report = tuple[str, list[dict[str, Any]], str]
_deferred_reports: ContextVar[list[_Report] | None] = ContextVar("deferred_reports", default=None)


def publish_or_defer(asset_id: str, rows: list[dict[str, Any]], summary: str) -> None:
    """Publish a run's artifacts now, or after :func:`reports_published_afterwards` ends."""
    queue = _deferred_reports.get()
    if queue is None:
        publish_report(asset_id, rows, summary)
    else:
        queue.append((asset_id, rows, summary))


@contextlib.contextmanager
def reports_published_afterwards() -> Iterator[None]:
    """Hold back the artifacts of the block until it has ended.

    Publishing takes two API calls that a busy server answers slowly; made after the fleet slot
    and the asset lock are released, they no longer keep the next asset waiting. The outcome is
    already in the journal and the audit chain by then, so an artifact the server cannot take
    is logged, and fails neither the run nor an update that committed.
    """
    queue: list[_Report] = []
    token = _deferred_reports.set(queue)
    try:
        yield
    finally:
        _deferred_reports.reset(token)
        for asset_id, rows, summary in queue:
            try:
                publish_report(asset_id, rows, summary)
            except Exception as error:  # see the docstring: logged, never fatal
                get_run_logger().warning("the report of %s was not published: %s", asset_id, error)


def holding_asset_lock(
    step: Callable[Concatenate[Asset, P], R],
) -> Callable[Concatenate[Asset, P], R]:
    """Run ``step`` under its asset's lock (another live run holds it: ConflictError, nothing
    changed)."""

    @functools.wraps(step)
    def locked(asset: Asset, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with asset_lock(asset.id):
            return step(asset, *args, **kwargs)

    return locked


@holding_asset_lock
def apply_and_verify(
    asset: Asset,
    target: str,
    change_type: str,
    decision: Decision,
    reasons: list[str],
    run_id: str | None,
    *,
    actor: str,
    approvers: list[str],
    success: Outcome = Outcome.UPDATED,
    retire_version: str | None = None,
    apply_step: Callable[[Asset, Snapshot, str], AppliedChange] | None = None,
) -> UpdateResult:
    """Open the attempt, then preflight, snapshot, apply, verify, and commit or roll back, all
    under the asset's lock.

    ``success`` is the outcome recorded when the new version verifies (``rolled_back`` for a
    manual rollback); ``retire_version`` is quarantined then (the version a person rolled back
    from). ``apply_step`` replaces the ``apply-update`` task (a Helm rollback to a chosen
    revision applies that revision instead of a version).
    """
    logger = get_run_logger()
    attempt = open_attempt_for(asset, target, change_type, run_id)
    audit(
        "update.started",
        asset.id,
        actor,
        {
            "attempt": attempt.id,
            "from": asset.current_version,
            "to": target,
            "change_type": change_type,
            "approvers": approvers,
            "flow_run_id": run_id,
        },
    )

    def finish(outcome: Outcome, why: str, report: HealthReport | None = None) -> UpdateResult:
        reasons.append(why)
        close_attempt(attempt.id, outcome, why)
        audit(
            f"update.{outcome.value}",
            asset.id,
            actor,
            {"attempt": attempt.id, "from": asset.current_version, "to": target, "reason": why},
        )
        result = UpdateResult(
            asset=asset.id,
            outcome=outcome.value,
            from_version=asset.current_version,
            to_version=target,
            change_type=change_type,
            flow_run_id=run_id,
            attempt_id=attempt.id,
            reasons=reasons,
        )
        publish_or_defer(
            asset.id,
            report_rows(decision, report, result),
            summary_markdown(asset, decision, report, result),
        )
        return result

    try:
        advance_attempt(attempt.id, Phase.PREFLIGHT)
        preflight_update(asset, target)
        snapshot = snapshot_asset(asset)
        advance_attempt(attempt.id, Phase.SNAPSHOTTED, snapshot=journal_snapshot(asset, snapshot))
    except SafeUpdaterError as error:
        emit_update_event("failed", asset.id, {"to": target, "error": str(error)}, run_id)
        return finish(Outcome.FAILED, f"preflight failed, nothing was changed: {error}")

    advance_attempt(attempt.id, Phase.APPLYING)
    applied: AppliedChange | None = None
    try:
        applied = (apply_step or apply_update)(asset, snapshot, target)
    except SafeUpdaterError as error:
        logger.error("apply of %s -> %s failed: %s; rolling back", asset.id, target, error)
        return roll_back(
            asset,
            snapshot,
            None,
            attempt,
            target,
            run_id,
            actor,
            finish,
            why=f"apply failed: {error}",
            quarantine=False,
            success=success,
        )
    advance_attempt(attempt.id, Phase.VERIFYING, applied=applied.model_dump(mode="json"))
    emit_update_event(
        "applied",
        asset.id,
        {"from": asset.current_version, "to": target, "attempt": attempt.id},
        run_id,
    )

    report = monitor_health(asset, applied)
    if report.healthy:
        advance_attempt(attempt.id, Phase.COMMITTING)
        commit_update(asset, snapshot, applied)
        emit_update_event(
            "verified",
            asset.id,
            {"from": asset.current_version, "to": target, "attempt": attempt.id},
            run_id,
        )
        if retire_version is not None:
            why = f"rolled back from by {actor}"
            quarantine_version(asset.id, retire_version, why, attempt.id)
            audit(
                "quarantine.added",
                asset.id,
                actor,
                {"attempt": attempt.id, "version": retire_version, "reason": why},
            )
        return finish(success, f"{target} is healthy: {report.verdict.reason}", report)
    return roll_back(
        asset,
        snapshot,
        applied,
        attempt,
        target,
        run_id,
        actor,
        finish,
        why=f"{target} {FAILED_VERIFICATION}: {report.verdict.reason}"
        + (NOT_QUARANTINED if report.verdict.interrupted else ""),
        # A version whose checks a daemon restart cut off is rolled back, but not barred.
        quarantine=not report.verdict.interrupted,
        success=success,
        report=report,
    )


def roll_back(
    asset: Asset,
    snapshot: Snapshot,
    applied: AppliedChange | None,
    attempt: AttemptRecord,
    target: str,
    run_id: str | None,
    actor: str,
    finish: Callable[..., UpdateResult],
    *,
    why: str,
    quarantine: bool,
    success: Outcome = Outcome.UPDATED,
    report: HealthReport | None = None,
) -> UpdateResult:
    serving = rollback_and_quarantine(
        asset, snapshot, applied, attempt.id, target, why=why, quarantine=quarantine, actor=actor
    )
    emit_update_event(
        "rolled-back",
        asset.id,
        {"from": target, "to": snapshot.version, "reason": why, "attempt": attempt.id},
        run_id,
    )
    outcome = Outcome.ROLLED_BACK if success is Outcome.UPDATED else Outcome.FAILED
    return finish(outcome, f"{why}; rolled back, {serving} is serving", report)


def finish_without_change(
    asset: Asset,
    decision: Decision,
    outcome: Outcome,
    reasons: list[str],
    run_id: str | None,
    *,
    target: str | None = None,
    change_type: str | None = None,
    attempt_id: int | None = None,
) -> dict[str, Any]:
    result = UpdateResult(
        asset=asset.id,
        outcome=outcome.value,
        from_version=asset.current_version,
        to_version=target,
        change_type=change_type,
        flow_run_id=run_id,
        attempt_id=attempt_id,
        reasons=reasons,
    )
    publish_or_defer(
        asset.id,
        report_rows(decision, None, result),
        summary_markdown(asset, decision, None, result),
    )
    return result.to_json_dict()


def record_approval_request(
    asset: Asset,
    target: str,
    change_type: str,
    run_id: str | None,
    actor: str,
    why: str,
    audit_reason: str | None = None,
) -> AttemptRecord:
    """A closed ``awaiting_approval`` journal row and its ``approval.requested`` audit record:
    what ``safe-updater approve ASSET`` decides later."""
    attempt = record_closed_attempt(
        asset, target, change_type, run_id, Outcome.AWAITING_APPROVAL, why
    )
    details: dict[str, Any] = {
        "attempt": attempt.id,
        "from": asset.current_version,
        "to": target,
        "change_type": change_type,
    }
    if audit_reason is not None:
        details["reason"] = audit_reason
    audit("approval.requested", asset.id, actor, details)
    return attempt


def record_awaiting_approval(
    asset: Asset,
    decision: Decision,
    target: str,
    change_type: str,
    reasons: list[str],
    run_id: str | None,
    actor: str,
) -> dict[str, Any]:
    """Deferred approval: a closed journal row says what waits; `approve ASSET` applies it."""
    why = (
        f"{asset.current_version} -> {target} ({change_type}) needs approval: "
        f"safe-updater approve {asset.id}"
    )
    reasons.append(why)
    attempt = record_approval_request(asset, target, change_type, run_id, actor, why)
    emit_update_event(
        "awaiting-approval",
        asset.id,
        {"from": asset.current_version, "to": target, "change_type": change_type},
        run_id,
    )
    return finish_without_change(
        asset,
        decision,
        Outcome.AWAITING_APPROVAL,
        reasons,
        run_id,
        target=target,
        change_type=change_type,
        attempt_id=attempt.id,
    )


def open_attempt_for(
    asset: Asset, target: str, change_type: str, run_id: str | None
) -> AttemptRecord:
    """The journal row of this run's attempt to move ``asset`` to ``target`` (idempotent)."""
    return open_attempt(
        asset.id,
        asset.current_version,
        target,
        change_type,
        idempotency_key(run_id, asset.id, target),
        run_id,
    )


def record_closed_attempt(
    asset: Asset, target: str, change_type: str, run_id: str | None, outcome: Outcome, why: str
) -> AttemptRecord:
    """A decision that changed nothing (approval requested, rejected, expired), in the journal."""
    attempt = open_attempt_for(asset, target, change_type, run_id)
    return close_attempt(attempt.id, outcome, why)


def journal_snapshot(asset: Asset, snapshot: Snapshot) -> dict[str, Any]:
    """What recovery needs without asking the inventory (the asset may be mid-rename)."""
    return {"asset": asset.model_dump(mode="json"), "snapshot": snapshot.model_dump(mode="json")}


def idempotency_key(run_id: str | None, asset_id: str, target: str) -> str:
    return f"{run_id or 'local'}:{asset_id}:{target}"
