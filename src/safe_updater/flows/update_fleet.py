"""``update_fleet``: scan, plan, approve the plan once, then update in waves.

Orchestration only. The scan plans every asset; :func:`safe_updater.domain.fleet.plan_fleet`
puts the ones that update into waves by group, canaries first; the plan is the run's table
artifact before anything changes. Each asset then gets its own ``update_asset`` run (a subflow
in this process, or a run of the ``update-asset`` deployment that a worker takes), holding a
slot of the fleet's concurrency limits for its whole length. A wave whose failures exceed the
budget halts the waves after it, and the run says why.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from datetime import datetime, timedelta
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from safe_updater.domain.errors import SafeUpdaterError
from safe_updater.domain.fleet import (
    FAILED_OUTCOMES,
    Disposition,
    FleetItem,
    FleetPlan,
    PlannedAsset,
    Wave,
    needs_approval,
    plan_fleet,
    wave_halt_reason,
)
from safe_updater.domain.policy import ApprovalRule
from safe_updater.flows.approval import wait_for_approval
from safe_updater.flows.scan_inventory import scan_inventory
from safe_updater.flows.update_asset import update_asset
from safe_updater.tasks.fleet import (
    NOT_STARTED,
    approval_rules,
    attempts_since,
    ensure_concurrency_limits,
    limits_for,
    run_as_deployment,
    slot_names,
)
from safe_updater.tasks.journaling import audit
from safe_updater.tasks.settings import approval_poll_interval, fleet_settings, now, pause

STAGGER_SECONDS = 0.2
FleetApproval = Literal["plan", "defer"]
Dispatch = Literal["auto", "inline", "deployment"]


@flow(
    name="update-fleet",
    flow_run_name="fleet update",
    description="Scan, plan, approve once, and update the fleet in waves (canaries first).",
)
def update_fleet(
    dry_run: bool = False,
    approval: FleetApproval | None = None,
    dispatch: Dispatch | None = None,
    groups: list[str] | None = None,
    actor: str = "safe-updater",
) -> dict[str, Any]:
    """Update every opted-in asset its policy allows, wave by wave.

    Args:
        dry_run: scan and publish the plan only.
        approval: ``plan`` pauses this run once for every update that needs approval;
            ``defer`` leaves each of them waiting for its own approval. Default: config
            ``fleet.approval``.
        dispatch: ``inline`` runs each update as a subflow here; ``deployment`` as a run of
            the ``update-asset`` deployment, for workers. Default: config ``fleet.dispatch``.
        groups: only these groups (``(no group)`` for assets without one).
        actor: who started the run, for the audit log.
    """
    logger = get_run_logger()
    settings = fleet_settings()
    rows = scan_inventory()
    plan = plan_fleet(
        [FleetItem.from_row(row) for row in rows],
        now=now(),
        canary=settings.canary,
        order=settings.order,
        window_wait=settings.window_wait,
        groups=groups,
    )
    results: dict[str, dict[str, Any]] = {}
    publish_plan(plan, results, halted=None, final=False)
    if dry_run or not plan.waves:
        return _summary(plan, results, None, dry_run)

    approver = None
    if (approval or settings.approval) == "plan":
        approver = _approve_plan(plan, results, actor)

    mode = dispatch or settings.dispatch
    if mode == "auto":
        mode = "deployment" if flow_run.deployment_id else "inline"
    ids = [asset_id for wave in plan.waves for asset_id in wave.asset_ids]
    ensure_concurrency_limits(
        limits_for(
            ids, max_parallel=settings.max_parallel, per_target=settings.max_parallel_per_target
        )
    )

    halted: str | None = None
    for index, wave in enumerate(plan.waves):
        logger.info("wave %s: %d assets", wave.name, len(wave.assets))
        outcomes = _run_wave(wave, results, approver, actor, mode, settings.max_parallel)
        halted = wave_halt_reason(wave, outcomes, settings.failure_budget)
        if halted:
            logger.error("%s", halted)
            for later in plan.waves[index + 1 :]:
                for planned in later.assets:
                    results[planned.item.asset] = {"outcome": "halted", "reasons": [halted]}
            break
        if index + 1 < len(plan.waves) and settings.soak > timedelta(0):
            logger.info("wave %s passed; soaking %s before the next wave", wave.name, settings.soak)
            pause(settings.soak.total_seconds())
    publish_plan(plan, results, halted=halted, final=True)
    return _summary(plan, results, halted, dry_run)


def _approve_plan(plan: FleetPlan, results: dict[str, dict[str, Any]], actor: str) -> str | None:
    """One pause for every update in the plan that needs approval; returns the approver.

    Assets that need more than one approver, or whose approvers do not include the one who
    answered, keep waiting for their own approval (they are deferred, not applied)."""
    waiting = [p.item.asset for p in plan.assets if needs_approval(p)]
    if not waiting:
        return None
    rules = approval_rules(waiting)
    single = [a for a in waiting if rules[a].quorum <= 1]
    if not single:
        return None
    rule = _plan_rule([rules[a] for a in single])
    outcome = wait_for_approval(
        None,
        _plan_description(plan, single),
        rule,
        poll_interval=approval_poll_interval(),
        requested_by=actor,
    )
    run_id = _flow_run_id()
    if outcome.state != "approved":
        why = f"fleet plan {outcome.state}" + (f": {outcome.reason}" if outcome.reason else "")
        decided_by = outcome.approvers[0] if outcome.approvers else actor
        for asset_id in single:
            results[asset_id] = {"outcome": outcome.state, "reasons": [why]}
            audit(f"approval.{outcome.state}", asset_id, decided_by, {"fleet_run": run_id})
        return None
    who = outcome.approvers[0]
    for asset_id in single:
        allowed = rules[asset_id].approvers
        if allowed and who not in allowed:
            continue
        audit("approval.approved", asset_id, who, {"fleet_run": run_id, "plan": True})
    return who


def _plan_rule(rules: Sequence[ApprovalRule]) -> ApprovalRule:
    """The strictest of the rules: shortest deadline, approvers every asset accepts."""
    restricted = [set(rule.approvers) for rule in rules if rule.approvers]
    approvers = sorted(set.intersection(*restricted)) if restricted else []
    return ApprovalRule(
        quorum=1,
        allow_self_approval=all(rule.allow_self_approval for rule in rules),
        deadline=min(rule.deadline for rule in rules),
        approvers=approvers or (sorted(set.union(*restricted)) if restricted else []),
    )


def _plan_description(plan: FleetPlan, waiting: Sequence[str]) -> str:
    lines = [f"### Approve the fleet plan: {len(waiting)} updates need approval", ""]
    by_id = {p.item.asset: p for p in plan.assets}
    for asset_id in waiting[:30]:
        item = by_id[asset_id].item
        lines.append(
            f"- {asset_id}: {item.current} -> {item.target} ({item.change_type}), "
            f"wave {by_id[asset_id].wave}"
        )
    if len(waiting) > 30:
        lines.append(f"- … and {len(waiting) - 30} more (see the fleet-plan artifact)")
    auto = plan.count(Disposition.UPDATE)
    lines += [
        "",
        f"{auto} more updates apply without approval. Tick **approve** and enter your name "
        "to apply the plan; leave it unticked to reject the updates above.",
    ]
    return "\n".join(lines)


def _run_wave(
    wave: Wave,
    results: dict[str, dict[str, Any]],
    approver: str | None,
    actor: str,
    mode: str,
    max_parallel: int,
) -> dict[str, str]:
    """Start every update of the wave (the limits queue them) and wait for all; outcomes."""
    ordered = sorted(
        (p for p in wave.assets if p.item.asset not in results),
        key=lambda p: (p.start_at is not None, p.start_at),
    )
    outcomes: dict[str, str] = {}
    started = now()
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(ordered) or 1))) as pool:
        futures = {}
        for index, planned in enumerate(ordered):
            _wait_for_window(planned)
            if 0 < index < max_parallel:
                # the first runs would otherwise all ask the server for runs and slots in the
                # same instant; a busy server answers that with 503s
                time.sleep(STAGGER_SECONDS)
            params = _parameters(planned, approver, actor)
            # The pool is as wide as the global limit, so runs rarely queue on the server's
            # limits, whose waiters poll coarsely (prefect.md §9). Each thread gets a copy of
            # this run's context so the subflows are children of the fleet run.
            call = run_as_deployment if mode == "deployment" else run_inline
            futures[planned.item.asset] = pool.submit(copy_context().run, call, params)
        for asset_id, future in futures.items():
            try:
                result = future.result()
            except SafeUpdaterError as error:
                result = {"outcome": "failed", "reasons": [str(error)]}
            except Exception as error:  # a crashed run is a failure of the wave, not of the fleet
                result = {"outcome": "failed", "reasons": [f"{type(error).__name__}: {error}"]}
            if _never_began(asset_id, result, started):
                result = {**result, "outcome": NOT_STARTED}
            results[asset_id] = dict(result)
            outcomes[asset_id] = str(result.get("outcome"))
    return outcomes


def _never_began(asset_id: str, result: dict[str, Any], since: datetime) -> bool:
    """A failed run that took no slot and opened no journal row changed nothing: the server
    failed it (503s, a crash before the first step), not the update."""
    if result.get("outcome") not in ("failed", "crashed") or result.get("slot_acquired"):
        return False
    return attempts_since(asset_id, since) == 0


def _wait_for_window(planned: PlannedAsset) -> None:
    if planned.disposition is not Disposition.WAIT or planned.start_at is None:
        return
    delay = (planned.start_at - now()).total_seconds()
    if delay > 0:
        get_run_logger().info("%s: waiting %.0fs for its window", planned.item.asset, delay)
        pause(delay)


def _parameters(planned: PlannedAsset, approver: str | None, actor: str) -> dict[str, Any]:
    asset_id = planned.item.asset
    approve = needs_approval(planned)
    return {
        "asset_id": asset_id,
        "planned_version": planned.item.target,
        "approval": "defer",  # never park a slot-holding run on a pause
        "approved_by": approver if approve else None,
        "actor": actor,
        "concurrency_limits": slot_names(asset_id),
    }


@task(name="update", task_run_name="update {parameters[asset_id]}", cache_policy=NO_CACHE)
def run_inline(parameters: dict[str, Any]) -> dict[str, Any]:
    """One ``update_asset`` subflow (its own run in the UI, under this task)."""
    result: dict[str, Any] = update_asset(**parameters)
    return result


@task(name="publish-fleet-plan", cache_policy=NO_CACHE)
def publish_plan(
    plan: FleetPlan, results: dict[str, dict[str, Any]], *, halted: str | None, final: bool
) -> None:
    rows = _rows(plan, results)
    key = "fleet-result" if final else "fleet-plan"
    what = "what each asset's update did" if final else "what the fleet run will do"
    create_table_artifact(table=rows, key=key, description=f"{len(rows)} assets: {what}")
    lines = [f"# Fleet {'result' if final else 'plan'}", ""]
    for wave in plan.waves:
        tag = " (canary)" if wave.canary else ""
        lines.append(f"- wave **{wave.name}**{tag}: {', '.join(wave.asset_ids)}")
    if not plan.waves:
        lines.append("Nothing to update.")
    for disposition in (Disposition.WAIT, Disposition.DEFER, Disposition.ERROR):
        count = plan.count(disposition)
        if count:
            lines.append(f"- {count} assets: {disposition.value}")
    if final:
        counts: dict[str, int] = {}
        for result in results.values():
            counts[str(result.get("outcome"))] = counts.get(str(result.get("outcome")), 0) + 1
        lines += ["", "Outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    if halted:
        lines += ["", f"**Halted:** {halted}"]
    create_markdown_artifact(markdown="\n".join(lines), key=f"{key}-summary")


def _rows(plan: FleetPlan, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for planned in plan.assets:
        item = planned.item
        result = results.get(item.asset, {})
        reasons = result.get("reasons") or []
        rows.append(
            {
                "asset": item.asset,
                "group": item.group,
                "wave": planned.wave,
                "current": item.current,
                "target": item.target,
                "change_type": item.change_type,
                "action": planned.disposition.value,
                "outcome": result.get("outcome"),
                "reasons": "; ".join(
                    [r for r in [planned.note, item.reasons] if r] + [str(r) for r in reasons[-3:]]
                ),
                "flow_run_id": result.get("flow_run_id"),
                "slot_acquired": result.get("slot_acquired"),
                "slot_released": result.get("slot_released"),
            }
        )
    return rows


def _summary(
    plan: FleetPlan, results: dict[str, dict[str, Any]], halted: str | None, dry_run: bool
) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "halted": halted,
        "waves": [
            {
                "name": wave.name,
                "canary": wave.canary,
                "assets": wave.asset_ids,
                "failures": sum(
                    1
                    for a in wave.asset_ids
                    if str(results.get(a, {}).get("outcome")) in FAILED_OUTCOMES
                ),
            }
            for wave in plan.waves
        ],
        "assets": _rows(plan, results),
    }


def _flow_run_id() -> str | None:
    value = flow_run.id
    return str(value) if value else None
