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
from safe_updater.domain.assets import Asset, AssetId, AssetKind, ImageRef
from safe_updater.domain.journal import Outcome
from safe_updater.metrics import build_registry, serve_metrics, stop_metrics
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
    for i in range(200):
        attempt(store, clock, f"docker:local/app{i:05d}", Outcome.UPDATED, seconds=5)
    statements.clear()
    text = generate_latest(registry).decode()
    full = [s for s in statements if s.lstrip().upper().startswith("SELECT")]

    assert 'safe_updater_assets{kind="docker"} 10000.0' in text
    assert len(full) == len(empty) <= 10  # the same queries, however many rows there are
    for sql in full:
        lowered = sql.lower()
        if "from assets" in lowered or "from attempts" in lowered or "from quarantine" in lowered:
            assert "count(" in lowered or "max(" in lowered, sql
    # The inventory count reads the kind index only (no table rows are loaded).
    with store.engine.connect() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT kind, count(*) FROM assets GROUP BY kind"
        ).fetchall()
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
