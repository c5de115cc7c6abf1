"""Probes and the monitoring loop: fake clock for `monitor`, a real demo container for probes."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from safe_updater.adapters.docker_engine import DockerSdkEngine
from safe_updater.adapters.errors import EngineUnavailableError
from safe_updater.adapters.probes import (
    DockerExecProbe,
    DockerHealthProbe,
    DockerRestartProbe,
    HttpProbe,
    TcpProbe,
    build_probes,
    monitor,
)
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.health import (
    DockerHealthCheck,
    ExecCheck,
    HealthPolicy,
    HttpCheck,
    RestartCheck,
    Sample,
    TcpCheck,
    VerdictState,
)
from support.testbed import DemoContainer, free_port, wait_until

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = HealthPolicy(
    window=timedelta(seconds=10),
    interval=timedelta(seconds=1),
    failure_threshold=3,
    success_threshold=2,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


class ScriptedProbe:
    """Returns the scripted results in order (the last one repeats); may advance the clock."""

    def __init__(
        self, name: str, results: list[bool | None], clock: FakeClock, cost: float = 0.0
    ) -> None:
        self.name = name
        self._results = results
        self._clock = clock
        self._cost = cost
        self.calls = 0

    def check(self, at: datetime) -> Sample:
        ok = self._results[min(self.calls, len(self._results) - 1)]
        self.calls += 1
        self._clock.now += timedelta(seconds=self._cost)
        return Sample(at=at, check=self.name, ok=ok, detail=f"call {self.calls}")


class BrokenProbe:
    name = "broken"

    def check(self, at: datetime) -> Sample:
        raise RuntimeError("bug")


# --- monitor (fake clock, no real sleeping) -----------------------------------------------------


def test_monitor_healthy_only_after_the_window() -> None:
    clock = FakeClock()
    probe = ScriptedProbe("a", [True], clock)
    seen: list[Sample] = []
    verdict, got = monitor([probe], POLICY, clock=clock, sleep=clock.sleep, on_sample=seen.append)
    assert verdict.state is VerdictState.HEALTHY
    assert clock.now - T0 == timedelta(seconds=10)
    assert probe.calls == 11  # t = 0, 1, ..., 10
    assert got == seen
    assert clock.sleeps == [1.0] * 10


def test_monitor_returns_early_on_failure_threshold() -> None:
    clock = FakeClock()
    good = ScriptedProbe("good", [True], clock)
    bad = ScriptedProbe("bad", [True, False], clock)
    verdict, got = monitor([good, bad], POLICY, clock=clock, sleep=clock.sleep)
    assert verdict.state is VerdictState.UNHEALTHY
    assert "bad failed 3 times in a row" in verdict.reason
    assert clock.now - T0 == timedelta(seconds=3)
    assert len(got) == 8


class EngineRestartProbe:
    """Passes, then the engine is away for ``away`` rounds, then fails (the daemon stopped the
    container on its way down and it has no restart policy)."""

    name = "restart"

    def __init__(self, away: int) -> None:
        self.calls = 0
        self.away = away

    def check(self, at: datetime) -> Sample:
        self.calls += 1
        if self.calls <= 2:
            return Sample(at=at, check=self.name, ok=True, detail="running")
        if self.calls <= 2 + self.away:
            raise EngineUnavailableError("Docker engine unavailable: connection refused")
        return Sample(at=at, check=self.name, ok=False, detail="container exited (0)")


def test_a_verdict_after_an_engine_outage_is_marked_interrupted() -> None:
    """An unhealthy verdict judged after the engine came back rolls back, but is marked
    interrupted so the version is not quarantined for what the restart did to it."""
    clock = FakeClock()
    verdict, samples = monitor([EngineRestartProbe(away=2)], POLICY, clock=clock, sleep=clock.sleep)
    assert verdict.state is VerdictState.UNHEALTHY
    assert verdict.interrupted
    assert "after the container engine was unavailable" in verdict.reason
    assert [s.ok for s in samples[2:4]] == [None, None]


def test_a_verdict_without_an_outage_is_not_interrupted() -> None:
    clock = FakeClock()
    verdict, _ = monitor([EngineRestartProbe(away=0)], POLICY, clock=clock, sleep=clock.sleep)
    assert verdict.state is VerdictState.UNHEALTHY
    assert not verdict.interrupted


def test_monitor_keeps_its_schedule_when_probes_are_slow() -> None:
    clock = FakeClock()
    probe = ScriptedProbe("slow", [True], clock, cost=0.4)
    verdict, _ = monitor([probe], POLICY, clock=clock, sleep=clock.sleep)
    assert verdict.state is VerdictState.HEALTHY
    assert clock.sleeps[0] == pytest.approx(0.6)


def test_monitor_skips_missed_rounds() -> None:
    clock = FakeClock()
    probe = ScriptedProbe("very-slow", [True], clock, cost=2.5)
    verdict, _ = monitor([probe], POLICY, clock=clock, sleep=clock.sleep)
    assert verdict.state is VerdictState.HEALTHY
    assert all(s == pytest.approx(0.5) for s in clock.sleeps)


def test_monitor_window_ends_unhealthy_without_passes() -> None:
    clock = FakeClock()
    probe = ScriptedProbe("flaky", [True, False], clock)
    policy = POLICY.model_copy(update={"failure_threshold": 100})
    verdict, _ = monitor([probe], policy, clock=clock, sleep=clock.sleep)
    assert verdict.state is VerdictState.UNHEALTHY
    assert "window of 10s ended" in verdict.reason


def test_monitor_turns_a_probe_bug_into_a_failed_sample() -> None:
    clock = FakeClock()
    verdict, got = monitor([BrokenProbe()], POLICY, clock=clock, sleep=clock.sleep)
    assert verdict.state is VerdictState.UNHEALTHY
    assert got[0].detail == "probe error: RuntimeError"


def test_monitor_needs_probes() -> None:
    clock = FakeClock()
    with pytest.raises(InvalidInputError):
        monitor([], POLICY, clock=clock, sleep=clock.sleep)


def test_build_probes_container_checks_need_a_container() -> None:
    with pytest.raises(InvalidInputError):
        build_probes([RestartCheck()], engine=None, container=None)
    probes = build_probes(
        [HttpCheck(url="http://127.0.0.1:1/"), TcpCheck(host="127.0.0.1", port=1)],
        engine=None,
        container=None,
    )
    assert [p.name for p in probes] == ["http GET http://127.0.0.1:1/", "tcp 127.0.0.1:1"]


# --- HTTP and TCP probes without Docker ---------------------------------------------------------


def _http(handler: Callable[[httpx.Request], httpx.Response], **spec: Any) -> Sample:
    check = HttpCheck(url="http://127.0.0.1:8080/healthz", **spec)
    probe = HttpProbe(check, transport=httpx.MockTransport(handler))
    try:
        return probe.check(T0)
    finally:
        probe.close()


def test_http_probe_status_range_body_and_headers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-Probe"] == "1"
        return httpx.Response(204 if request.method == "HEAD" else 200, text="all ok")

    assert _http(handler, headers={"X-Probe": "1"}).ok is True
    assert _http(handler, headers={"X-Probe": "1"}, body_contains="all ok").ok is True
    sample = _http(handler, headers={"X-Probe": "1"}, body_contains="nope")
    assert sample.ok is False and "lacks" in sample.detail
    sample = _http(handler, headers={"X-Probe": "1"}, method="HEAD", expected_status=(200, 200))
    assert sample.ok is False and sample.detail == "HTTP 204 (expected 200-200)"


def test_http_probe_reports_transport_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    assert _http(refuse).ok is False
    assert "timed out" in _http(slow).detail


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def test_tcp_probe_open_and_closed(listener: int) -> None:
    assert TcpProbe(TcpCheck(host="127.0.0.1", port=listener)).check(T0).ok is True
    closed = TcpProbe(TcpCheck(host="127.0.0.1", port=free_port())).check(T0)
    assert closed.ok is False and "connect failed" in closed.detail


# --- against the real engine --------------------------------------------------------------------


@pytest.fixture
def engine(testbed_env: dict[str, str], docker_client: Any) -> Iterator[DockerSdkEngine]:
    eng = DockerSdkEngine.connect(testbed_env["DOCKER_HOST"])
    yield eng
    eng.close()


@pytest.mark.integration
def test_http_probe_real_200_and_404(demo_container: Callable[..., DemoContainer]) -> None:
    good = demo_container("1.0.0")
    bad = demo_container("1.0.2")
    assert HttpProbe(HttpCheck(url=good.url + "/healthz")).check(T0).ok is True
    sample = HttpProbe(HttpCheck(url=bad.url + "/healthz")).check(T0)
    assert sample.ok is False and sample.detail.startswith("HTTP 404")
    body = HttpProbe(HttpCheck(url=good.url + "/version", body_contains="1.0.0")).check(T0)
    assert body.ok is True


@pytest.mark.integration
def test_tcp_probe_real(demo_container: Callable[..., DemoContainer]) -> None:
    demo = demo_container("1.0.0")
    assert TcpProbe(TcpCheck(host="127.0.0.1", port=demo.port)).check(T0).ok is True
    demo.container.stop(timeout=5)
    assert TcpProbe(TcpCheck(host="127.0.0.1", port=demo.port)).check(T0).ok is False


@pytest.mark.integration
def test_exec_probe_exit_codes(
    engine: DockerSdkEngine, demo_container: Callable[..., DemoContainer]
) -> None:
    demo = demo_container("1.0.0")
    ok = DockerExecProbe(engine, demo.name, ExecCheck(command=("cat", "/www/version")))
    assert ok.check(T0).ok is True
    fail = DockerExecProbe(engine, demo.name, ExecCheck(command=("sh", "-c", "echo nope; exit 3")))
    sample = fail.check(T0)
    assert sample.ok is False and sample.detail == "exit 3: nope"
    expected3 = ExecCheck(command=("sh", "-c", "exit 3"), expected_exit=3)
    assert DockerExecProbe(engine, demo.name, expected3).check(T0).ok is True
    slow = ExecCheck(command=("sleep", "5"), timeout=timedelta(milliseconds=300))
    assert "timed out" in DockerExecProbe(engine, demo.name, slow).check(T0).detail
    missing = DockerExecProbe(engine, demo.name, ExecCheck(command=("/no/such/binary",)))
    assert missing.check(T0).ok is False


@pytest.mark.integration
def test_docker_health_probe_healthy_and_unhealthy(
    engine: DockerSdkEngine, demo_container: Callable[..., DemoContainer]
) -> None:
    good = demo_container("1.0.0")
    bad = demo_container("1.0.2")
    good_probe = DockerHealthProbe(engine, good.name)
    bad_probe = DockerHealthProbe(engine, bad.name)
    first = good_probe.check(T0)
    assert first.ok in (None, True)  # "starting" is not a verdict
    wait_until(lambda: good_probe.check(T0).ok is True, timeout=15, what="1.0.0 healthy")
    sample = wait_until(
        lambda: (s := bad_probe.check(T0)).ok is False and s, timeout=20, what="1.0.2 unhealthy"
    )
    assert "unhealthy" in sample.detail


@pytest.mark.integration
def test_restart_probe_fatal_when_the_container_exits(
    engine: DockerSdkEngine, demo_container: Callable[..., DemoContainer]
) -> None:
    crash = demo_container("1.2.0", wait=False)
    probe = DockerRestartProbe(engine, crash.name)
    assert probe.check(T0).ok is True
    crash.wait_exit()
    sample = probe.check(T0)
    assert sample.fatal and sample.ok is False
    assert "exited with code 1" in sample.detail


@pytest.mark.integration
def test_restart_probe_sees_a_crash_loop(
    engine: DockerSdkEngine, demo_container: Callable[..., DemoContainer]
) -> None:
    crash = demo_container("1.2.0", wait=False, restart_policy={"Name": "always"})
    probe = DockerRestartProbe(engine, crash.name, baseline=0)
    sample = wait_until(lambda: (s := probe.check(T0)).fatal and s, timeout=15, what="restart")
    assert "restarted" in sample.detail or "exited" in sample.detail


@pytest.mark.integration
def test_monitor_real_container_with_real_time(
    engine: DockerSdkEngine, demo_container: Callable[..., DemoContainer]
) -> None:
    bad = demo_container("1.0.2")
    probes = build_probes(
        [HttpCheck(url=bad.url + "/healthz"), RestartCheck(), DockerHealthCheck()],
        engine=engine,
        container=bad.name,
    )
    policy = HealthPolicy(
        window=timedelta(seconds=10),
        interval=timedelta(milliseconds=200),
        failure_threshold=3,
        success_threshold=2,
    )
    started = time.monotonic()
    verdict, got = monitor(probes, policy, clock=lambda: datetime.now(UTC), sleep=time.sleep)
    assert verdict.state is VerdictState.UNHEALTHY
    assert "HTTP 404" in verdict.reason
    assert time.monotonic() - started < 3
    assert {s.check for s in got} == {p.name for p in probes}
