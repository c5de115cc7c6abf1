"""``/metrics``: computed from the store at scrape time, scraped over HTTP and by Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from safe_updater.adapters.store import StateStore
from safe_updater.adapters.store.assets import PendingUpdate
from safe_updater.config import AppConfig
from safe_updater.domain.assets import Asset, AssetId, AssetKind, ImageRef
from safe_updater.domain.journal import Outcome, Phase
from safe_updater.domain.plans import AppliedChange
from safe_updater.flows.approve_asset import decide_waiting_update
from safe_updater.flows.scan_inventory import scan_inventory
from safe_updater.flows.update_asset import update_asset
from safe_updater.metrics import build_registry, serve_metrics, stop_metrics
from safe_updater.runtime import Runtime, use_runtime
from support.fakes import FakeClock, FakeHealthPlanner, FakeInventory, FakeUpdater, FakeWorld
from support.prometheus_target import scraped_metrics
from support.testbed import PrometheusInfo

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def asset(i: int, kind: AssetKind = AssetKind.DOCKER) -> Asset:
    if kind is AssetKind.DOCKER:
        return Asset(
            id=AssetId(f"docker:local/app{i:05d}"),
            kind=kind,
            target="local",
            name=f"app{i:05d}",
            image=ImageRef(registry="127.0.0.1:5000", repository="demo/web", tag="1.0.0"),
            current_version="1.0.0",
        )
    if kind is AssetKind.KUBERNETES:
        return Asset(
            id=AssetId(f"k8s:kind/default/Deployment/web{i}"),
            kind=kind,
            target="kind",
            name=f"web{i}",
            namespace="default",
            workload_kind="Deployment",
            container="web",
            image=ImageRef(registry="127.0.0.1:5000", repository="demo/web", tag="1.0.0"),
            current_version="1.0.0",
        )
    return Asset(
        id=AssetId(f"helm:kind/web/rel{i}"),
        kind=kind,
        target="kind",
        name=f"rel{i}",
        namespace="web",
        chart="web",
        current_version="1.2.3",
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[StateStore]:
    opened = StateStore.open(f"sqlite:///{tmp_path}/state.db", clock=clock)
    try:
        yield opened
    finally:
        opened.close()


def attempt(
    store: StateStore,
    clock: Clock,
    asset_id: str,
    outcome: Outcome | None,
    *,
    change: str = "patch",
    seconds: float = 0,
) -> None:
    key = f"{asset_id}-{clock.now.isoformat()}-{outcome}"
    row = store.journal.open_attempt(
        asset_id=asset_id,
        from_version="1.0.0",
        to_version="1.0.1",
        change_type=change,
        idempotency_key=key,
    )
    clock.now += timedelta(seconds=seconds)
    if outcome is not None:
        store.journal.close(row.id, outcome, "test")
    clock.now += timedelta(seconds=1)


def verified(
    store: StateStore, clock: Clock, asset_id: str, *, verify: float, healthy: bool = True
) -> None:
    """An attempt to 1.0.1 that applies (3 s), verifies for ``verify`` s, commits or rolls back."""
    row = store.journal.open_attempt(
        asset_id=asset_id,
        from_version="1.0.0",
        to_version="1.0.1",
        change_type="patch",
        idempotency_key=f"{asset_id}-{clock.now.isoformat()}-verified",
    )
    store.journal.advance(row.id, Phase.APPLYING)
    clock.now += timedelta(seconds=3)
    store.journal.advance(row.id, Phase.VERIFYING)
    clock.now += timedelta(seconds=verify)
    store.journal.advance(row.id, Phase.COMMITTING if healthy else Phase.ROLLING_BACK)
    clock.now += timedelta(seconds=1)
    store.journal.close(row.id, Outcome.UPDATED if healthy else Outcome.ROLLED_BACK, "test")
    clock.now += timedelta(seconds=1)


def fill(store: StateStore, clock: Clock) -> None:
    store.assets.upsert(
        [asset(i) for i in range(3)]
        + [asset(i, AssetKind.KUBERNETES) for i in range(2)]
        + [asset(0, AssetKind.HELM)]
    )
    attempt(store, clock, "docker:local/app00000", Outcome.UPDATED, seconds=42)
    attempt(store, clock, "docker:local/app00000", Outcome.UPDATED, seconds=7)
    attempt(store, clock, "docker:local/app00001", Outcome.ROLLED_BACK, change="minor", seconds=90)
    # waiting: app00002's newest request; k8s web0's request was settled by a later attempt
    attempt(store, clock, "docker:local/app00002", Outcome.AWAITING_APPROVAL, change="minor")
    attempt(store, clock, "k8s:kind/default/Deployment/web0", Outcome.AWAITING_APPROVAL)
    attempt(store, clock, "k8s:kind/default/Deployment/web0", Outcome.REJECTED)
    attempt(store, clock, "k8s:kind/default/Deployment/web1", None)  # still open
    store.quarantine.add("docker:local/app00001", "1.1.0", "rolled back")
    store.quarantine.add("docker:local/app00001", "1.1.1", "rolled back")
    store.budgets.record_request("127.0.0.1:5000", 200)
    store.budgets.record_request("127.0.0.1:5000", 200)
    store.budgets.record_request("127.0.0.1:5000", 429)


def scrape(store: StateStore, clock: Clock | None = None) -> dict[str, Any]:
    """GET /metrics from the helper's server; ``{sample name: {labels tuple: value}}``."""
    registry = build_registry(store, clock=clock) if clock is not None else None
    server, thread = serve_metrics(store, "127.0.0.1", 0, registry=registry)
    try:
        port = server.server_address[1]
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False)
        response.raise_for_status()
    finally:
        stop_metrics(server, thread)
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def one(samples: dict[str, Any], name: str, **labels: str) -> float:
    value: float = samples[name][tuple(sorted(labels.items()))]
    return value


def test_scraped_metrics_match_the_store(store: StateStore, clock: Clock) -> None:
    fill(store, clock)
    got = scrape(store, clock)

    assert one(got, "safe_updater_store_up") == 1
    assert one(got, "safe_updater_assets", kind="docker") == 3
    assert one(got, "safe_updater_assets", kind="k8s") == 2
    assert one(got, "safe_updater_assets", kind="helm") == 1
    assert one(got, "safe_updater_pending_approvals") == 1
    assert one(got, "safe_updater_quarantined_versions") == 2
    assert one(got, "safe_updater_open_attempts") == 1
    assert one(got, "safe_updater_updates_total", outcome="updated", change_type="patch") == 2
    assert one(got, "safe_updater_updates_total", outcome="rolled_back", change_type="minor") == 1
    assert one(got, "safe_updater_updates_total", outcome="failed", change_type="major") == 0
    assert one(got, "safe_updater_rollbacks_total") == 1
    requests = "safe_updater_registry_requests_total"
    assert one(got, requests, registry="127.0.0.1:5000", status="200") == 2
    assert one(got, requests, registry="127.0.0.1:5000", status="429") == 1
    assert one(got, "safe_updater_last_successful_scan_timestamp_seconds") == T0.timestamp()

    name = "safe_updater_update_duration_seconds"
    assert one(got, name + "_count", outcome="updated") == 2
    assert one(got, name + "_sum", outcome="updated") == pytest.approx(49, abs=0.01)
    assert one(got, name + "_bucket", outcome="updated", le="5.0") == 0
    assert one(got, name + "_bucket", outcome="updated", le="10.0") == 1
    assert one(got, name + "_bucket", outcome="updated", le="60.0") == 2
    assert one(got, name + "_bucket", outcome="rolled_back", le="60.0") == 0
    assert one(got, name + "_bucket", outcome="rolled_back", le="120.0") == 1
    assert one(got, name + "_bucket", outcome="rolled_back", le="+Inf") == 1


def test_verify_durations_and_pending_updates_are_scraped(store: StateStore, clock: Clock) -> None:
    store.assets.upsert([asset(i) for i in range(4)])
    store.assets.record_pending(
        {
            "docker:local/app00000": PendingUpdate("auto", "patch", "1.0.1"),
            "docker:local/app00001": PendingUpdate("auto", "patch", "1.0.1"),
            "docker:local/app00002": PendingUpdate("approve", "major", "2.0.0"),
            "docker:local/app00003": None,
        }
    )
    got = scrape(store, clock)
    pending = "safe_updater_pending_updates"
    assert one(got, pending, action="auto", change_type="patch") == 2
    assert one(got, pending, action="approve", change_type="major") == 1
    assert one(got, pending, action="approve", change_type="digest") == 0  # zeros exported
    verify = "safe_updater_verify_duration_seconds"
    assert one(got, verify + "_count", outcome="updated") == 0

    verified(store, clock, "docker:local/app00000", verify=8)
    verified(store, clock, "docker:local/app00001", verify=45, healthy=False)
    got = scrape(store, clock)
    # app00000 landed its pending update; app00001's rollback quarantined nothing: still due.
    assert one(got, pending, action="auto", change_type="patch") == 1
    assert one(got, verify + "_count", outcome="updated") == 1
    assert one(got, verify + "_sum", outcome="updated") == pytest.approx(8, abs=0.01)
    assert one(got, verify + "_bucket", outcome="updated", le="5.0") == 0
    assert one(got, verify + "_bucket", outcome="updated", le="10.0") == 1
    assert one(got, verify + "_count", outcome="rolled_back") == 1
    assert one(got, verify + "_sum", outcome="rolled_back") == pytest.approx(45, abs=0.01)
    assert one(got, verify + "_bucket", outcome="rolled_back", le="30.0") == 0
    assert one(got, verify + "_bucket", outcome="rolled_back", le="60.0") == 1
    # Open to close is longer than the verification alone (apply, commit or rollback).
    assert one(got, "safe_updater_update_duration_seconds_sum", outcome="updated") == (
        pytest.approx(8 + 3 + 1, abs=0.01)
    )


def test_gauges_follow_writes_made_after_the_registry_was_built(
    store: StateStore, clock: Clock, tmp_path: Path
) -> None:
    registry = build_registry(store)
    assert b'safe_updater_assets{kind="docker"} 0.0' in generate_latest(registry)
    # Another process (a flow run) writes through its own connection to the same database.
    other = StateStore.open(f"sqlite:///{tmp_path}/state.db")
    try:
        other.assets.upsert([asset(i) for i in range(5)])
    finally:
        other.close()
    assert b'safe_updater_assets{kind="docker"} 5.0' in generate_latest(registry)


def test_empty_store_has_zero_series_and_no_scan_time(store: StateStore) -> None:
    got = scrape(store)
    assert one(got, "safe_updater_assets", kind="docker") == 0
    assert one(got, "safe_updater_pending_approvals") == 0
    assert one(got, "safe_updater_update_duration_seconds_count", outcome="updated") == 0
    assert "safe_updater_last_successful_scan_timestamp_seconds" not in got


def test_durations_only_cover_the_lookback(store: StateStore, clock: Clock) -> None:
    attempt(store, clock, "docker:local/app00000", Outcome.UPDATED, seconds=3)
    clock.now += timedelta(days=31)
    attempt(store, clock, "docker:local/app00000", Outcome.UPDATED, seconds=3)
    registry = build_registry(store, clock=clock)
    text = generate_latest(registry).decode()
    assert 'safe_updater_update_duration_seconds_count{outcome="updated"} 1.0' in text
    assert 'safe_updater_updates_total{change_type="patch",outcome="updated"} 2.0' in text


def test_an_unreadable_store_reports_store_up_0(store: StateStore) -> None:
    registry = build_registry(store)
    # A store the collector cannot read (here: a table gone) must not turn into an HTTP 500.
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE quarantine")
    text = generate_latest(registry).decode()
    assert "safe_updater_store_up 0.0" in text
    assert "safe_updater_assets{" not in text


def test_scrape_with_10000_assets_is_a_fixed_number_of_aggregate_queries(
    store: StateStore, clock: Clock
) -> None:
    statements: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    registry = build_registry(store, clock=clock)
    generate_latest(registry)
    empty = [s for s in statements if s.lstrip().upper().startswith("SELECT")]

    store.assets.upsert([asset(i) for i in range(10_000)])
    store.assets.record_pending(
        {f"docker:local/app{i:05d}": PendingUpdate("auto", "patch", "1.0.1") for i in range(3000)}
    )
    for i in range(200):
        verified(store, clock, f"docker:local/app{i:05d}", verify=5, healthy=i % 4 != 0)
    statements.clear()
    text = generate_latest(registry).decode()
    full = [s for s in statements if s.lstrip().upper().startswith("SELECT")]

    assert 'safe_updater_assets{kind="docker"} 10000.0' in text
    # The 150 attempts updated to the scan's target settled theirs; the 50 rolled back kept
    # theirs (nothing was quarantined, so the next run would try again).
    assert 'safe_updater_pending_updates{action="auto",change_type="patch"} 2850.0' in text
    assert 'safe_updater_verify_duration_seconds_count{outcome="updated"} 150.0' in text
    assert len(full) == len(empty) <= 12  # the same queries, however many rows there are
    for sql in full:
        lowered = sql.lower()
        if "from assets" in lowered or "from attempts" in lowered or "from quarantine" in lowered:
            assert "count(" in lowered or "max(" in lowered, sql
    # The inventory and pending counts read an index only (no table rows are loaded).
    with store.engine.connect() as conn:
        for sql in (
            "SELECT kind, count(*) FROM assets GROUP BY kind",
            "SELECT pending_action, pending_change_type, count(*) FROM assets "
            "WHERE pending_action IS NOT NULL GROUP BY pending_action, pending_change_type",
        ):
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            assert any("COVERING INDEX" in str(row) for row in plan), plan


@pytest.mark.prometheus
def test_real_prometheus_scrapes_our_metrics(
    prometheus: PrometheusInfo, store: StateStore, clock: Clock
) -> None:
    fill(store, clock)
    with scraped_metrics(prometheus, store) as instance:
        up = prometheus.query(f'up{{instance="{instance}"}}')
        assert up and float(up[0]["value"][1]) == 1
        result = prometheus.query(f'safe_updater_assets{{instance="{instance}"}}')
        by_kind = {r["metric"]["kind"]: float(r["value"][1]) for r in result}
        assert by_kind == {"docker": 3.0, "k8s": 2.0, "helm": 1.0}
        rollbacks = prometheus.query(f'safe_updater_rollbacks_total{{instance="{instance}"}}')
        assert float(rollbacks[0]["value"][1]) == 1


# -- real flow runs --------------------------------------------------------------------------
# The flows against the session's Prefect server with fakes of our own ports (as in
# tests/flows/), writing a real SQLite store; the scrape reads it through another StateStore,
# as `safe-updater serve` in another process would. The store shares the runtime's fake clock,
# whose sleep is what the health monitoring waits on: a verification takes exactly the fake
# seconds the monitor slept (10 s window when healthy, 1 s to two failures when not).

FLEET = {
    # target: (asset name, running version, repository, its tags)
    "local": ("web", "1.0.0", "127.0.0.1:5000/demo/web", ["1.0.0", "1.0.1"]),  # auto patch
    "edge": ("api", "2.0.0", "127.0.0.1:5000/demo/api", ["2.0.0", "2.0.1"]),  # auto, broken
    "db": ("db", "3.0.0", "127.0.0.1:5000/demo/db", ["3.0.0", "3.1.0"]),  # minor: approve
}


class RepoRegistry:
    def __init__(self, tags: dict[str, list[str]]) -> None:
        self.tags = tags

    def list_tags(self, image: ImageRef) -> list[str]:
        return list(self.tags[image.name])

    def digest(self, image: ImageRef) -> str:
        return f"sha256:{'0' * 63}1"

    def created_at(self, image: ImageRef) -> datetime | None:
        return None


class WorldsHealth:
    """The fake health planner of each target's world (a probe sees its own host)."""

    def __init__(self, worlds: dict[str, FakeWorld]) -> None:
        self.planners = {target: FakeHealthPlanner(world) for target, world in worlds.items()}

    def plan(self, asset: Asset, applied: AppliedChange | None) -> tuple[list[Any], Any]:
        return self.planners[asset.target].plan(asset, applied)


@pytest.fixture
def fleet(tmp_path: Path, prefect_server: None) -> Iterator[tuple[Runtime, FakeClock, str]]:
    worlds = {
        target: FakeWorld(running={f"docker:{target}/{name}": version})
        for target, (name, version, _, _) in FLEET.items()
    }
    worlds["edge"].broken.add("2.0.1")
    clock = FakeClock()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore.open(url, clock=clock)
    runtime = Runtime(
        config=AppConfig(),
        store=store,
        registry=RepoRegistry({repo: tags for _, _, repo, tags in FLEET.values()}),
        inventories=[
            FakeInventory(worlds[target], target, repo) for target, (_, _, repo, _) in FLEET.items()
        ],
        updaters={(AssetKind.DOCKER, t): FakeUpdater(w) for t, w in worlds.items()},
        health=WorldsHealth(worlds),
        clock=clock,
        sleep=clock.sleep,
        closers=[store.close],
    )
    with use_runtime(runtime):
        yield runtime, clock, url
    runtime.close()


def scrape_from_another_store(url: str, clock: FakeClock) -> dict[str, Any]:
    other = StateStore.open(url)
    try:
        text = generate_latest(build_registry(other, clock=clock)).decode()
    finally:
        other.close()
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def pending_total(samples: dict[str, Any]) -> float:
    return float(sum(samples["safe_updater_pending_updates"].values()))


def test_flow_runs_show_pending_updates_then_verify_durations(
    fleet: tuple[Runtime, FakeClock, str],
) -> None:
    runtime, clock, url = fleet
    plan = scan_inventory()
    assert len(plan) == 3
    got = scrape_from_another_store(url, clock)
    pending = "safe_updater_pending_updates"
    assert one(got, pending, action="auto", change_type="patch") == 2
    assert one(got, pending, action="approve", change_type="minor") == 1
    assert pending_total(got) == 3
    verify = "safe_updater_verify_duration_seconds"
    assert one(got, verify + "_count", outcome="updated") == 0

    assert update_asset("docker:local/web", approval="defer")["outcome"] == "updated"
    got = scrape_from_another_store(url, clock)
    assert one(got, pending, action="auto", change_type="patch") == 1
    assert one(got, verify + "_count", outcome="updated") == 1
    assert one(got, verify + "_sum", outcome="updated") == pytest.approx(10, abs=0.01)
    assert one(got, verify + "_bucket", outcome="updated", le="5.0") == 0
    assert one(got, verify + "_bucket", outcome="updated", le="10.0") == 1

    assert update_asset("docker:edge/api", approval="defer")["outcome"] == "rolled_back"
    got = scrape_from_another_store(url, clock)
    assert one(got, verify + "_count", outcome="rolled_back") == 1
    assert one(got, verify + "_sum", outcome="rolled_back") == pytest.approx(1, abs=0.01)
    assert one(got, verify + "_bucket", outcome="rolled_back", le="5.0") == 1
    assert one(got, "safe_updater_rollbacks_total") == 1
    assert one(got, pending, action="auto", change_type="patch") == 0  # 2.0.1 is quarantined

    # The minor waits for approval (still pending) until someone approves it.
    assert update_asset("docker:db/db", approval="defer")["outcome"] == "awaiting_approval"
    got = scrape_from_another_store(url, clock)
    assert one(got, pending, action="approve", change_type="minor") == 1
    assert one(got, "safe_updater_pending_approvals") == 1
    approved = decide_waiting_update("docker:db/db", approve=True, approver="alice")
    assert approved["outcome"] == "updated"
    got = scrape_from_another_store(url, clock)
    assert pending_total(got) == 0
    assert one(got, verify + "_count", outcome="updated") == 2
    assert one(got, verify + "_sum", outcome="updated") == pytest.approx(20, abs=0.01)

    # A new scan agrees: everything is on its newest allowed version, 2.0.1 is quarantined.
    scan_inventory()
    got = scrape_from_another_store(url, clock)
    assert pending_total(got) == 0
    assert runtime.store.assets.pending() == {}
