"""``scan_inventory``: find every opted-in asset, ask registries what is newer, and plan.

The plan (current, target, change type, action, reasons for every asset) is the run's table
artifact; nothing is changed.

The run is shaped for fleets: one task per target lists its assets, then one task per
*repository* asks the registry once and decides for every asset that runs it, sharing one parsed
tag list between them. Repositories are planned concurrently. The task count grows with
targets and repositories, not with assets: 200 containers on 10 repositories are 13 task runs,
not 600 (see docs/performance.md).

A caller in the same process can watch the progress with :func:`scan_progress` (the CLI draws
its progress bar with it); the flow takes no callback, so its parameters stay plain values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from safe_updater.domain.assets import Asset
from safe_updater.domain.errors import SafeUpdaterError
from safe_updater.tasks.discovery import list_targets, scan_target
from safe_updater.tasks.planning import (
    error_row,
    group_by_repository,
    pending_updates,
    plan_repository,
    plan_row,
    record_pending_updates,
)

# Registry look-ups are I/O: this many repositories are asked at once.
PLAN_WORKERS = 8
_RUNNER: TaskRunner[PrefectFuture[Any]] = ThreadPoolTaskRunner(max_workers=PLAN_WORKERS)  # type: ignore[assignment]


class ScanProgress(Protocol):
    """Told how many assets were found, then how many were planned as repositories finish."""

    def found(self, total: int) -> None: ...

    def planned(self, count: int) -> None: ...


_progress: list[ScanProgress] = []
_progress_lock = threading.Lock()


@contextmanager
def scan_progress(listener: ScanProgress) -> Iterator[ScanProgress]:
    """Send the progress of scans run in this process to ``listener`` while the block runs."""
    with _progress_lock:
        _progress.append(listener)
    try:
        yield listener
    finally:
        with _progress_lock:
            _progress.remove(listener)


def _found(total: int) -> None:
    for listener in list(_progress):
        listener.found(total)


def _planned(count: int) -> None:
    for listener in list(_progress):
        listener.planned(count)


@flow(
    name="scan-inventory",
    flow_run_name="scan",
    description=(
        "Find opted-in assets on every target, look up newer versions, and plan what to do."
    ),
    task_runner=_RUNNER,
)
def scan_inventory(evaluate: bool = True) -> list[dict[str, Any]]:
    logger = get_run_logger()
    assets: list[Asset] = []
    for kind, target in list_targets():
        try:
            assets.extend(scan_target(kind, target))
        except SafeUpdaterError as error:
            logger.error("scan of %s:%s failed: %s", kind, target, error)
    _found(len(assets))
    if evaluate:
        plan = _plan(assets)
        # Durable, so /metrics in another process shows what this scan found; a scan without
        # registry look-ups (evaluate=False) knows nothing about updates and keeps the last.
        found = pending_updates(plan)
        record_pending_updates(found, sum(1 for p in found.values() if p is not None))
    else:
        plan = [plan_row(asset, None) for asset in assets]
        _planned(len(plan))
    if plan:
        create_table_artifact(
            table=plan, key="scan-plan", description=f"{len(plan)} assets and what would change"
        )
    pending = sum(1 for row in plan if row.get("target"))
    errors = sum(1 for row in plan if row.get("action") == "error")
    create_markdown_artifact(
        markdown=(
            f"# Scan\n\n{len(plan)} assets, {pending} with an update available"
            + (f", {errors} could not be planned (see the plan's reasons)." if errors else ".")
        ),
        key="scan-summary",
    )
    return plan


def _plan(assets: Sequence[Asset]) -> list[dict[str, Any]]:
    """Plan every asset, one concurrent task per repository; rows in the order of ``assets``."""
    groups = group_by_repository(assets)
    futures = [plan_repository.submit(repository, group) for repository, group in groups.items()]
    batch_of = {id(future): group for future, group in zip(futures, groups.values(), strict=True)}
    rows: dict[str, dict[str, Any]] = {}
    for future in as_completed(futures):
        group = batch_of[id(future)]
        try:
            planned = future.result()
        except SafeUpdaterError as error:
            planned = [error_row(asset, error) for asset in group]
        rows.update((row["asset"], row) for row in planned)
        _planned(len(planned))
    return [rows[asset.id] for asset in assets]
