"""Tasks that make a run readable in Prefect: the report artifact, the update events, and the
notifications sent for them."""

from __future__ import annotations

import logging
import re
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from safe_updater.domain.notices import UPDATE_EVENTS, notice_from_event
from safe_updater.runtime import Runtime, peek_runtime

log = logging.getLogger(__name__)

EVENT_PREFIX = "safe-updater.update."
EVENTS = UPDATE_EVENTS


def artifact_key(asset_id: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return "update-" + re.sub(r"[^a-z0-9]+", "-", asset_id.lower()).strip("-")[:90]


@task(name="publish-report", task_run_name="report {asset_id}", cache_policy=NO_CACHE)
def publish_report(asset_id: str, rows: list[dict[str, Any]], summary: str) -> None:
    """One table (candidates, decision, health samples, outcome) and one markdown summary."""
    key = artifact_key(asset_id)
    create_table_artifact(table=rows, key=key, description=f"Update of {asset_id}")
    create_markdown_artifact(
        markdown=summary, key=f"{key}-summary"[:100], description=f"Outcome for {asset_id}"
    )


@task(name="emit-event", task_run_name="event {name}", cache_policy=NO_CACHE)
def emit_update_event(
    name: str, asset_id: str, payload: dict[str, Any], flow_run_id: str | None
) -> None:
    """``safe-updater.update.<name>`` for automations and notifications."""
    if name not in EVENTS:
        raise ValueError(f"unknown update event {name!r}")
    related = []
    if flow_run_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                "prefect.resource.role": "flow-run",
            }
        )
    emit_event(
        event=EVENT_PREFIX + name,
        resource={
            "prefect.resource.id": f"safe-updater.asset.{asset_id}",
            "prefect.resource.name": asset_id,
        },
        related=related,
        payload=payload,
    )
    notify_update(name, asset_id, payload, flow_run_id)


def flow_run_ui_url(flow_run_id: str | None) -> str | None:
    """``<PREFECT_UI_URL>/runs/flow-run/<id>``, when Prefect knows where its UI is."""
    if not flow_run_id:
        return None
    try:
        from prefect.settings import PREFECT_UI_URL

        base = PREFECT_UI_URL.value()
    except Exception:
        return None
    return f"{str(base).rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def notify_update(
    name: str, asset_id: str, payload: dict[str, Any], flow_run_id: str | None
) -> None:
    """Tell the runtime's notifiers that hear ``name``. Never raises: a notification that
    cannot be built or sent is a warning, and the update goes on."""
    runtime = peek_runtime()
    if runtime is None or not runtime.notifiers:
        return
    routes = [route for route in runtime.notifiers if route.wants(name)]
    if not routes:
        return
    try:
        notice = notice_from_event(
            name,
            asset_id,
            payload,
            flow_run_id=flow_run_id,
            ui_url=flow_run_ui_url(flow_run_id),
            attempt=_attempt_fields(runtime, payload),
        )
    except Exception as error:
        log.warning("notification %s for %s was not built: %s", name, asset_id, error)
        return
    for route in routes:
        try:
            route.notifier.notify(notice)
        except Exception as error:  # notifiers should not raise; never let one fail an update
            log.warning("notifier %s failed on %s: %s", route.name, name, type(error).__name__)


def _attempt_fields(runtime: Runtime, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The journal row named by the payload's ``attempt``: from, to and change type."""
    attempt_id = payload.get("attempt")
    if not isinstance(attempt_id, int):
        return None
    try:
        record = runtime.store.journal.get(attempt_id)
    except Exception:
        return None
    return {
        "from_version": record.from_version,
        "to_version": record.to_version,
        "change_type": record.change_type,
    }
