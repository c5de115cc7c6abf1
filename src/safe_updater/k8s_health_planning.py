"""Which health checks watch a ``k8s:`` workload or a ``helm:`` release after an update.

* A **rollout** check per workload, always: for a ``k8s:`` asset its own workload (with the image
  the update set as the expected template image); for a ``helm:`` asset every Deployment,
  StatefulSet and DaemonSet of the release (label ``app.kubernetes.io/instance=<release>`` or the
  annotation ``meta.helm.sh/release-name``) in the release's namespace.
* The explicit checks of the annotations (``safe-updater.io/health.http``, ``.tcp``, ``.exec``,
  ``.prometheus.*``) or
  of the config's ``assets:`` entry, as for Docker. ``exec`` runs in a ready pod of the new
  revision. ``health.docker`` is refused: it applies to Docker containers only.
* ``safe-updater.io/health.failure-fraction`` (default 0.1): the share of the desired pods that
  may be broken before the rollout check fails at once.

Policy precedence as for Docker: annotations, then the config's ``assets:`` entry, then the
config's ``health:`` defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from safe_updater.adapters.k8s_health import (
    KubernetesExecProbe,
    RolloutProbe,
    StaticProbe,
)
from safe_updater.adapters.k8s_inventory import (
    HELM_RELEASE_NAME,
    HELM_RELEASE_NAMESPACE,
)
from safe_updater.adapters.kube_api import KubeApi
from safe_updater.adapters.probes import HttpProbe, Probe, TcpProbe
from safe_updater.adapters.prometheus_query import PrometheusProbe
from safe_updater.config import AppConfig
from safe_updater.domain.assets import Asset, AssetKind
from safe_updater.domain.errors import InvalidInputError, NotFoundError
from safe_updater.domain.health import (
    CheckSpec,
    ExecCheck,
    HealthPolicy,
    HttpCheck,
    PrometheusCheck,
    TcpCheck,
    parse_health_labels,
)
from safe_updater.domain.plans import AppliedChange
from safe_updater.domain.rollout import (
    RolloutCheck,
    parse_failure_fraction,
    split_rollout_labels,
)
from safe_updater.health_planning import (
    asset_settings,
    base_policy,
    configured_checks,
    configured_overrides,
    merge_overrides,
)

HELM_INSTANCE_LABEL = "app.kubernetes.io/instance"
RELEASE_WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def release_workloads(api: KubeApi, namespace: str, release: str) -> list[tuple[str, str]]:
    """``(kind, name)`` of every Deployment, StatefulSet and DaemonSet of a Helm release."""
    found: dict[tuple[str, str], None] = {}
    for kind in RELEASE_WORKLOAD_KINDS:
        for obj in api.list_all(kind, namespace):
            meta = obj.get("metadata") or {}
            labels = meta.get("labels") or {}
            annotations = meta.get("annotations") or {}
            by_label = labels.get(HELM_INSTANCE_LABEL) == release
            by_annotation = annotations.get(HELM_RELEASE_NAME) == release and (
                annotations.get(HELM_RELEASE_NAMESPACE, namespace) == namespace
            )
            if by_label or by_annotation:
                found[(kind, str(meta.get("name")))] = None
    return sorted(found)


class KubernetesHealthPlanner:
    """Probes for a workload or release right after it was updated."""

    def __init__(
        self,
        config: AppConfig,
        apis: Mapping[str, KubeApi],
        *,
        sync_timeout: float = 5.0,
    ) -> None:
        self._config = config
        self._apis = apis
        self._sync_timeout = sync_timeout

    def plan(self, asset: Asset, applied: AppliedChange | None) -> tuple[list[Probe], HealthPolicy]:
        if asset.kind not in (AssetKind.KUBERNETES, AssetKind.HELM):
            raise InvalidInputError(f"no Kubernetes health planner for {asset.kind.value} assets")
        api = self._apis.get(asset.target)
        if api is None:
            raise NotFoundError(
                f"no Kubernetes cluster named {asset.target!r} for {asset.id}",
                hint="add it under targets.kubernetes in the config",
            )
        if not asset.namespace:
            raise InvalidInputError(f"{asset.id} has no namespace")
        labels, rollout_labels = split_rollout_labels(asset.labels)
        fraction = parse_failure_fraction(rollout_labels, asset_id=asset.id)
        settings = asset_settings(self._config, asset.id)
        label_checks, label_overrides = parse_health_labels(labels, asset_id=asset.id)
        explicit: Sequence[CheckSpec] = label_checks or configured_checks(
            settings.health if settings else None, self._config
        )
        overrides = merge_overrides(
            label_overrides, configured_overrides(settings.health if settings else None)
        )
        if overrides.docker_health:
            raise InvalidInputError(
                f"safe-updater.io/health.docker on {asset.id}: Docker's HEALTHCHECK does not "
                "apply to Kubernetes workloads",
                hint="remove it; the rollout check and readiness probes cover it",
                field="safe-updater.io/health.docker",
            )
        rollouts = self._rollout_probes(api, asset, applied, fraction)
        probes: list[Probe] = list(rollouts)
        if not rollouts:
            probes.append(
                StaticProbe(
                    f"rollout helm/{asset.name}",
                    True,
                    "the release has no Deployment, StatefulSet or DaemonSet to watch",
                )
            )
        for spec in explicit:
            if isinstance(spec, HttpCheck):
                probes.append(HttpProbe(spec))
            elif isinstance(spec, TcpCheck):
                probes.append(TcpProbe(spec))
            elif isinstance(spec, PrometheusCheck):
                probes.append(PrometheusProbe(spec))
            elif isinstance(spec, ExecCheck):
                if not rollouts:
                    raise InvalidInputError(
                        f"{asset.id}: an exec check needs a workload whose pods it can run in"
                    )
                container = asset.container if asset.kind is AssetKind.KUBERNETES else None
                probes.append(KubernetesExecProbe(api, rollouts[0], spec, container=container))
        policy = overrides.apply_to(base_policy(self._config))
        return probes, policy

    def _rollout_probes(
        self, api: KubeApi, asset: Asset, applied: AppliedChange | None, fraction: float
    ) -> list[RolloutProbe]:
        assert asset.namespace is not None
        if asset.kind is AssetKind.KUBERNETES:
            if not asset.workload_kind:
                raise InvalidInputError(f"{asset.id} has no workload kind")
            expected: tuple[str, str] | None = None
            image_after = (applied.data if applied else {}).get("image_after")
            if image_after and asset.container:
                expected = (asset.container, str(image_after))
            check = RolloutCheck(
                workload_kind=asset.workload_kind,
                namespace=asset.namespace,
                workload=asset.name,
                failure_fraction=fraction,
            )
            return [
                RolloutProbe(api, check, expected_image=expected, sync_timeout=self._sync_timeout)
            ]
        return [
            RolloutProbe(
                api,
                RolloutCheck(
                    workload_kind=kind,
                    namespace=asset.namespace,
                    workload=name,
                    failure_fraction=fraction,
                ),
                sync_timeout=self._sync_timeout,
            )
            for kind, name in release_workloads(api, asset.namespace, asset.name)
        ]
