"""Health checks and the verdict over a monitoring window. Pure: no I/O, no clock reads.

A *check spec* says what to probe (HTTP, TCP, exec, Docker's HEALTHCHECK, restart count, a
Prometheus query against a threshold). Probes in
:mod:`safe_updater.adapters.probes` turn specs into :class:`Sample` objects; :func:`evaluate` turns
the samples of one window into a :class:`Verdict`:

* ``unhealthy`` as soon as one check fails ``failure_threshold`` times in a row (fail fast), or a
  sample is *fatal* (the container exited, is restarting, or its restart count grew);
* ``healthy`` once the window has elapsed and the last ``success_threshold`` samples of every check
  passed;
* ``pending`` otherwise; at the end of the window without that run of passes: ``unhealthy``.

Checks are configured per asset by labels (:func:`parse_health_labels`) or in the config file.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from safe_updater.domain.assets import LABEL_PREFIX
from safe_updater.domain.durations import format_duration, parse_duration
from safe_updater.domain.errors import InvalidInputError

HEALTH_LABEL_PREFIX = f"{LABEL_PREFIX}health."
DEFAULT_CHECK_TIMEOUT = timedelta(seconds=2)

_MAX_LABEL_VALUE = 4096


class _Check(BaseModel):
    model_config = ConfigDict(frozen=True)

    @property
    def name(self) -> str:
        """A short, unique key for this check; samples are grouped by it."""
        raise NotImplementedError


class HttpCheck(_Check):
    """An HTTP(S) request whose status must fall in ``expected_status`` (inclusive)."""

    kind: Literal["http"] = "http"
    url: str
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    expected_status: tuple[int, int] = (200, 399)
    body_contains: str | None = None
    timeout: timedelta = DEFAULT_CHECK_TIMEOUT
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        method = value.strip().upper()
        if method not in {"GET", "HEAD", "POST", "PUT", "OPTIONS", "PATCH", "DELETE"}:
            raise ValueError(f"unknown HTTP method {value!r}")
        return method

    @model_validator(mode="after")
    def _status_range(self) -> HttpCheck:
        low, high = self.expected_status
        if not 100 <= low <= high <= 599:
            raise ValueError("expected_status must be a range within 100-599, low <= high")
        if self.timeout <= timedelta(0):
            raise ValueError("timeout must be positive")
        return self

    @property
    def name(self) -> str:
        return f"http {self.method} {self.url}"


class TcpCheck(_Check):
    """A TCP connect to ``host:port``."""

    kind: Literal["tcp"] = "tcp"
    host: str
    port: int = Field(ge=1, le=65535)
    timeout: timedelta = DEFAULT_CHECK_TIMEOUT

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp {host}:{self.port}"


class ExecCheck(_Check):
    """A command run inside the container (no shell unless the command names one)."""

    kind: Literal["exec"] = "exec"
    command: tuple[str, ...] = Field(min_length=1)
    expected_exit: int = 0
    timeout: timedelta = timedelta(seconds=10)

    @property
    def name(self) -> str:
        return f"exec {shlex.join(self.command)}"


class DockerHealthCheck(_Check):
    """The container's own HEALTHCHECK state (``State.Health.Status``)."""

    kind: Literal["docker-health"] = "docker-health"

    @property
    def name(self) -> str:
        return "docker-health"


class RestartCheck(_Check):
    """The container keeps running: it must not exit and its restart count must not grow."""

    kind: Literal["restarts"] = "restarts"

    @property
    def name(self) -> str:
        return "restarts"


Comparison = Literal["<", "<=", ">", ">="]
COMPARISONS: tuple[Comparison, ...] = ("<", "<=", ">", ">=")


class PrometheusCheck(_Check):
    """A PromQL query whose value must stay on the healthy side of a threshold.

    The sample passes while ``value <comparison> threshold`` holds for every returned series
    (e.g. ``error_rate < 0.05``) and fails once a value crosses it, as Flagger's metric checks and
    Argo Rollouts' analysis do. An empty result is "no data yet" (neither pass nor failure); a
    NaN value fails (a ratio over zero requests, a broken recording rule).
    """

    kind: Literal["prometheus"] = "prometheus"
    url: str
    query: str = Field(min_length=1, max_length=_MAX_LABEL_VALUE)
    threshold: float
    comparison: Comparison = "<"
    timeout: timedelta = DEFAULT_CHECK_TIMEOUT

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be the http:// or https:// URL of a Prometheus server")
        return value.rstrip("/")

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a PromQL query")
        return value.strip()

    @model_validator(mode="after")
    def _finite(self) -> PrometheusCheck:
        if not math.isfinite(self.threshold):
            raise ValueError("threshold must be a finite number")
        if self.timeout <= timedelta(0):
            raise ValueError("timeout must be positive")
        return self

    @property
    def name(self) -> str:
        return f"prometheus {self.query} {self.comparison} {self.threshold:g}"

    def judge(self, values: Sequence[float]) -> tuple[bool | None, str]:
        """``(ok, detail)`` for the query's values (one per series; empty: no data)."""
        if not values:
            return None, "no data yet"
        bad = [v for v in values if math.isnan(v) or not _holds(v, self.comparison, self.threshold)]
        shown = ", ".join(f"{v:g}" for v in (bad or values)[:5])
        more = f" (+{len(bad or values) - 5} more)" if len(bad or values) > 5 else ""
        if bad:
            return False, (
                f"value {shown}{more} crossed the threshold "
                f"(healthy while {self.comparison} {self.threshold:g})"
            )
        return True, f"value {shown}{more} {self.comparison} {self.threshold:g}"


def _holds(value: float, comparison: Comparison, threshold: float) -> bool:
    if comparison == "<":
        return value < threshold
    if comparison == "<=":
        return value <= threshold
    if comparison == ">":
        return value > threshold
    return value >= threshold


CheckSpec = Annotated[
    HttpCheck | TcpCheck | ExecCheck | DockerHealthCheck | RestartCheck | PrometheusCheck,
    Field(discriminator="kind"),
]


class HealthPolicy(BaseModel):
    """How long to watch, how often to sample, and how many failures or passes decide."""

    model_config = ConfigDict(frozen=True)

    window: timedelta = timedelta(seconds=30)
    interval: timedelta = timedelta(seconds=2)
    failure_threshold: int = Field(default=3, ge=1)
    success_threshold: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _positive(self) -> HealthPolicy:
        if self.window <= timedelta(0) or self.interval <= timedelta(0):
            raise ValueError("window and interval must be positive")
        if self.interval > self.window:
            raise ValueError("interval must not be longer than the window")
        return self


class HealthPolicyOverrides(BaseModel):
    """Per-asset changes to a :class:`HealthPolicy`; ``None`` keeps the base value."""

    model_config = ConfigDict(frozen=True)

    window: timedelta | None = None
    interval: timedelta | None = None
    failure_threshold: int | None = None
    success_threshold: int | None = None
    docker_health: bool | None = Field(
        default=None,
        description="True: watch the HEALTHCHECK too; False: never use it; None: the default.",
    )

    def apply_to(self, base: HealthPolicy) -> HealthPolicy:
        """The base policy with these overrides; :class:`InvalidInputError` if unusable."""
        values = base.model_dump()
        for key in ("window", "interval", "failure_threshold", "success_threshold"):
            value = getattr(self, key)
            if value is not None:
                values[key] = value
        try:
            return HealthPolicy(**values)
        except ValueError as exc:
            raise InvalidInputError(
                f"health policy {values} is not usable",
                hint="the interval must be positive and not longer than the window",
            ) from exc


def resolve_checks(
    explicit: Sequence[CheckSpec],
    *,
    image_has_healthcheck: bool,
    docker_health: bool | None = None,
) -> list[CheckSpec]:
    """The checks to run for a container.

    * Explicit checks (labels or config) are used as given; ``docker_health=True`` adds the
      container's HEALTHCHECK to them.
    * With no explicit check, the HEALTHCHECK is used when the image (or container) has one,
      unless ``docker_health=False``.
    * A :class:`RestartCheck` is always added: a container that exits or restarts during the window
      fails the update at once, whatever the other checks say.
    """
    checks: list[CheckSpec] = list(explicit)
    names = {c.name for c in checks}
    use_docker = docker_health is True or (
        docker_health is None and image_has_healthcheck and not explicit
    )
    if use_docker and "docker-health" not in names:
        checks.append(DockerHealthCheck())
    if "restarts" not in names:
        checks.append(RestartCheck())
    return checks


# --- labels ------------------------------------------------------------------------------------

_KNOWN_LABELS = (
    "http",
    "http.method",
    "http.status",
    "http.body",
    "http.timeout",
    "http.tls-verify",
    "tcp",
    "exec",
    "docker",
    "prometheus.url",
    "prometheus.query",
    "prometheus.threshold",
    "prometheus.op",
    "prometheus.timeout",
    "window",
    "interval",
    "failure-threshold",
    "success-threshold",
)


def parse_health_labels(
    labels: Mapping[str, str], *, asset_id: str
) -> tuple[list[CheckSpec], HealthPolicyOverrides]:
    """Read ``safe-updater.io/health.*`` labels into check specs and policy overrides.

    Labels (all optional)::

        safe-updater.io/health.http=http://127.0.0.1:8080/healthz
        safe-updater.io/health.http.method=GET          (GET, HEAD, POST, ...)
        safe-updater.io/health.http.status=200-299      (or one code: 204)
        safe-updater.io/health.http.body=ok             (the body must contain this text)
        safe-updater.io/health.http.timeout=2s
        safe-updater.io/health.http.tls-verify=false
        safe-updater.io/health.tcp=127.0.0.1:5432       ([::1]:5432 for IPv6)
        safe-updater.io/health.exec=["pg_isready", "-q"]   (or: pg_isready -q; never run by a shell)
        safe-updater.io/health.docker=true|false
        safe-updater.io/health.prometheus.url=http://127.0.0.1:9090
        safe-updater.io/health.prometheus.query=sum(rate(http_errors_total[1m]))
        safe-updater.io/health.prometheus.threshold=0.05
        safe-updater.io/health.prometheus.op=<    (<, <=, >, >=: healthy while value OP threshold)
        safe-updater.io/health.prometheus.timeout=2s
        safe-updater.io/health.window=20s
        safe-updater.io/health.interval=1s
        safe-updater.io/health.failure-threshold=3
        safe-updater.io/health.success-threshold=2

    Raises :class:`InvalidInputError` naming the label, the asset and the fix.
    """
    health = {
        key.removeprefix(HEALTH_LABEL_PREFIX): value
        for key, value in labels.items()
        if key.startswith(HEALTH_LABEL_PREFIX)
    }
    for key, value in health.items():
        if key not in _KNOWN_LABELS:
            raise _bad_label(
                key,
                asset_id,
                "is not a known health label",
                "use one of " + ", ".join(HEALTH_LABEL_PREFIX + k for k in _KNOWN_LABELS),
            )
        if len(value) > _MAX_LABEL_VALUE:
            raise _bad_label(key, asset_id, "is too long", "shorten the value")

    checks: list[CheckSpec] = []
    if "http" in health:
        checks.append(_http_check(health, asset_id))
    else:
        for key in ("http.method", "http.status", "http.body", "http.timeout", "http.tls-verify"):
            if key in health:
                raise _bad_label(
                    key,
                    asset_id,
                    f"needs {HEALTH_LABEL_PREFIX}http",
                    f"add {HEALTH_LABEL_PREFIX}http=http://127.0.0.1:PORT/PATH",
                )
    if "tcp" in health:
        checks.append(_tcp_check(health["tcp"], asset_id))
    if "exec" in health:
        checks.append(ExecCheck(command=tuple(_exec_command(health["exec"], asset_id))))
    if any(key.startswith("prometheus.") for key in health):
        checks.append(_prometheus_check(health, asset_id))
    docker_health: bool | None = None
    if "docker" in health:
        docker_health = _bool(health, "docker", asset_id)
        if docker_health:
            checks.append(DockerHealthCheck())

    overrides = HealthPolicyOverrides(
        window=_positive_duration(health, "window", asset_id),
        interval=_positive_duration(health, "interval", asset_id),
        failure_threshold=_positive_int(health, "failure-threshold", asset_id),
        success_threshold=_positive_int(health, "success-threshold", asset_id),
        docker_health=docker_health,
    )
    if (
        overrides.window is not None
        and overrides.interval is not None
        and overrides.interval > overrides.window
    ):
        raise _bad_label(
            "interval",
            asset_id,
            f"({format_duration(overrides.interval)}) is longer than the window "
            f"({format_duration(overrides.window)})",
            "make the interval shorter than the window",
        )
    return checks, overrides


def _bad_label(key: str, asset_id: str, problem: str, fix: str) -> InvalidInputError:
    label = HEALTH_LABEL_PREFIX + key
    return InvalidInputError(
        f"label {label} on {asset_id} {problem}", hint=fix, source=asset_id, field=label
    )


def _http_check(health: Mapping[str, str], asset_id: str) -> HttpCheck:
    url = health["http"].strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad_label(
            "http",
            asset_id,
            f"({url[:100]!r}) is not an http:// or https:// URL",
            "write it like http://127.0.0.1:8080/healthz",
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise _bad_label("http", asset_id, f"({url[:100]!r}) has a bad port", "use 1-65535")
    method = health.get("http.method", "GET").strip().upper()
    if method not in {"GET", "HEAD", "POST", "PUT", "OPTIONS", "PATCH", "DELETE"}:
        raise _bad_label(
            "http.method", asset_id, f"({method[:20]!r}) is not an HTTP method", "use GET or HEAD"
        )
    status = (200, 399)
    if "http.status" in health:
        status = _status_range(health["http.status"], asset_id)
    timeout = _positive_duration(health, "http.timeout", asset_id) or DEFAULT_CHECK_TIMEOUT
    verify = _bool(health, "http.tls-verify", asset_id) if "http.tls-verify" in health else True
    return HttpCheck(
        url=url,
        method=method,
        expected_status=status,
        body_contains=health.get("http.body"),
        timeout=timeout,
        verify_tls=verify,
    )


def _prometheus_check(health: Mapping[str, str], asset_id: str) -> PrometheusCheck:
    for key in ("prometheus.url", "prometheus.query", "prometheus.threshold"):
        if key not in health:
            raise _bad_label(
                key,
                asset_id,
                "is missing: a Prometheus check needs url, query and threshold",
                f"add {HEALTH_LABEL_PREFIX}{key}",
            )
    url = health["prometheus.url"].strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad_label(
            "prometheus.url",
            asset_id,
            f"({url[:100]!r}) is not an http:// or https:// URL",
            "write it like http://127.0.0.1:9090",
        )
    query = health["prometheus.query"].strip()
    if not query:
        raise _bad_label(
            "prometheus.query", asset_id, "is empty", "write a PromQL query returning one number"
        )
    raw = health["prometheus.threshold"].strip()
    try:
        threshold = float(raw)
    except ValueError:
        threshold = math.nan
    if not math.isfinite(threshold):
        raise _bad_label(
            "prometheus.threshold",
            asset_id,
            f"({raw[:40]!r}) is not a number",
            "write a number like 0.05 or 500",
        )
    op = health.get("prometheus.op", "<").strip()
    if op not in COMPARISONS:
        raise _bad_label(
            "prometheus.op",
            asset_id,
            f"({op[:10]!r}) is not a comparison",
            "use one of " + ", ".join(COMPARISONS) + " (healthy while value OP threshold)",
        )
    timeout = _positive_duration(health, "prometheus.timeout", asset_id) or DEFAULT_CHECK_TIMEOUT
    return PrometheusCheck(
        url=url,
        query=query,
        threshold=threshold,
        comparison=op,
        timeout=timeout,
    )


def _status_range(text: str, asset_id: str) -> tuple[int, int]:
    raw = text.strip()
    low_text, sep, high_text = raw.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if sep else low
    except ValueError:
        low, high = 0, -1
    if not 100 <= low <= high <= 599:
        raise _bad_label(
            "http.status",
            asset_id,
            f"({raw[:40]!r}) is not a status code or range",
            "write one code like 200 or a range like 200-299 (within 100-599)",
        )
    return low, high


def _tcp_check(text: str, asset_id: str) -> TcpCheck:
    raw = text.strip()
    host, port_text = "", ""
    if raw.startswith("["):
        end = raw.find("]")
        if end > 0 and raw[end + 1 : end + 2] == ":":
            host, port_text = raw[1:end], raw[end + 2 :]
    else:
        host, _, port_text = raw.rpartition(":")
    if not host or (":" in host and not raw.startswith("[")) or not port_text.isdigit():
        raise _bad_label(
            "tcp",
            asset_id,
            f"({raw[:100]!r}) is not HOST:PORT",
            "write it like 127.0.0.1:5432 or [::1]:5432",
        )
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise _bad_label("tcp", asset_id, f"has port {port} out of range", "use 1-65535")
    return TcpCheck(host=host, port=port)


def _exec_command(text: str, asset_id: str) -> list[str]:
    raw = text.strip()
    command: object
    if raw.startswith("["):
        try:
            command = json.loads(raw)
        except json.JSONDecodeError:
            command = None
    else:
        try:
            command = shlex.split(raw)
        except ValueError:
            command = None
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(part, str) and part for part in command)
    ):
        raise _bad_label(
            "exec",
            asset_id,
            f"({raw[:100]!r}) is not a command",
            'write a JSON list like ["pg_isready", "-q"] or words like: pg_isready -q',
        )
    return [str(part) for part in command]


def _bool(health: Mapping[str, str], key: str, asset_id: str) -> bool:
    value = health[key].strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise _bad_label(key, asset_id, f"({value[:20]!r}) is not true or false", "use true or false")


def _positive_duration(health: Mapping[str, str], key: str, asset_id: str) -> timedelta | None:
    if key not in health:
        return None
    try:
        value = parse_duration(health[key], field=HEALTH_LABEL_PREFIX + key)
    except InvalidInputError as exc:
        raise _bad_label(
            key,
            asset_id,
            f"({health[key][:40]!r}) is not a duration",
            "write durations like 20s, 1m30s or 500ms",
        ) from exc
    if value <= timedelta(0):
        raise _bad_label(key, asset_id, "must be longer than 0", "write a duration like 20s")
    return value


def _positive_int(health: Mapping[str, str], key: str, asset_id: str) -> int | None:
    if key not in health:
        return None
    raw = health[key].strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        raise _bad_label(
            key, asset_id, f"({raw[:20]!r}) is not a whole number from 1", "write a number like 3"
        )
    return int(raw)


# --- the verdict -------------------------------------------------------------------------------


class Sample(BaseModel):
    """One probe result.

    ``ok`` is ``None`` when the check cannot judge yet (Docker's HEALTHCHECK still ``starting``, a
    container not started yet): such samples neither pass nor count as failures. ``fatal`` marks a
    failure that ends the window at once (the container exited, is restarting, restarted).
    """

    model_config = ConfigDict(frozen=True)

    at: datetime
    check: str
    ok: bool | None
    detail: str = ""
    fatal: bool = False


class VerdictState(StrEnum):
    PENDING = "pending"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: VerdictState
    reason: str
    interrupted: bool = False
    """The checks were cut off by the platform (a container engine restart) during the window:
    an unhealthy verdict then rolls back, but says nothing certain about the version."""

    @property
    def decided(self) -> bool:
        return self.state is not VerdictState.PENDING


def evaluate(
    samples: Sequence[Sample],
    policy: HealthPolicy,
    *,
    started_at: datetime,
    now: datetime,
    checks: Sequence[str] | None = None,
) -> Verdict:
    """Judge the samples of one monitoring window that started at ``started_at``.

    ``checks`` names every check that must pass (default: the checks seen in ``samples``), so a
    check that never produced a sample cannot be forgotten. Samples before ``started_at`` are
    ignored.
    """
    window_samples = [s for s in samples if s.at >= started_at]
    names = list(dict.fromkeys(checks)) if checks is not None else []
    for s in window_samples:
        if s.check not in names:
            names.append(s.check)
    by_check: dict[str, list[Sample]] = {name: [] for name in names}
    for s in sorted(window_samples, key=lambda s: s.at):
        by_check[s.check].append(s)

    for s in window_samples:
        if s.fatal and s.ok is not True:
            return Verdict(
                state=VerdictState.UNHEALTHY, reason=f"{s.check}: {s.detail or 'fatal failure'}"
            )

    for name, history in by_check.items():
        streak = 0
        last_failure: Sample | None = None
        for s in reversed(history):
            if s.ok is None:
                continue
            if s.ok:
                break
            streak += 1
            last_failure = last_failure or s
        if streak >= policy.failure_threshold and last_failure is not None:
            return Verdict(
                state=VerdictState.UNHEALTHY,
                reason=f"{name} failed {streak} times in a row"
                + (f": {last_failure.detail}" if last_failure.detail else ""),
            )

    elapsed = now - started_at
    not_yet: list[str] = []
    for name, history in by_check.items():
        tail = history[-policy.success_threshold :]
        if len(tail) < policy.success_threshold or not all(s.ok is True for s in tail):
            last = history[-1] if history else None
            if last is None:
                not_yet.append(f"{name}: no sample")
            elif last.ok is None:
                not_yet.append(f"{name}: not ready ({last.detail or 'starting'})")
            else:
                passes = 0
                for s in reversed(history):
                    if s.ok is not True:
                        break
                    passes += 1
                state = "passing" if last.ok else "failing"
                detail = f", {last.detail}" if last.detail and not last.ok else ""
                not_yet.append(
                    f"{name}: {state}, {passes}/{policy.success_threshold} passes{detail}"
                )

    if not names:
        if elapsed >= policy.window:
            return Verdict(state=VerdictState.UNHEALTHY, reason="no health check ran")
        return Verdict(state=VerdictState.PENDING, reason="no sample yet")

    if elapsed >= policy.window:
        if not not_yet:
            return Verdict(
                state=VerdictState.HEALTHY,
                reason=f"all {len(names)} checks passed {policy.success_threshold} times in a "
                f"row over {format_duration(policy.window)}",
            )
        return Verdict(
            state=VerdictState.UNHEALTHY,
            reason=f"window of {format_duration(policy.window)} ended without "
            f"{policy.success_threshold} passes in a row: " + "; ".join(not_yet),
        )
    watched = f"{format_duration(elapsed)} of {format_duration(policy.window)} watched"
    return Verdict(
        state=VerdictState.PENDING,
        reason=watched + ("; " + "; ".join(not_yet) if not_yet else "; all checks passing"),
    )
