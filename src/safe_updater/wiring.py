"""Builds the runtime from the config: the state store, the registry client, one inventory and
one updater per target, and the health planner.

This is the only place that knows which real adapter serves which port.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from safe_updater.adapters.chart_sources import ChartSources
from safe_updater.adapters.docker_engine import DockerSdkEngine, TlsSettings
from safe_updater.adapters.docker_inventory import DockerInventory
from safe_updater.adapters.docker_updater import DockerContainerUpdater
from safe_updater.adapters.helm_cli import HelmCli
from safe_updater.adapters.helm_inventory import HelmInventory
from safe_updater.adapters.helm_updater import HelmReleaseUpdater
from safe_updater.adapters.inventory import Inventory
from safe_updater.adapters.k8s_inventory import KubernetesInventory
from safe_updater.adapters.k8s_updater import KubernetesImageUpdater
from safe_updater.adapters.kube_api import KubeApi
from safe_updater.adapters.notify import NotificationRoute, WebhookNotifier
from safe_updater.adapters.probes import Probe
from safe_updater.adapters.registry import OciRegistry
from safe_updater.adapters.registry_auth import CredentialsProvider
from safe_updater.adapters.store import StateStore
from safe_updater.adapters.updater import AssetUpdater
from safe_updater.adapters.versions import VersionSource
from safe_updater.config import AppConfig, DockerTarget, NotificationConfig, load_config
from safe_updater.domain.assets import Asset, AssetKind
from safe_updater.domain.errors import ConfigError, NotFoundError
from safe_updater.domain.health import HealthPolicy
from safe_updater.domain.plans import AppliedChange
from safe_updater.health_planning import DockerHealthPlanner
from safe_updater.k8s_health_planning import KubernetesHealthPlanner
from safe_updater.runtime import HealthPlanner, Runtime
from safe_updater.settings import Settings

log = logging.getLogger(__name__)

# A registry answers at most this many requests per burst, refilled per second, shared by every
# run on this state store: enough for a scan of hundreds of assets, well under Docker Hub's limits.
REGISTRY_BUDGET_CAPACITY = 600
REGISTRY_BUDGET_REFILL_PER_SECOND = 10.0


def configure_prefect_environment(settings: Settings | None = None) -> None:
    """Keep Prefect's local database under the state dir, and telemetry off, unless the user
    has pointed Prefect elsewhere. Must run before ``prefect`` is imported."""
    settings = settings or Settings()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the client's first-run telemetry notice breaks `watch`'s live table and sends nothing useful
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The embedded server migrates its database on first start; on a busy 2-core host that
    # takes longer than Prefect's default 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # The embedded server logs tracebacks when it is stopped mid-flush at exit; the CLI's answer
    # is one line, and the run's own logs still reach the API.
    os.environ.setdefault("PREFECT_LOGGING_SERVER_LEVEL", "CRITICAL")
    if "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:
        home = settings.home / "prefect"
        # Prefect creates its home without parents and then fails to open its database.
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)


def open_store(config_path: Path | None = None, config: AppConfig | None = None) -> StateStore:
    settings = Settings()
    config = config or load_config(config_path, settings=settings)
    return StateStore.open(settings.resolve_state_url(config))


class StoreBudget:
    """The registry adapter's ``RequestBudget`` on the shared store: one bucket per registry."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def acquire(self, host: str) -> bool:
        return self._store.budgets.acquire(
            f"registry:{host}",
            capacity=REGISTRY_BUDGET_CAPACITY,
            refill_per_second=REGISTRY_BUDGET_REFILL_PER_SECOND,
        )


def registry_credentials(config: AppConfig) -> CredentialsProvider:
    """Credentials from the configured ``RegistryCredentials`` blocks, then the Docker config."""
    from safe_updater.adapters.docker_config import DockerConfigCredentials

    names = [r.credentials_block for r in config.registries if r.credentials_block]
    if not names:
        return DockerConfigCredentials()
    from safe_updater.blocks.registry_credentials import credentials_from_blocks

    return credentials_from_blocks(names, docker_config=True)


def docker_targets(config: AppConfig) -> list[DockerTarget]:
    """The configured Docker hosts; with no target of any kind, the local engine."""
    if config.targets.docker:
        return list(config.targets.docker)
    if config.targets.kubernetes:
        return []
    return [DockerTarget(name="local", url=None)]


def build_runtime(config_path: Path | None = None) -> Runtime:
    settings = Settings()
    config = load_config(config_path, settings=settings)
    store = StateStore.open(settings.resolve_state_url(config))
    closers: list[Callable[[], None]] = [store.close]
    try:
        credentials = registry_credentials(config)
        registry = OciRegistry(
            credentials=credentials,
            budget=StoreBudget(store),
            insecure_hosts=[r.host for r in config.registries if r.insecure],
        )
        closers.append(registry.close)
        inventories: list[Inventory] = []
        updaters: dict[tuple[AssetKind, str], AssetUpdater] = {}
        engines: dict[str, DockerSdkEngine] = {}
        for target in docker_targets(config):
            engine = DockerSdkEngine.connect(target.url, tls=_tls(target))
            closers.append(engine.close)
            engines[target.name] = engine
            inventories.append(DockerInventory(engine, target.name))
            updaters[(AssetKind.DOCKER, target.name)] = DockerContainerUpdater(
                engine, _auth_lookup(credentials)
            )
        planners: dict[tuple[AssetKind, str], HealthPlanner] = {}
        if engines:
            docker_planner = DockerHealthPlanner(config, engines)
            planners.update({(AssetKind.DOCKER, name): docker_planner for name in engines})
        versions: dict[tuple[AssetKind, str], VersionSource] = {}
        if config.targets.kubernetes:
            _add_kubernetes(
                config, registry, credentials, inventories, updaters, planners, versions, closers
            )
        notifiers = build_notifiers(config, closers)
    except BaseException:
        for close in reversed(closers):
            close()
        raise
    return Runtime(
        config=config,
        store=store,
        registry=registry,
        inventories=inventories,
        updaters=updaters,
        health=RoutingHealthPlanner(planners),
        closers=closers,
        versions=versions,
        notifiers=notifiers,
    )


def _add_kubernetes(
    config: AppConfig,
    registry: OciRegistry,
    credentials: CredentialsProvider,
    inventories: list[Inventory],
    updaters: dict[tuple[AssetKind, str], AssetUpdater],
    planners: dict[tuple[AssetKind, str], HealthPlanner],
    versions: dict[tuple[AssetKind, str], VersionSource],
    closers: list[Callable[[], None]],
) -> None:
    """Workloads (image patches) and Helm releases (chart or image upgrades) per cluster."""
    apis: dict[str, KubeApi] = {}
    sources = ChartSources(config.charts, registry, credentials=credentials)
    closers.append(sources.close)
    insecure = [r.host for r in config.registries if r.insecure]
    for index, target in enumerate(config.targets.kubernetes):
        kubeconfig = str(target.kubeconfig) if target.kubeconfig else None
        context = target.context
        if target.cluster_block:
            from safe_updater.blocks.kubernetes_cluster import load_cluster_block

            block = load_cluster_block(
                target.cluster_block, field=f"targets.kubernetes[{index}].cluster_block"
            )
            api = block.get_api()
            kubeconfig, remove = block.helm_kubeconfig()
            closers.append(remove)
            context = context or block.context
        else:
            api = KubeApi.connect(kubeconfig=target.kubeconfig, context=target.context)
        closers.append(api.close)
        apis[target.name] = api
        inventories.append(
            KubernetesInventory(
                api,
                target.name,
                namespaces=target.namespaces,
                exclude_namespaces=target.exclude_namespaces,
            )
        )
        updaters[(AssetKind.KUBERNETES, target.name)] = KubernetesImageUpdater(api, registry)
        helm = HelmCli(target.helm, kubeconfig=kubeconfig, context=context, insecure_hosts=insecure)
        inventories.append(
            HelmInventory(
                helm,
                target.name,
                sources,
                namespaces=target.namespaces,
                exclude_namespaces=target.exclude_namespaces,
            )
        )
        updaters[(AssetKind.HELM, target.name)] = HelmReleaseUpdater(helm, sources)
        versions[(AssetKind.HELM, target.name)] = sources
    planner = KubernetesHealthPlanner(config, apis)
    for name in apis:
        planners[(AssetKind.KUBERNETES, name)] = planner
        planners[(AssetKind.HELM, name)] = planner


def build_notifiers(
    config: AppConfig, closers: list[Callable[[], None]] | None = None
) -> list[NotificationRoute]:
    """One webhook notifier per ``notifications`` entry. A ``url_env`` that is unset is a config
    error now; a ``url_block`` is loaded when the first notice is sent, so a Prefect API that is
    down costs a warning then, not this runtime."""
    routes: list[NotificationRoute] = []
    for index, item in enumerate(config.notifications):
        notifier = WebhookNotifier(
            _notification_url(item, index),
            format=item.format,
            timeout=item.timeout.total_seconds(),
        )
        if closers is not None:
            closers.append(notifier.close)
        routes.append(NotificationRoute(item.name, frozenset(item.events), notifier))
    return routes


def _notification_url(item: NotificationConfig, index: int) -> str | Callable[[], str]:
    if item.url is not None:
        return item.url
    if item.url_env is not None:
        value = os.environ.get(item.url_env, "")
        if not value:
            raise ConfigError(
                f"environment variable {item.url_env} is not set",
                field=f"notifications[{index}].url_env",
                hint=f"export {item.url_env}=<webhook URL> or use url_block",
            )
        return value
    block = item.url_block
    assert block is not None

    def load() -> str:
        from safe_updater.blocks.webhook import webhook_url_from_block

        return webhook_url_from_block(block)

    return load


class RoutingHealthPlanner:
    """The health planner of the asset's kind and target."""

    def __init__(self, planners: Mapping[tuple[AssetKind, str], HealthPlanner]) -> None:
        self._planners = planners

    def plan(self, asset: Asset, applied: AppliedChange | None) -> tuple[list[Probe], HealthPolicy]:
        planner = self._planners.get((asset.kind, asset.target))
        if planner is None:
            raise NotFoundError(
                f"no health checks are configured for {asset.id}",
                hint="add its target under `targets:` in the config",
            )
        return planner.plan(asset, applied)


def _tls(target: DockerTarget) -> TlsSettings | None:
    if target.tls is None:
        return None
    return TlsSettings(
        verify=target.tls.verify,
        ca_cert=str(target.tls.ca_cert) if target.tls.ca_cert else None,
        client_cert=str(target.tls.client_cert) if target.tls.client_cert else None,
        client_key=str(target.tls.client_key) if target.tls.client_key else None,
    )


def _auth_lookup(credentials: CredentialsProvider) -> Callable[[str], dict[str, str] | None]:
    """The engine's pull auth from the same credentials the registry client uses."""

    def lookup(registry_host: str) -> dict[str, str] | None:
        credential = credentials.for_registry(registry_host)
        if credential is None:
            return None
        return {"username": credential.username, "password": credential.password.get_secret_value()}

    return lookup
