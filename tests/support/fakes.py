"""Stateful fakes of our own Protocols, for flow logic. Each real adapter has integration tests
against the real system; these fakes only let flow tests reach every branch quickly."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from safe_updater.domain.assets import Asset, AssetKind, ImageRef, docker_asset_id
from safe_updater.domain.errors import NotFoundError, TransientError
from safe_updater.domain.health import HealthPolicy, Sample
from safe_updater.domain.plans import AppliedChange, Snapshot


class FakeClock:
    """A clock whose ``sleep`` advances time instantly (tests never sleep for real)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


@dataclass
class FakeWorld:
    """What 'runs' on the fake host: one version per asset, and which versions are broken."""

    running: dict[str, str] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    kept: dict[str, str] = field(default_factory=dict)  # asset -> old version kept for rollback
    calls: list[tuple[str, str, str]] = field(default_factory=list)


class FakeInventory:
    kind = AssetKind.DOCKER

    def __init__(
        self,
        world: FakeWorld,
        target: str = "local",
        repository: str = "localhost:5000/demo/web",
        labels: dict[str, str] | None = None,
    ) -> None:
        self.world = world
        self.target = target
        self.repository = repository
        self.labels = labels or {}

    def asset(self, name: str) -> Asset:
        asset_id = docker_asset_id(self.target, name)
        version = self.world.running[asset_id]
        return Asset(
            id=asset_id,
            kind=AssetKind.DOCKER,
            target=self.target,
            name=name,
            image=ImageRef.parse(f"{self.repository}:{version}"),
            current_version=version,
            current_digest=f"sha256:{'0' * 63}1",
            labels={"safe-updater.io/enabled": "true", **self.labels},
        )

    def list_assets(self) -> list[Asset]:
        return [self.asset(asset_id.split("/", 1)[1]) for asset_id in self.world.running]

    def find(self, asset_id: str) -> Asset | None:
        if asset_id not in self.world.running:
            return None
        return self.asset(asset_id.split("/", 1)[1])


class FakeRegistry:
    def __init__(self, tags: Iterable[str], *, fail_times: int = 0) -> None:
        self.tags = list(tags)
        self.fail_times = fail_times
        self.requests = 0

    def list_tags(self, image: ImageRef) -> list[str]:
        self.requests += 1
        if self.fail_times > 0:
            self.fail_times -= 1
            raise TransientError("registry answered 503", retry_after=0)
        return list(self.tags)

    def digest(self, image: ImageRef) -> str:
        return f"sha256:{'0' * 63}1"

    def created_at(self, image: ImageRef) -> datetime | None:
        return None


class FakeUpdater:
    """Switches the world's running version; ``missing`` tags fail preflight."""

    def __init__(self, world: FakeWorld, *, missing: Iterable[str] = ()) -> None:
        self.world = world
        self.missing = set(missing)

    def preflight(self, asset: Asset, target: str) -> None:
        self.world.calls.append(("preflight", asset.id, target))
        if target in self.missing:
            raise NotFoundError(f"image {target} not found")

    def snapshot(self, asset: Asset) -> Snapshot:
        return Snapshot(
            asset_id=asset.id, version=self.world.running[asset.id], data={"container": asset.name}
        )

    def apply(self, asset: Asset, snapshot: Snapshot, target: str) -> AppliedChange:
        self.world.calls.append(("apply", asset.id, target))
        self.world.kept[asset.id] = snapshot.version
        self.world.running[asset.id] = target
        return AppliedChange(asset_id=asset.id, from_version=snapshot.version, to_version=target)

    def commit(self, asset: Asset, snapshot: Snapshot, applied: AppliedChange) -> None:
        self.world.calls.append(("commit", asset.id, applied.to_version))
        self.world.kept.pop(asset.id, None)

    def rollback(self, asset: Asset, snapshot: Snapshot, applied: AppliedChange | None) -> None:
        self.world.calls.append(("rollback", asset.id, snapshot.version))
        self.world.running[asset.id] = snapshot.version
        self.world.kept.pop(asset.id, None)

    def running_version(self, asset: Asset) -> str | None:
        return self.world.running.get(asset.id)


class VersionProbe:
    """Healthy unless the asset now runs a broken version."""

    def __init__(self, world: FakeWorld, asset_id: str) -> None:
        self.world = world
        self.asset_id = asset_id

    @property
    def name(self) -> str:
        return "http"

    def check(self, at: datetime) -> Sample:
        version = self.world.running.get(self.asset_id)
        ok = version not in self.world.broken
        return Sample(at=at, check=self.name, ok=ok, detail=f"{version}: {'200' if ok else '404'}")


class FakeHealthPlanner:
    def __init__(self, world: FakeWorld, policy: HealthPolicy | None = None) -> None:
        self.world = world
        self.policy = policy or HealthPolicy(
            window=timedelta(seconds=10),
            interval=timedelta(seconds=1),
            failure_threshold=2,
            success_threshold=2,
        )

    def plan(self, asset: Asset, applied: AppliedChange | None) -> tuple[list[Any], HealthPolicy]:
        return [VersionProbe(self.world, asset.id)], self.policy
