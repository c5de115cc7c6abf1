"""The shipped automations: created idempotently on the session's Prefect server, and firing:
two rollbacks of one asset pause the target deployment."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.events.worker import EventsWorker

from safe_updater.deployments.automations import (
    ROLLBACK_PAUSE,
    apply_automations,
    rollback_pause_automation,
)
from safe_updater.tasks.recording import EVENT_PREFIX


@flow(name="automation-target")
def automation_target() -> None:
    """A stand-in for the fleet deployment."""


def _deploy(name: str) -> uuid.UUID:
    deployment_id = automation_target.to_deployment(name=name).apply()
    assert isinstance(deployment_id, uuid.UUID)
    return deployment_id


def _rolled_back(asset_id: str) -> None:
    emit_event(
        event=EVENT_PREFIX + "rolled-back",
        resource={
            "prefect.resource.id": f"safe-updater.asset.{asset_id}",
            "prefect.resource.name": asset_id,
        },
        payload={"from": "1.0.2", "to": "1.0.0", "reason": "test"},
    )


def _paused(deployment_id: uuid.UUID) -> bool:
    with get_client(sync_client=True) as client:
        return bool(client.read_deployment(deployment_id).paused)


def test_trigger_counts_rollbacks_per_asset_within_24h() -> None:
    automation = rollback_pause_automation([uuid.uuid4()])
    trigger = automation.trigger
    assert automation.name == ROLLBACK_PAUSE
    assert trigger.expect == {"safe-updater.update.rolled-back"}  # type: ignore[union-attr]
    assert trigger.for_each == {"prefect.resource.id"}  # type: ignore[union-attr]
    assert trigger.threshold == 2 and trigger.within == timedelta(hours=24)  # type: ignore[union-attr]
    assert trigger.posture == "Reactive"  # type: ignore[union-attr]
    [action] = automation.actions
    assert action.type == "pause-deployment"


def test_apply_is_idempotent_and_reports_missing_deployments() -> None:
    suffix = uuid.uuid4().hex[:8]
    name = f"test-idempotent-{suffix}"
    _deploy(f"fleet-{suffix}")
    targets = [f"automation-target/fleet-{suffix}", f"no-such-flow/{suffix}"]
    [first] = apply_automations(targets, name=name)
    [second] = apply_automations(targets, name=name)
    assert first.created and not second.created
    assert first.id == second.id
    assert second.targets == targets[:1] and second.missing == targets[1:]
    with get_client(sync_client=True) as client:
        assert len(client.read_automations_by_name(name)) == 1
        client.delete_automation(first.id)
    assert apply_automations([f"no-such-flow/{suffix}"], name=name) == []


def test_two_rollbacks_of_one_asset_pause_the_deployment() -> None:
    suffix = uuid.uuid4().hex[:8]
    deployment_id = _deploy(f"fleet-{suffix}")
    [applied] = apply_automations([f"automation-target/fleet-{suffix}"], name=f"test-{suffix}")
    assert not _paused(deployment_id)
    # The server's trigger service picks a new automation up within a moment; events that
    # arrive before it did are not counted, so send the pair again until it fires (bounded).
    deadline = time.monotonic() + 60
    while not _paused(deployment_id) and time.monotonic() < deadline:
        _rolled_back(f"docker:local/web-{suffix}")
        _rolled_back(f"docker:local/web-{suffix}")
        EventsWorker.drain_all()
        round_end = min(deadline, time.monotonic() + 10)
        while not _paused(deployment_id) and time.monotonic() < round_end:
            time.sleep(0.25)
    try:
        assert _paused(deployment_id), "the automation did not pause the deployment within 60 s"
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(applied.id)
