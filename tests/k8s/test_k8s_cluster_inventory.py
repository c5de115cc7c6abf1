"""Inventory and the Helm relation on the real test cluster."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from k8s_support import Helm, K8sCluster
from k8s_workloads import create_workload, workload_manifest

from safe_updater.adapters.k8s_inventory import HELM_RELEASE_LABEL, KubernetesInventory
from safe_updater.adapters.k8s_updater import KubernetesImageUpdater
from safe_updater.adapters.kube_api import KubeApi, Page
from safe_updater.adapters.registry import OciRegistry
from safe_updater.config import AppConfig
from safe_updater.domain.assets import Asset, AssetKind, helm_asset_id
from safe_updater.domain.errors import PolicyViolationError
from safe_updater.k8s_health_planning import KubernetesHealthPlanner, release_workloads

pytestmark = pytest.mark.k8s

IMAGE = "localhost:5000/demo/web:1.0.0"


@pytest.fixture
def api(k8s_cluster: K8sCluster) -> Iterator[KubeApi]:
    kube = KubeApi.connect(kubeconfig=k8s_cluster.kubeconfig)
    try:
        yield kube
    finally:
        kube.close()


def test_inventory_pages_through_every_kind(
    k8s_cluster: K8sCluster, k8s_namespace: str, api: KubeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(30):
        manifest = workload_manifest("Deployment", f"web-{i:02d}", k8s_namespace, IMAGE, replicas=0)
        if i % 10 == 9:
            manifest["metadata"]["annotations"] = {}  # not opted in
        create_workload(k8s_cluster, manifest)
    for kind in ("StatefulSet", "DaemonSet", "CronJob"):
        create_workload(
            k8s_cluster, workload_manifest(kind, kind.lower(), k8s_namespace, IMAGE, replicas=0)
        )

    pages: list[tuple[str, int | None, bool]] = []
    real = api.list_page

    def spy(kind: str, namespace: str | None, **kwargs: Any) -> Page:
        page = real(kind, namespace, **kwargs)
        pages.append((kind, kwargs.get("limit"), bool(kwargs.get("continue_token"))))
        assert len(page.items) <= (kwargs.get("limit") or 500)
        return page

    monkeypatch.setattr(api, "list_page", spy)
    inventory = KubernetesInventory(api, "tb", namespaces=[k8s_namespace], page_size=10)
    assets = inventory.list_assets()
    deployments = [a for a in assets if a.workload_kind == "Deployment"]
    assert len(deployments) == 27  # 3 of 30 did not opt in
    assert {a.workload_kind for a in assets} == {
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "CronJob",
    }
    dep_pages = [p for p in pages if p[0] == "Deployment"]
    assert len(dep_pages) == 3 and all(limit == 10 for _, limit, _ in dep_pages)
    assert [cont for _, _, cont in dep_pages] == [False, True, True]
    assert all(a.current_version == "1.0.0" and a.container == "web" for a in assets)

    # a glob in `namespaces` lists cluster-wide and filters; excludes win
    inventory = KubernetesInventory(api, "tb", namespaces=[k8s_namespace[:-3] + "*"], page_size=50)
    assert len(inventory.list_assets()) == 30
    inventory = KubernetesInventory(api, "tb", exclude_namespaces=[k8s_namespace])
    assert not [a for a in inventory.list_assets() if a.namespace == k8s_namespace]


def test_helm_release_relation(
    k8s_cluster: K8sCluster, k8s_namespace: str, api: KubeApi, helm4: Helm
) -> None:
    helm4.run(
        "install",
        "demo",
        "demo",
        "--repo",
        k8s_cluster.chart_repo_http,
        "--version",
        "1.0.0",
        "-n",
        k8s_namespace,
        "--wait",
        "--timeout",
        "60s",
    )
    create_workload(
        k8s_cluster, workload_manifest("Deployment", "plain", k8s_namespace, IMAGE, replicas=1)
    )
    k8s_cluster.kubectl(
        "-n", k8s_namespace, "annotate", "deployment", "demo-demo", "safe-updater.io/enabled=true"
    )
    assets = {
        a.name: a for a in KubernetesInventory(api, "tb", namespaces=[k8s_namespace]).list_assets()
    }
    assert assets["demo-demo"].labels[HELM_RELEASE_LABEL] == f"{k8s_namespace}/demo"
    assert HELM_RELEASE_LABEL not in assets["plain"].labels

    # the k8s updater does not fight Helm: it points at the release instead
    registry = OciRegistry()
    try:
        with pytest.raises(PolicyViolationError, match=f"helm:tb/{k8s_namespace}/demo"):
            KubernetesImageUpdater(api, registry).preflight(assets["demo-demo"], "1.0.1")
    finally:
        registry.close()

    # health of a release: every workload of it, found by label or annotation
    assert release_workloads(api, k8s_namespace, "demo") == [("Deployment", "demo-demo")]
    release = Asset(
        id=helm_asset_id("tb", k8s_namespace, "demo"),
        kind=AssetKind.HELM,
        target="tb",
        name="demo",
        namespace=k8s_namespace,
        current_version="1.0.0",
        chart="demo",
    )
    probes, _ = KubernetesHealthPlanner(AppConfig(), {"tb": api}).plan(release, None)
    try:
        assert [p.name for p in probes] == ["rollout deployment/demo-demo"]
        sample = probes[0].check(datetime.now(UTC))
        assert sample.ok is True, sample.detail
    finally:
        for probe in probes:
            probe.close()  # type: ignore[attr-defined]
