"""RBAC: the updater works as a ServiceAccount bound to the shipped ClusterRole, and fails with a
message naming the missing verb when the role lacks it."""

from __future__ import annotations

import base64
import copy
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_support import REPO_ROOT, K8sCluster
from k8s_workloads import create_workload, watch_rollout, workload_manifest

from safe_updater.adapters.k8s_health import RolloutProbe
from safe_updater.adapters.k8s_inventory import KubernetesInventory
from safe_updater.adapters.k8s_updater import KubernetesImageUpdater
from safe_updater.adapters.kube_api import RBAC_FILE, KubeApi
from safe_updater.adapters.registry import OciRegistry
from safe_updater.domain.errors import AuthError
from safe_updater.domain.health import VerdictState
from safe_updater.domain.rollout import RolloutCheck

pytestmark = pytest.mark.k8s


def shipped_role(name: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((REPO_ROOT / RBAC_FILE).read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == name)
    return copy.deepcopy(role)


def test_the_shipped_file_is_valid_for_the_api_server(k8s_cluster: K8sCluster) -> None:
    path = str(REPO_ROOT / RBAC_FILE)
    try:
        out = k8s_cluster.kubectl("apply", "-f", path)
        assert "clusterrole.rbac.authorization.k8s.io/safe-updater created" in out
        assert "serviceaccount/safe-updater created" in out
    finally:
        k8s_cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", path)


class ServiceAccountLogin:
    """A ServiceAccount bound to a ClusterRole, with a kubeconfig from the TokenRequest API."""

    def __init__(self, cluster: K8sCluster, namespace: str, rules: list[dict[str, Any]]) -> None:
        from kubernetes import client

        self.cluster = cluster
        self.name = f"su-test-{uuid.uuid4().hex[:8]}"
        rbac = client.RbacAuthorizationV1Api(cluster.api_client)
        cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": self.name}})
        rbac.create_cluster_role({"metadata": {"name": self.name}, "rules": rules})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": self.name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": self.name,
                },
                "subjects": [{"kind": "ServiceAccount", "name": self.name, "namespace": namespace}],
            }
        )
        token = cluster.core.create_namespaced_service_account_token(
            self.name, namespace, {"spec": {"expirationSeconds": 600}}
        ).status.token
        admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
        server = admin["clusters"][0]["cluster"]
        ca = (
            server.get("certificate-authority-data")
            or base64.b64encode(Path(server["certificate-authority"]).read_bytes()).decode()
        )
        self.kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tb",
                    "cluster": {"server": server["server"], "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": self.name, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "tb", "user": self.name}}],
            "current-context": "sa",
        }

    def close(self) -> None:
        from kubernetes import client

        rbac = client.RbacAuthorizationV1Api(self.cluster.api_client)
        rbac.delete_cluster_role_binding(self.name)
        rbac.delete_cluster_role(self.name)


@pytest.fixture
def registry() -> Iterator[OciRegistry]:
    if not os.environ.get("TESTBED_IMAGE_REPO"):
        pytest.skip("TESTBED_IMAGE_REPO is not set: start `testbed/up registry k8s`")
    reg = OciRegistry()
    try:
        yield reg
    finally:
        reg.close()


def test_updater_works_with_the_shipped_cluster_role(
    k8s_cluster: K8sCluster, k8s_namespace: str, registry: OciRegistry
) -> None:
    repo = os.environ["TESTBED_IMAGE_REPO"]
    create_workload(
        k8s_cluster, workload_manifest("Deployment", "web", k8s_namespace, f"{repo}:1.0.0")
    )
    login = ServiceAccountLogin(k8s_cluster, k8s_namespace, shipped_role("safe-updater")["rules"])
    api = KubeApi.connect(kubeconfig_data=yaml.safe_dump(login.kubeconfig))
    try:
        (asset,) = [
            a for a in KubernetesInventory(api, "tb").list_assets() if a.namespace == k8s_namespace
        ]
        updater = KubernetesImageUpdater(api, registry)
        updater.preflight(asset, "1.0.1")
        snapshot = updater.snapshot(asset)
        applied = updater.apply(asset, snapshot, "1.0.1")
        verdict, _, _ = watch_rollout(
            api,
            "Deployment",
            k8s_namespace,
            "web",
            window=3,
            expected_image=("web", f"{repo}:1.0.1"),
        )
        assert verdict.state is VerdictState.HEALTHY, verdict.reason
        updater.rollback(asset, snapshot, applied)
        assert updater.running_version(asset) == "1.0.0"
    finally:
        api.close()
        login.close()


def test_a_role_without_patch_fails_with_a_clear_message(
    k8s_cluster: K8sCluster, k8s_namespace: str, registry: OciRegistry
) -> None:
    repo = os.environ["TESTBED_IMAGE_REPO"]
    create_workload(
        k8s_cluster, workload_manifest("Deployment", "web", k8s_namespace, f"{repo}:1.0.0")
    )
    rules = shipped_role("safe-updater")["rules"]
    for rule in rules:
        rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
    login = ServiceAccountLogin(k8s_cluster, k8s_namespace, rules)
    api = KubeApi.connect(kubeconfig_data=login.kubeconfig)
    try:
        asset = KubernetesInventory(api, "tb").find(f"k8s:tb/{k8s_namespace}/deployment/web")
        assert asset is not None  # reading works
        with pytest.raises(AuthError) as info:
            KubernetesImageUpdater(api, registry).preflight(asset, "1.0.1")
        text = str(info.value)
        assert f"may not patch apps/deployments in namespace {k8s_namespace}" in text
        assert "missing RBAC verb 'patch'" in text and RBAC_FILE in text
        assert "1.0.0" in k8s_cluster.kubectl(
            "-n", k8s_namespace, "get", "deployment", "web", "-o", "jsonpath={..image}"
        )
    finally:
        api.close()
        login.close()


def test_without_any_role_reads_fail_with_a_clear_message(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    login = ServiceAccountLogin(k8s_cluster, k8s_namespace, [])
    api = KubeApi.connect(kubeconfig_data=login.kubeconfig)
    try:
        with pytest.raises(AuthError, match="may not list apps/deployments"):
            KubernetesInventory(api, "tb").list_assets()
        probe = RolloutProbe(
            api,
            RolloutCheck(workload_kind="Deployment", namespace=k8s_namespace, workload="web"),
            sync_timeout=1,
        )
        sample = probe.check(datetime.now(UTC))
        assert sample.ok is False and "may not get apps/deployments" in sample.detail
        probe.close()
    finally:
        api.close()
        login.close()
