"""Read and housekeeping commands over the state store: assets, history, stats, quarantine,
pins, audit."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from safe_updater.cli.app import ExitCode
from safe_updater.cli.common import (
    ConfigOption,
    JsonOption,
    console,
    current_user,
    print_json,
    print_table,
)
from safe_updater.domain.assets import Asset, AssetKind
from safe_updater.domain.durations import parse_duration
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.journal import Outcome

if TYPE_CHECKING:
    from safe_updater.adapters.store import StateStore

quarantine_app = typer.Typer(
    help="List or clear versions kept out after failed updates.", no_args_is_help=True
)
audit_app = typer.Typer(help="Check or export the hash-chained audit log.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("assets")(assets)
    app.command("list-assets", hidden=True)(assets)
    app.command("history")(history)
    app.command("stats")(stats)
    app.command("pin")(pin)
    app.add_typer(quarantine_app, name="quarantine")
    app.add_typer(audit_app, name="audit")


def _store(config: Path | None) -> StateStore:
    from safe_updater.wiring import open_store

    return open_store(config)


def assets(
    kind: Annotated[str | None, typer.Option("--kind", help="docker, k8s or helm.")] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Assets found by the last scan (run `safe-updater scan` to refresh); Helm releases with
    their workloads."""
    try:
        wanted = AssetKind(kind) if kind else None
    except ValueError:
        raise InvalidInputError(
            f"--kind {kind!r} is not an asset kind", hint="use docker, k8s or helm"
        ) from None
    store = _store(config)
    try:
        every = store.assets.list(None)
        quarantined = Counter(entry.asset_id for entry in store.quarantine.list())
        pins = {pin.asset_id: pin.version for pin in store.pins.list()}
    finally:
        store.close()
    items = [a for a in every if wanted is None or a.kind is wanted]
    release_of, workloads = _helm_relations(every)
    if json_out:
        rows = []
        for a in items:
            row: dict[str, object] = {
                "id": a.id,
                "kind": a.kind.value,
                "name": a.name,
                "namespace": a.namespace,
                "image": str(a.image) if a.image else None,
                "version": a.current_version,
                "digest": a.current_digest,
                "group": a.group,
                "pinned": pins.get(a.id),
                "quarantined": quarantined.get(a.id, 0),
            }
            if a.kind is AssetKind.HELM:
                row["workloads"] = [_workload_json(w) for w in workloads.get(a.id, [])]
            elif a.kind is AssetKind.KUBERNETES:
                row["release"] = release_of.get(a.id)
            rows.append(row)
        print_json(rows)
        return
    table: list[tuple[object, ...]] = []
    for a in items:
        table.append(
            (
                a.id,
                a.current_version,
                str(a.image) if a.image else a.chart,
                release_of.get(a.id, ""),
                a.group or "",
                pins.get(a.id, ""),
                quarantined.get(a.id, "") or "",
            )
        )
        for w in workloads.get(a.id, []) if a.kind is AssetKind.HELM else []:
            table.append(
                (f"  └ {w.workload_kind}/{w.name}", w.current_version, str(w.image), "", "", "", "")
            )
    print_table(
        f"{len(items)} assets",
        ["asset", "version", "image / chart", "release", "group", "pin", "quarantined"],
        table,
    )


def _helm_relations(
    items: list[Asset],
) -> tuple[dict[str, str], dict[str, list[Asset]]]:
    """(workload id -> release asset id, release asset id -> its workloads), from the
    ``safe-updater.io/helm-release`` label the Kubernetes inventory puts on Helm-managed
    workloads (same cluster, ``<namespace>/<release>``)."""
    from safe_updater.domain.assets import LABEL_PREFIX, helm_asset_id

    helm_release_label = f"{LABEL_PREFIX}helm-release"  # adapters.k8s_inventory.HELM_RELEASE_LABEL
    release_of: dict[str, str] = {}
    workloads: dict[str, list[Asset]] = {}
    for a in items:
        link = a.labels.get(helm_release_label) if a.kind is AssetKind.KUBERNETES else None
        if not link or "/" not in link:
            continue
        namespace, release = link.split("/", 1)
        release_id = helm_asset_id(a.target, namespace, release)
        release_of[a.id] = release_id
        workloads.setdefault(release_id, []).append(a)
    return release_of, workloads


def _workload_json(asset: Asset) -> dict[str, object]:
    return {
        "id": asset.id,
        "kind": asset.workload_kind,
        "name": asset.name,
        "namespace": asset.namespace,
        "container": asset.container,
        "image": str(asset.image) if asset.image else None,
        "version": asset.current_version,
    }


def history(
    asset_id: Annotated[str | None, typer.Argument(metavar="[ASSET]")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000)] = 50,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Update attempts, newest first."""
    store = _store(config)
    try:
        rows = store.journal.history(asset_id, limit=limit)
    finally:
        store.close()
    if json_out:
        print_json(
            [
                {
                    "id": r.id,
                    "asset": r.asset_id,
                    "from": r.from_version,
                    "to": r.to_version,
                    "change_type": r.change_type,
                    "phase": r.phase.value,
                    "outcome": r.outcome.value if r.outcome else None,
                    "reason": r.reason,
                    "flow_run_id": r.flow_run_id,
                    "started_at": r.started_at.isoformat(),
                    "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                }
                for r in rows
            ]
        )
        return
    print_table(
        None,
        ["#", "when", "asset", "from", "to", "outcome", "reason"],
        [
            (
                r.id,
                f"{r.started_at:%Y-%m-%d %H:%M:%S}",
                r.asset_id,
                r.from_version,
                r.to_version,
                r.outcome.value if r.outcome else f"open ({r.phase.value})",
                (r.reason or "")[:100],
            )
            for r in rows
        ],
    )


def stats(
    period: Annotated[str, typer.Option("--period", help="e.g. 24h, 7d, 30d.")] = "7d",
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Assets by kind, pending approvals, and update/rollback counts and rates over a period."""
    window = parse_duration(period, field="--period")
    store = _store(config)
    try:
        since = datetime.now(UTC) - window
        by_outcome = store.journal.stats(since=since)
        by_kind = store.assets.counts()
        quarantined = len(store.quarantine.list())
        open_attempts = len(store.journal.find_open())
    finally:
        store.close()
    applied = by_outcome.get(Outcome.UPDATED.value, 0) + by_outcome.get(
        Outcome.ROLLED_BACK.value, 0
    )
    data = {
        "period": period,
        "assets": by_kind,
        "outcomes": by_outcome,
        "pending_approvals": by_outcome.get(Outcome.AWAITING_APPROVAL.value, 0),
        "success_rate": round(by_outcome.get(Outcome.UPDATED.value, 0) / applied, 4)
        if applied
        else None,
        "rollback_rate": round(by_outcome.get(Outcome.ROLLED_BACK.value, 0) / applied, 4)
        if applied
        else None,
        "quarantined_versions": quarantined,
        "open_attempts": open_attempts,
    }
    if json_out:
        print_json(data)
        return
    print_table(f"assets ({sum(by_kind.values())})", ["kind", "count"], sorted(by_kind.items()))
    print_table(f"outcomes in the last {period}", ["outcome", "count"], sorted(by_outcome.items()))
    console.print(
        f"success rate {_rate(data['success_rate'])}, rollback rate "
        f"{_rate(data['rollback_rate'])}, {quarantined} quarantined versions, "
        f"{open_attempts} open attempts",
        markup=False,
    )


def _rate(value: object) -> str:
    return "-" if not isinstance(value, float | int) else f"{value:.1%}"


def pin(
    asset_id: Annotated[str, typer.Argument(metavar="ASSET")],
    version: Annotated[str | None, typer.Argument(metavar="[VERSION]")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the pin.")] = False,
    reason: Annotated[str, typer.Option("--reason")] = "",
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Pin an asset to a version (updates stop there) or clear the pin."""
    from safe_updater.domain.assets import parse_asset_id

    parse_asset_id(asset_id)
    if clear == (version is not None):
        raise InvalidInputError(
            "give either VERSION or --clear",
            hint=f"safe-updater pin {asset_id} 1.2.3  |  safe-updater pin {asset_id} --clear",
        )
    store = _store(config)
    try:
        if clear:
            removed = store.pins.clear(asset_id)
            store.audit.append("pin.cleared", asset_id=asset_id, actor=current_user(), data={})
            data = {"asset": asset_id, "pinned": None, "removed": removed}
        else:
            assert version is not None
            entry = store.pins.set(asset_id, version, reason)
            store.audit.append(
                "pin.set",
                asset_id=asset_id,
                actor=current_user(),
                data={"version": version, "reason": reason},
            )
            data = {"asset": asset_id, "pinned": entry.version}
    finally:
        store.close()
    if json_out:
        print_json(data)
    else:
        console.print(
            f"{asset_id}: " + (f"pinned to {data['pinned']}" if data["pinned"] else "pin cleared"),
            markup=False,
        )


@quarantine_app.command("list")
def quarantine_list(
    asset_id: Annotated[str | None, typer.Argument(metavar="[ASSET]")] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Versions that failed on an asset and will not be applied to it again."""
    store = _store(config)
    try:
        entries = store.quarantine.list(asset_id)
    finally:
        store.close()
    if json_out:
        print_json(
            [
                {
                    "asset": e.asset_id,
                    "version": e.version,
                    "reason": e.reason,
                    "attempt": e.attempt_id,
                    "since": e.created_at.isoformat(),
                }
                for e in entries
            ]
        )
        return
    print_table(
        f"{len(entries)} quarantined versions",
        ["asset", "version", "since", "reason"],
        [
            (e.asset_id, e.version, f"{e.created_at:%Y-%m-%d %H:%M}", e.reason[:100])
            for e in entries
        ],
    )


@quarantine_app.command("clear")
def quarantine_clear(
    asset_id: Annotated[str, typer.Argument(metavar="ASSET")],
    version: Annotated[str | None, typer.Option("--version", help="Only this version.")] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Allow quarantined versions again (all of the asset's, or one)."""
    store = _store(config)
    try:
        removed = store.quarantine.clear(asset_id, version)
        if removed:
            store.audit.append(
                "quarantine.cleared",
                asset_id=asset_id,
                actor=current_user(),
                data={"version": version, "removed": removed},
            )
    finally:
        store.close()
    if json_out:
        print_json({"asset": asset_id, "version": version, "removed": removed})
    else:
        console.print(f"cleared {removed} quarantined version(s) of {asset_id}", markup=False)


_HEAD_FORMAT = "SEQ:HASH, e.g. 120:3f9a… (the 64 hex digits of the hash)"


def _parse_head(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` as `audit head` prints it."""
    seq_text, _, digest = text.strip().partition(":")
    digest = digest.strip().lower()
    valid = (
        seq_text.isdigit()
        and int(seq_text) >= 1
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    )
    if not valid:
        raise InvalidInputError(
            f"--expect-head {text!r} is not SEQ:HASH",
            hint=f"copy it from `safe-updater audit head`: {_HEAD_FORMAT}",
        )
    return int(seq_text), digest


@audit_app.command("verify")
def audit_verify(
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="SEQ:HASH",
            help="A head printed by `audit head` earlier and kept elsewhere: also catches a "
            "cut-off tail and a chain re-hashed since.",
        ),
    ] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Check the audit chain; exit 1 and name the first bad record if anything was altered."""
    anchor = _parse_head(expect_head) if expect_head is not None else None
    store = _store(config)
    try:
        result = store.audit.verify(expect_head=anchor)
    finally:
        store.close()
    if json_out:
        print_json(result.model_dump())
    elif result.ok:
        console.print(f"audit chain OK: {result.records} records", markup=False)
    elif result.first_bad_seq is None:
        console.print(f"audit chain BROKEN: {result.problem}", markup=False)
    else:
        console.print(
            f"audit chain BROKEN at record {result.first_bad_seq}: {result.problem}", markup=False
        )
    if not result.ok:
        raise typer.Exit(int(ExitCode.FAILURE))


@audit_app.command("head")
def audit_head(json_out: JsonOption = False, config: ConfigOption = None) -> None:
    """Print the chain head as SEQ:HASH. Keep a copy where the database's writers cannot write
    (a ticket, a log shipped off the host); `audit verify --expect-head` checks against it."""
    store = _store(config)
    try:
        seq, digest = store.audit.head()
    finally:
        store.close()
    if json_out:
        print_json({"seq": seq, "hash": digest})
    else:
        console.print(f"{seq}:{digest}", markup=False, soft_wrap=True)


@audit_app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl")] = "jsonl",
    config: ConfigOption = None,
) -> None:
    """Write every audit record as JSON lines to stdout, in order."""
    import sys

    if fmt != "jsonl":
        raise InvalidInputError(f"--format {fmt!r} is not supported", hint="use --format jsonl")
    store = _store(config)
    try:
        for record in store.audit.export():
            sys.stdout.write(record.model_dump_json() + "\n")
    finally:
        store.close()
