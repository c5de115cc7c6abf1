"""The scan flow against a real Prefect server and a real (SQLite) state store, with fakes of
our own ports for the Docker hosts and the registry (the real ones: bench/bench_scan.py and the
integration tests)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.artifacts import Artifact

from safe_updater.adapters.store import StateStore
from safe_updater.config import AppConfig
from safe_updater.domain.assets import AssetKind, ImageRef
from safe_updater.domain.errors import NotFoundError
from safe_updater.flows.scan_inventory import scan_inventory, scan_progress
from safe_updater.runtime import Runtime, use_runtime
from support.fakes import FakeClock, FakeHealthPlanner, FakeInventory, FakeUpdater, FakeWorld

WEB_REPO = "localhost:5000/demo/web"
API_REPO = "localhost:5000/demo/api"


class RepoRegistry:
    """Tags per repository; counts the tag lists; ``broken`` repositories are not found."""

    def __init__(self, tags: dict[str, list[str]], broken: set[str] | None = None) -> None:
        self.tags = tags
        self.broken = broken or set()
        self.lists: Counter[str] = Counter()

    def list_tags(self, image: ImageRef) -> list[str]:
        self.lists[image.name] += 1
        if image.name in self.broken:
            raise NotFoundError(f"repository {image.name} not found")
        return list(self.tags[image.name])

    def digest(self, image: ImageRef) -> str:
        return f"sha256:{'0' * 63}1"

    def created_at(self, image: ImageRef) -> datetime | None:
        return None


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Any]:
    """web1 (1.0.0) and web2 (1.0.1) on host `local` run demo/web; api (2.0.0) on `edge`."""
    local = FakeWorld(running={"docker:local/web1": "1.0.0", "docker:local/web2": "1.0.1"})
    edge = FakeWorld(running={"docker:edge/api": "2.0.0"})
    store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    registry = RepoRegistry(
        {
            WEB_REPO: ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "2.0.0", "latest"],
            API_REPO: ["1.9.0", "2.0.0", "2.0.1"],
        }
    )
    clock = FakeClock()
    runtime = Runtime(
        config=AppConfig(),
        store=store,
        registry=registry,  # type: ignore[arg-type]
        inventories=[
            FakeInventory(local, "local", WEB_REPO),  # type: ignore[list-item]
            FakeInventory(edge, "edge", API_REPO),  # type: ignore[list-item]
        ],
        updaters={
            (AssetKind.DOCKER, "local"): FakeUpdater(local),
            (AssetKind.DOCKER, "edge"): FakeUpdater(edge),
        },
        health=FakeHealthPlanner(local),
        clock=clock,
        sleep=clock.sleep,
        closers=[store.close],
    )
    with use_runtime(runtime):
        yield runtime
    runtime.close()


def rows_by_asset(plan: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["asset"]: row for row in plan}


def test_scan_plans_every_asset_and_lists_each_repository_once(fleet: Runtime) -> None:
    plan = scan_inventory()

    assert [row["asset"] for row in plan] == [
        "docker:local/web1",
        "docker:local/web2",
        "docker:edge/api",
    ]
    rows = rows_by_asset(plan)
    assert (rows["docker:local/web1"]["target"], rows["docker:local/web1"]["action"]) == (
        "1.0.2",
        "auto",
    )
    assert rows["docker:local/web1"]["change_type"] == "patch"
    assert rows["docker:local/web2"]["target"] == "1.0.2"
    assert rows["docker:edge/api"]["target"] == "2.0.1"
    assert all(row["reasons"] for row in plan), "every decision explains itself"
    assert fleet.registry.lists == {WEB_REPO: 1, API_REPO: 1}  # type: ignore[attr-defined]
    assert {asset.id for asset in fleet.store.assets.list()} == set(rows)


def test_scan_respects_the_quarantine_of_each_asset(fleet: Runtime) -> None:
    fleet.store.quarantine.add("docker:local/web1", "1.0.2", "failed verification")

    rows = rows_by_asset(scan_inventory())

    web1 = rows["docker:local/web1"]
    assert web1["target"] == "1.0.1"  # the next best patch
    assert rows["docker:local/web2"]["target"] == "1.0.2"  # only web1's quarantine


def test_a_registry_failure_marks_only_that_repositorys_assets(fleet: Runtime) -> None:
    fleet.registry.broken.add(API_REPO)  # type: ignore[attr-defined]

    rows = rows_by_asset(scan_inventory())

    assert rows["docker:edge/api"]["action"] == "error"
    assert "not found" in rows["docker:edge/api"]["reasons"]
    assert rows["docker:local/web1"]["target"] == "1.0.2"


def test_progress_reports_the_total_then_every_planned_asset(fleet: Runtime) -> None:
    events: list[tuple[str, int]] = []

    class Listener:
        def found(self, total: int) -> None:
            events.append(("found", total))

        def planned(self, count: int) -> None:
            events.append(("planned", count))

    with scan_progress(Listener()):
        scan_inventory()
    scan_inventory()  # no listener any more

    assert events[0] == ("found", 3)
    assert sum(count for kind, count in events[1:] if kind == "planned") == 3
    assert len(events) == 3  # one step per repository


def test_scan_without_evaluation_asks_no_registry(fleet: Runtime) -> None:
    plan = scan_inventory(evaluate=False)

    assert len(plan) == 3
    assert all(row["target"] is None for row in plan)
    assert not fleet.registry.lists  # type: ignore[attr-defined]


def test_the_plan_is_the_runs_table_artifact(fleet: Runtime) -> None:
    scan_inventory()

    artifact = Artifact.get("scan-plan")
    assert artifact is not None
    data = artifact.data if isinstance(artifact.data, list) else json.loads(str(artifact.data))
    assert {row["asset"] for row in data} == {
        "docker:local/web1",
        "docker:local/web2",
        "docker:edge/api",
    }
