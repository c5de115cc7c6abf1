"""The port every asset kind implements so one flow can update them all.

Each method is one step of the update DAG. Implementations must be idempotent and must work from
the stored ``Snapshot`` / ``AppliedChange`` alone, because after a crash a different process calls
``rollback`` or ``commit`` with what the journal row holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from safe_updater.domain.assets import Asset
from safe_updater.domain.plans import AppliedChange, Snapshot


class AssetUpdater(Protocol):
    def preflight(self, asset: Asset, target: str) -> None:
        """Make sure ``target`` can be applied (pull the image, render the chart). No change."""

    def snapshot(self, asset: Asset) -> Snapshot:
        """Record what runs now, with enough detail to restore it."""

    def apply(self, asset: Asset, snapshot: Snapshot, target: str) -> AppliedChange:
        """Switch the asset to ``target``. Keeps what rollback needs until commit."""

    def commit(self, asset: Asset, snapshot: Snapshot, applied: AppliedChange) -> None:
        """The new version is verified: drop what was kept for rollback."""

    def rollback(self, asset: Asset, snapshot: Snapshot, applied: AppliedChange | None) -> None:
        """Restore the snapshot. ``applied`` is None when a crash hit during ``apply``."""

    def running_version(self, asset: Asset) -> str | None:
        """The version serving now, read from the system itself (None if nothing runs)."""


class RevisionEntry(BaseModel):
    """One revision of an asset's own history (a Helm release's ``helm history`` entry)."""

    model_config = ConfigDict(frozen=True)

    revision: int
    version: str
    """The asset's tracked version at that revision (chart version, or the image tag)."""
    chart: str
    chart_version: str
    app_version: str = ""
    status: str
    description: str = ""
    updated: datetime | None = None


@runtime_checkable
class RevisionUpdater(Protocol):
    """Asset kinds that keep numbered revisions and can return to one (Helm releases).

    Not part of :class:`AssetUpdater`: Docker containers and plain workloads have no revision
    history of their own; for them a manual rollback names a version instead.
    """

    def revisions(self, asset: Asset) -> list[RevisionEntry]:
        """The kept revisions, oldest first."""

    def apply_revision(self, asset: Asset, snapshot: Snapshot, revision: int) -> AppliedChange:
        """Make ``revision`` current again (a new revision with its chart and values), without
        waiting for health: the verify step decides. Idempotent: a revision that an earlier call
        already produced is returned as is."""
