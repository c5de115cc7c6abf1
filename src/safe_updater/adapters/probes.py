"""Health probes (HTTP, TCP, exec, Docker HEALTHCHECK, restarts, Prometheus) and the monitor loop.

A probe turns one check spec of :mod:`safe_updater.domain.health` into a :class:`Sample`; probes
never raise for an unhealthy target, they report it. :func:`monitor` samples every probe once per
interval, asks :func:`~safe_updater.domain.health.evaluate` after each round and stops at the
first decided verdict. Clock and sleep are injected, so tests never wait for real.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

import httpx

from safe_updater.adapters.docker_engine import ContainerEngine
from safe_updater.adapters.errors import EngineUnavailableError
from safe_updater.adapters.prometheus_query import PrometheusProbe
from safe_updater.domain.errors import InvalidInputError, NotFoundError, SafeUpdaterError
from safe_updater.domain.health import (
    CheckSpec,
    DockerHealthCheck,
    ExecCheck,
    HealthPolicy,
    HttpCheck,
    PrometheusCheck,
    RestartCheck,
    Sample,
    TcpCheck,
    Verdict,
    VerdictState,
    evaluate,
)

log = logging.getLogger(__name__)

_MAX_BODY = 64 * 1024


class Probe(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, at: datetime) -> Sample:
        """Probe once; ``at`` is the sample's time stamp."""
        ...


class HttpProbe:
    """An HTTP request; passes when the status is in range and the body matches (if asked)."""

    def __init__(self, spec: HttpCheck, *, transport: httpx.BaseTransport | None = None) -> None:
        self._spec = spec
        self._client = httpx.Client(
            verify=spec.verify_tls,
            timeout=spec.timeout.total_seconds(),
            follow_redirects=False,
            trust_env=False,  # no proxies from the environment for health checks
            transport=transport,
        )

    @property
    def name(self) -> str:
        return self._spec.name

    def close(self) -> None:
        self._client.close()

    def check(self, at: datetime) -> Sample:
        spec = self._spec
        try:
            with self._client.stream(spec.method, spec.url, headers=spec.headers) as response:
                body = b""
                if spec.body_contains is not None:
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) >= _MAX_BODY:
                            break
                status = response.status_code
        except httpx.TimeoutException:
            return self._sample(at, False, f"timed out after {spec.timeout.total_seconds():g}s")
        except httpx.HTTPError as exc:
            return self._sample(at, False, f"{type(exc).__name__}: {_short(exc)}")
        low, high = spec.expected_status
        if not low <= status <= high:
            return self._sample(at, False, f"HTTP {status} (expected {low}-{high})")
        if spec.body_contains is not None and spec.body_contains.encode() not in body:
            return self._sample(at, False, f"HTTP {status} but the body lacks the expected text")
        return self._sample(at, True, f"HTTP {status}")

    def _sample(self, at: datetime, ok: bool, detail: str) -> Sample:
        return Sample(at=at, check=self.name, ok=ok, detail=detail)


class TcpProbe:
    """A TCP connect; passes when the connection is accepted."""

    def __init__(self, spec: TcpCheck) -> None:
        self._spec = spec

    @property
    def name(self) -> str:
        return self._spec.name

    def check(self, at: datetime) -> Sample:
        spec = self._spec
        try:
            with socket.create_connection(
                (spec.host, spec.port), timeout=spec.timeout.total_seconds()
            ):
                pass
        except TimeoutError:
            return Sample(at=at, check=self.name, ok=False, detail="connect timed out")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return Sample(at=at, check=self.name, ok=False, detail=f"connect failed: {reason}")
        return Sample(at=at, check=self.name, ok=True, detail="connected")


class DockerExecProbe:
    """A command run in the container (argument list, no shell); passes on the expected exit."""

    def __init__(self, engine: ContainerEngine, container: str, spec: ExecCheck) -> None:
        self._engine = engine
        self._container = container
        self._spec = spec

    @property
    def name(self) -> str:
        return self._spec.name

    def check(self, at: datetime) -> Sample:
        spec = self._spec
        try:
            result = self._engine.exec(
                self._container, spec.command, timeout=spec.timeout.total_seconds()
            )
        except EngineUnavailableError:
            raise  # the monitor's to judge: says nothing about the container
        except SafeUpdaterError as exc:
            return Sample(at=at, check=self.name, ok=False, detail=f"exec failed: {exc.message}")
        return exec_sample(at, self.name, spec, result)


class ExecOutcome(Protocol):
    """What running a command returned: Docker's and Kubernetes' exec results both fit."""

    @property
    def exit_code(self) -> int | None: ...

    @property
    def output(self) -> str: ...

    @property
    def timed_out(self) -> bool: ...


def exec_sample(
    at: datetime, check: str, spec: ExecCheck, result: ExecOutcome, *, where: str = ""
) -> Sample:
    """The sample for one exec check: the expected exit code passes; a timeout fails."""
    prefix = f"exec in {where}: " if where else ""
    if result.timed_out:
        detail = f"{prefix}timed out after {spec.timeout.total_seconds():g}s"
        return Sample(at=at, check=check, ok=False, detail=detail)
    ok = result.exit_code == spec.expected_exit
    detail = f"{prefix}exit {result.exit_code}"
    if not ok and result.output:
        detail += f": {result.output[-200:]}"
    return Sample(at=at, check=check, ok=ok, detail=detail)


class DockerHealthProbe:
    """Docker's own HEALTHCHECK verdict: ``healthy`` passes, ``unhealthy`` fails, ``starting`` is
    not a verdict yet (``ok=None``)."""

    def __init__(self, engine: ContainerEngine, container: str) -> None:
        self._engine = engine
        self._container = container

    @property
    def name(self) -> str:
        return DockerHealthCheck().name

    def check(self, at: datetime) -> Sample:
        try:
            state = self._engine.state(self._container)
        except NotFoundError:
            return Sample(at=at, check=self.name, ok=False, detail="container is gone", fatal=True)
        except EngineUnavailableError:
            raise  # the monitor's to judge: says nothing about the container
        except SafeUpdaterError as exc:
            return Sample(at=at, check=self.name, ok=False, detail=exc.message)
        status = state.health_status
        if status is None:
            return Sample(at=at, check=self.name, ok=False, detail="container has no HEALTHCHECK")
        if status == "healthy":
            return Sample(at=at, check=self.name, ok=True, detail="healthy")
        if status == "unhealthy":
            detail = f"unhealthy (failing streak {state.failing_streak})"
            if state.health_output:
                detail += f": {state.health_output[:200]}"
            return Sample(at=at, check=self.name, ok=False, detail=detail)
        return Sample(at=at, check=self.name, ok=None, detail=status)


class DockerRestartProbe:
    """The container keeps running: exited, dead, restarting or a grown restart count is fatal.

    The restart count is compared with the first one this probe saw (or ``baseline``).
    """

    def __init__(
        self, engine: ContainerEngine, container: str, *, baseline: int | None = None
    ) -> None:
        self._engine = engine
        self._container = container
        self._baseline = baseline

    @property
    def name(self) -> str:
        return RestartCheck().name

    def check(self, at: datetime) -> Sample:
        try:
            state = self._engine.state(self._container)
        except NotFoundError:
            return Sample(at=at, check=self.name, ok=False, detail="container is gone", fatal=True)
        except EngineUnavailableError:
            raise  # the monitor's to judge: says nothing about the container
        except SafeUpdaterError as exc:
            return Sample(at=at, check=self.name, ok=False, detail=exc.message)
        if self._baseline is None:
            self._baseline = state.restart_count
        grown = state.restart_count - self._baseline
        if state.oom_killed:
            return self._fatal(at, "killed for running out of memory")
        if state.status in ("exited", "dead"):
            return self._fatal(at, f"container {state.status} with code {state.exit_code}")
        if state.status == "restarting" or grown > 0:
            return self._fatal(
                at, f"container restarted {grown} time(s) (crash loop, last exit {state.exit_code})"
            )
        if state.status == "created":
            return Sample(at=at, check=self.name, ok=None, detail="not started yet")
        if not state.running:
            return Sample(at=at, check=self.name, ok=False, detail=f"container {state.status}")
        return Sample(at=at, check=self.name, ok=True, detail="running")

    def _fatal(self, at: datetime, detail: str) -> Sample:
        return Sample(at=at, check=self.name, ok=False, detail=detail, fatal=True)


def build_probes(
    checks: Sequence[CheckSpec], *, engine: ContainerEngine | None, container: str | None
) -> list[Probe]:
    """One probe per check; container checks need ``engine`` and ``container``."""
    probes: list[Probe] = []
    for spec in checks:
        if isinstance(spec, HttpCheck):
            probes.append(HttpProbe(spec))
        elif isinstance(spec, TcpCheck):
            probes.append(TcpProbe(spec))
        elif isinstance(spec, PrometheusCheck):
            probes.append(PrometheusProbe(spec))
        else:
            if engine is None or container is None:
                raise InvalidInputError(
                    f"check {spec.name!r} needs a container",
                    hint="use http, tcp or prometheus checks for assets that are not Docker "
                    "containers",
                )
            if isinstance(spec, ExecCheck):
                probes.append(DockerExecProbe(engine, container, spec))
            elif isinstance(spec, DockerHealthCheck):
                probes.append(DockerHealthProbe(engine, container))
            else:
                probes.append(DockerRestartProbe(engine, container))
    return probes


def monitor(
    probes: Sequence[Probe],
    policy: HealthPolicy,
    *,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None],
    on_sample: Callable[[Sample], None] | None = None,
) -> tuple[Verdict, list[Sample]]:
    """Sample every probe each ``policy.interval`` until the verdict is decided.

    Returns early on ``unhealthy``; ``healthy`` only once the window has elapsed (that is how
    :func:`evaluate` decides). Rounds are scheduled from the start time, so a slow probe does not
    stretch the window.

    A container engine that does not answer (a Docker daemon restart) says nothing about the new
    version, and every other check fails for the same reason while it is away (the daemon stops
    the containers). So rounds with the engine away are recorded as unknown (``ok=None``) and not
    judged, and once it answers again the whole window starts over: the version is judged on a
    full window of its own. Away longer than the window: :class:`EngineUnavailableError`, the
    attempt stays open for ``safe-updater recover``. (A daemon that is shutting down reports the
    containers it stops as exited over connections it had accepted before: the engine adapter
    checks a new connection before reporting a stopped container, see ``DockerSdkEngine.state``.)
    """
    if not probes:
        raise InvalidInputError("no health check to run", hint="configure at least one check")
    names = [p.name for p in probes]
    started = clock()
    interval = policy.interval
    samples: list[Sample] = []
    round_number = 0
    engine_away_since: datetime | None = None
    engine_error: EngineUnavailableError | None = None
    while True:
        round_error: EngineUnavailableError | None = None
        round_started = clock()
        for probe in probes:
            at = clock()
            try:
                sample = _safe_check(probe, at)
            except EngineUnavailableError as exc:
                round_error = exc
                sample = Sample(at=at, check=probe.name, ok=None, detail=_engine_away(exc))
            samples.append(sample)
            if on_sample is not None:
                on_sample(sample)
        now = clock()
        if round_error is not None:
            engine_error = round_error
            engine_away_since = engine_away_since or round_started
            if now - engine_away_since > policy.window:
                raise EngineUnavailableError(
                    f"Docker engine unavailable for {(now - engine_away_since).total_seconds():.0f}"
                    f" s during verification, longer than the monitoring window: "
                    f"{round_error.message}",
                    hint="the new version was neither judged nor rolled back; once the engine "
                    "answers, `safe-updater recover` verifies it again and commits or rolls back",
                ) from round_error
        elif engine_away_since is not None:
            log.warning(
                "the container engine answers again after %.1f s; verifying over a new window",
                (round_started - engine_away_since).total_seconds(),
            )
            engine_away_since = None
            started, round_number = round_started, 0
        if engine_away_since is None:
            verdict = evaluate(samples, policy, started_at=started, now=now, checks=names)
            if verdict.state is not VerdictState.PENDING:
                verdict = _after_engine_outage(verdict, engine_error)
                log.info("health verdict %s: %s", verdict.state, verdict.reason)
                return verdict, samples
        round_number += 1
        next_round = started + interval * round_number
        while next_round <= now:  # rounds that were missed are skipped, not bunched
            round_number += 1
            next_round = started + interval * round_number
        sleep((next_round - now).total_seconds())


def _safe_check(probe: Probe, at: datetime) -> Sample:
    try:
        return probe.check(at)
    except EngineUnavailableError:
        raise
    except Exception as exc:  # a probe bug must not end the monitoring silently
        log.warning("probe %s raised %s", probe.name, type(exc).__name__, exc_info=True)
        return Sample(
            at=at, check=probe.name, ok=False, detail=f"probe error: {type(exc).__name__}"
        )


def _after_engine_outage(verdict: Verdict, outage: EngineUnavailableError | None) -> Verdict:
    if outage is None:
        return verdict
    reason = (
        f"{verdict.reason} (judged over a new window after the container engine was unavailable)"
    )
    return verdict.model_copy(update={"reason": reason, "interrupted": True})


def _engine_away(exc: EngineUnavailableError) -> str:
    return (
        exc.message
        if exc.message.startswith("Docker engine unavailable")
        else (f"Docker engine unavailable: {exc.message}")
    )


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
