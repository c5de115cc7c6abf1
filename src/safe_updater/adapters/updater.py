"""The port every asset kind implements so one flow can update them all.

Each method is one step of the update DAG. Implementations must be idempotent and must work from
the stored ``Snapshot`` / ``AppliedChange`` alone, because after a crash a different process calls
``rollback`` or ``commit`` with what the journal row holds.
"""

from __future__ import annotations

from typing import Protocol

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
