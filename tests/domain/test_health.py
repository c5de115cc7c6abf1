"""Health specs, label parsing and the pure verdict (injected times, no clock reads)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.health import (
    DockerHealthCheck,
    ExecCheck,
    HealthPolicy,
    HealthPolicyOverrides,
    HttpCheck,
    PrometheusCheck,
    RestartCheck,
    Sample,
    TcpCheck,
    VerdictState,
    evaluate,
    parse_health_labels,
    resolve_checks,
)

ASSET = "docker:local/web"
P = "safe-updater.io/health."
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- labels ------------------------------------------------------------------------------------


def test_no_health_labels_give_nothing() -> None:
    checks, overrides = parse_health_labels({"other": "x"}, asset_id=ASSET)
    assert checks == []
    assert overrides == HealthPolicyOverrides()


def test_all_labels() -> None:
    labels = {
        P + "http": "http://127.0.0.1:8080/healthz",
        P + "http.status": "200-299",
        P + "http.method": "head",
        P + "http.body": "ok",
        P + "http.timeout": "500ms",
        P + "http.tls-verify": "false",
        P + "tcp": "127.0.0.1:5432",
        P + "exec": '["pg_isready", "-q"]',
        P + "docker": "true",
        P + "window": "20s",
        P + "interval": "1s",
        P + "failure-threshold": "4",
        P + "success-threshold": "3",
    }
    checks, overrides = parse_health_labels(labels, asset_id=ASSET)
    assert checks == [
        HttpCheck(
            url="http://127.0.0.1:8080/healthz",
            method="HEAD",
            expected_status=(200, 299),
            body_contains="ok",
            timeout=timedelta(milliseconds=500),
            verify_tls=False,
        ),
        TcpCheck(host="127.0.0.1", port=5432),
        ExecCheck(command=("pg_isready", "-q")),
        DockerHealthCheck(),
    ]
    assert overrides == HealthPolicyOverrides(
        window=timedelta(seconds=20),
        interval=timedelta(seconds=1),
        failure_threshold=4,
        success_threshold=3,
        docker_health=True,
    )


@pytest.mark.parametrize(
    ("value", "command"),
    [
        ("pg_isready -q", ("pg_isready", "-q")),
        (
            "sh -c 'wget -q -O- http://127.0.0.1/ && true'",
            ("sh", "-c", "wget -q -O- http://127.0.0.1/ && true"),
        ),
        ('["a b", "c"]', ("a b", "c")),
    ],
)
def test_exec_label_is_split_without_a_shell(value: str, command: tuple[str, ...]) -> None:
    checks, _ = parse_health_labels({P + "exec": value}, asset_id=ASSET)
    assert checks == [ExecCheck(command=command)]


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("127.0.0.1:5432", "127.0.0.1", 5432),
        ("[::1]:80", "::1", 80),
        ("localhost:1", "localhost", 1),
    ],
)
def test_tcp_label(value: str, host: str, port: int) -> None:
    checks, _ = parse_health_labels({P + "tcp": value}, asset_id=ASSET)
    assert checks == [TcpCheck(host=host, port=port)]


def test_docker_false_is_an_override_not_a_check() -> None:
    checks, overrides = parse_health_labels({P + "docker": "false"}, asset_id=ASSET)
    assert checks == []
    assert overrides.docker_health is False


@pytest.mark.parametrize(
    ("key", "value", "fix"),
    [
        ("http", "ftp://127.0.0.1/x", "http://127.0.0.1:8080/healthz"),
        ("http", "not a url", "http://"),
        ("http", "http://127.0.0.1:99999/", "1-65535"),
        ("http.status", "200-100", "range"),
        ("http.status", "abc", "range"),
        ("http.method", "FETCH", "GET"),
        ("http.tls-verify", "maybe", "true or false"),
        ("tcp", "127.0.0.1", "127.0.0.1:5432"),
        ("tcp", "127.0.0.1:0", "1-65535"),
        ("tcp", "::1:80", "[::1]:5432"),
        ("exec", "", "JSON list"),
        ("exec", "[1, 2]", "JSON list"),
        ("exec", '["unclosed', "JSON list"),
        ("exec", "echo 'unclosed", "JSON list"),
        ("docker", "yes please", "true or false"),
        ("window", "soon", "20s"),
        ("window", "0s", "20s"),
        ("interval", "-1s", "20s"),
        ("failure-threshold", "0", "number"),
        ("success-threshold", "two", "number"),
        ("timeout", "5s", "use one of"),
    ],
)
def test_bad_label_names_label_asset_and_fix(key: str, value: str, fix: str) -> None:
    labels = {P + key: value}
    if key.startswith("http."):
        labels[P + "http"] = "http://127.0.0.1:8080/healthz"
    with pytest.raises(InvalidInputError) as info:
        parse_health_labels(labels, asset_id=ASSET)
    error = info.value
    assert error.field == P + key
    assert ASSET in str(error)
    assert error.hint is not None and fix in error.hint


def test_http_options_without_http_label_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match=r"needs safe-updater\.io/health\.http"):
        parse_health_labels({P + "http.status": "200"}, asset_id=ASSET)


def test_interval_longer_than_window_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="longer than the window"):
        parse_health_labels({P + "window": "5s", P + "interval": "10s"}, asset_id=ASSET)


def test_any_http_host_is_accepted_as_given() -> None:
    checks, _ = parse_health_labels({P + "http": "https://example.invalid/h"}, asset_id=ASSET)
    assert checks == [HttpCheck(url="https://example.invalid/h")]


# --- specs and policy --------------------------------------------------------------------------


def test_spec_validation() -> None:
    with pytest.raises(ValidationError):
        HttpCheck(url="file:///etc/passwd")
    with pytest.raises(ValidationError):
        HttpCheck(url="http://127.0.0.1/", expected_status=(500, 200))
    with pytest.raises(ValidationError):
        TcpCheck(host="127.0.0.1", port=70000)
    with pytest.raises(ValidationError):
        ExecCheck(command=())
    with pytest.raises(ValidationError):
        HealthPolicy(window=timedelta(seconds=1), interval=timedelta(seconds=2))
    with pytest.raises(ValidationError):
        HealthPolicy(failure_threshold=0)


def test_overrides_apply_to_base() -> None:
    base = HealthPolicy()
    policy = HealthPolicyOverrides(window=timedelta(seconds=20), failure_threshold=5).apply_to(base)
    assert policy == HealthPolicy(
        window=timedelta(seconds=20),
        interval=base.interval,
        failure_threshold=5,
        success_threshold=base.success_threshold,
    )
    with pytest.raises(InvalidInputError):
        HealthPolicyOverrides(window=timedelta(milliseconds=500)).apply_to(base)


@pytest.mark.parametrize(
    ("explicit", "has_healthcheck", "docker", "expected"),
    [
        ([], True, None, ["docker-health", "restarts"]),
        ([], False, None, ["restarts"]),
        ([], True, False, ["restarts"]),
        ([TcpCheck(host="127.0.0.1", port=1)], True, None, ["tcp 127.0.0.1:1", "restarts"]),
        (
            [TcpCheck(host="127.0.0.1", port=1)],
            True,
            True,
            ["tcp 127.0.0.1:1", "docker-health", "restarts"],
        ),
        ([DockerHealthCheck()], True, True, ["docker-health", "restarts"]),
        ([RestartCheck()], False, None, ["restarts"]),
    ],
)
def test_resolve_checks(
    explicit: list[TcpCheck], has_healthcheck: bool, docker: bool | None, expected: list[str]
) -> None:
    checks = resolve_checks(explicit, image_has_healthcheck=has_healthcheck, docker_health=docker)
    assert [c.name for c in checks] == expected


# --- verdict -----------------------------------------------------------------------------------

POLICY = HealthPolicy(
    window=timedelta(seconds=10),
    interval=timedelta(seconds=1),
    failure_threshold=3,
    success_threshold=2,
)


def samples(check: str, results: Sequence[bool | None], start: float = 0.0) -> list[Sample]:
    return [
        Sample(at=at(start + i), check=check, ok=ok, detail="d") for i, ok in enumerate(results)
    ]


def test_pending_while_passing_before_window_end() -> None:
    verdict = evaluate(samples("a", [True] * 5), POLICY, started_at=T0, now=at(5))
    assert verdict.state is VerdictState.PENDING
    assert "5s of 10s" in verdict.reason


def test_healthy_only_after_window() -> None:
    verdict = evaluate(samples("a", [True] * 11), POLICY, started_at=T0, now=at(10))
    assert verdict.state is VerdictState.HEALTHY
    assert verdict.decided


def test_fail_fast_at_threshold() -> None:
    got = samples("a", [True, False, False])
    assert evaluate(got, POLICY, started_at=T0, now=at(2)).state is VerdictState.PENDING
    got = samples("a", [True, False, False, False])
    verdict = evaluate(got, POLICY, started_at=T0, now=at(3))
    assert verdict.state is VerdictState.UNHEALTHY
    assert "a failed 3 times in a row" in verdict.reason


def test_a_pass_resets_the_failure_streak() -> None:
    got = samples("a", [False, False, True, False, False, True, True] + [True] * 4)
    assert evaluate(got, POLICY, started_at=T0, now=at(10)).state is VerdictState.HEALTHY


def test_fatal_sample_is_immediately_unhealthy() -> None:
    got = [
        *samples("a", [True]),
        Sample(at=at(1), check="restarts", ok=False, detail="exited 1", fatal=True),
    ]
    verdict = evaluate(got, POLICY, started_at=T0, now=at(1))
    assert verdict.state is VerdictState.UNHEALTHY
    assert verdict.reason == "restarts: exited 1"


def test_window_end_without_enough_passes_is_unhealthy() -> None:
    got = samples("a", [True, False, True, False, True, False, True, False, True, False, True])
    verdict = evaluate(got, POLICY, started_at=T0, now=at(10))
    assert verdict.state is VerdictState.UNHEALTHY
    assert "window of 10s ended" in verdict.reason
    assert "1/2 passes" in verdict.reason


def test_every_check_must_pass() -> None:
    got = samples("a", [True] * 11) + samples("b", [True] * 9 + [False, False])
    verdict = evaluate(got, POLICY, started_at=T0, now=at(10))
    assert verdict.state is VerdictState.UNHEALTHY
    assert "b: failing" in verdict.reason


def test_expected_check_without_samples_blocks_healthy() -> None:
    got = samples("a", [True] * 11)
    verdict = evaluate(got, POLICY, started_at=T0, now=at(10), checks=["a", "b"])
    assert verdict.state is VerdictState.UNHEALTHY
    assert "b: no sample" in verdict.reason


def test_not_ready_samples_neither_pass_nor_fail() -> None:
    # Docker's HEALTHCHECK "starting" for a while must not trip the failure threshold.
    got = samples("docker-health", [None] * 8 + [True, True, True])
    assert evaluate(got[:8], POLICY, started_at=T0, now=at(7)).state is VerdictState.PENDING
    assert evaluate(got, POLICY, started_at=T0, now=at(10)).state is VerdictState.HEALTHY
    verdict = evaluate(samples("docker-health", [None] * 11), POLICY, started_at=T0, now=at(10))
    assert verdict.state is VerdictState.UNHEALTHY
    assert "not ready" in verdict.reason


def test_samples_before_the_window_are_ignored() -> None:
    old = samples("a", [False] * 5, start=-10)
    assert evaluate(old, POLICY, started_at=T0, now=at(1)).state is VerdictState.PENDING


def test_no_samples() -> None:
    assert evaluate([], POLICY, started_at=T0, now=at(1)).state is VerdictState.PENDING
    assert evaluate([], POLICY, started_at=T0, now=at(10)).state is VerdictState.UNHEALTHY


def test_unordered_samples_are_sorted_by_time() -> None:
    got = samples("a", [False, False, False, True, True] + [True] * 6)
    verdict = evaluate(list(reversed(got)), POLICY, started_at=T0, now=at(10))
    assert verdict.state is VerdictState.HEALTHY


# --- the Prometheus check ----------------------------------------------------------------------

PROM = "safe-updater.io/health.prometheus."


def test_prometheus_labels_make_a_check() -> None:
    checks, _ = parse_health_labels(
        {
            PROM + "url": "http://127.0.0.1:9090/",
            PROM + "query": " sum(rate(http_errors_total[1m])) ",
            PROM + "threshold": "0.05",
            PROM + "op": "<=",
            PROM + "timeout": "3s",
        },
        asset_id="docker:local/web",
    )
    assert checks == [
        PrometheusCheck(
            url="http://127.0.0.1:9090",
            query="sum(rate(http_errors_total[1m]))",
            threshold=0.05,
            comparison="<=",
            timeout=timedelta(seconds=3),
        )
    ]
    assert checks[0].name == "prometheus sum(rate(http_errors_total[1m])) <= 0.05"


def test_prometheus_op_defaults_to_less_than() -> None:
    checks, _ = parse_health_labels(
        {PROM + "url": "http://127.0.0.1:9090", PROM + "query": "x", PROM + "threshold": "500"},
        asset_id="a",
    )
    assert isinstance(checks[0], PrometheusCheck) and checks[0].comparison == "<"


@pytest.mark.parametrize(
    ("labels", "field", "text"),
    [
        ({"query": "x", "threshold": "1"}, "prometheus.url", "is missing"),
        ({"url": "http://h:9090", "threshold": "1"}, "prometheus.query", "is missing"),
        ({"url": "http://h:9090", "query": "x"}, "prometheus.threshold", "is missing"),
        ({"url": "ftp://h", "query": "x", "threshold": "1"}, "prometheus.url", "not an http"),
        ({"url": "http://h", "query": " ", "threshold": "1"}, "prometheus.query", "empty"),
        ({"url": "http://h", "query": "x", "threshold": "lots"}, "prometheus.threshold", "number"),
        ({"url": "http://h", "query": "x", "threshold": "nan"}, "prometheus.threshold", "number"),
        ({"url": "http://h", "query": "x", "threshold": "1", "op": "=="}, "prometheus.op", "<="),
    ],
)
def test_bad_prometheus_labels_name_the_label(
    labels: dict[str, str], field: str, text: str
) -> None:
    with pytest.raises(InvalidInputError) as exc:
        parse_health_labels({PROM + k: v for k, v in labels.items()}, asset_id="docker:local/web")
    assert exc.value.field == "safe-updater.io/health." + field
    assert text in str(exc.value) or text in (exc.value.hint or "")


@pytest.mark.parametrize(
    ("values", "comparison", "ok"),
    [
        ([0.01], "<", True),
        ([0.05], "<", False),
        ([0.05], "<=", True),
        ([1.0], ">", True),
        ([1.0], ">=", True),
        ([0.0], ">", False),
        ([0.01, 0.2], "<", False),
        ([float("nan")], "<", False),
        ([float("nan")], ">", False),
        ([], "<", None),
    ],
)
def test_prometheus_judge(values: list[float], comparison: str, ok: bool | None) -> None:
    check = PrometheusCheck.model_validate(
        {"url": "http://h:9090", "query": "q", "threshold": 0.05, "comparison": comparison}
    )
    assert check.judge(values)[0] is ok


def test_prometheus_check_validation() -> None:
    with pytest.raises(ValidationError):
        PrometheusCheck(url="h:9090", query="q", threshold=1)
    with pytest.raises(ValidationError):
        PrometheusCheck(url="http://h", query="q", threshold=float("inf"))
    with pytest.raises(ValidationError):
        PrometheusCheck.model_validate(
            {"url": "http://h", "query": "q", "threshold": 1, "comparison": "!="}
        )
