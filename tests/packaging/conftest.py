"""Fixtures for the packaging tests: the Helm chart, the image and the Grafana dashboard.

- `helm_binary`: a real helm, parametrized over helm 3 and helm 4 (`HELM3`/`HELM4` from the test
  bed's env file or the environment, as tests/k8s use them; else `helm` on PATH). Rendering and
  linting need no cluster, so these tests run whenever a helm binary is there.
- `k8s_cluster`, `k8s_namespace`, `helm`: the same as tests/k8s/conftest.py (that directory's
  fixtures are not visible here), built on its helpers in tests/k8s/k8s_support.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/k8s has no __init__.py: its helper module is found by path, like its own conftest does.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))

from k8s_support import ENV_KEYS, Helm, K8sCluster, loopback_only

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "deployments" / "helm" / "safe-updater"
DASHBOARD = REPO_ROOT / "deployments" / "grafana" / "safe-updater-dashboard.json"
DOCKERFILE = REPO_ROOT / "Dockerfile"


def _helm_path(key: str, testbed_env: dict[str, str]) -> str | None:
    found = testbed_env.get(key) or os.environ.get(key)
    if found and Path(found).is_file():
        return found
    return None


@pytest.fixture(params=["HELM3", "HELM4"], ids=["helm3", "helm4"])
def helm_binary(request: pytest.FixtureRequest, testbed_env: dict[str, str]) -> Path:
    path = _helm_path(request.param, testbed_env)
    if path is None:
        # Any helm on PATH is good for one of the two runs; the other is then skipped.
        on_path = shutil.which("helm")
        if on_path is None or request.param == "HELM3":
            pytest.skip(
                f"{request.param} is not set and no helm on PATH: `testbed/up k8s` provides "
                "helm 3 and 4 (or source $TESTBED_DIR/env)"
            )
        path = on_path
    return Path(path)


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
