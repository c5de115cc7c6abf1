"""Docker inventory: the opted-in containers of one engine, as :class:`Asset` objects.

A container opts in with ``safe-updater.io/enabled=true`` or Watchtower's
``com.centurylinklabs.watchtower.enable=true`` (case-insensitive ``true``). Containers the updater
itself parks during an update (``<name>.safe-updater-prev`` / ``-next``) are never listed, and
neither are containers created from a bare image id (there is no repository to update from).
"""

from __future__ import annotations

import logging

from safe_updater.adapters.docker_engine import ContainerEngine, ContainerInfo, ImageInfo
from safe_updater.adapters.docker_updater import is_helper_name
from safe_updater.adapters.errors import ImageNotFoundError
from safe_updater.domain.assets import (
    ENABLE_LABEL,
    WATCHTOWER_ENABLE_LABEL,
    Asset,
    AssetKind,
    ImageRef,
    docker_asset_id,
)
from safe_updater.domain.errors import InvalidInputError

log = logging.getLogger(__name__)

OPT_IN_LABELS = (ENABLE_LABEL, WATCHTOWER_ENABLE_LABEL)


class DockerInventory:
    """Lists the opted-in containers on one Docker host (``host`` is its name in the config)."""

    kind = AssetKind.DOCKER

    def __init__(self, engine: ContainerEngine, host: str) -> None:
        self._engine = engine
        self._host = host

    @property
    def host(self) -> str:
        return self._host

    @property
    def target(self) -> str:
        return self._host

    def find(self, asset_id: str) -> Asset | None:
        """The opted-in container ``docker:<host>/<name>`` as it runs now, or None."""
        prefix = f"docker:{self._host}/"
        if not asset_id.startswith(prefix):
            return None
        info = self._engine.find_container(asset_id[len(prefix) :])
        return None if info is None else self.to_asset(info)

    def list_assets(self, *, include_stopped: bool = False) -> list[Asset]:
        """Opted-in containers, sorted by name; stopped ones only with ``include_stopped``."""
        seen: dict[str, ContainerInfo] = {}
        for label in OPT_IN_LABELS:
            for info in self._engine.list_containers(all=include_stopped, label=label):
                seen.setdefault(info.id, info)
        assets = []
        images: dict[str, ImageInfo | None] = {}  # many containers share an image: inspect once
        for info in seen.values():
            asset = self.to_asset(info, images=images)
            if asset is not None:
                assets.append(asset)
        return sorted(assets, key=lambda a: a.name)

    def to_asset(
        self, info: ContainerInfo, *, images: dict[str, ImageInfo | None] | None = None
    ) -> Asset | None:
        """The asset for one container, or ``None`` if it did not opt in or cannot be updated.

        ``images`` caches image inspections by image id across calls (one listing)."""
        if not is_opted_in(info.labels) or is_helper_name(info.name):
            return None
        try:
            image = ImageRef.parse(info.image_ref)
        except InvalidInputError:
            log.warning(
                "container %s on %s runs %r, not a registry image reference; skipped",
                info.name,
                self._host,
                info.image_ref[:80],
            )
            return None
        digest = image.digest
        if digest is None:
            cache = {} if images is None else images
            if info.image_id not in cache:
                try:
                    cache[info.image_id] = self._engine.inspect_image(info.image_id)
                except ImageNotFoundError:
                    cache[info.image_id] = None
            found = cache[info.image_id]
            digest = found.digest_for(image) if found is not None else None
        return Asset(
            id=docker_asset_id(self._host, info.name),
            kind=AssetKind.DOCKER,
            target=self._host,
            name=info.name,
            image=image,
            current_version=image.tag or image.digest or "",
            current_digest=digest,
            labels=dict(info.labels),
        )


def is_opted_in(labels: dict[str, str]) -> bool:
    return any((labels.get(key) or "").strip().lower() == "true" for key in OPT_IN_LABELS)
