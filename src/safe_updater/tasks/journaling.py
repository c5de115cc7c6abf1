"""Tasks that write the journal, the quarantine and the audit chain.

Each journal write is its own task and is durable before the next side effect starts, so a run
killed at any point leaves a row that says exactly how far it got.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from safe_updater.domain.journal import AttemptRecord, Outcome, Phase, QuarantineEntry
from safe_updater.failpoints import failpoint
from safe_updater.runtime import current_runtime
from safe_updater.tasks.retry import TRANSIENT_RETRIES


@task(
    name="open-attempt",
    task_run_name="journal open {asset_id}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def open_attempt(
    asset_id: str,
    from_version: str,
    to_version: str,
    change_type: str,
    idempotency_key: str,
    flow_run_id: str | None,
) -> AttemptRecord:
    record = current_runtime().store.journal.open_attempt(
        asset_id=asset_id,
        from_version=from_version,
        to_version=to_version,
        change_type=change_type,
        idempotency_key=idempotency_key,
        flow_run_id=flow_run_id,
    )
    failpoint("after-open")
    return record


@task(
    name="journal-phase",
    task_run_name="journal #{attempt_id} {phase}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def advance_attempt(
    attempt_id: int,
    phase: Phase,
    snapshot: dict[str, Any] | None = None,
    applied: dict[str, Any] | None = None,
    reason: str | None = None,
) -> AttemptRecord:
    record = current_runtime().store.journal.advance(
        attempt_id, phase, snapshot=snapshot, applied=applied, reason=reason
    )
    failpoint(f"after-phase:{phase.value}")
    return record


@task(
    name="close-attempt",
    task_run_name="journal #{attempt_id} {outcome}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def close_attempt(attempt_id: int, outcome: Outcome, reason: str) -> AttemptRecord:
    return current_runtime().store.journal.close(attempt_id, outcome, reason)


@task(
    name="quarantine-version",
    task_run_name="quarantine {asset_id} {version}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def quarantine_version(
    asset_id: str, version: str, reason: str, attempt_id: int | None
) -> QuarantineEntry:
    """Keep the failed version from being applied to this asset again (loop prevention)."""
    entry = current_runtime().store.quarantine.add(asset_id, version, reason, attempt_id)
    failpoint("after-quarantine")
    return entry


@task(name="audit", task_run_name="audit {event}", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def audit(event: str, asset_id: str | None, actor: str, data: dict[str, Any]) -> int:
    """Append to the hash-chained audit log; returns the record's sequence number."""
    return (
        current_runtime().store.audit.append(event, asset_id=asset_id, actor=actor, data=data).seq
    )
