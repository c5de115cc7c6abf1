"""The composition root: builds every adapter from the config once per process.

Tasks ask :func:`current_runtime` for what they need, so flows take only plain, serialisable
parameters (asset ids, versions) and Prefect run history shows them as given. Tests install a
runtime of their own with :func:`use_runtime`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from safe_updater.domain.assets import Asset, AssetKind, parse_asset_id
from safe_updater.domain.errors import NotFoundError

if TYPE_CHECKING:
    from safe_updater.adapters.inventory import Inventory
    from safe_updater.adapters.notify import NotificationRoute
    from safe_updater.adapters.probes import Probe
    from safe_updater.adapters.registry import Registry
    from safe_updater.adapters.store import StateStore
    from safe_updater.adapters.updater import AssetUpdater
    from safe_updater.adapters.versions import VersionSource
    from safe_updater.config import AppConfig
    from safe_updater.domain.health import HealthPolicy
    from safe_updater.domain.plans import AppliedChange


class HealthPlanner(Protocol):
    """Builds the probes and the monitoring policy for one asset after an update."""

    def plan(
        self, asset: Asset, applied: AppliedChange | None
    ) -> tuple[list[Probe], HealthPolicy]: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    config: AppConfig
    store: StateStore
    registry: Registry
    inventories: list[Inventory]
    updaters: Mapping[tuple[AssetKind, str], AssetUpdater]
    health: HealthPlanner
    clock: Callable[[], datetime] = _utcnow
    sleep: Callable[[float], None] = time.sleep
    closers: list[Callable[[], None]] = field(default_factory=list)
    versions: Mapping[tuple[AssetKind, str], VersionSource] = field(default_factory=dict)
    """Where an asset's versions come from when not its image registry (Helm charts)."""
    notifiers: list[NotificationRoute] = field(default_factory=list)
    """Webhooks told about update events (config ``notifications``), each with its events."""

    def inventory_for(self, asset_id: str) -> Inventory:
        kind, parts = parse_asset_id(asset_id)
        for inventory in self.inventories:
            if inventory.kind == kind and inventory.target == parts[0]:
                return inventory
        known = sorted({inv.target for inv in self.inventories if inv.kind == kind})
        raise NotFoundError(
            f"no {kind.value} target named {parts[0]!r} for asset {asset_id}",
            hint=f"configured {kind.value} targets: {', '.join(known) or 'none'}; "
            "add it under `targets:` in the config",
        )

    def find_asset(self, asset_id: str) -> Asset:
        asset = self.inventory_for(asset_id).find(asset_id)
        if asset is None:
            raise NotFoundError(
                f"asset {asset_id} was not found or is not opted in",
                hint="check `safe-updater assets`; containers need the label "
                "safe-updater.io/enabled=true",
            )
        return asset

    def updater_for(self, asset: Asset) -> AssetUpdater:
        try:
            return self.updaters[(asset.kind, asset.target)]
        except KeyError:
            raise NotFoundError(
                f"no updater is configured for {asset.kind.value} target {asset.target!r}",
                hint="add a target of that kind under `targets:` in the config",
            ) from None

    def versions_for(self, asset: Asset) -> VersionSource:
        """The asset's version source: configured per target, else its image registry."""
        source = self.versions.get((asset.kind, asset.target))
        if source is not None:
            return source
        from safe_updater.adapters.versions import ImageVersions

        return ImageVersions(self.registry)

    def close(self) -> None:
        for closer in reversed(self.closers):
            closer()
        self.closers.clear()


_lock = threading.Lock()
_override: Runtime | None = None
_built: Runtime | None = None


@contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Make ``runtime`` the one tasks see, for the duration of the block."""
    global _override
    previous = _override
    _override = runtime
    try:
        yield runtime
    finally:
        _override = previous


def current_runtime() -> Runtime:
    """The runtime for this process: the override, or one built from the config."""
    global _built
    if _override is not None:
        return _override
    with _lock:
        if _built is None:
            from safe_updater.wiring import build_runtime

            _built = build_runtime()
        return _built


def peek_runtime() -> Runtime | None:
    """The runtime tasks would see, without building one (``None`` when none exists yet)."""
    return _override if _override is not None else _built


def reset_runtime() -> None:
    global _built
    with _lock:
        if _built is not None:
            _built.close()
        _built = None
