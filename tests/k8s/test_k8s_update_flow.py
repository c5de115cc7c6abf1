"""The whole update DAG for `helm:` and `k8s:` assets on the real test cluster: the flows run
against the session's Prefect server with the runtime that `wiring.build_runtime` builds from a
config file, real helm, a real kube-apiserver (kwok as kubelet) and the real registry."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_support import K8sCluster, ready_pods, wait_until
from k8s_workloads import BROKEN_TAG, broken_image_policy, create_workload, workload_manifest

from safe_updater.domain.journal import Outcome
from safe_updater.flows.approve_asset import decide_waiting_update
from safe_updater.flows.recover_updates import recover_updates
from safe_updater.flows.rollback_asset import rollback_asset
from safe_updater.flows.update_asset import update_asset
from safe_updater.runtime import Runtime, use_runtime
from safe_updater.wiring import build_runtime

pytestmark = pytest.mark.k8s

CLUSTER = "test"


@pytest.fixture(autouse=True)
def _prefect(prefect_server: None) -> None:
    """These tests run flows."""


def _config(
    tmp_path: Path, cluster: K8sCluster, namespace: str, *, helm: str, extra: str = ""
) -> Path:
    oci = os.environ["TESTBED_CHART_REPO_OCI"]
    path = tmp_path / "safe-updater.yaml"
    path.write_text(
        f"state:\n  url: sqlite:///{tmp_path / 'state.db'}\n"
        "targets:\n  kubernetes:\n"
        f"    - name: {CLUSTER}\n      kubeconfig: {cluster.kubeconfig}\n"
        f"      namespaces: [{namespace}]\n      helm: {helm}\n"
        f'charts:\n  - release: "{namespace}/web"\n    source: "{oci}"\n    chart: demo\n'
        "health:\n  window: 8s\n  interval: 1s\n  failure_threshold: 2\n" + extra
    )
    return path


@pytest.fixture
def runtime_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    built: list[Runtime] = []

    def build(config: Path) -> Runtime:
        monkeypatch.setenv("SAFE_UPDATER_HOME", str(tmp_path / "home"))
        runtime = build_runtime(config)
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        runtime.close()


def _release(cluster: K8sCluster, helm_bin: str, namespace: str) -> tuple[int, str, str]:
    """(revision, chart version, status) of the release's newest revision, from `helm history`."""
    import json
    import subprocess

    out = subprocess.run(
        [
            helm_bin,
            "history",
            "web",
            "--namespace",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    newest = json.loads(out[out.index("[") :])[-1]
    return int(newest["revision"]), str(newest["chart"]).removeprefix("demo-"), newest["status"]


@pytest.mark.parametrize("helm_key", ["HELM3", "HELM4"])
def test_helm_release_bad_chart_rolls_back_then_next_good_version_applies(
    k8s_cluster: K8sCluster, k8s_namespace: str, runtime_for: Any, tmp_path: Path, helm_key: str
) -> None:
    helm_bin = os.environ[helm_key]
    k8s_cluster.helm(helm_key.lower(), tmp_path / "helm-home").run(
        "install",
        "web",
        k8s_cluster.oci_chart(),
        "--version",
        "1.0.0",
        "--namespace",
        k8s_namespace,
        "--wait",
        "--timeout",
        "120s",
        "--plain-http",
        timeout=180,
    )
    runtime = runtime_for(_config(tmp_path, k8s_cluster, k8s_namespace, helm=helm_bin))
    asset_id = f"helm:{CLUSTER}/{k8s_namespace}/web"
    with use_runtime(runtime):
        first = update_asset(asset_id, approval="defer")
        # 1.0.2 is the newest patch; its pods never become Ready.
        assert (first["outcome"], first["to"]) == ("rolled_back", "1.0.2"), first
        assert runtime.store.quarantine.is_quarantined(asset_id, "1.0.2")
        # 1: install, 2: the bad upgrade, 3: the rollback to 1.
        assert _release(k8s_cluster, helm_bin, k8s_namespace) == (3, "1.0.0", "deployed")
        second = update_asset(asset_id, approval="defer")
    assert (second["outcome"], second["to"]) == ("updated", "1.0.1"), second
    assert _release(k8s_cluster, helm_bin, k8s_namespace) == (4, "1.0.1", "deployed")
    assert ready_pods(k8s_cluster, k8s_namespace, "app.kubernetes.io/instance=web", 2)
    assert runtime.store.audit.verify().ok


def test_helm_minor_waits_for_approval_and_crashloop_is_caught_early(
    k8s_cluster: K8sCluster, k8s_namespace: str, runtime_for: Any, tmp_path: Path
) -> None:
    helm_bin = os.environ["HELM3"]
    k8s_cluster.helm("helm3", tmp_path / "helm-home").run(
        "install",
        "web",
        k8s_cluster.oci_chart(),
        "--version",
        "1.0.1",
        "--namespace",
        k8s_namespace,
        "--wait",
        "--timeout",
        "120s",
        "--plain-http",
        timeout=180,
    )
    # A long window: the crash-looping 1.1.1 must fail fast, long before it ends.
    config = _config(
        tmp_path,
        k8s_cluster,
        k8s_namespace,
        helm=helm_bin,
        extra="policy:\n  default:\n    minor: approve\n    deny: ['1.0.2']\n",
    )
    config.write_text(config.read_text().replace("window: 8s", "window: 120s"))
    runtime = runtime_for(config)
    asset_id = f"helm:{CLUSTER}/{k8s_namespace}/web"
    with use_runtime(runtime):
        waiting = update_asset(asset_id, approval="defer")
        assert (waiting["outcome"], waiting["to"]) == ("awaiting_approval", "1.1.1"), waiting
        assert _release(k8s_cluster, helm_bin, k8s_namespace)[0] == 1
        import time

        started = time.monotonic()
        decided = decide_waiting_update(asset_id, approve=True, approver="alice")
        elapsed = time.monotonic() - started
    assert decided["outcome"] == "rolled_back", decided
    assert (
        "CrashLoopBackOff" in " ".join(decided["reasons"])
        or "crash" in " ".join(decided["reasons"]).lower()
    )
    assert elapsed < 110  # the fatal sample ended the 120 s window early
    assert _release(k8s_cluster, helm_bin, k8s_namespace)[1:] == ("1.0.1", "deployed")


def test_deployment_image_update_rollback_and_manual_rollback(
    k8s_cluster: K8sCluster, k8s_namespace: str, runtime_for: Any, tmp_path: Path
) -> None:
    registry = os.environ["TESTBED_REGISTRY"]
    with broken_image_policy(k8s_cluster, k8s_namespace):
        create_workload(
            k8s_cluster,
            workload_manifest("Deployment", "api", k8s_namespace, f"{registry}/demo/web:1.0.0"),
        )
        wait_until(lambda: ready_pods(k8s_cluster, k8s_namespace, "app=api", 2), timeout=90)
        runtime = runtime_for(
            _config(tmp_path, k8s_cluster, k8s_namespace, helm=os.environ["HELM3"])
        )
        asset_id = f"k8s:{CLUSTER}/{k8s_namespace}/deployment/api"
        with use_runtime(runtime):
            bad = update_asset(asset_id, approval="defer")
            assert (bad["outcome"], bad["to"]) == ("rolled_back", BROKEN_TAG), bad
            good = update_asset(asset_id, approval="defer")
            assert (good["outcome"], good["to"]) == ("updated", "1.0.1"), good
            deployment = k8s_cluster.apps.read_namespaced_deployment("api", k8s_namespace)
            assert deployment.spec.template.spec.containers[0].image.endswith(":1.0.1")
            back = rollback_asset(asset_id, actor="bob")
            assert back["outcome"] == "rolled_back", back
        deployment = k8s_cluster.apps.read_namespaced_deployment("api", k8s_namespace)
        assert deployment.spec.template.spec.containers[0].image.endswith(":1.0.0")
        assert runtime.store.quarantine.is_quarantined(asset_id, "1.0.1")
        with use_runtime(runtime):
            assert recover_updates(asset_id) == []
        assert [a.outcome for a in runtime.store.journal.history(asset_id)] == [
            Outcome.ROLLED_BACK,
            Outcome.UPDATED,
            Outcome.ROLLED_BACK,
        ]
