"""The revision history of a Helm release, for ``rollback helm:… --list`` / ``--revision N``.

Read straight from the cluster through the runtime (no flow run: it changes nothing)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from safe_updater.cli.common import print_table
from safe_updater.domain.assets import AssetKind, parse_asset_id
from safe_updater.domain.errors import InvalidInputError

if TYPE_CHECKING:
    from safe_updater.adapters.updater import RevisionEntry


def read_history(asset_id: str) -> list[RevisionEntry]:
    kind, _ = parse_asset_id(asset_id)
    if kind is not AssetKind.HELM:
        raise InvalidInputError(
            f"{asset_id} has no revision history (--list and --revision apply to Helm releases)",
            hint=f"see its updates with: safe-updater history {asset_id}",
        )
    from safe_updater.runtime import current_runtime
    from safe_updater.tasks.revisions import revision_updater

    runtime = current_runtime()
    asset = runtime.find_asset(asset_id)
    return revision_updater(runtime, asset).revisions(asset)


def history_json(entries: list[RevisionEntry]) -> list[dict[str, Any]]:
    return [entry.model_dump(mode="json") for entry in entries]


def print_history(asset_id: str, entries: list[RevisionEntry]) -> None:
    print_table(
        f"{asset_id}: {len(entries)} revisions",
        ["revision", "chart version", "version", "status", "description", "updated"],
        [
            (
                e.revision,
                e.chart_version,
                e.version,
                e.status,
                e.description,
                f"{e.updated:%Y-%m-%d %H:%M:%S %Z}" if e.updated else "",
            )
            for e in entries
        ],
    )
