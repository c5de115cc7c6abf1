"""The Prefect automations the Safe Auto-Updater ships, as code, applied idempotently by name.

The update flows emit ``safe-updater.update.<event>`` with the asset as the event's resource
(``prefect.resource.id = safe-updater.asset.<asset-id>``; see ``tasks/recording.py``), so
automations can count per asset. Shipped:

- ``safe-updater: repeated rollbacks pause updates``: two ``rolled-back`` events of one asset
  within 24 h pause the scheduled scan and fleet deployments, so nothing else changes until a
  person looks (and resumes them in the UI or with ``prefect deployment resume``).

:func:`apply_automations` creates or updates them on the current Prefect API (a
``safe-updater automations apply`` command calls it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

from prefect.automations import Automation, EventTrigger, PauseDeployment, Posture
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore
from prefect.exceptions import ObjectNotFound

from safe_updater.tasks.recording import EVENT_PREFIX

ROLLBACK_PAUSE = "safe-updater: repeated rollbacks pause updates"
ROLLBACKS_THRESHOLD = 2
ROLLBACKS_WITHIN = timedelta(hours=24)

PAUSE_TARGETS = ("update-fleet/update-fleet", "scan-inventory/scan")
"""Deployments (``flow-name/deployment-name``) the rollback automation pauses, when they exist."""


@dataclass
class AppliedAutomation:
    name: str
    id: UUID
    created: bool
    """True when it was created now, False when an existing one (same name) was updated."""
    targets: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Target deployments that do not exist on this server (yet); apply again after deploying."""


def rollback_trigger(
    threshold: int = ROLLBACKS_THRESHOLD, within: timedelta = ROLLBACKS_WITHIN
) -> EventTrigger:
    """``threshold`` rollbacks of one asset (``for_each`` resource) within ``within``."""
    return EventTrigger(
        expect={EVENT_PREFIX + "rolled-back"},
        match={"prefect.resource.id": "safe-updater.asset.*"},
        for_each={"prefect.resource.id"},
        posture=Posture.Reactive,
        threshold=threshold,
        within=within,
    )


def rollback_pause_automation(
    deployment_ids: Sequence[UUID],
    *,
    threshold: int = ROLLBACKS_THRESHOLD,
    within: timedelta = ROLLBACKS_WITHIN,
    name: str = ROLLBACK_PAUSE,
) -> Automation:
    """The automation definition; ``deployment_ids`` are the deployments it pauses."""
    hours = within.total_seconds() / 3600
    return Automation(
        name=name,
        description=(
            f"{threshold} rollbacks of one asset within {hours:g} h pause the scheduled "
            "safe-updater deployments until a person resumes them."
        ),
        enabled=True,
        trigger=rollback_trigger(threshold, within),
        actions=[PauseDeployment(source="selected", deployment_id=dep) for dep in deployment_ids],
    )


def apply_automations(
    pause_deployments: Sequence[str] = PAUSE_TARGETS,
    *,
    threshold: int = ROLLBACKS_THRESHOLD,
    within: timedelta = ROLLBACKS_WITHIN,
    name: str = ROLLBACK_PAUSE,
) -> list[AppliedAutomation]:
    """Create or update the shipped automations by name (running it twice changes nothing).

    Deployments named in ``pause_deployments`` that do not exist are listed in ``missing``;
    with none of them present the automation is not created (an automation needs an action).
    """
    with get_client(sync_client=True) as client:
        ids: list[UUID] = []
        found: list[str] = []
        missing: list[str] = []
        for full_name in pause_deployments:
            try:
                ids.append(client.read_deployment_by_name(full_name).id)
                found.append(full_name)
            except ObjectNotFound:
                missing.append(full_name)
        existing = client.read_automations_by_name(name)
        if not ids:
            return []
        automation = rollback_pause_automation(ids, threshold=threshold, within=within, name=name)
        core = AutomationCore(**automation.model_dump(exclude={"id", "owner_resource"}))
        if existing:
            automation_id = existing[0].id
            client.update_automation(automation_id, core)
            for duplicate in existing[1:]:
                client.delete_automation(duplicate.id)
            created = False
        else:
            automation_id = client.create_automation(core)
            created = True
    return [AppliedAutomation(name, automation_id, created, found, missing)]
