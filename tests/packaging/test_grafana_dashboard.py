"""deployments/grafana/safe-updater-dashboard.json: valid, and only metrics that really exist.

The metric names come from a real scrape of `safe_updater.metrics.build_registry` over a store
holding an asset, an attempt of each applied outcome, a quarantined version and a registry
request, so every family (the scan time too) is present. The `prometheus` test has the
test-bed Prometheus scrape that registry and evaluates every panel's query.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from safe_updater.adapters.store import StateStore
from safe_updater.domain.assets import Asset, AssetId, AssetKind, ImageRef
from safe_updater.domain.journal import Outcome
from safe_updater.metrics import build_registry
from support.prometheus_target import scraped_metrics, wait_for
from support.testbed import PrometheusInfo

DASHBOARD = Path(__file__).resolve().parents[2] / "deployments" / "grafana"
DASHBOARD_FILE = DASHBOARD / "safe-updater-dashboard.json"

METRIC = re.compile(r"\bsafe_updater_[a-z_]+\b")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC) - timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    clock = Clock()
    opened = StateStore.open(f"sqlite:///{tmp_path}/state.db", clock=clock)
    opened.assets.upsert(
        [
            Asset(
                id=AssetId("docker:local/web"),
                kind=AssetKind.DOCKER,
                target="local",
                name="web",
                image=ImageRef(registry="127.0.0.1:5000", repository="demo/web", tag="1.0.0"),
                current_version="1.0.0",
            )
        ]
    )
    for n, outcome in enumerate([Outcome.UPDATED, Outcome.ROLLED_BACK, Outcome.FAILED]):
        row = opened.journal.open_attempt(
            asset_id="docker:local/web",
            from_version="1.0.0",
            to_version=f"1.0.{n + 1}",
            change_type="patch",
            idempotency_key=f"k{n}",
        )
        clock.now += timedelta(seconds=30)
        opened.journal.close(row.id, outcome, "test")
    opened.quarantine.add("docker:local/web", "1.0.2", "rolled back")
    opened.budgets.record_request("127.0.0.1:5000", 200)
    try:
        yield opened
    finally:
        opened.close()


def exported(store: StateStore) -> dict[str, set[str]]:
    """{sample name: its label names} from one scrape of the real collector."""
    text = generate_latest(build_registry(store)).decode()
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return data


def panels(data: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in data["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return found


def expressions(data: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(data) for t in p.get("targets", []) if t.get("expr")]
    for variable in data["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def test_dashboard_is_valid_grafana_json() -> None:
    data = dashboard()
    assert data["title"] and data["uid"] == "safe-updater"
    assert isinstance(data["schemaVersion"], int)
    ids = [p["id"] for p in panels(data)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(data):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            # One data source variable, so the file imports into any Grafana.
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert {v["name"] for v in data["templating"]["list"]} == {"datasource", "instance"}


def test_every_query_uses_only_exported_metrics_and_labels(store: StateStore) -> None:
    samples = exported(store)
    # The seeded store yields every family the module exports (a scan time, a histogram...).
    assert "safe_updater_last_successful_scan_timestamp_seconds" in samples
    assert "safe_updater_update_duration_seconds_bucket" in samples
    exprs = expressions(dashboard())
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used, "no safe_updater_* metric in the dashboard"
    assert used <= set(samples), f"not exported: {sorted(used - set(samples))}"

    for expr in exprs:
        labels = {"instance", "job"}  # added by Prometheus at scrape time
        for name in METRIC.findall(expr):
            labels |= samples[name]
        for group in GROUPING.findall(expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in labels, f"{label!r} is no label of the metrics in {expr}"
        for matchers in MATCHERS.findall(expr):
            for label in re.findall(r"(\w+)\s*[=!]~?", matchers):
                assert label in labels, f"{label!r} is no label of the metrics in {expr}"


def test_the_requested_panels_are_there() -> None:
    exprs = " ".join(expressions(dashboard()))
    for metric in (
        "safe_updater_updates_total",
        "safe_updater_rollbacks_total",
        "safe_updater_update_duration_seconds_bucket",
        "safe_updater_assets",
        "safe_updater_pending_approvals",
        "safe_updater_quarantined_versions",
        "safe_updater_registry_requests_total",
        "safe_updater_last_successful_scan_timestamp_seconds",
    ):
        assert metric in exprs, metric
    assert "histogram_quantile(" in exprs
    assert re.search(r"by \(outcome\)", exprs) and re.search(r"by \(change_type\)", exprs)


def grafana_to_promql(expr: str, instance: str) -> str:
    """Grafana's variables as Grafana would send them, for one scrape target."""
    # A regex inside a PromQL string: the regex's backslashes are escaped once more.
    pattern = re.escape(instance).replace("\\", "\\\\")
    return (
        expr.replace("$__rate_interval", "30s")
        .replace("$__range", "1h")
        .replace('instance=~"$instance"', f'instance=~"{pattern}"')
    )


@pytest.mark.prometheus
def test_every_panel_query_runs_on_a_real_prometheus(
    prometheus: PrometheusInfo, store: StateStore
) -> None:
    with scraped_metrics(prometheus, store) as instance:
        # rate() needs two samples; the test-bed Prometheus scrapes every second.
        wait_for(
            prometheus,
            f'count_over_time(safe_updater_store_up{{instance="{instance}"}}[1m]) >= 3',
            timeout=30,
        )
        for expr in expressions(dashboard()):
            if "label_values(" in expr:
                continue  # a Grafana function, not PromQL
            promql = grafana_to_promql(expr, instance)
            response = httpx.get(
                f"{prometheus.url}/api/v1/query",
                params={"query": promql},
                timeout=10,
                trust_env=False,
            )
            body = response.json()
            assert response.status_code == 200 and body["status"] == "success", (promql, body)
            # A query ending in a filter may rightly be empty (no change in the last hour).
            if not re.search(r"[<>]=?\s*\d+\s*$", promql):
                assert body["data"]["result"], f"no data for {promql}"
