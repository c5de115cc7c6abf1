"""The Helm releases of one cluster as assets (``helm:<cluster>/<namespace>/<release>``).

Helm releases carry no labels of their own that every helm version shows, so opt-in comes from
the config: a release matched by an entry of ``charts:`` is opted in (it needs a chart source to
be updated at all). Workload annotations (``safe-updater.io/*`` on the release's Deployments)
belong to the Kubernetes inventory, which relates workloads to releases.

Each asset gets ``safe-updater.io/enabled: "true"`` plus informational labels outside our prefix
(so policy ignores them): ``helm.sh/chart``, ``helm.sh/app-version``, ``helm.sh/revision`` and
``helm.sh/status``. ``current_version`` is the chart version, or, for an entry that tracks an
image, the tag at its ``values_path``; then ``image`` is set too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fnmatch import fnmatchcase

from safe_updater.adapters.chart_sources import ChartSources, ChartSpec, Track
from safe_updater.adapters.helm_cli import HelmCli
from safe_updater.adapters.helm_models import ReleaseNotFoundError, ReleaseSummary
from safe_updater.domain.assets import (
    ENABLE_LABEL,
    Asset,
    AssetKind,
    helm_asset_id,
    parse_asset_id,
)
from safe_updater.domain.errors import SafeUpdaterError

log = logging.getLogger(__name__)


class HelmInventory:
    """:class:`~safe_updater.adapters.inventory.Inventory` of opted-in Helm releases."""

    def __init__(
        self,
        helm: HelmCli,
        target: str,
        sources: ChartSources,
        *,
        namespaces: Sequence[str] = (),
        exclude_namespaces: Sequence[str] = (),
    ) -> None:
        self._helm = helm
        self._target = target
        self._sources = sources
        self._namespaces = list(namespaces)
        self._exclude = list(exclude_namespaces)

    @property
    def kind(self) -> AssetKind:
        return AssetKind.HELM

    @property
    def target(self) -> str:
        return self._target

    def list_assets(self) -> list[Asset]:
        if self._namespaces:
            # One list per namespace: listing all of them needs read access to every Secret of
            # the cluster (helm's storage), which a least-privilege ServiceAccount must not have.
            releases = [
                release
                for namespace in dict.fromkeys(self._namespaces)
                for release in self._helm.list_releases(namespace)
            ]
        else:
            releases = self._helm.list_releases()
        assets = []
        for release in releases:
            if not self._watched(release.namespace):
                continue
            spec = self._sources.spec_for(release.namespace, release.name)
            if spec is None:
                continue
            try:
                assets.append(self._asset(release, spec))
            except SafeUpdaterError as exc:
                log.warning("skipping helm release %s/%s: %s", release.namespace, release.name, exc)
        return assets

    def find(self, asset_id: str) -> Asset | None:
        kind, parts = parse_asset_id(asset_id)
        if kind is not AssetKind.HELM or parts[0] != self._target:
            return None
        namespace, name = parts[1], parts[2]
        spec = self._sources.spec_for(namespace, name)
        if spec is None or not self._watched(namespace):
            return None
        try:
            meta = self._helm.metadata(name, namespace)
        except ReleaseNotFoundError:
            return None
        summary = ReleaseSummary(
            name=meta.name,
            namespace=meta.namespace,
            revision=meta.revision,
            updated=meta.deployed_at,
            status=meta.status,
            chart=f"{meta.chart}-{meta.version}",
            app_version=meta.app_version,
        )
        return self._asset(summary, spec)

    def _watched(self, namespace: str) -> bool:
        if self._namespaces and namespace not in self._namespaces:
            return False
        return not any(fnmatchcase(namespace, pattern) for pattern in self._exclude)

    def _asset(self, release: ReleaseSummary, spec: ChartSpec) -> Asset:
        labels = {
            ENABLE_LABEL: "true",
            "helm.sh/chart": release.chart,
            "helm.sh/app-version": release.app_version,
            "helm.sh/revision": str(release.revision),
            "helm.sh/status": release.status.value,
        }
        image = None
        version = release.chart_version
        if spec.track is Track.IMAGE:
            values = self._helm.get_values(release.name, release.namespace, all_values=True)
            image = self._sources.image_of(spec, values)
            if image is None or image.tag is None:
                raise SafeUpdaterError(f"no image at {spec.values_path!r} in the release's values")
            version = image.tag
        return Asset(
            id=helm_asset_id(self._target, release.namespace, release.name),
            kind=AssetKind.HELM,
            target=self._target,
            name=release.name,
            namespace=release.namespace,
            image=image,
            current_version=version,
            chart=release.chart_name,
            labels=labels,
        )
