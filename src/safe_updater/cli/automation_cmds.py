"""``safe-updater automations apply|list|delete``: the shipped Prefect automations
(``deployments/automations.py``) on the server at PREFECT_API_URL.

Automations live on a Prefect server, so these commands need one that answers: Prefect's
ephemeral mode would create them in a throw-away database. Ours are the automations whose names
start with ``safe-updater:`` (the shipped names all do).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from safe_updater.cli.common import (
    JsonOption,
    console,
    prepare_environment,
    print_json,
    print_table,
)
from safe_updater.domain.errors import InvalidInputError, PermanentError

OUR_PREFIX = "safe-updater:"
"""Automations whose name starts with this are ours (list/delete never touch the others)."""

automations_app = typer.Typer(
    help="The Prefect automations Safe Auto-Updater ships (e.g. pause after repeated rollbacks).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(automations_app, name="automations")


class NoServerError(InvalidInputError):
    """No Prefect server to hold the automations (PREFECT_API_URL unset or not answering)."""


def require_server() -> str:
    """The API URL of a Prefect server that answers, or a one-line error naming the fix."""
    prepare_environment(None)
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise NoServerError(
            "PREFECT_API_URL is not set, and automations need a Prefect server to live on",
            hint="start one with `safe-updater serve` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api",
        )
    _check_health(str(url))
    return str(url)


HEALTH_TIMEOUT = 5.0


def _check_health(url: str) -> None:
    """One GET of ``/health``, no retries: Prefect's client retries a refused connection for
    ~10 s, which is the wrong answer to "is there a server?"."""
    import base64

    import httpx
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_KEY,
        PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    )

    headers = {}
    # `Setting.value()` unwraps SecretStr settings to plain strings (Prefect 3.9).
    key, auth = _plain(PREFECT_API_KEY.value()), _plain(PREFECT_API_AUTH_STRING.value())
    if key:
        headers["Authorization"] = f"Bearer {key}"
    elif auth:
        token = base64.b64encode(auth.encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        response = httpx.get(
            url.rstrip("/") + "/health",
            headers=headers,
            timeout=HEALTH_TIMEOUT,
            verify=not PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value(),
        )
    except httpx.HTTPError as error:
        raise NoServerError(
            f"the Prefect server at {url} does not answer ({_first_line(error)})",
            hint="start it (`safe-updater serve`) or fix PREFECT_API_URL",
        ) from error
    if response.status_code in (401, 403):
        raise NoServerError(
            f"the Prefect server at {url} refused us (HTTP {response.status_code})",
            hint="set PREFECT_API_AUTH_STRING (or PREFECT_API_KEY) to what the server expects",
        )
    if response.status_code != 200:
        raise NoServerError(
            f"{url}/health answered HTTP {response.status_code}: not a working Prefect API",
            hint="check PREFECT_API_URL (it ends in /api)",
        )


def _plain(value: Any) -> str | None:
    if value is None:
        return None
    secret = getattr(value, "get_secret_value", None)
    return str(secret() if callable(secret) else value)


@automations_app.command("apply")
def apply(
    pause: Annotated[
        list[str] | None,
        typer.Option(
            "--pause",
            metavar="FLOW/DEPLOYMENT",
            help="A deployment that repeated rollbacks pause (repeatable; default: the "
            "standard update-fleet/update-fleet and scan-inventory/scan).",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Create the shipped automations on the server, or update them (by name); idempotent."""
    url = require_server()
    from safe_updater.deployments.automations import PAUSE_TARGETS, apply_automations

    targets = list(pause) if pause else list(PAUSE_TARGETS)
    for target in targets:
        if target.count("/") != 1 or not all(target.split("/")):
            raise InvalidInputError(
                f"--pause {target!r} is not FLOW/DEPLOYMENT",
                hint="name it like `prefect deployment ls` does, e.g. update-fleet/update-fleet",
            )
    applied = apply_automations(targets)
    if not applied:
        raise PermanentError(
            f"nothing applied: none of the deployments the automations act on "
            f"({', '.join(targets)}) exists on {url}",
            hint="deploy them first (`safe-updater serve`, or `prefect deploy --all`), "
            "then apply again",
        )
    if json_out:
        print_json(
            [
                {
                    "name": a.name,
                    "id": str(a.id),
                    "created": a.created,
                    "targets": a.targets,
                    "missing": a.missing,
                }
                for a in applied
            ]
        )
        return
    for a in applied:
        verb = "created" if a.created else "updated"
        console.print(
            f"{verb} {a.name!r} ({a.id}): pauses {', '.join(a.targets)}",
            markup=False,
        )
        if a.missing:
            console.print(
                f"  not on this server yet: {', '.join(a.missing)} "
                "(apply again after deploying them)",
                markup=False,
            )


@automations_app.command("list")
def list_(json_out: JsonOption = False) -> None:
    """Show our automations on the server: name, enabled, trigger and the deployments they pause."""
    require_server()
    rows = _ours_described()
    if json_out:
        print_json(rows)
        return
    print_table(
        f"{len(rows)} automations",
        ["name", "enabled", "trigger", "actions", "id"],
        [
            (r["name"], "yes" if r["enabled"] else "no", r["trigger"], r["actions"], r["id"])
            for r in rows
        ],
    )


@automations_app.command("delete")
def delete(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Delete our automations from the server (others' automations are left alone)."""
    require_server()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        ours = [a for a in client.read_automations() if a.name.startswith(OUR_PREFIX)]
        if ours and not yes and not json_out and _interactive():
            names = ", ".join(repr(a.name) for a in ours)
            if not typer.confirm(f"Delete {names}?"):
                raise typer.Exit(0)
        for automation in ours:
            client.delete_automation(automation.id)
    if json_out:
        print_json([{"name": a.name, "id": str(a.id)} for a in ours])
    elif ours:
        for automation in ours:
            console.print(f"deleted {automation.name!r} ({automation.id})", markup=False)
    else:
        console.print("no safe-updater automations on this server", markup=False)


def _ours_described() -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        ours = sorted(
            (a for a in client.read_automations() if a.name.startswith(OUR_PREFIX)),
            key=lambda a: a.name,
        )
        names: dict[Any, str] = {}
        rows = []
        for automation in ours:
            actions = []
            for action in automation.actions:
                deployment_id = getattr(action, "deployment_id", None)
                if deployment_id is None:
                    actions.append(action.type)
                    continue
                if deployment_id not in names:
                    names[deployment_id] = _deployment_name(client, deployment_id)
                actions.append(f"{action.type} {names[deployment_id]}")
            rows.append(
                {
                    "name": automation.name,
                    "id": str(automation.id),
                    "enabled": automation.enabled,
                    "trigger": _describe_trigger(automation.trigger),
                    "actions": ", ".join(actions),
                }
            )
    return rows


def _deployment_name(client: Any, deployment_id: Any) -> str:
    from prefect.exceptions import ObjectNotFound

    try:
        deployment = client.read_deployment(deployment_id)
    except ObjectNotFound:
        return f"{deployment_id} (deleted)"
    flow = client.read_flow(deployment.flow_id)
    return f"{flow.name}/{deployment.name}"


def _describe_trigger(trigger: Any) -> str:
    expect = ", ".join(sorted(getattr(trigger, "expect", None) or [])) or "any event"
    threshold = getattr(trigger, "threshold", None)
    within = getattr(trigger, "within", None)
    if threshold is None or within is None:
        return expect
    per = " per resource" if getattr(trigger, "for_each", None) else ""
    hours = within.total_seconds() / 3600
    return f"{threshold} x {expect}{per} within {hours:g} h"


def _interactive() -> bool:
    import sys

    return sys.stdin.isatty()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
