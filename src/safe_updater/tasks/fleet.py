"""The fleet's concurrency limits and the dispatch of per-asset update runs.

Limits are Prefect global concurrency limits, which the server never creates by itself
(a missing one would silently not limit), so the fleet creates or resizes them before any
run starts: one for all updates, one per Docker host or cluster, one per asset. Each
per-asset run takes a slot of all three for its whole length (apply and verify), so the limits
hold however the runs are spread: threads of the fleet's process or workers on other machines.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

from prefect import get_client, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from safe_updater.domain.assets import parse_asset_id
from safe_updater.domain.errors import TransientError
from safe_updater.domain.policy import ApprovalRule, resolve_policy
from safe_updater.runtime import current_runtime
from safe_updater.tasks.gating import asset_context
from safe_updater.tasks.retry import TRANSIENT_RETRIES

GLOBAL_LIMIT = "safe-updater-updates"
# The outcome of a per-asset run that never began (no slot, no journal row): not a failure of
# the update, so it does not count against a wave's failure budget.
NOT_STARTED = "not_started"
UPDATE_DEPLOYMENT = "update-asset/update-asset"
# Prefect refuses these in names; asset ids contain "/".
_BANNED = re.compile(r"[/%&<>]+")


def _safe(text: str) -> str:
    return _BANNED.sub("_", text)


def target_limit(asset_id: str) -> str:
    kind, parts = parse_asset_id(asset_id)
    return f"safe-updater-target-{kind.value}-{_safe(parts[0])}"


def asset_limit(asset_id: str) -> str:
    # the digest keeps ids that differ only in banned characters apart
    digest = hashlib.sha256(asset_id.encode()).hexdigest()[:8]
    return f"safe-updater-asset-{_safe(asset_id)[:80]}-{digest}"


def limits_for(
    asset_ids: Sequence[str], *, max_parallel: int, per_target: int | None
) -> dict[str, int]:
    """Every limit the assets' runs take, with its size."""
    limits = {GLOBAL_LIMIT: max_parallel}
    for asset_id in asset_ids:
        limits[target_limit(asset_id)] = min(per_target or max_parallel, max_parallel)
        limits[asset_limit(asset_id)] = 1
    return limits


def slot_names(asset_id: str) -> list[str]:
    return [GLOBAL_LIMIT, target_limit(asset_id), asset_limit(asset_id)]


@task(name="ensure-concurrency-limits", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def ensure_concurrency_limits(limits: dict[str, int]) -> int:
    """Create or resize the limits on the Prefect server; returns how many there are."""
    with get_client(sync_client=True) as client:
        for name, size in limits.items():
            try:
                client.upsert_global_concurrency_limit_by_name(name, size)
            except ObjectAlreadyExists:
                # a parallel fleet run created it between our read and our write
                client.upsert_global_concurrency_limit_by_name(name, size)
    return len(limits)


@contextmanager
def holding_slots(names: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Hold one slot of every limit in ``names`` (none: hold nothing) while the block runs.

    Yields a dict that gets ``slot_acquired``/``slot_released`` (ISO times), so the caller can
    prove afterwards that the limits held. ``strict``: a limit that does not exist is an error,
    not a silent "no limit".
    """
    held: dict[str, Any] = {}
    if not names:
        yield held
        return
    manager = _acquire(names)
    held["slot_acquired"] = datetime.now(UTC).isoformat()
    try:
        yield held
    except BaseException:
        held["slot_released"] = datetime.now(UTC).isoformat()
        if not manager.__exit__(*sys.exc_info()):
            raise
    else:
        held["slot_released"] = datetime.now(UTC).isoformat()
        manager.__exit__(None, None, None)


class SlotsUnavailable(TransientError):
    """The server did not hand out the slots; nothing was started, so nothing changed."""


# A busy server (SQLite under many writers) answers 503 to slot requests; the client's own
# retries are not always enough, and giving up here only means "not started this time".
ACQUIRE_ATTEMPTS = 5


def _acquire(names: Sequence[str]) -> AbstractContextManager[None]:
    delay = 1.0
    last: Exception | None = None
    for _ in range(ACQUIRE_ATTEMPTS):
        manager = concurrency(list(names), occupy=1, strict=True)
        try:
            manager.__enter__()
            return manager
        except ConcurrencySlotAcquisitionError:
            raise  # a limit that does not exist: the fleet did not create it, a bug to see
        except Exception as error:  # transport errors and 5xx from the server
            last = error
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 15.0)
    raise SlotsUnavailable(
        f"could not take a concurrency slot after {ACQUIRE_ATTEMPTS} tries: {last}",
        hint="the Prefect server is overloaded or down; nothing was changed and the next "
        "run takes this asset (a PostgreSQL-backed server handles large fleets)",
    )


def attempts_since(asset_id: str, since: datetime) -> int:
    """Journal rows opened for the asset since ``since``: 0 means a failed run changed nothing."""
    return current_runtime().store.journal.count(asset_id=asset_id, since=since)


def run_as_deployment(
    parameters: Mapping[str, Any], *, name: str = UPDATE_DEPLOYMENT, poll_seconds: float = 1.0
) -> dict[str, Any]:
    """Start one run of the update deployment (a worker takes it) and wait for its end.

    Returns the run's result when it can be read, else what the server knows (final state),
    so a run on a worker without shared result storage still counts right.
    """
    from prefect.deployments import run_deployment

    started = run_deployment(
        name=name, parameters=dict(parameters), timeout=0, as_subflow=True, tags=["fleet"]
    )
    if not isinstance(started, FlowRun):  # sync callers get the run, not a coroutine
        raise TypeError("run_as_deployment must be called outside an event loop")
    flow_run = started
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run.id)
            state = flow_run.state
            if state is not None and state.is_final():
                break
            time.sleep(poll_seconds)
    summary: dict[str, Any] = {"flow_run_id": str(flow_run.id), "state": state.type.value}
    if state.is_completed():
        try:
            result = state.result(raise_on_failure=False)
        except Exception:  # results stored where this process cannot read them
            result = None
        if isinstance(result, dict):
            summary.update(result)
        else:
            summary.setdefault("outcome", "completed")
    else:
        summary["outcome"] = "crashed" if state.is_crashed() else "failed"
        summary["reasons"] = [state.message or state.type.value]
    return summary


@task(name="approval-rules", cache_policy=NO_CACHE)
def approval_rules(asset_ids: list[str]) -> dict[str, ApprovalRule]:
    """Each asset's approval rule (config, overrides, labels), to check a plan's approver."""
    runtime = current_runtime()
    rules: dict[str, ApprovalRule] = {}
    for asset_id in asset_ids:
        asset = runtime.find_asset(asset_id)
        rules[asset_id] = resolve_policy(runtime.config.policy, asset_context(asset)).approval
    return rules
