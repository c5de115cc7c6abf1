"""Smoke tests of the Kubernetes test cluster: real control plane, kwok pods, real helm 3 and 4."""

from __future__ import annotations

import pytest
from k8s_support import (
    CRASHLOOP_LABEL,
    FAIL_LABEL,
    Helm,
    K8sCluster,
    demo_chart_versions,
    pod_images,
    pod_ready,
    ready_pods,
    wait_until,
)

pytestmark = pytest.mark.k8s

RELEASE = "demo"
SELECTOR = "app.kubernetes.io/instance=demo"
REPLICAS = 2  # the chart's default replicaCount


def test_control_plane_reports_its_version_and_kwok_nodes_are_ready(
    k8s_cluster: K8sCluster,
) -> None:
    from kubernetes import client

    info = client.VersionApi(k8s_cluster.api_client).get_code()
    assert info.git_version == k8s_cluster.version
    assert k8s_cluster.server.startswith("https://127.0.0.1:")
    nodes = k8s_cluster.core.list_node().items
    assert len(nodes) >= 3
    for node in nodes:
        assert node.metadata.annotations.get("kwok.x-k8s.io/node") == "fake"
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name


def test_both_chart_repos_serve_every_demo_version(k8s_cluster: K8sCluster, helm4: Helm) -> None:
    versions = demo_chart_versions()
    assert {"ok", "fail", "crashloop"} <= set(versions.values())
    for version, mode in versions.items():
        oci = helm4.run(
            "show", "values", k8s_cluster.oci_chart(), "--version", version, "--plain-http"
        ).stdout
        http = helm4.run(
            "show", "values", "demo", "--repo", k8s_cluster.chart_repo_http, "--version", version
        ).stdout
        assert oci == http
        assert ("fail: true" in oci) == (mode == "fail"), version
        assert ("crashloop: true" in oci) == (mode == "crashloop"), version


def test_install_broken_upgrade_rollback_history(
    k8s_cluster: K8sCluster, k8s_namespace: str, helm: Helm
) -> None:
    ns = k8s_namespace
    # 1. install 1.0.0 from the HTTP repo: deployed, with Ready pods.
    helm.run(
        "install", RELEASE, "demo", "--repo", k8s_cluster.chart_repo_http, "--version", "1.0.0",
        "-n", ns, "--wait", "--timeout", "90s",
    )  # fmt: skip
    status = helm.json("status", RELEASE, "-n", ns)
    assert (status["version"], status["info"]["status"]) == (1, "deployed")
    pods = wait_until(
        lambda: ready_pods(k8s_cluster, ns, SELECTOR, REPLICAS), 30, what="ready 1.0.0 pods"
    )
    assert pod_images(pods) == {"localhost:5000/demo/web:1.0.0"}
    manifest_1 = helm.run("get", "manifest", RELEASE, "-n", ns, "--revision", "1").stdout

    # 2. upgrade to the broken 1.0.2 from the OCI repo: the wait fails, the release is failed.
    upgrade = helm.run(
        "upgrade", RELEASE, k8s_cluster.oci_chart(), "--version", "1.0.2", "--plain-http",
        "-n", ns, "--wait", "--timeout", "20s",
        check=False,
    )  # fmt: skip
    assert upgrade.returncode != 0, upgrade.stdout
    status = helm.json("status", RELEASE, "-n", ns)
    assert (status["version"], status["info"]["status"]) == (2, "failed")
    broken = k8s_cluster.pods(ns, f"{SELECTOR},{FAIL_LABEL}=true")
    assert broken, "the broken version's pods exist"
    assert all(p.status.phase == "Running" and not pod_ready(p) for p in broken)
    assert pod_images(broken) == {"localhost:5000/demo/web:1.0.2"}
    deployment = k8s_cluster.apps.read_namespaced_deployment(f"{RELEASE}-demo", ns)
    assert deployment.status.ready_replicas == REPLICAS  # the old pods keep serving

    # 3. rollback to revision 1: revision 3 is deployed with revision 1's manifest.
    helm.run("rollback", RELEASE, "1", "-n", ns, "--wait", "--timeout", "90s")
    status = helm.json("status", RELEASE, "-n", ns)
    assert (status["version"], status["info"]["status"]) == (3, "deployed")
    manifest_3 = helm.run("get", "manifest", RELEASE, "-n", ns, "--revision", "3").stdout
    assert manifest_3 == manifest_1
    pods = wait_until(
        lambda: ready_pods(k8s_cluster, ns, SELECTOR, REPLICAS), 30, what="only 1.0.0 pods left"
    )
    assert pod_images(pods) == {"localhost:5000/demo/web:1.0.0"}
    assert not any(FAIL_LABEL in (p.metadata.labels or {}) for p in pods)

    # 4. history shows all three.
    history = helm.json("history", RELEASE, "-n", ns)
    assert [(h["revision"], h["status"], h["chart"]) for h in history] == [
        (1, "superseded", "demo-1.0.0"),
        (2, "failed", "demo-1.0.2"),
        (3, "deployed", "demo-1.0.0"),
    ]
    assert history[2]["description"] == "Rollback to 1"


def test_crashloop_version_shows_crashloopbackoff_with_growing_restarts(
    k8s_cluster: K8sCluster, k8s_namespace: str, helm4: Helm
) -> None:
    ns = k8s_namespace
    helm4.run(
        "install", RELEASE, k8s_cluster.oci_chart(), "--version", "1.1.1", "--plain-http",
        "-n", ns,
    )  # fmt: skip
    selector = f"{SELECTOR},{CRASHLOOP_LABEL}=true"

    def restarts() -> dict[str, int] | None:
        counts: dict[str, int] = {}
        for pod in k8s_cluster.pods(ns, selector):
            statuses = pod.status.container_statuses or []
            waiting = [s for s in statuses if s.state.waiting is not None]
            if not waiting or waiting[0].state.waiting.reason != "CrashLoopBackOff":
                return None
            assert not pod_ready(pod)
            assert waiting[0].last_state.terminated.exit_code == 1
            counts[pod.metadata.name] = waiting[0].restart_count
        return counts if len(counts) == REPLICAS else None

    first = wait_until(restarts, 30, what="pods in CrashLoopBackOff")

    def grown() -> dict[str, int] | None:
        counts = restarts()
        if counts and all(counts.get(name, 0) >= n + 2 for name, n in first.items()):
            return counts
        return None

    later = wait_until(grown, 30, what="restart counts grow by 2")
    assert all(later[name] > first[name] for name in first)
    deployment = k8s_cluster.apps.read_namespaced_deployment(f"{RELEASE}-demo", ns)
    assert not deployment.status.ready_replicas
