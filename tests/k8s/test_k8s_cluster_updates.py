"""Image updates of plain workloads on the real test cluster: apply, watch the rollout, roll back.

A "broken" version is a tag the namespace's MutatingAdmissionPolicy marks for kwok
(k8s_workloads.broken_image_policy): 1.0.2 pods never become Ready, 1.2.0 pods crash-loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from k8s_support import K8sCluster, wait_until
from k8s_workloads import (
    BROKEN_TAG,
    CRASHLOOP_TAG,
    broken_image_policy,
    create_workload,
    watch_rollout,
    workload_manifest,
)

from safe_updater.adapters.k8s_inventory import KubernetesInventory
from safe_updater.adapters.k8s_updater import KubernetesImageUpdater
from safe_updater.adapters.kube_api import KubeApi
from safe_updater.adapters.registry import OciRegistry
from safe_updater.domain.assets import Asset
from safe_updater.domain.health import VerdictState

pytestmark = pytest.mark.k8s


@pytest.fixture
def api(k8s_cluster: K8sCluster) -> Iterator[KubeApi]:
    kube = KubeApi.connect(kubeconfig=k8s_cluster.kubeconfig)
    try:
        yield kube
    finally:
        kube.close()


@pytest.fixture
def image_repo() -> str:
    repo = os.environ.get("TESTBED_IMAGE_REPO")
    if not repo:
        pytest.skip("TESTBED_IMAGE_REPO is not set: start `testbed/up registry k8s`")
    return repo


@pytest.fixture
def updater(api: KubeApi) -> Iterator[KubernetesImageUpdater]:
    registry = OciRegistry()
    try:
        yield KubernetesImageUpdater(api, registry)
    finally:
        registry.close()


def deploy(
    cluster: K8sCluster, api: KubeApi, kind: str, namespace: str, image: str, name: str = "web"
) -> Asset:
    create_workload(cluster, workload_manifest(kind, name, namespace, image))
    asset = KubernetesInventory(api, "tb").find(f"k8s:tb/{namespace}/{kind.lower()}/{name}")
    assert asset is not None
    verdict, _, _ = watch_rollout(api, kind, namespace, name, window=2, interval=0.5)
    assert verdict.state is VerdictState.HEALTHY, verdict.reason
    return asset


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_good_version_rolls_out_healthy(
    kind: str,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    api: KubeApi,
    updater: KubernetesImageUpdater,
    image_repo: str,
) -> None:
    asset = deploy(k8s_cluster, api, kind, k8s_namespace, f"{image_repo}:1.0.0")
    updater.preflight(asset, "1.0.1")
    snapshot = updater.snapshot(asset)
    assert snapshot.version == "1.0.0" and snapshot.data["revision"]
    applied = updater.apply(asset, snapshot, "1.0.1")
    assert applied.data["generation"] == snapshot.data["generation"] + 1
    verdict, samples, _ = watch_rollout(
        api,
        kind,
        k8s_namespace,
        "web",
        window=3,
        expected_image=("web", f"{image_repo}:1.0.1"),
    )
    assert verdict.state is VerdictState.HEALTHY, verdict.reason
    assert any(s.ok is None for s in samples) or samples[0].ok  # in progress, then complete
    assert updater.running_version(asset) == "1.0.1"
    pods = k8s_cluster.pods(k8s_namespace, "app=web")
    assert {c.image for p in pods for c in p.spec.containers} == {f"{image_repo}:1.0.1"}
    updater.commit(asset, snapshot, applied)


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_broken_version_is_unhealthy_and_rollback_restores_it(
    kind: str,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    api: KubeApi,
    updater: KubernetesImageUpdater,
    image_repo: str,
) -> None:
    with broken_image_policy(k8s_cluster, k8s_namespace):
        asset = deploy(k8s_cluster, api, kind, k8s_namespace, f"{image_repo}:1.0.1")
        snapshot = updater.snapshot(asset)
        applied = updater.apply(asset, snapshot, BROKEN_TAG)
        verdict, samples, _ = watch_rollout(
            api,
            kind,
            k8s_namespace,
            "web",
            window=6,
            expected_image=("web", applied.data["image_after"]),
        )
        assert verdict.state is VerdictState.UNHEALTHY
        assert "window" in verdict.reason and "not ready" in verdict.reason  # the deadline
        assert not any(s.fatal for s in samples)

        updater.rollback(asset, snapshot, applied)
        updater.rollback(asset, snapshot, applied)  # idempotent
        assert updater.running_version(asset) == "1.0.1"
        verdict, _, _ = watch_rollout(
            api, kind, k8s_namespace, "web", window=3, expected_image=("web", f"{image_repo}:1.0.1")
        )
        assert verdict.state is VerdictState.HEALTHY, verdict.reason
        wait_until(
            lambda: (
                {
                    c.image
                    for p in k8s_cluster.pods(k8s_namespace, "app=web")
                    for c in p.spec.containers
                }
                == {f"{image_repo}:1.0.1"}
            ),
            timeout=30,
            what="only old-image pods left",
        )


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_crash_looping_version_fails_before_the_deadline(
    kind: str,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    api: KubeApi,
    updater: KubernetesImageUpdater,
    image_repo: str,
) -> None:
    with broken_image_policy(k8s_cluster, k8s_namespace):
        asset = deploy(k8s_cluster, api, kind, k8s_namespace, f"{image_repo}:1.0.1")
        snapshot = updater.snapshot(asset)
        applied = updater.apply(asset, snapshot, CRASHLOOP_TAG)
        verdict, samples, seconds = watch_rollout(api, kind, k8s_namespace, "web", window=120)
        assert verdict.state is VerdictState.UNHEALTHY
        assert seconds < 60, f"took {seconds:.1f}s: not fail-fast"
        assert samples[-1].fatal and "broken" in samples[-1].detail
        updater.rollback(asset, snapshot, applied)
        verdict, _, _ = watch_rollout(api, kind, k8s_namespace, "web", window=3)
        assert verdict.state is VerdictState.HEALTHY, verdict.reason


def test_cronjob_template_update_and_rollback(
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    api: KubeApi,
    updater: KubernetesImageUpdater,
    image_repo: str,
) -> None:
    create_workload(
        k8s_cluster, workload_manifest("CronJob", "nightly", k8s_namespace, f"{image_repo}:1.0.0")
    )
    asset = KubernetesInventory(api, "tb").find(f"k8s:tb/{k8s_namespace}/cronjob/nightly")
    assert asset is not None
    snapshot = updater.snapshot(asset)
    applied = updater.apply(asset, snapshot, "1.1.0")
    verdict, _, _ = watch_rollout(
        api,
        "CronJob",
        k8s_namespace,
        "nightly",
        window=1,
        expected_image=("web", f"{image_repo}:1.1.0"),
    )
    assert verdict.state is VerdictState.HEALTHY, verdict.reason
    updater.rollback(asset, snapshot, None)
    assert updater.running_version(asset) == "1.0.0"
    assert applied.to_version == "1.1.0"


def test_preflight_refuses_a_tag_the_registry_lacks(
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    api: KubeApi,
    updater: KubernetesImageUpdater,
    image_repo: str,
) -> None:
    from safe_updater.adapters.errors import ImageNotFoundError

    asset = deploy(k8s_cluster, api, "Deployment", k8s_namespace, f"{image_repo}:1.0.0")
    with pytest.raises(ImageNotFoundError):
        updater.preflight(asset, "9.9.9")
    assert updater.running_version(asset) == "1.0.0"
