"""The port that lists the versions an asset could move to: image tags or chart versions."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from safe_updater.adapters.registry import Registry
from safe_updater.domain.assets import Asset, ImageRef
from safe_updater.domain.errors import InvalidInputError


class VersionSource(Protocol):
    def list_versions(self, asset: Asset) -> list[str]:
        """Every version the asset's source offers, as served (unsorted, unfiltered)."""

    def digest(self, asset: Asset, version: str) -> str | None:
        """The content digest of ``version`` (for mutable tags), or None if not tracked."""

    def created_at(self, asset: Asset, version: str) -> datetime | None:
        """When ``version`` was published, or None when the source does not say."""


class ImageVersions:
    """Versions of an asset's container image, from its OCI registry."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def list_versions(self, asset: Asset) -> list[str]:
        return self._registry.list_tags(_image(asset))

    def digest(self, asset: Asset, version: str) -> str | None:
        return self._registry.digest(_image(asset).with_tag(version))

    def created_at(self, asset: Asset, version: str) -> datetime | None:
        return self._registry.created_at(_image(asset).with_tag(version))


def _image(asset: Asset) -> ImageRef:
    if asset.image is None:
        raise InvalidInputError(
            f"asset {asset.id} has no image reference",
            hint="image versions apply to containers and workloads; Helm releases use charts",
        )
    return asset.image
