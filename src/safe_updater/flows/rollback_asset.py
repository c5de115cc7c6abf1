"""``rollback_asset``: a person takes an asset back to an earlier version.

The earlier version is applied and verified like any update; when it is healthy, the version
left behind is quarantined so the next scheduled run does not bring it straight back.

Helm releases can also go back to a chosen *revision* (``revision=N``): the release history is
read, and the apply step is ``helm rollback RELEASE N`` (revision N's chart and values) instead
of an upgrade to a chart version; preflight, snapshot, verify, the rollback of a failed verify
(to the snapshot revision), quarantine, journal and audit are the same steps as for any update.
Without a revision, a release goes back to the version it ran before safe-updater's last update
(as every kind does) or, when the journal has none, to the newest earlier revision of another
version in the release history.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from safe_updater.adapters.updater import RevisionEntry
from safe_updater.domain.assets import Asset, AssetKind
from safe_updater.domain.errors import InvalidInputError, NotFoundError
from safe_updater.domain.journal import Outcome
from safe_updater.domain.plans import AppliedChange, Snapshot
from safe_updater.domain.policy import Decision
from safe_updater.flows.steps import apply_and_verify
from safe_updater.tasks.discovery import resolve_asset
from safe_updater.tasks.queries import recent_attempts
from safe_updater.tasks.revisions import apply_revision, release_history


@flow(
    name="rollback-asset",
    flow_run_name="rollback {asset_id}",
    description="Go back to the previous (or a chosen) version or Helm revision and verify it.",
)
def rollback_asset(
    asset_id: str,
    to_version: str | None = None,
    revision: int | None = None,
    actor: str = "safe-updater",
) -> dict[str, Any]:
    if revision is not None and to_version is not None:
        raise InvalidInputError("give --to VERSION or --revision N, not both")
    if revision is not None and not asset_id.startswith(f"{AssetKind.HELM.value}:"):
        raise InvalidInputError(
            "--revision applies to Helm releases only",
            hint=f"use --to VERSION for {asset_id}",
        )
    asset = resolve_asset(asset_id)
    if revision is None and to_version is None and asset.kind is AssetKind.HELM:
        target, revision = _previous_of_release(asset)
    elif revision is not None:
        target = _revision_target(asset, revision)
    else:
        target = to_version or _previous_version(asset_id, asset.current_version)
        if target == asset.current_version:
            raise InvalidInputError(f"{asset_id} already runs {target}")
    decision = Decision(
        asset_id=asset_id,
        current=asset.current_version,
        auto_target=None,
        auto_change_type=None,
        approval_target=None,
        approval_change_type=None,
        candidates=[],
        reasons=[],
        window_open=True,
        next_window=None,
    )
    to_what = target if revision is None else f"{target} (revision {revision})"
    reasons = [f"manual rollback by {actor}: {asset.current_version} -> {to_what}"]
    run_id = str(flow_run.id) if flow_run.id else None
    result = apply_and_verify(
        asset,
        target,
        "rollback",
        decision,
        reasons,
        run_id,
        actor=actor,
        approvers=[actor],
        success=Outcome.ROLLED_BACK,
        # The same version at another revision (other values): nothing to keep out.
        retire_version=asset.current_version if target != asset.current_version else None,
        apply_step=None if revision is None else _revision_step(revision),
    )
    return result.to_json_dict()


def _revision_step(revision: int) -> Any:
    def apply(asset: Asset, snapshot: Snapshot, target: str) -> AppliedChange:
        return apply_revision(asset, snapshot, revision)

    return apply


def _revision_target(asset: Asset, revision: int) -> str:
    """The version revision ``revision`` runs; refuses the deployed one and unknown ones."""
    history = release_history(asset)
    chosen = next((r for r in history if r.revision == revision), None)
    if chosen is None:
        raise NotFoundError(
            f"{asset.id} has no revision {revision} (kept: "
            f"{', '.join(str(r.revision) for r in history) or 'none'})",
            hint=f"see the history: safe-updater rollback {asset.id} --list",
        )
    deployed = _deployed(history)
    if deployed is not None and deployed.revision == revision:
        raise InvalidInputError(f"revision {revision} of {asset.id} is the deployed one")
    return chosen.version


def _previous_of_release(asset: Asset) -> tuple[str, int | None]:
    """(version, revision or None): the journal's previous version, else the history's."""
    try:
        return _previous_version(asset.id, asset.current_version), None
    except NotFoundError:
        pass
    history = release_history(asset)
    deployed = _deployed(history)
    current = deployed.version if deployed is not None else asset.current_version
    newest_first = [
        r for r in reversed(history) if deployed is None or r.revision < deployed.revision
    ]
    for entry in newest_first:
        if entry.version != current and entry.status in ("superseded", "deployed"):
            return entry.version, entry.revision
    raise NotFoundError(
        f"no earlier version of {asset.id} in the journal or the release history",
        hint=f"pick a revision: safe-updater rollback {asset.id} --list",
    )


def _deployed(history: list[RevisionEntry]) -> RevisionEntry | None:
    deployed = [r for r in history if r.status == "deployed"]
    return deployed[-1] if deployed else None


def _previous_version(asset_id: str, current: str) -> str:
    for attempt in recent_attempts(asset_id, limit=200):
        if attempt.outcome is Outcome.UPDATED and attempt.to_version == current:
            return attempt.from_version
    raise NotFoundError(
        f"no earlier version of {asset_id} is recorded (it was not updated by safe-updater to "
        f"{current})",
        hint=f"name one: safe-updater rollback {asset_id} --to VERSION",
    )
