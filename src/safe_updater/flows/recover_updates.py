"""``recover_updates``: finish what a crashed or killed run left open.

The journal row says how far the attempt got; from there recovery either finishes it (verify,
then commit) or undoes it (roll back to the snapshot), so no asset is left half-updated.

| phase at the crash          | what recovery does                                  | outcome     |
|-----------------------------|-----------------------------------------------------|-------------|
| opened, preflight, snapshot | nothing was changed                                 | failed      |
| applying                    | roll back to the snapshot (the apply was cut short) | rolled_back |
| verifying                   | verify again: commit if healthy, else roll back     | see below   |
| committing                  | finish the commit                                   | updated     |
| rolling back                | finish the rollback                                 | rolled_back |

A re-verified attempt ends ``updated``, or ``rolled_back`` with the version quarantined.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from prefect import flow, get_run_logger

from safe_updater.domain.assets import Asset
from safe_updater.domain.errors import ConflictError
from safe_updater.domain.journal import AttemptRecord, Outcome, Phase
from safe_updater.domain.plans import AppliedChange, Snapshot, UpdateResult
from safe_updater.tasks.applying import commit_update, rollback_update
from safe_updater.tasks.health import monitor_health
from safe_updater.tasks.journaling import advance_attempt, audit, close_attempt, quarantine_version
from safe_updater.tasks.locks import asset_lock
from safe_updater.tasks.queries import find_open_attempts
from safe_updater.tasks.recording import emit_update_event

# Written into the reason of a rollback whose version failed on its merits (it gets quarantined).
FAILED_VERIFICATION = "failed verification"
# ... unless the checks were cut off by a container engine restart: rolled back, not barred.
NOT_QUARANTINED = (
    "; not quarantined: the container engine restarted during the checks, so the next run may "
    "try this version again"
)


@flow(
    name="recover-updates",
    flow_run_name="recover {asset_id}",
    description="Finish or roll back update attempts that a crash left open.",
)
def recover_updates(
    asset_id: str | None = None, actor: str = "safe-updater"
) -> list[dict[str, Any]]:
    results = [
        recover_attempt(attempt, actor=actor).to_json_dict()
        for attempt in find_open_attempts(asset_id)
    ]
    return results


def recover_attempt(attempt: AttemptRecord, *, actor: str) -> UpdateResult:
    """Finish ``attempt`` unless its run is still alive elsewhere (it holds the asset lock)."""
    with ExitStack() as stack:
        try:
            stack.enter_context(asset_lock(attempt.asset_id, timeout=0))
        except ConflictError as error:
            get_run_logger().warning("attempt #%s: %s; left alone", attempt.id, error.message)
            return UpdateResult(
                asset=attempt.asset_id,
                outcome=Outcome.SKIPPED.value,
                from_version=attempt.from_version,
                to_version=attempt.to_version,
                change_type=attempt.change_type,
                attempt_id=attempt.id,
                reasons=[f"still running in another process ({error.message})"],
            )
        return _recover_locked(attempt, actor=actor)


def _recover_locked(attempt: AttemptRecord, *, actor: str) -> UpdateResult:
    logger = get_run_logger()
    logger.warning(
        "recovering attempt #%s of %s (%s -> %s), left in phase %s",
        attempt.id,
        attempt.asset_id,
        attempt.from_version,
        attempt.to_version,
        attempt.phase.value,
    )
    stored = attempt.snapshot or {}
    if "asset" not in stored or "snapshot" not in stored:
        return _close(
            attempt,
            Outcome.FAILED,
            actor,
            f"interrupted in phase {attempt.phase.value} before any change; nothing to undo",
        )
    asset = Asset.model_validate(stored["asset"])
    snapshot = Snapshot.model_validate(stored["snapshot"])
    applied = AppliedChange.model_validate(attempt.applied) if attempt.applied else None

    if attempt.phase is Phase.SNAPSHOTTED:
        return _close(
            attempt,
            Outcome.FAILED,
            actor,
            "interrupted before the change was applied; nothing to undo",
        )
    if attempt.phase is Phase.VERIFYING and applied is not None:
        report = monitor_health(asset, applied)
        if report.healthy:
            advance_attempt(attempt.id, Phase.COMMITTING)
            commit_update(asset, snapshot, applied)
            emit_update_event(
                "verified", asset.id, {"to": attempt.to_version, "attempt": attempt.id}, None
            )
            return _close(
                attempt,
                Outcome.UPDATED,
                actor,
                f"re-verified after a crash: {report.verdict.reason}",
            )
        why = f"{attempt.to_version} {FAILED_VERIFICATION}: {report.verdict.reason}"
        if report.verdict.interrupted:
            why += NOT_QUARANTINED
        return _roll_back(
            attempt,
            asset,
            snapshot,
            applied,
            why,
            actor=actor,
            quarantine=not report.verdict.interrupted,
        )
    if attempt.phase is Phase.COMMITTING and applied is not None:
        commit_update(asset, snapshot, applied)
        return _close(attempt, Outcome.UPDATED, actor, "commit finished after a crash")
    if attempt.phase is Phase.ROLLING_BACK and attempt.reason:
        # The verdict (or the apply failure) that started the rollback is the row's reason.
        quarantine = FAILED_VERIFICATION in attempt.reason and NOT_QUARANTINED not in attempt.reason
        return _roll_back(
            attempt, asset, snapshot, applied, attempt.reason, actor=actor, quarantine=quarantine
        )
    why = "interrupted while applying; the new version was never verified"
    return _roll_back(attempt, asset, snapshot, applied, why, actor=actor, quarantine=False)


def _roll_back(
    attempt: AttemptRecord,
    asset: Asset,
    snapshot: Snapshot,
    applied: AppliedChange | None,
    why: str,
    *,
    actor: str,
    quarantine: bool,
) -> UpdateResult:
    serving = rollback_and_quarantine(
        asset,
        snapshot,
        applied,
        attempt.id,
        attempt.to_version,
        why=why,
        quarantine=quarantine,
        actor=actor,
    )
    return _close(attempt, Outcome.ROLLED_BACK, actor, f"{why}; rolled back, {serving} is serving")


def rollback_and_quarantine(
    asset: Asset,
    snapshot: Snapshot,
    applied: AppliedChange | None,
    attempt_id: int,
    bad_version: str,
    *,
    why: str,
    quarantine: bool,
    actor: str,
) -> str | None:
    """Journal the rollback and restore the snapshot, then keep the bad version out (when it
    failed on its merits)."""
    serving = rollback_update(asset, snapshot, applied, attempt_id, why)
    audit(
        "update.rollback",
        asset.id,
        actor,
        {"attempt": attempt_id, "to": snapshot.version, "serving": serving, "reason": why},
    )
    if quarantine:
        quarantine_version(asset.id, bad_version, why, attempt_id)
        audit(
            "quarantine.added",
            asset.id,
            actor,
            {"attempt": attempt_id, "version": bad_version, "reason": why},
        )
    return serving


def _close(attempt: AttemptRecord, outcome: Outcome, actor: str, why: str) -> UpdateResult:
    close_attempt(attempt.id, outcome, why)
    audit(
        f"update.{outcome.value}",
        attempt.asset_id,
        actor,
        {"attempt": attempt.id, "recovered": True, "reason": why},
    )
    return UpdateResult(
        asset=attempt.asset_id,
        outcome=outcome.value,
        from_version=attempt.from_version,
        to_version=attempt.to_version,
        change_type=attempt.change_type,
        attempt_id=attempt.id,
        reasons=[why],
    )
