"""``scan``: find assets and what would change."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from safe_updater.cli.common import (
    ConfigOption,
    JsonOption,
    prepare_environment,
    print_json,
    print_table,
    run_quietly,
)


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)


def scan(
    no_evaluate: Annotated[
        bool, typer.Option("--no-evaluate", help="Only list assets; skip registry look-ups.")
    ] = False,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Scan every target for opted-in assets and plan their updates (changes nothing)."""
    prepare_environment(config)
    from safe_updater.flows.scan_inventory import scan_inventory

    if sys.stderr.isatty() and not json_out:
        plan = _scan_with_progress(scan_inventory, not no_evaluate)
    else:
        plan = run_quietly(scan_inventory, evaluate=not no_evaluate)
    if json_out:
        print_json(plan)
        return
    print_table(
        f"{len(plan)} assets",
        ["asset", "current", "target", "change", "action"],
        [
            (
                r["asset"],
                r["current"],
                r["target"] or "",
                r["change_type"] or "",
                r["action"] or "up to date",
            )
            for r in plan
        ],
    )


class _ProgressBar:
    """Feeds the scan's progress (assets found, then planned per repository) to a Rich bar."""

    def __init__(self, progress: Progress, task: TaskID, evaluate: bool) -> None:
        self._progress = progress
        self._task = task
        self._evaluate = evaluate

    def found(self, total: int) -> None:
        what = "asking registries and planning" if self._evaluate else "listing assets"
        self._progress.update(self._task, total=total, description=what)

    def planned(self, count: int) -> None:
        self._progress.advance(self._task, count)


def _scan_with_progress(
    scan_inventory: Callable[..., list[dict[str, Any]]], evaluate: bool
) -> list[dict[str, Any]]:
    """Run the scan flow with a progress bar on stderr: total = assets found, advancing as
    each repository's assets are planned."""
    from safe_updater.flows.scan_inventory import scan_progress

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("finding assets on every target", total=None)
        with scan_progress(_ProgressBar(progress, task, evaluate)):
            return run_quietly(scan_inventory, evaluate=evaluate)
