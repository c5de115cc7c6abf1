"""PromQL instant queries and the Prometheus health probe: parsing, errors, a real server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from safe_updater.adapters.probes import build_probes
from safe_updater.adapters.prometheus_query import PrometheusProbe, PrometheusQuery
from safe_updater.adapters.store import StateStore
from safe_updater.domain.assets import Asset, AssetId, AssetKind
from safe_updater.domain.errors import InvalidInputError, PermanentError, TransientError
from safe_updater.domain.health import PrometheusCheck
from support.prometheus_target import scraped_metrics
from support.testbed import PrometheusInfo

AT = datetime(2026, 1, 1, tzinfo=UTC)
URL = "http://127.0.0.1:9090"


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"i": str(i)}, "value": [1.0, v]} for i, v in enumerate(values)],
        },
    }


def transport(
    status: int, body: Any, seen: list[httpx.Request] | None = None
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, content=json.dumps(body).encode())

    return httpx.MockTransport(handler)


def probe(body: Any, status: int = 200, **spec: Any) -> PrometheusProbe:
    check = PrometheusCheck(url=URL, query="error_rate", **{"threshold": 0.05, **spec})
    return PrometheusProbe(check, transport=transport(status, body))


def test_query_sends_the_promql_and_parses_a_vector() -> None:
    seen: list[httpx.Request] = []
    with PrometheusQuery(URL + "/", transport=transport(200, vector("1", "2.5"), seen)) as q:
        assert q.values('sum(rate(x{job="a"}[1m]))') == [1.0, 2.5]
    assert seen[0].url.path == "/api/v1/query"
    assert seen[0].url.params["query"] == 'sum(rate(x{job="a"}[1m]))'


def test_scalar_nan_and_empty_results() -> None:
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}
    with PrometheusQuery(URL, transport=transport(200, scalar)) as q:
        assert q.values("3") == [3.0]
    with PrometheusQuery(URL, transport=transport(200, vector("NaN", "+Inf"))) as q:
        nan, inf = q.values("x")
        assert nan != nan and inf == float("inf")
    with PrometheusQuery(URL, transport=transport(200, vector())) as q:
        assert q.values("x") == []


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (
            400,
            {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"},
            InvalidInputError,
            "parse error at char 3",
        ),
        (422, {"status": "error", "error": "many-to-many matching"}, InvalidInputError, "many"),
        (503, {"status": "error", "error": "overloaded"}, TransientError, "503"),
        (404, "not found", PermanentError, "404"),
        (
            200,
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            InvalidInputError,
            "matrix",
        ),
        (
            200,
            {"status": "success", "data": {"resultType": "vector", "result": [{}]}},
            PermanentError,
            "malformed",
        ),
    ],
)
def test_errors_are_translated(status: int, body: Any, error: type[Exception], text: str) -> None:
    with PrometheusQuery(URL, transport=transport(status, body)) as q, pytest.raises(error) as exc:
        q.values("x")
    assert text in str(exc.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_transient_and_a_failing_sample() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PrometheusQuery(url, timeout=2) as q, pytest.raises(TransientError, match="unreachable"):
        q.values("x")
    sample = PrometheusProbe(PrometheusCheck(url=url, query="x", threshold=1)).check(AT)
    assert sample.ok is False and "unreachable" in sample.detail


@pytest.mark.parametrize(
    ("values", "op", "ok", "text"),
    [
        (["0.01"], "<", True, "0.01 < 0.05"),
        (["0.2"], "<", False, "crossed the threshold"),
        (["0.05"], "<", False, "crossed"),
        (["0.05"], "<=", True, "0.05 <= 0.05"),
        (["0.01", "0.3"], "<", False, "0.3"),  # every series must pass
        (["0.2"], ">", True, "> 0.05"),
        (["NaN"], ">=", False, "nan"),
        ([], "<", None, "no data yet"),
    ],
)
def test_probe_judges_the_value(values: list[str], op: str, ok: bool | None, text: str) -> None:
    sample = probe(vector(*values), comparison=op).check(AT)
    assert sample.ok is ok
    assert text in sample.detail
    assert sample.check == f"prometheus error_rate {op} 0.05"


def test_probe_reports_a_bad_query_with_prometheus_message() -> None:
    sample = probe({"status": "error", "error": 'unexpected character: "@"'}, 400).check(AT)
    assert sample.ok is False
    assert sample.detail.startswith("bad query:") and "unexpected character" in sample.detail


def test_build_probes_needs_no_container_for_a_prometheus_check() -> None:
    check = PrometheusCheck(url=URL, query="x", threshold=1)
    (built,) = build_probes([check], engine=None, container=None)
    assert isinstance(built, PrometheusProbe) and built.name == check.name


# --- against the test bed's Prometheus ----------------------------------------------------------


@pytest.fixture
def exported(prometheus: PrometheusInfo, tmp_path: Path) -> Iterator[str]:
    """Our /metrics with 3 Docker assets, scraped by the real Prometheus; yields the instance."""
    store = StateStore.open(f"sqlite:///{tmp_path}/state.db")
    try:
        store.assets.upsert(
            [
                Asset(
                    id=AssetId(f"docker:local/a{i}"),
                    kind=AssetKind.DOCKER,
                    target="local",
                    name=f"a{i}",
                    current_version="1.0.0",
                )
                for i in range(3)
            ]
        )
        with scraped_metrics(prometheus, store) as instance:
            yield instance
    finally:
        store.close()


@pytest.mark.prometheus
def test_real_prometheus_threshold_passes_and_fails(
    prometheus: PrometheusInfo, exported: str
) -> None:
    query = f'safe_updater_assets{{kind="docker",instance="{exported}"}}'

    def check(threshold: float, op: str) -> PrometheusProbe:
        spec = PrometheusCheck.model_validate(
            {"url": prometheus.url, "query": query, "threshold": threshold, "comparison": op}
        )
        return PrometheusProbe(spec)

    passing = check(5, "<").check(AT)
    assert passing.ok is True, passing.detail
    assert passing.detail == "value 3 < 5"
    failing = check(3, "<").check(AT)
    assert failing.ok is False and "crossed the threshold" in failing.detail
    assert check(3, ">=").check(AT).ok is True
    absent = PrometheusProbe(
        PrometheusCheck(url=prometheus.url, query='safe_updater_assets{kind="nope"}', threshold=1)
    ).check(AT)
    assert absent.ok is None and absent.detail == "no data yet"


@pytest.mark.prometheus
def test_real_prometheus_refuses_a_bad_query(prometheus: PrometheusInfo) -> None:
    with PrometheusQuery(prometheus.url) as q, pytest.raises(InvalidInputError, match="parse"):
        q.values("sum(rate(x[1m])")
    bad = PrometheusProbe(PrometheusCheck(url=prometheus.url, query="rate(", threshold=1))
    sample = bad.check(AT)
    assert sample.ok is False and sample.detail.startswith("bad query:")
