"""Which health checks watch an asset after an update, and for how long.

Precedence, most specific first: the asset's labels (``safe-updater.io/health.*``), the config's
``assets:`` entry whose pattern matches the asset id, then the config's ``health:`` defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from safe_updater.adapters.docker_engine import DockerSdkEngine
from safe_updater.adapters.probes import Probe, build_probes
from safe_updater.config import AppConfig, AssetHealth, AssetSettings
from safe_updater.domain.assets import Asset, AssetKind
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.health import (
    CheckSpec,
    ExecCheck,
    HealthPolicy,
    HealthPolicyOverrides,
    HttpCheck,
    PrometheusCheck,
    TcpCheck,
    parse_health_labels,
    resolve_checks,
)
from safe_updater.domain.plans import AppliedChange


def asset_settings(config: AppConfig, asset_id: str) -> AssetSettings | None:
    """The first ``assets:`` entry whose id pattern (glob) matches."""
    for pattern, settings in config.assets.items():
        if fnmatchcase(asset_id, pattern):
            return settings
    return None


def base_policy(config: AppConfig) -> HealthPolicy:
    return HealthPolicy(
        window=config.health.window,
        interval=config.health.interval,
        failure_threshold=config.health.failure_threshold,
        success_threshold=config.health.success_threshold,
    )


def configured_checks(health: AssetHealth | None, config: AppConfig) -> list[CheckSpec]:
    """The checks an ``assets:`` entry of the config names, as domain specs."""
    if health is None:
        return []
    timeout = health.timeout or config.health.timeout
    checks: list[CheckSpec] = []
    try:
        if health.http is not None:
            low, _, high = health.http.expect_status.partition("-")
            checks.append(
                HttpCheck(
                    url=health.http.url,
                    method=health.http.method,
                    headers=health.http.headers,
                    expected_status=(int(low), int(high or low)),
                    body_contains=health.http.body_match,
                    verify_tls=health.http.verify_tls,
                    timeout=health.http.timeout or timeout,
                )
            )
        if health.tcp is not None:
            host, _, port = health.tcp.address.rpartition(":")
            checks.append(
                TcpCheck(
                    host=host.strip("[]"), port=int(port), timeout=health.tcp.timeout or timeout
                )
            )
        if health.exec is not None:
            checks.append(
                ExecCheck(
                    command=tuple(health.exec.command), timeout=health.exec.timeout or timeout
                )
            )
        if health.prometheus is not None:
            checks.append(
                PrometheusCheck(
                    url=health.prometheus.url,
                    query=health.prometheus.query,
                    threshold=health.prometheus.threshold,
                    comparison=health.prometheus.op,
                    timeout=health.prometheus.timeout or timeout,
                )
            )
    except ValueError as error:
        raise InvalidInputError(
            f"health check in the config is not usable: {error}",
            field="assets.<pattern>.health",
            hint="see docs/configuration.md, section assets",
        ) from error
    return checks


def configured_overrides(health: AssetHealth | None) -> HealthPolicyOverrides:
    if health is None:
        return HealthPolicyOverrides()
    return HealthPolicyOverrides(
        window=health.window,
        interval=health.interval,
        failure_threshold=health.failure_threshold,
        success_threshold=health.success_threshold,
    )


def merge_overrides(
    labels: HealthPolicyOverrides, configured: HealthPolicyOverrides
) -> HealthPolicyOverrides:
    """Labels win field by field over the config's asset entry."""
    values = configured.model_dump()
    values.update({k: v for k, v in labels.model_dump().items() if v is not None})
    return HealthPolicyOverrides(**values)


class DockerHealthPlanner:
    """Probes for a container right after it was recreated."""

    def __init__(self, config: AppConfig, engines: Mapping[str, DockerSdkEngine]) -> None:
        self._config = config
        self._engines = engines

    def plan(self, asset: Asset, applied: AppliedChange | None) -> tuple[list[Probe], HealthPolicy]:
        if asset.kind is not AssetKind.DOCKER:
            raise InvalidInputError(f"no health planner for {asset.kind.value} assets")
        settings = asset_settings(self._config, asset.id)
        label_checks, label_overrides = parse_health_labels(asset.labels, asset_id=asset.id)
        explicit: Sequence[CheckSpec] = label_checks or configured_checks(
            settings.health if settings else None, self._config
        )
        overrides = merge_overrides(
            label_overrides, configured_overrides(settings.health if settings else None)
        )
        engine = self._engines[asset.target]
        container = str((applied.data if applied else {}).get("new_container_id") or asset.name)
        info = engine.inspect_container(container)
        has_healthcheck = bool((info.attrs.get("Config") or {}).get("Healthcheck"))
        checks = resolve_checks(
            explicit, image_has_healthcheck=has_healthcheck, docker_health=overrides.docker_health
        )
        policy = overrides.apply_to(base_policy(self._config))
        return build_probes(checks, engine=engine, container=container), policy
