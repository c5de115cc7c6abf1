"""The port that finds assets on one Docker host or Kubernetes cluster."""

from __future__ import annotations

from typing import Protocol

from safe_updater.domain.assets import Asset, AssetKind


class Inventory(Protocol):
    @property
    def kind(self) -> AssetKind: ...

    @property
    def target(self) -> str:
        """The Docker host's or cluster's name in the config (and in asset ids)."""

    def list_assets(self) -> list[Asset]:
        """Every opted-in asset on the target, read from the system now."""

    def find(self, asset_id: str) -> Asset | None:
        """The asset with this id, read from the system now, or None when it is gone."""
