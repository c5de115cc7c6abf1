"""Update events reach the configured webhooks: the real flow on the session's Prefect server,
fakes of our own ports for Docker, and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safe_updater.adapters.store import StateStore
from safe_updater.config import parse_config_text
from safe_updater.domain.assets import AssetKind
from safe_updater.flows.update_asset import update_asset
from safe_updater.runtime import Runtime, use_runtime
from safe_updater.wiring import build_notifiers
from support.fakes import (
    FakeClock,
    FakeHealthPlanner,
    FakeInventory,
    FakeRegistry,
    FakeUpdater,
    FakeWorld,
)
from support.webhook_receiver import Receiver, webhook_receiver

WEB = "docker:local/web"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture
def make(tmp_path: Path, receiver: Receiver) -> Iterator[Any]:
    runtimes: list[Runtime] = []

    def factory(tags: list[str], running: str, *, events: str = "") -> tuple[Runtime, FakeWorld]:
        config = parse_config_text(
            "notifications:\n"
            f"  - {{name: ops-json, url: '{receiver.url('/json')}', format: json{events}}}\n"
            f"  - {{name: ops-slack, url: '{receiver.url('/slack')}', format: slack{events}}}\n"
        )
        world = FakeWorld(running={WEB: running})
        clock = FakeClock()
        store = StateStore.open(f"sqlite:///{tmp_path / f'state{len(runtimes)}.db'}")
        closers = [store.close]
        runtime = Runtime(
            config=config,
            store=store,
            registry=FakeRegistry(tags),  # type: ignore[arg-type]
            inventories=[FakeInventory(world)],  # type: ignore[list-item]
            updaters={(AssetKind.DOCKER, "local"): FakeUpdater(world)},
            health=FakeHealthPlanner(world),
            clock=clock,
            sleep=clock.sleep,
            closers=closers,
            notifiers=build_notifiers(config, closers),
        )
        runtimes.append(runtime)
        return runtime, world

    yield factory
    for runtime in runtimes:
        runtime.close()


def _by_path(receiver: Receiver, path: str) -> list[Any]:
    with receiver.lock:
        return [r.json() for r in receiver.requests if r.path == path]


def test_a_rollback_sends_a_rolled_back_notice_with_the_run_link(
    make: Any, receiver: Receiver
) -> None:
    runtime, world = make(["1.0.0", "1.0.2"], "1.0.0")
    world.broken.add("1.0.2")
    with use_runtime(runtime):
        result = update_asset(WEB, approval="defer")
    assert result["outcome"] == "rolled_back"
    [notice] = _by_path(receiver, "/json")  # `applied` is not in the default events
    assert notice["event"] == "rolled-back"
    assert notice["outcome"] == "rolled_back"
    assert (notice["asset"], notice["from_version"], notice["to_version"]) == (
        WEB,
        "1.0.0",
        "1.0.2",
    )
    assert notice["change_type"] == "patch"
    assert any("failed verification" in reason for reason in notice["reasons"])
    run_id = result["flow_run_id"]
    assert notice["flow_run_id"] == run_id
    assert notice["ui_url"].startswith("http://127.0.0.1:")
    assert notice["ui_url"].endswith(f"/runs/flow-run/{run_id}")
    [slack] = _by_path(receiver, "/slack")
    assert "rolled back" in slack["text"] and f"/runs/flow-run/{run_id}|Run>" in slack["text"]


def test_awaiting_approval_sends_a_notice_linking_to_the_run(make: Any, receiver: Receiver) -> None:
    runtime, _ = make(["1.0.1", "1.1.0"], "1.0.1")
    with use_runtime(runtime):
        result = update_asset(WEB, approval="defer")
    assert result["outcome"] == "awaiting_approval"
    [notice] = _by_path(receiver, "/json")
    assert notice["event"] == "awaiting-approval"
    assert (notice["from_version"], notice["to_version"], notice["change_type"]) == (
        "1.0.1",
        "1.1.0",
        "minor",
    )
    assert notice["ui_url"].endswith(f"/runs/flow-run/{result['flow_run_id']}")
    [slack] = _by_path(receiver, "/slack")
    assert "Approve or reject in Prefect" in slack["text"]


def test_a_verified_update_is_sent_only_to_notifiers_that_want_it(
    make: Any, receiver: Receiver
) -> None:
    runtime, _ = make(["1.0.0", "1.0.2"], "1.0.0", events=", events: [updated]")
    with use_runtime(runtime):
        assert update_asset(WEB, approval="defer")["outcome"] == "updated"
    assert [n["event"] for n in _by_path(receiver, "/json")] == ["verified"]
    runtime2, _ = make(["1.0.0", "1.0.2"], "1.0.0", events=", events: [failed]")
    before = len(receiver.requests)
    with use_runtime(runtime2):
        assert update_asset(WEB, approval="defer")["outcome"] == "updated"
    assert len(receiver.requests) == before


def test_a_dead_webhook_does_not_fail_the_update(make: Any, receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    runtime, world = make(["1.0.0", "1.0.2"], "1.0.0")
    for route in runtime.notifiers:
        route.notifier._retry_delay = 0.0  # type: ignore[attr-defined]
    with use_runtime(runtime):
        result = update_asset(WEB, approval="defer")
    assert result["outcome"] == "updated"
    assert world.running[WEB] == "1.0.2"
