"""``safe-updater fleet``: scan, plan and update every asset in waves (the fleet flow)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from safe_updater.cli.app import ExitCode
from safe_updater.cli.common import (
    ConfigOption,
    JsonOption,
    console,
    current_user,
    prepare_environment,
    print_json,
    print_table,
    run_quietly,
)
from safe_updater.domain.errors import InvalidInputError


def register(app: typer.Typer) -> None:
    app.command("fleet")(fleet)


def fleet(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Publish the plan only; change nothing.")
    ] = False,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", "-g", help="Only this group (repeatable; '(no group)')."),
    ] = None,
    approval: Annotated[
        str | None,
        typer.Option(
            "--approval",
            help="plan: pause once for the whole plan; defer: each update waits for its "
            "own approval. Default: config fleet.approval.",
        ),
    ] = None,
    dispatch: Annotated[
        str | None,
        typer.Option(
            "--dispatch",
            help="inline: updates run in this process; deployment: as runs of the "
            "update-asset deployment, for workers. Default: config fleet.dispatch.",
        ),
    ] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Update the fleet: scan, plan, (approve the plan,) then update in waves, canaries first.

    Exit 0 when every wave ran, 3 when a wave's failures halted the rest, 1 when an update
    failed within the budget."""
    if approval not in (None, "plan", "defer"):
        raise InvalidInputError(
            f"--approval {approval!r} is not one of plan, defer", hint="use --approval plan"
        )
    if dispatch not in (None, "auto", "inline", "deployment"):
        raise InvalidInputError(
            f"--dispatch {dispatch!r} is not one of auto, inline, deployment",
            hint="use --dispatch inline to run the updates in this process",
        )
    prepare_environment(config)
    from safe_updater.flows.update_fleet import update_fleet

    result: dict[str, Any] = run_quietly(
        update_fleet,
        dry_run=dry_run,
        approval=approval,
        dispatch=dispatch,
        groups=group or None,
        actor=current_user(),
    )
    if json_out:
        print_json(result)
    else:
        _print(result)
    if result["halted"]:
        raise typer.Exit(int(ExitCode.ROLLED_BACK))
    if any(wave["failures"] for wave in result["waves"]):
        raise typer.Exit(int(ExitCode.FAILURE))


def _print(result: dict[str, Any]) -> None:
    rows = result["assets"]
    print_table(
        "Fleet plan" if result["dry_run"] else "Fleet update",
        ["asset", "group", "wave", "current", "target", "change", "action", "outcome"],
        (
            [
                row["asset"],
                row["group"],
                row["wave"],
                row["current"],
                row["target"],
                row["change_type"],
                row["action"],
                row["outcome"],
            ]
            for row in rows
        ),
    )
    waves = ", ".join(f"{w['name']} ({len(w['assets'])})" for w in result["waves"]) or "none"
    console.print(f"waves: {waves}")
    if result["halted"]:
        console.print(f"[bold red]halted:[/] {result['halted']}")
