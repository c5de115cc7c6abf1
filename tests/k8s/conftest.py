"""Fixtures for the Kubernetes test cluster started by `testbed/up k8s` (docs/test-cluster.md).

- `k8s_cluster` (session): the cluster from `$TESTBED_DIR/env` (KUBECONFIG, HELM3, HELM4, KUBECTL,
  TESTBED_K8S_VERSION, TESTBED_CHART_REPO_OCI/HTTP). Skips when the part is not up, and refuses
  a kubeconfig whose API server is not on loopback, so a developer's real cluster is never touched.
- `k8s_namespace`: a fresh namespace per test (default ServiceAccount ready), deleted afterwards.
- `helm`: a real helm bound to the cluster with helm dirs of its own, parametrized over helm 3
  and helm 4; `helm3`/`helm4` for one of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8s_support import ENV_KEYS, Helm, K8sCluster, loopback_only


@pytest.fixture(scope="session")
def k8s_cluster(testbed_env: dict[str, str]) -> K8sCluster:
    # The env file wins for KUBECONFIG: a KUBECONFIG in the shell may point at a real cluster.
    env = {key: testbed_env.get(key) or os.environ.get(key, "") for key in ENV_KEYS}
    if not env["KUBECONFIG"] or not env["TESTBED_K8S_VERSION"]:
        pytest.skip(
            "KUBECONFIG/TESTBED_K8S_VERSION are not set: start the test cluster with "
            "`testbed/up k8s` (then set TESTBED_DIR or source $TESTBED_DIR/env)"
        )
    missing = [key for key, value in env.items() if not value]
    if missing:
        pytest.fail(f"the k8s test bed env lacks {', '.join(missing)}; re-run `testbed/up k8s`")
    for key in ("KUBECONFIG", "HELM3", "HELM4", "KUBECTL"):
        if not Path(env[key]).is_file():
            pytest.fail(f"{key}={env[key]} does not exist; is the k8s test bed still up?")
    cluster = K8sCluster.from_env(env)
    if not loopback_only(cluster.server):
        pytest.skip(f"KUBECONFIG points at {cluster.server}, not at the loopback test cluster")
    return cluster


@pytest.fixture
def k8s_namespace(k8s_cluster: K8sCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = k8s_cluster.create_namespace(request.node.originalname or request.node.name)
    try:
        yield name
    finally:
        k8s_cluster.delete_namespace(name)


@pytest.fixture(params=["helm3", "helm4"])
def helm(k8s_cluster: K8sCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Helm:
    return k8s_cluster.helm(request.param, tmp_path / request.param)


@pytest.fixture
def helm3(k8s_cluster: K8sCluster, tmp_path: Path) -> Helm:
    return k8s_cluster.helm("helm3", tmp_path / "helm3")


@pytest.fixture
def helm4(k8s_cluster: K8sCluster, tmp_path: Path) -> Helm:
    return k8s_cluster.helm("helm4", tmp_path / "helm4")
