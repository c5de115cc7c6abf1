"""Tasks that make a run readable in Prefect: the report artifact and the update events."""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

EVENT_PREFIX = "safe-updater.update."
EVENTS = ("applied", "verified", "rolled-back", "failed", "awaiting-approval", "rejected")


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
