"""Commands that change assets: update, rollback, approve, reject, recover."""

from __future__ import annotations

import sys
import uuid
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
    run_quietly,
)
from safe_updater.domain.errors import InvalidInputError, NotFoundError, SafeUpdaterError
from safe_updater.domain.journal import Outcome

OUTCOME_EXIT = {
    Outcome.UPDATED.value: ExitCode.OK,
    Outcome.NO_UPDATE.value: ExitCode.OK,
    Outcome.SKIPPED.value: ExitCode.OK,
    Outcome.REJECTED.value: ExitCode.OK,
    Outcome.ROLLED_BACK.value: ExitCode.ROLLED_BACK,
    Outcome.AWAITING_APPROVAL.value: ExitCode.AWAITING_APPROVAL,
    Outcome.EXPIRED.value: ExitCode.FAILURE,
    Outcome.FAILED.value: ExitCode.FAILURE,
}


def register(app: typer.Typer) -> None:
    app.command("update")(update)
    app.command("rollback")(rollback)
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.command("recover")(recover)


def update(
    asset_id: Annotated[str, typer.Argument(metavar="ASSET", help="e.g. docker:local/web")],
    to: Annotated[str | None, typer.Option("--to", help="Apply exactly this tag.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and report only.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="If approval is needed, pause this run for it (approve in "
            "the Prefect UI or with `safe-updater approve RUN_ID`).",
        ),
    ] = False,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Update one asset: decide, (approve,) apply, verify, commit or roll back."""
    prepare_environment(config)
    from safe_updater.flows.update_asset import update_asset

    if not yes and not dry_run and sys.stdin.isatty() and not json_out:
        preview = run_quietly(
            update_asset,
            asset_id,
            to_version=to,
            dry_run=True,
            approval="defer",
            actor=current_user(),
        )
        _print_result(preview)
        if preview["outcome"] != Outcome.SKIPPED.value or not preview.get("to"):
            raise typer.Exit(OUTCOME_EXIT.get(preview["outcome"], ExitCode.FAILURE))
        if not typer.confirm(f"Apply {preview['from']} -> {preview['to']} to {asset_id}?"):
            raise typer.Exit(int(ExitCode.OK))
    try:
        result = run_quietly(
            update_asset,
            asset_id,
            to_version=to,
            dry_run=dry_run,
            approval="pause" if wait else "defer",
            actor=current_user(),
        )
    except Exception as error:
        # With the Prefect server gone, the engine's own report of the run's end fails too and
        # hides our error (the one that says what happened and what to do) in its context.
        ours = _our_error_behind(error)
        if ours is None:
            raise
        raise ours from error
    _finish(result, json_out)


def rollback(
    asset_id: Annotated[str, typer.Argument(metavar="ASSET")],
    to: Annotated[
        str | None, typer.Option("--to", help="Version to go back to (default: the previous one).")
    ] = None,
    revision: Annotated[
        int | None,
        typer.Option(
            "--revision", min=1, help="Helm releases: the revision to roll back to (see --list)."
        ),
    ] = None,
    list_only: Annotated[
        bool,
        typer.Option("--list", help="Helm releases: show the release history and exit."),
    ] = False,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Go back to the previous (or a chosen) version, verify it, and quarantine the current one.

    Helm releases: --list shows the history; --revision N rolls back to revision N (its chart and
    values), verified like an update."""
    prepare_environment(config)
    if list_only or revision is not None:
        if to is not None:
            raise InvalidInputError("give --to VERSION or --revision N/--list, not both")
        from safe_updater.cli.revisions import history_json, print_history, read_history

        entries = read_history(asset_id)
        if list_only:
            if json_out:
                print_json(history_json(entries))
            else:
                print_history(asset_id, entries)
            return
        if not json_out:
            print_history(asset_id, entries)
    from safe_updater.flows.rollback_asset import rollback_asset

    result = run_quietly(
        rollback_asset, asset_id, to_version=to, revision=revision, actor=current_user()
    )
    if json_out and revision is not None:
        result = {**result, "history": history_json(entries)}
    _finish(result, json_out, rolled_back_is_success=True)


def approve(
    target: Annotated[str, typer.Argument(metavar="RUN_ID|ASSET")],
    reason: Annotated[str, typer.Option("--reason", help="Recorded in the audit log.")] = "",
    as_user: Annotated[str | None, typer.Option("--as", help="Approver name.")] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Approve a paused update run (by run id) or the update an asset waits for (by asset id)."""
    _decide(target, True, reason, as_user or current_user(), json_out, config)


def reject(
    target: Annotated[str, typer.Argument(metavar="RUN_ID|ASSET")],
    reason: Annotated[str, typer.Option("--reason", help="Recorded in the audit log.")] = "",
    as_user: Annotated[str | None, typer.Option("--as", help="Your name.")] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Reject a paused update run (by run id) or the update an asset waits for (by asset id)."""
    _decide(target, False, reason, as_user or current_user(), json_out, config)


def recover(
    asset_id: Annotated[
        str | None, typer.Argument(metavar="[ASSET]", help="Only this asset.")
    ] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Finish or roll back update attempts that a crash or kill left open."""
    prepare_environment(config)
    from safe_updater.flows.recover_updates import recover_updates

    results = run_quietly(recover_updates, asset_id=asset_id, actor=current_user())
    if json_out:
        print_json(results)
    elif not results:
        console.print("nothing to recover: no open attempts")
    for result in results if not json_out else []:
        console.print(
            f"#{result['attempt_id']} {result['asset']}: {result['outcome']} - "
            f"{'; '.join(result['reasons'])}",
            markup=False,
        )
    if any(r["outcome"] == Outcome.FAILED.value for r in results):
        raise typer.Exit(int(ExitCode.FAILURE))


def _decide(target: str, approve: bool, reason: str, who: str, json_out: bool, config: Any) -> None:
    prepare_environment(config)
    run_id = _as_uuid(target)
    if run_id is not None:
        from prefect import resume_flow_run

        try:
            resume_flow_run(
                run_id, run_input={"approve": approve, "approver": who, "reason": reason}
            )
        except RuntimeError as error:
            raise InvalidInputError(
                f"cannot resume run {run_id}: {error}",
                hint="check the run id with `prefect flow-run ls` or the UI; only paused runs "
                "can be approved",
            ) from error
        except Exception as error:  # prefect raises ObjectNotFound for unknown runs
            if type(error).__name__ == "ObjectNotFound":
                raise NotFoundError(
                    f"no flow run {run_id}", hint="copy the run id from the UI or `update --json`"
                ) from error
            raise
        word = "approved" if approve else "rejected"
        if json_out:
            print_json({"flow_run_id": str(run_id), "decision": word, "approver": who})
        else:
            console.print(f"{word} run {run_id} as {who}", markup=False)
        return
    from safe_updater.flows.approve_asset import decide_waiting_update

    result = run_quietly(
        decide_waiting_update, target, approve=approve, approver=who, reason=reason
    )
    _finish(result, json_out)


def _our_error_behind(error: BaseException) -> SafeUpdaterError | None:
    """The first error of ours in ``error``'s chain of causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, SafeUpdaterError):
            return current if current is not error else None
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _print_result(result: dict[str, Any]) -> None:
    line = f"{result['asset']}: {result['outcome']}"
    if result.get("to"):
        line += f" ({result.get('from')} -> {result['to']}, {result.get('change_type')})"
    console.print(line, markup=False)
    for reason in result.get("reasons", []):
        console.print(f"  - {reason}", markup=False)
    if result.get("flow_run_id"):
        console.print(f"  flow run: {result['flow_run_id']}", markup=False)


def _finish(
    result: dict[str, Any], json_out: bool, *, rolled_back_is_success: bool = False
) -> None:
    if json_out:
        print_json(result)
    else:
        _print_result(result)
    code = OUTCOME_EXIT.get(result["outcome"], ExitCode.FAILURE)
    if rolled_back_is_success and code is ExitCode.ROLLED_BACK:
        code = ExitCode.OK
    if code is not ExitCode.OK:
        raise typer.Exit(int(code))
