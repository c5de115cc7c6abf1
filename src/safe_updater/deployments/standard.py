"""The standard deployments, written once.

``safe-updater serve`` serves them (:func:`to_runner_deployments`), and the root ``prefect.yaml``
for work pools and workers is rendered from them (:func:`render_prefect_yaml`,
``safe-updater deployments export``); a test keeps the file on disk equal to the rendering.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.flows import Flow

PREFECT_VERSION = "3.9.1"
PROJECT_NAME = "safe-auto-updater"
WORK_POOL = "safe-updater"
WORK_QUEUE = "default"
TAGS: tuple[str, ...] = ("safe-updater",)


@dataclass(frozen=True)
class Schedule:
    """Every ``interval_seconds``, or on a ``cron`` expression in ``timezone`` (default UTC)."""

    interval_seconds: int | None = None
    cron: str | None = None
    timezone: str | None = None

    def __post_init__(self) -> None:
        if (self.interval_seconds is None) == (self.cron is None):
            raise ValueError("a schedule has exactly one of interval_seconds and cron")
        if self.timezone is not None and self.cron is None:
            raise ValueError("a timezone belongs to a cron schedule")


@dataclass(frozen=True)
class StandardDeployment:
    """One deployment of one of our flows (``safe_updater.flows.<module>:<flow>``)."""

    name: str
    module: str
    flow: str
    description: str
    schedule: Schedule | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = TAGS
    # At most this many runs at once; a run that would exceed it is cancelled (CANCEL_NEW).
    concurrency_limit: int | None = None

    @property
    def import_path(self) -> str:
        return f"safe_updater.flows.{self.module}:{self.flow}"

    @property
    def entrypoint(self) -> str:
        """The file-path entrypoint ``prefect deploy`` wants, relative to the repository root."""
        return f"src/safe_updater/flows/{self.module}.py:{self.flow}"


STANDARD_DEPLOYMENTS: tuple[StandardDeployment, ...] = (
    StandardDeployment(
        name="scan",
        module="scan_inventory",
        flow="scan_inventory",
        description="Find opted-in assets, look up newer versions, and publish the plan.",
        schedule=Schedule(interval_seconds=900),
        concurrency_limit=1,
    ),
    StandardDeployment(
        name="update-fleet",
        module="update_fleet",
        flow="update_fleet",
        description="Scan, plan, approve once, update in waves (canaries first); "
        "deferred outside maintenance windows.",
        # 03:00 UTC daily: inside the common night window; the assets' own windows still
        # decide (an asset outside its window waits or is deferred, and the plan says which)
        schedule=Schedule(cron="0 3 * * *", timezone="UTC"),
        concurrency_limit=1,
    ),
    StandardDeployment(
        name="update-asset",
        module="update_asset",
        flow="update_asset",
        description="Update one asset (manual; parameters asset_id, to_version, dry_run).",
        parameters={"approval": "pause"},
    ),
    StandardDeployment(
        name="rollback-asset",
        module="rollback_asset",
        flow="rollback_asset",
        description="Roll one asset back to its previous (or a chosen) version and verify it.",
    ),
    StandardDeployment(
        name="recover-updates",
        module="recover_updates",
        flow="recover_updates",
        description="Finish or roll back attempts that a crash left open.",
        schedule=Schedule(interval_seconds=600),
        concurrency_limit=1,
    ),
)


def load_flow(spec: StandardDeployment) -> Flow[..., Any]:
    """The flow object ``spec`` deploys."""
    from prefect.flows import Flow

    module_name, _, attribute = spec.import_path.partition(":")
    flow = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(flow, Flow):
        raise TypeError(f"{spec.import_path} is not a Prefect flow")
    return flow


def to_runner_deployment(spec: StandardDeployment) -> RunnerDeployment:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Cron, Interval

    schedules = []
    if spec.schedule is not None:
        if spec.schedule.cron is not None:
            schedules.append(Cron(spec.schedule.cron, timezone=spec.schedule.timezone))
        elif spec.schedule.interval_seconds is not None:
            schedules.append(Interval(spec.schedule.interval_seconds))
    limit = None
    if spec.concurrency_limit is not None:
        limit = ConcurrencyLimitConfig(
            limit=spec.concurrency_limit,
            collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW,
        )
    deployment = load_flow(spec).to_deployment(
        name=spec.name,
        description=spec.description,
        schedules=schedules or None,
        parameters=dict(spec.parameters),
        tags=list(spec.tags),
        concurrency_limit=limit,
    )
    # `to_deployment` is sync-compatible: called outside an event loop it returns the object.
    if not isinstance(deployment, RunnerDeployment):
        raise TypeError(f"{spec.import_path}: to_deployment must be called outside an event loop")
    return deployment


def to_runner_deployments(
    specs: Sequence[StandardDeployment] = STANDARD_DEPLOYMENTS,
) -> list[RunnerDeployment]:
    """The deployments for ``prefect.serve(...)``."""
    return [to_runner_deployment(spec) for spec in specs]


HEADER = f"""\
# Safe Auto-Updater's standard deployments, for Prefect work pools and workers (scale-out).
# GENERATED from src/safe_updater/deployments/standard.py, which `safe-updater serve` also serves,
# so they are written once: edit that file, then `safe-updater deployments export > prefect.yaml`.
# `prefect deploy --all` registers them. Before deploying:
# `prefect work-pool create {WORK_POOL} --type process`, then start workers with
# `prefect worker start --pool {WORK_POOL}`. Workers need the package installed
# (`pip install safe-auto-updater`) and the same SAFE_UPDATER_CONFIG / state database.
"""


def _inline(value: Any) -> str:
    """``value`` as one line of YAML (flow style)."""
    text: str = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.removesuffix("\n...\n").strip()


def _render_deployment(spec: StandardDeployment) -> list[str]:
    lines = [
        f"  - name: {_inline(spec.name)}",
        f"    description: {_inline(spec.description)}",
        f"    entrypoint: {spec.entrypoint}",
        "    tags: *tags" if spec.tags == TAGS else f"    tags: {_inline(list(spec.tags))}",
        f"    parameters: {_inline(dict(spec.parameters))}",
    ]
    if spec.schedule is not None:
        lines.append("    schedules:")
        if spec.schedule.cron is not None:
            lines.append(f"      - cron: {_inline(spec.schedule.cron)}")
            if spec.schedule.timezone is not None:
                lines.append(f"        timezone: {_inline(spec.schedule.timezone)}")
        else:
            lines.append(f"      - interval: {spec.schedule.interval_seconds}")
    if spec.concurrency_limit is not None:
        lines.append(
            f"    concurrency_limit: {{limit: {spec.concurrency_limit}, "
            "collision_strategy: CANCEL_NEW}"
        )
    lines.append("    work_pool: *pool")
    return lines


def render_prefect_yaml(specs: Sequence[StandardDeployment] = STANDARD_DEPLOYMENTS) -> str:
    """The root ``prefect.yaml``: file-path entrypoints, the work pool anchor, the header."""
    lines = [
        HEADER.rstrip("\n"),
        f"name: {PROJECT_NAME}",
        f"prefect-version: {PREFECT_VERSION}",
        "",
        "pull:",
        "  - prefect.deployments.steps.set_working_directory:",
        '      directory: "{{ $SAFE_UPDATER_WORKDIR }}"',
        "",
        "definitions:",
        "  work_pools:",
        "    default: &pool",
        f"      name: {WORK_POOL}",
        f"      work_queue_name: {WORK_QUEUE}",
        "      job_variables: {}",
        f"  tags: &tags {_inline(list(TAGS))}",
        "",
        "deployments:",
    ]
    for index, spec in enumerate(specs):
        if index:
            lines.append("")
        lines.extend(_render_deployment(spec))
    return "\n".join(lines) + "\n"
