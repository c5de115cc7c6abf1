"""KubernetesInventory over a stateful fake API: opt-in, container choice, helm relation, paging."""

from __future__ import annotations

import pytest

from safe_updater.adapters.k8s_inventory import (
    HELM_RELEASE_LABEL,
    IMAGES_LABEL,
    KubernetesInventory,
)
from safe_updater.domain.assets import AssetKind
from support.fake_kube import FakeKubeApi, deployment

IMG = "localhost:5000/demo/web:1.0.0"


def inventory(api: FakeKubeApi, **kwargs: object) -> KubernetesInventory:
    return KubernetesInventory(api, "prod", **kwargs)  # type: ignore[arg-type]


def test_lists_opted_in_workloads_of_every_kind() -> None:
    api = FakeKubeApi()
    api.add(deployment("web", IMG))
    api.add(deployment("db", "postgres:16.1", kind="StatefulSet"))
    api.add(deployment("agent", "ghcr.io/x/agent:v2", kind="DaemonSet"))
    api.add(deployment("nightly", IMG, kind="CronJob"))
    off = deployment("off", IMG)
    off["metadata"]["annotations"] = {"safe-updater.io/enabled": "false"}
    api.add(off)
    assets = inventory(api).list_assets()
    assert [a.id for a in assets] == [
        "k8s:prod/ns/cronjob/nightly",
        "k8s:prod/ns/daemonset/agent",
        "k8s:prod/ns/deployment/web",
        "k8s:prod/ns/statefulset/db",
    ]
    db = next(a for a in assets if a.name == "db")
    assert db.kind is AssetKind.KUBERNETES and db.workload_kind == "StatefulSet"
    assert db.image is not None and db.image.repository == "library/postgres"
    assert db.current_version == "16.1" and db.container == "app" and db.namespace == "ns"
    assert db.opted_in


def test_container_annotation_picks_a_container_or_init_container() -> None:
    api = FakeKubeApi()
    containers = [{"name": "app", "image": IMG}, {"name": "proxy", "image": "envoy:1.30.1"}]
    init = [{"name": "migrate", "image": "localhost:5000/demo/api:2.0.0"}]
    api.add(deployment("a", IMG, containers=containers, init_containers=init))
    api.add(
        deployment(
            "b",
            IMG,
            containers=containers,
            init_containers=init,
            annotations={"safe-updater.io/container": "migrate"},
        )
    )
    api.add(deployment("c", IMG, annotations={"safe-updater.io/container": "nope"}))
    assets = {a.name: a for a in inventory(api).list_assets()}
    assert set(assets) == {"a", "b"}  # c names a container it lacks: skipped
    assert assets["a"].container == "app" and assets["a"].current_version == "1.0.0"
    assert assets["b"].container == "migrate" and assets["b"].current_version == "2.0.0"
    assert assets["a"].labels[IMAGES_LABEL] == (
        "init:migrate=localhost:5000/demo/api:2.0.0,app=" + IMG + ",proxy=envoy:1.30.1"
    )


def test_helm_managed_workloads_name_their_release() -> None:
    api = FakeKubeApi()
    api.add(
        deployment(
            "demo-web",
            IMG,
            labels={"app.kubernetes.io/managed-by": "Helm"},
            annotations={
                "meta.helm.sh/release-name": "demo",
                "meta.helm.sh/release-namespace": "ns",
            },
        )
    )
    api.add(deployment("plain", IMG))
    assets = {a.name: a for a in inventory(api).list_assets()}
    assert assets["demo-web"].labels[HELM_RELEASE_LABEL] == "ns/demo"
    assert HELM_RELEASE_LABEL not in assets["plain"].labels


def test_namespaces_include_exclude_and_paging() -> None:
    api = FakeKubeApi()
    for ns in ("prod", "prod-eu", "kube-system", "dev"):
        for i in range(3):
            api.add(deployment(f"w{i}", IMG, namespace=ns))
    inv = inventory(api, namespaces=["prod*"], exclude_namespaces=["*-eu"], page_size=2)
    assert {a.namespace for a in inv.list_assets()} == {"prod"}
    lists = [c for c in api.calls if c[0] == "list" and c[1] == "Deployment"]
    assert lists[0][2] is None  # a glob: one cluster-wide list, filtered
    assert len(lists) == 6 and all(c[3] == 2 for c in lists)  # 12 objects in pages of 2

    api.calls.clear()
    inv = inventory(api, namespaces=["dev", "prod"])
    assert len(inv.list_assets()) == 6
    scopes = {c[2] for c in api.calls if c[0] == "list"}
    assert scopes == {"dev", "prod"}  # named namespaces: listed one by one


def test_find_reads_one_workload_now() -> None:
    api = FakeKubeApi()
    api.add(deployment("web", IMG, namespace="prod"))
    inv = inventory(api, exclude_namespaces=["kube-*"])
    asset = inv.find("k8s:prod/prod/deployment/web")
    assert asset is not None and asset.current_version == "1.0.0"
    assert inv.find("k8s:prod/prod/deployment/gone") is None
    assert inv.find("k8s:other/prod/deployment/web") is None  # another cluster
    assert inv.find("k8s:prod/kube-system/deployment/web") is None  # excluded namespace
    assert inv.find("docker:prod/web") is None


@pytest.mark.parametrize("image", ["UPPER/case:1", "repo:bad tag", ""])
def test_unusable_images_are_skipped(image: str) -> None:
    api = FakeKubeApi()
    api.add(deployment("web", image))
    assert inventory(api).list_assets() == []
