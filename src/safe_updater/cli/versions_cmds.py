"""``compare`` and ``evaluate``: version analysis and the policy gate, without touching anything."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from safe_updater.cli.app import fail
from safe_updater.cli.common import ConfigOption, JsonOption, console, print_json, print_table
from safe_updater.config import load_config
from safe_updater.domain.assets import AssetKind
from safe_updater.domain.errors import InvalidInputError, SafeUpdaterError
from safe_updater.domain.policy import AssetContext, Decision, decide, resolve_policy
from safe_updater.domain.versions import classify, is_newer, parse_tag

MAX_TAGS = 100_000


class KindChoice(StrEnum):
    docker = "docker"
    kubernetes = "kubernetes"
    k8s = "k8s"
    helm = "helm"

    @property
    def asset_kind(self) -> AssetKind:
        return (
            AssetKind.KUBERNETES
            if self in (KindChoice.kubernetes, KindChoice.k8s)
            else AssetKind(self.value)
        )


def compare(
    current: Annotated[str, typer.Argument(help="The tag running now, e.g. 1.2.3.")],
    candidate: Annotated[str, typer.Argument(help="The tag to compare with, e.g. 1.3.0.")],
    json_output: JsonOption = False,
) -> None:
    """Classify CURRENT -> CANDIDATE (major, minor, patch, ...) and say whether it is newer."""
    try:
        parse_tag(current)
        parse_tag(candidate)
        change = classify(current, candidate)
        newer = is_newer(current, candidate)
    except SafeUpdaterError as error:
        raise fail(error) from None
    if json_output:
        print_json(
            {"current": current, "candidate": candidate, "change_type": str(change), "newer": newer}
        )
        return
    verdict = "newer" if newer else "not newer"
    console.print(f"{current} -> {candidate}: {change} ({verdict})", markup=False)


def evaluate(
    current: Annotated[str, typer.Option("--current", help="The tag running now.")],
    tags: Annotated[
        str | None, typer.Option("--tags", help="Available tags, comma-separated.")
    ] = None,
    tags_file: Annotated[
        Path | None,
        typer.Option("--tags-file", help="File with one tag per line ('-' for stdin)."),
    ] = None,
    config: ConfigOption = None,
    kind: Annotated[KindChoice, typer.Option("--kind", help="Asset kind.")] = KindChoice.docker,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Namespace (k8s, helm).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Container/workload/release name.")] = "app",
    group: Annotated[str | None, typer.Option("--group", help="The asset's group.")] = None,
    asset: Annotated[
        str | None, typer.Option("--asset", help="Asset id for override matching.")
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            "-l",
            help="Asset label KEY=VALUE (repeatable), e.g. safe-updater.io/policy.minor=auto.",
        ),
    ] = None,
    quarantined: Annotated[
        list[str] | None, typer.Option("--quarantined", help="A quarantined tag (repeatable).")
    ] = None,
    released: Annotated[
        list[str] | None,
        typer.Option(
            "--released",
            help="When a tag was published, TAG=ISO-TIME (repeatable; for min_release_age).",
        ),
    ] = None,
    digest_changed: Annotated[
        bool, typer.Option("--digest-changed", help="The image behind CURRENT changed.")
    ] = False,
    at: Annotated[
        str | None,
        typer.Option("--at", help="Evaluate at this time (ISO 8601 with offset); default now."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Run the policy on CURRENT and a tag list: what is applied now, what waits for approval."""
    try:
        tag_list = _read_tags(tags, tags_file)
        app_config = load_config(config)
        asset_kind = kind.asset_kind
        asset_id = asset or _synthetic_id(asset_kind, namespace, name)
        ctx = AssetContext(
            asset_id=asset_id,
            kind=asset_kind,
            namespace=namespace,
            group=group or app_config.group_for(asset_id),
            name=name,
            labels=_parse_labels(label or []),
        )
        policy = resolve_policy(app_config.policy, ctx)
        decision = decide(
            ctx,
            current,
            tag_list,
            policy,
            now=_parse_time(at),
            quarantined=quarantined or [],
            release_times=_parse_release_times(released or []),
            digest_changed=digest_changed,
        )
    except SafeUpdaterError as error:
        raise fail(error) from None
    if json_output:
        print_json(decision_json(decision))
        return
    _print_decision(decision)


def decision_json(decision: Decision) -> dict[str, Any]:
    """The ``evaluate --json`` object: exactly the keys the CLI promises scripts."""
    return {
        "auto_target": decision.auto_target,
        "approval_target": decision.approval_target,
        "candidates": [
            {
                "tag": c.tag,
                "change_type": None if c.change_type is None else str(c.change_type),
                "accepted": c.accepted,
                "action": None if c.action is None else str(c.action),
                "reason": c.reason,
            }
            for c in decision.candidates
        ],
        "reasons": list(decision.reasons),
    }


def _print_decision(decision: Decision) -> None:
    print_table(
        f"{decision.asset_id}: {decision.current}",
        ["tag", "change", "action", "accepted", "reason"],
        [
            [c.tag, c.change_type or "-", c.action or "-", "yes" if c.accepted else "no", c.reason]
            for c in decision.candidates
        ],
    )
    console.print(f"auto target:     {decision.auto_target or '-'}", markup=False)
    console.print(f"approval target: {decision.approval_target or '-'}", markup=False)
    for reason in decision.reasons:
        console.print(f"- {reason}", markup=False)


def _read_tags(tags: str | None, tags_file: Path | None) -> list[str]:
    if (tags is None) == (tags_file is None):
        raise InvalidInputError(
            "give the available tags with exactly one of --tags or --tags-file",
            hint="e.g. --tags 1.2.4,1.3.0 or --tags-file tags.txt",
        )
    if tags is not None:
        items = tags.split(",")
    else:
        assert tags_file is not None
        try:
            text = sys.stdin.read() if str(tags_file) == "-" else tags_file.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidInputError(
                f"cannot read the tags file: {error}", hint="give a readable text file"
            ) from None
        items = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    result = [item.strip() for item in items if item.strip()]
    if len(result) > MAX_TAGS:
        raise InvalidInputError(f"more than {MAX_TAGS} tags", hint="pass fewer tags")
    return result


def _parse_labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(
                f"--label {item!r} is not KEY=VALUE",
                hint="e.g. --label safe-updater.io/policy.minor=auto",
            )
        labels[key.strip()] = value
    return labels


def _parse_release_times(items: list[str]) -> dict[str, datetime]:
    times: dict[str, datetime] = {}
    for item in items:
        tag, sep, when = item.partition("=")
        if not sep or not tag.strip():
            raise InvalidInputError(
                f"--released {item!r} is not TAG=TIME",
                hint="e.g. --released 1.2.4=2025-03-01T10:00Z",
            )
        times[tag.strip()] = _parse_time(when, option="--released")
    return times


def _parse_time(text: str | None, *, option: str = "--at") -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise InvalidInputError(
            f"{option} {text!r} is not a time with a zone",
            hint="write ISO 8601 with an offset, e.g. 2025-03-01T23:30:00+01:00",
        )
    return value


def _synthetic_id(kind: AssetKind, namespace: str | None, name: str) -> str:
    # Shaped like real ids so that `asset:` globs in overrides can be tried out here.
    if kind is AssetKind.DOCKER:
        return f"docker:cli/{name}"
    if kind is AssetKind.KUBERNETES:
        return f"k8s:cli/{namespace or 'default'}/deployment/{name}"
    return f"helm:cli/{namespace or 'default'}/{name}"


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("evaluate")(evaluate)
