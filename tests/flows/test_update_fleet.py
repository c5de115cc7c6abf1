"""The fleet flow against a real Prefect server (its concurrency limits, pauses and artifacts)
and a real SQLite state store, with fakes of our own ports for hosts and registry. The real
Docker fleet: tests/integration/test_docker_fleet.py and tests/scaleout/."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client, resume_flow_run

from safe_updater.adapters.store import StateStore
from safe_updater.config import parse_config_text
from safe_updater.domain.assets import Asset, AssetKind
from safe_updater.domain.plans import AppliedChange, Snapshot
from safe_updater.flows.update_fleet import update_fleet
from safe_updater.runtime import Runtime, use_runtime
from safe_updater.tasks.fleet import GLOBAL_LIMIT, target_limit
from support.fakes import (
    FakeClock,
    FakeHealthPlanner,
    FakeInventory,
    FakeRegistry,
    FakeUpdater,
    FakeWorld,
)
from support.prefect_runs import paused_runs


class SlowUpdater(FakeUpdater):
    """Applying takes real time, so overlapping runs really overlap."""

    def __init__(self, world: FakeWorld, seconds: float) -> None:
        super().__init__(world)
        self.seconds = seconds

    def apply(self, asset: Asset, snapshot: Snapshot, target: str) -> AppliedChange:
        time.sleep(self.seconds)
        return super().apply(asset, snapshot, target)


class Fleet:
    """Assets on hosts `local` and (optionally) `edge`, all running demo/web."""

    def __init__(
        self,
        tmp_path: Path,
        config: str,
        local: dict[str, str],
        edge: dict[str, str] | None = None,
        *,
        tags: list[str] | None = None,
        apply_seconds: float = 0.0,
    ) -> None:
        self.local = FakeWorld(running={f"docker:local/{n}": v for n, v in local.items()})
        self.edge = FakeWorld(running={f"docker:edge/{n}": v for n, v in (edge or {}).items()})
        self.clock = FakeClock()
        self.store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
        planner = _JointHealth(self.local, self.edge)
        self.runtime = Runtime(
            config=parse_config_text(config),
            store=self.store,
            registry=FakeRegistry(tags or ["1.0.0", "1.0.1"]),  # type: ignore[arg-type]
            inventories=[
                FakeInventory(self.local, "local"),  # type: ignore[list-item]
                FakeInventory(self.edge, "edge"),  # type: ignore[list-item]
            ],
            updaters={
                (AssetKind.DOCKER, "local"): SlowUpdater(self.local, apply_seconds),
                (AssetKind.DOCKER, "edge"): SlowUpdater(self.edge, apply_seconds),
            },
            health=planner,
            clock=self.clock,
            sleep=self.clock.sleep,
            closers=[self.store.close],
        )

    def running(self, name: str) -> str:
        return {**self.local.running, **self.edge.running}[name]

    def break_version(self, version: str) -> None:
        self.local.broken.add(version)
        self.edge.broken.add(version)


class _JointHealth:
    def __init__(self, *worlds: FakeWorld) -> None:
        self.planners = [FakeHealthPlanner(world) for world in worlds]

    def plan(self, asset: Asset, applied: AppliedChange | None) -> tuple[list[Any], Any]:
        index = 0 if asset.target == "local" else 1
        return self.planners[index].plan(asset, applied)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    made: list[Fleet] = []

    def factory(config: str, local: dict[str, str], **kwargs: Any) -> Fleet:
        fleet = Fleet(tmp_path / str(len(made)), config, local, **kwargs)
        made.append(fleet)
        return fleet

    for index in range(4):
        (tmp_path / str(index)).mkdir()
    yield factory
    for fleet in made:
        fleet.runtime.close()


CANARY_CONFIG = """\
assets:
  "docker:local/canary-*": {group: canary}
  "docker:local/web-*": {group: web}
fleet:
  soak: 10m
"""


def _by_asset(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["asset"]: row for row in result["assets"]}


def test_canary_failure_halts_the_remaining_waves(make: Any) -> None:
    f = make(CANARY_CONFIG, {"canary-1": "1.0.0", "web-a": "1.0.0", "web-b": "1.0.0"})
    f.break_version("1.0.1")
    with use_runtime(f.runtime):
        result = update_fleet(dispatch="inline")
    rows = _by_asset(result)
    assert [w["name"] for w in result["waves"]] == ["canary", "web"]
    assert rows["docker:local/canary-1"]["outcome"] == "rolled_back"
    assert f.running("docker:local/canary-1") == "1.0.0"
    assert "canary wave canary" in result["halted"]
    assert "failure budget of 0" in result["halted"]
    for name in ("docker:local/web-a", "docker:local/web-b"):
        assert rows[name]["outcome"] == "halted"
        assert f.running(name) == "1.0.0", "a halted wave must not touch its assets"
    assert [c for c in f.local.calls if c[0] == "apply"] == [
        ("apply", "docker:local/canary-1", "1.0.1")
    ]
    assert f.store.quarantine.list()[0].version == "1.0.1"


def test_canary_passes_soaks_then_the_next_wave_runs(make: Any) -> None:
    f = make(CANARY_CONFIG, {"canary-1": "1.0.0", "web-a": "1.0.0", "web-b": "1.0.0"})
    started = f.clock()
    with use_runtime(f.runtime):
        result = update_fleet(dispatch="inline")
    rows = _by_asset(result)
    assert result["halted"] is None
    assert {row["outcome"] for row in rows.values()} == {"updated"}
    assert {f.running(a) for a in rows} == {"1.0.1"}
    canary_done = rows["docker:local/canary-1"]["slot_released"]
    assert all(rows[a]["slot_acquired"] >= canary_done for a in rows if "web-" in a)
    # the soak ran on the runtime's clock: 10 minutes between the waves, besides the monitoring
    assert f.clock() - started >= timedelta(minutes=10)


@pytest.mark.parametrize("budget", [0, 1])
def test_a_wave_halts_the_next_only_beyond_its_failure_budget(make: Any, budget: int) -> None:
    config = f"""\
assets:
  "docker:local/a-*": {{group: alpha}}
  "docker:local/b-*": {{group: beta}}
fleet:
  failure_budget: {budget}
  order: [alpha, beta]
"""
    f = make(
        config,
        {"a-1": "1.0.0", "a-2": "2.0.0", "b-1": "1.0.0"},
        tags=["1.0.0", "1.0.1", "2.0.0", "2.0.1"],
    )
    f.break_version("2.0.1")  # a-2's patch fails; a-1's and b-1's work
    with use_runtime(f.runtime):
        result = update_fleet(dispatch="inline")
    rows = _by_asset(result)
    assert [w["name"] for w in result["waves"]] == ["alpha", "beta"]
    assert rows["docker:local/a-1"]["outcome"] == "updated"
    assert rows["docker:local/a-2"]["outcome"] == "rolled_back"
    assert result["waves"][0]["failures"] == 1
    if budget == 1:
        assert result["halted"] is None
        assert rows["docker:local/b-1"]["outcome"] == "updated"
        assert f.running("docker:local/b-1") == "1.0.1"
    else:
        assert "wave alpha: 1 of 2 updates failed" in result["halted"]
        assert rows["docker:local/b-1"]["outcome"] == "halted"
        assert f.running("docker:local/b-1") == "1.0.0"


def _overlap(rows: list[dict[str, Any]]) -> int:
    """The most runs that held their slots at the same moment."""
    edges = []
    for row in rows:
        edges.append((datetime.fromisoformat(row["slot_acquired"]), 1))
        edges.append((datetime.fromisoformat(row["slot_released"]), -1))
    current = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        current += step
        peak = max(peak, current)
    return peak


def test_concurrency_limits_hold_globally_and_per_target(make: Any) -> None:
    config = "fleet:\n  max_parallel: 3\n  max_parallel_per_target: 2\n"
    local = {f"web-{i}": "1.0.0" for i in range(4)}
    edge = {f"api-{i}": "1.0.0" for i in range(3)}
    f = make(config, local, edge=edge, apply_seconds=2.0)
    with use_runtime(f.runtime):
        result = update_fleet(dispatch="inline")
    rows = result["assets"]
    assert len(rows) == 7
    assert {row["outcome"] for row in rows} == {"updated"}
    assert _overlap(rows) <= 3
    assert _overlap(rows) >= 2, "the runs should overlap, or the limits prove nothing"
    for host in ("local", "edge"):
        assert _overlap([r for r in rows if r["asset"].startswith(f"docker:{host}/")]) <= 2
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(GLOBAL_LIMIT).limit == 3
        limit = client.read_global_concurrency_limit_by_name(target_limit("docker:edge/api-0"))
        assert limit.limit == 2


WINDOW_CONFIG = """\
policy:
  default:
    windows: ["03:30-04:00 UTC"]
fleet:
  window_wait: {wait}
"""


def test_an_asset_outside_its_window_waits_when_it_opens_soon(make: Any) -> None:
    f = make(WINDOW_CONFIG.format(wait="1h"), {"web": "1.0.0"})
    assert f.clock().strftime("%H:%M") == "03:00"
    with use_runtime(f.runtime):
        result = update_fleet(dispatch="inline")
    row = result["assets"][0]
    assert row["action"] == "wait for window"
    assert "waits until 2026-11-25T03:30:00+00:00" in row["reasons"]
    assert row["outcome"] == "updated"
    assert f.running("docker:local/web") == "1.0.1"
    assert f.clock().strftime("%H:%M") >= "03:30"


def test_an_asset_outside_its_window_is_deferred_when_it_opens_later(make: Any) -> None:
    f = make(WINDOW_CONFIG.format(wait="10m"), {"web": "1.0.0"})
    with use_runtime(f.runtime):
        result = update_fleet(dispatch="inline")
    row = result["assets"][0]
    assert row["action"] == "deferred"
    assert "deferred to the next scheduled run" in row["reasons"]
    assert row["outcome"] is None
    assert result["waves"] == []
    assert f.running("docker:local/web") == "1.0.0"
    assert f.local.calls == []


def test_dry_run_plans_and_changes_nothing(make: Any) -> None:
    f = make(CANARY_CONFIG, {"canary-1": "1.0.0", "web-a": "1.0.0"})
    with use_runtime(f.runtime):
        result = update_fleet(dry_run=True, dispatch="inline")
    assert result["dry_run"] is True
    assert [w["name"] for w in result["waves"]] == ["canary", "web"]
    assert {row["action"] for row in result["assets"]} == {"update"}
    assert f.local.calls == []
    assert f.store.journal.count() == 0


def _paused_fleet_run(deadline: float = 90) -> Any:
    end = time.monotonic() + deadline
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            for run in paused_runs(client, "fleet update"):
                return run.id
            time.sleep(0.3)
    raise AssertionError("the fleet run did not pause for the plan approval")


@pytest.mark.parametrize("approve", [True, False])
def test_one_plan_approval_covers_every_update_that_needs_one(make: Any, approve: bool) -> None:
    config = (
        "approvals:\n  poll_interval: 1s\n"
        "policy:\n  default:\n    approval:\n      approvers: [alice]\n"
    )
    f = make(
        config,
        {"web-a": "1.0.1", "web-b": "1.0.1", "web-c": "1.0.0"},
        tags=["1.0.0", "1.0.1", "1.1.0"],
    )
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = update_fleet(dispatch="inline", approval="plan")
        except BaseException as error:
            box["error"] = error

    with use_runtime(f.runtime):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        run_id = _paused_fleet_run()
        resume_flow_run(run_id, run_input={"approve": approve, "approver": "alice", "reason": "ok"})
        thread.join(120)
    assert "error" not in box, box.get("error")
    rows = _by_asset(box["result"])
    minor = ("docker:local/web-a", "docker:local/web-b")
    # the patch of web-c needs no approval either way
    assert rows["docker:local/web-c"]["outcome"] == "updated"
    assert f.running("docker:local/web-c") == "1.0.1"
    for name in minor:
        assert rows[name]["outcome"] == ("updated" if approve else "rejected")
        assert f.running(name) == ("1.1.0" if approve else "1.0.1")
    approvals = [
        (r.asset_id, r.actor) for r in f.store.audit.export() if r.event == "approval.approved"
    ]
    if approve:
        # the decision itself (no single asset), then the update of each asset it covered
        assert approvals[0] == (None, "alice")
        assert sorted(approvals[1:]) == [(name, "alice") for name in minor]
    else:
        assert approvals == []
        rejected = [
            (r.asset_id, r.actor) for r in f.store.audit.export() if r.event == "approval.rejected"
        ]
        assert rejected[0] == (None, "alice")
        assert sorted(rejected[1:]) == [(name, "alice") for name in minor]


def test_a_run_that_never_began_is_not_a_failure_of_its_wave(make: Any) -> None:
    """Another run holds web-a's lock: its fleet run changes nothing, opens no journal row, and
    the wave (budget 0) still counts no failure, so the next wave runs."""
    config = CANARY_CONFIG.replace("  soak: 10m\n", "  order: [web, zeta]\n")
    config = config.replace(
        '"docker:local/web-*": {group: web}',
        '"docker:local/web-*": {group: web}\n  "docker:local/z-*": {group: zeta}',
    )
    f = make(config, {"web-a": "1.0.0", "web-b": "1.0.0", "z-1": "1.0.0"})
    with use_runtime(f.runtime), f.store.locks.hold("docker:local/web-a"):
        result = update_fleet(dispatch="inline")
    rows = _by_asset(result)
    assert rows["docker:local/web-a"]["outcome"] == "not_started"
    assert "is being changed by another run right now" in rows["docker:local/web-a"]["reasons"]
    assert f.running("docker:local/web-a") == "1.0.0"
    assert result["halted"] is None
    assert rows["docker:local/web-b"]["outcome"] == "updated"
    assert rows["docker:local/z-1"]["outcome"] == "updated"
    assert result["waves"][0]["failures"] == 0


def test_two_fleet_runs_at_once_update_each_asset_once_within_the_global_limit(
    make: Any,
) -> None:
    config = "fleet:\n  max_parallel: 2\n"
    f = make(config, {f"web-{i}": "1.0.0" for i in range(4)}, apply_seconds=1.0)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(update_fleet(dispatch="inline"))
        except BaseException as error:
            errors.append(error)

    with use_runtime(f.runtime):
        threads = [threading.Thread(target=run, daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    assert not errors, errors
    assert len(results) == 2
    applies = [call[1] for call in f.local.calls if call[0] == "apply"]
    assert sorted(applies) == sorted(f.local.running), "every asset exactly once"
    assert {f.running(a) for a in f.local.running} == {"1.0.1"}
    held = [r for result in results for r in result["assets"] if r["slot_acquired"]]
    assert _overlap(held) <= 2
    # the later fleet finds each asset done: planned as no update, or its run finds nothing
    # newer, or it could not take the asset's lock
    outcomes = [str(r["outcome"]) for result in results for r in result["assets"]]
    assert outcomes.count("updated") == 4
    assert set(outcomes) <= {"updated", "None", "no_update", "skipped", "not_started"}
