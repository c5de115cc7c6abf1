"""``scan``: find assets and what would change."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from safe_updater.cli.common import (
    ConfigOption,
    JsonOption,
    console,
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
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            progress.add_task("scanning targets and registries", total=None)
            plan = run_quietly(scan_inventory, evaluate=not no_evaluate)
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
