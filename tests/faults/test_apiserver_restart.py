"""The kube-apiserver restarts while an update watches its rollout (`testbed/restart k8s`).

The updates run in-process (as in tests/k8s/test_k8s_update_flow.py) against the real test
cluster and the session's Prefect server. Once the attempt's journal row says *verifying* and
the rollout watches are connected, the test restarts the real kube-apiserver (same port, certs
and etcd; controller-manager, scheduler and kwok keep running) and checks how the update ends:

- restart mid-watch, good version: the watches reconnect (from their resourceVersion or by
  listing again) and the update ends `updated`; the outage was seen as "Kubernetes API
  unavailable" (no verdict), not as the workload failing;
- restart mid-watch, crash-looping version (its new pod held back by a scheduling gate until
  the apiserver is back, so the crash is seen through the reconnected watches): still rolled
  back and quarantined;
- a Helm release, restart mid-watch: `updated`;
- an outage longer than the verify window: the run ends with EngineUnavailableError naming the
  API and `safe-updater recover`, the attempt stays open in phase verifying, nothing is
  quarantined, and `recover` finishes it (`updated`).

Every test leaves the apiserver up and ready at the same address (restart_part waits for
/readyz), so the rest of a shared session can use it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# The k8s helpers live beside the k8s tests (no packages under tests/).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))

from k8s_support import K8sCluster, loopback_only, ready_pods, wait_until
from k8s_workloads import (
    CRASHLOOP_TAG,
    broken_image_policy,
    create_workload,
    workload_manifest,
)

from safe_updater.adapters.errors import EngineUnavailableError
from safe_updater.adapters.k8s_health import API_UNAVAILABLE, RolloutProbe
from safe_updater.domain.journal import Outcome, Phase
from safe_updater.flows.recover_updates import recover_updates
from safe_updater.flows.update_asset import update_asset
from safe_updater.runtime import Runtime, use_runtime
from safe_updater.wiring import build_runtime
from support.testbed import restart_part

pytestmark = pytest.mark.k8s

CLUSTER = "test"
ENV_KEYS = (
    "KUBECONFIG",
    "HELM3",
    "HELM4",
    "KUBECTL",
    "TESTBED_K8S_VERSION",
    "TESTBED_CHART_REPO_OCI",
    "TESTBED_CHART_REPO_HTTP",
)


@pytest.fixture(scope="module")
def cluster(testbed_env: dict[str, str]) -> K8sCluster:
    env = {key: testbed_env.get(key) or os.environ.get(key, "") for key in ENV_KEYS}
    if not env["KUBECONFIG"] or not env["TESTBED_K8S_VERSION"]:
        pytest.skip("the k8s test bed is not up: `testbed/up registry k8s`, then set TESTBED_DIR")
    found = K8sCluster.from_env(env)
    if not loopback_only(found.server):
        pytest.skip(f"KUBECONFIG points at {found.server}, not at the loopback test cluster")
    return found


@pytest.fixture
def namespace(cluster: K8sCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.create_namespace(request.node.originalname or request.node.name)
    try:
        yield name
    finally:
        api_ready(cluster)  # a failed test must not leave the shared apiserver down
        cluster.delete_namespace(name)


@pytest.fixture(autouse=True)
def _prefect(prefect_server: None) -> None:
    """These tests run flows."""


def api_ready(cluster: K8sCluster) -> None:
    """The apiserver answers /readyz, restarting it when a test left it down."""

    def ready() -> bool:
        try:
            return bool(cluster.kubectl("get", "--raw", "/readyz", timeout=15).strip() == "ok")
        except (AssertionError, OSError):
            return False

    if not ready():
        restart_part("k8s", "apiserver")
    wait_until(ready, timeout=60, what="kube-apiserver /readyz")


def write_config(
    tmp_path: Path, cluster: K8sCluster, namespace: str, *, window: str, extra: str = ""
) -> Path:
    path = tmp_path / "safe-updater.yaml"
    path.write_text(
        f"state:\n  url: sqlite:///{tmp_path / 'state.db'}\n"
        "targets:\n  kubernetes:\n"
        f"    - name: {CLUSTER}\n      kubeconfig: {cluster.kubeconfig}\n"
        f"      namespaces: [{namespace}]\n      helm: {os.environ['HELM3']}\n"
        f'charts:\n  - release: "{namespace}/web"\n'
        f'    source: "{os.environ["TESTBED_CHART_REPO_OCI"]}"\n    chart: demo\n'
        f"health:\n  window: {window}\n  interval: 1s\n  failure_threshold: 2\n" + extra
    )
    return path


class Watched:
    """The runtime of one test, recording the probes every verify step planned."""

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runtime = runtime
        self.probes: list[Any] = []
        plan = runtime.health.plan

        def recording_plan(asset: Any, applied: Any) -> Any:
            probes, policy = plan(asset, applied)
            self.probes.extend(probes)
            return probes, policy

        monkeypatch.setattr(runtime.health, "plan", recording_plan)

    @property
    def rollouts(self) -> list[RolloutProbe]:
        return [p for p in self.probes if isinstance(p, RolloutProbe)]

    def verifying(self, asset_id: str) -> bool:
        """The attempt is in its verify step and every rollout watch is connected."""
        rows = self.runtime.store.journal.find_open(asset_id)
        if not rows or rows[-1].phase is not Phase.VERIFYING or not self.rollouts:
            return False
        reflectors = [r for p in self.rollouts for r in p.reflectors()]
        return bool(reflectors) and all(
            r.synced and r.error is None and r._response is not None for r in reflectors
        )


@pytest.fixture
def watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], Watched]]:
    built: list[Runtime] = []

    def build(config: Path) -> Watched:
        monkeypatch.setenv("SAFE_UPDATER_HOME", str(tmp_path / "home"))
        runtime = build_runtime(config)
        built.append(runtime)
        return Watched(runtime, monkeypatch)

    yield build
    for runtime in built:
        runtime.close()


def in_thread(runtime: Runtime, func: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with use_runtime(runtime):
                box["result"] = func()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def finish(
    thread: threading.Thread,
    box: dict[str, Any],
    run: Watched,
    asset_id: str,
    timeout: float = 240,
) -> tuple[dict[str, Any], bool]:
    """The update's result, and whether `recover` had to finish it.

    On a loaded machine the restart can take longer than the window leaves to judge: the run
    then ends with "Kubernetes API unavailable", the attempt open in phase verifying (a
    defined outcome, see the last test), and `recover` finishes it."""
    thread.join(timeout)
    assert not thread.is_alive(), "the update did not finish after the apiserver came back"
    error = box.get("error")
    if isinstance(error, EngineUnavailableError) and str(error).startswith(API_UNAVAILABLE):
        (open_row,) = run.runtime.store.journal.find_open(asset_id)
        assert open_row.phase is Phase.VERIFYING, open_row
        with use_runtime(run.runtime):
            (recovered,) = recover_updates(asset_id)
        return recovered, True
    if error is not None:
        raise error
    result: dict[str, Any] = box["result"]
    return result, False


def restart_mid_watch(
    cluster: K8sCluster, watched: Watched, asset_id: str, box: dict[str, Any]
) -> float:
    """Restart the apiserver once the update watches its rollout; the seconds it was away."""
    wait_until(
        lambda: watched.verifying(asset_id) or box,
        timeout=120,
        what=f"{asset_id} in its verify step with the watches connected",
    )
    assert not box, f"the update ended before its verify step could be interrupted: {box}"
    # SIGKILL: the watch connections are reset under TLS, the harshest way for them to end.
    os.environ["TESTBED_RESTART_SIGNAL"] = "KILL"
    started = time.monotonic()
    try:
        restart_part("k8s", "apiserver")
    finally:
        os.environ.pop("TESTBED_RESTART_SIGNAL", None)
    return time.monotonic() - started


def assert_outage_seen_and_survived(watched: Watched) -> None:
    """The watches were cut by the restart and connected again; no sample failed because of it.

    Whether a health round also fell inside the outage (and so noted it) depends on timing: a
    restart shorter than a probe interval may be over before the next round. When one did, the
    note is in our words."""
    probes = watched.rollouts
    assert probes, "no rollout probe ran"
    reflectors = [r for p in probes for r in p.reflectors()]
    assert reflectors and all(r.reconnects >= 1 or r.lists >= 2 for r in reflectors), [
        (r.kind, r.reconnects, r.lists, r.error) for r in reflectors
    ]
    for probe in probes:
        if probe.outage_seen is not None:
            message = probe.outage_seen.message
            # Translated at the boundary: our words, never a raw urllib3 repr.
            assert "Kubernetes API" in message, message
            assert "TLS verification" not in message, message


def deployment(cluster: K8sCluster, namespace: str, tag: str = "1.0.0") -> str:
    registry = os.environ["TESTBED_REGISTRY"]
    create_workload(
        cluster, workload_manifest("Deployment", "api", namespace, f"{registry}/demo/web:{tag}")
    )
    wait_until(lambda: ready_pods(cluster, namespace, "app=api", 2), timeout=90)
    return f"k8s:{CLUSTER}/{namespace}/deployment/api"


def image_of(cluster: K8sCluster, namespace: str) -> str:
    found = cluster.apps.read_namespaced_deployment("api", namespace)
    return str(found.spec.template.spec.containers[0].image)


def test_deployment_update_survives_apiserver_restart_mid_watch(
    cluster: K8sCluster, namespace: str, watched: Callable[[Path], Watched], tmp_path: Path
) -> None:
    asset_id = deployment(cluster, namespace)
    run = watched(write_config(tmp_path, cluster, namespace, window="25s"))
    thread, box = in_thread(run.runtime, lambda: update_asset(asset_id, to_version="1.0.1"))
    away = restart_mid_watch(cluster, run, asset_id, box)
    result, recovered = finish(thread, box, run, asset_id)
    print(f"apiserver away {away:.1f} s; finished by {'recover' if recovered else 'the run'}")

    assert (result["outcome"], result["to"]) == ("updated", "1.0.1"), result
    assert image_of(cluster, namespace).endswith(":1.0.1")
    if not recovered:
        assert_outage_seen_and_survived(run)
    assert not run.runtime.store.quarantine.is_quarantined(asset_id, "1.0.1")
    assert run.runtime.store.journal.find_open(asset_id) == []
    assert run.runtime.store.audit.verify().ok


HOLD_GATE = "testbed.safe-updater.io/hold"


@contextmanager
def held_pods(cluster: K8sCluster, namespace: str, tag: str) -> Iterator[None]:
    """New pods of `tag` in `namespace` get a scheduling gate: they wait, Pending, until the test
    lets them go (kwok would make them crash-loop within a second, before the test could
    restart the apiserver mid-watch)."""
    from kubernetes import client

    api = client.AdmissionregistrationV1Api(cluster.api_client)
    name = f"su-{namespace}-hold"
    api.create_mutating_admission_policy(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                },
                "matchConditions": [
                    {
                        "name": "held-tag",
                        "expression": "object.spec.containers.exists(c, "
                        f"c.image.endsWith(':{tag}'))",
                    }
                ],
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "mutations": [
                    {
                        "patchType": "ApplyConfiguration",
                        "applyConfiguration": {
                            "expression": "Object{spec: Object.spec{schedulingGates: "
                            f'[Object.spec.schedulingGates{{name: "{HOLD_GATE}"}}]}}}}'
                        },
                    }
                ],
            },
        }
    )
    api.create_mutating_admission_policy_binding(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name},
        }
    )
    time.sleep(1.5)  # the apiserver loads admission policies asynchronously
    try:
        yield
    finally:
        api.delete_mutating_admission_policy_binding(name)
        api.delete_mutating_admission_policy(name)


def release_held(cluster: K8sCluster, namespace: str) -> int:
    released = 0
    for pod in cluster.pods(namespace, "app=api"):
        if any(g.name == HOLD_GATE for g in pod.spec.scheduling_gates or []):
            cluster.core.patch_namespaced_pod(
                pod.metadata.name,
                namespace,
                [{"op": "remove", "path": "/spec/schedulingGates"}],
            )
            released += 1
    return released


def test_crashlooping_version_still_rolled_back_after_apiserver_restart(
    cluster: K8sCluster, namespace: str, watched: Callable[[Path], Watched], tmp_path: Path
) -> None:
    with broken_image_policy(cluster, namespace), held_pods(cluster, namespace, CRASHLOOP_TAG):
        asset_id = deployment(cluster, namespace)
        run = watched(write_config(tmp_path, cluster, namespace, window="60s"))
        thread, box = in_thread(
            run.runtime, lambda: update_asset(asset_id, to_version=CRASHLOOP_TAG)
        )
        away = restart_mid_watch(cluster, run, asset_id, box)
        # Only now does the new pod start (and crash-loop), seen through reconnected watches.
        wait_until(lambda: release_held(cluster, namespace), timeout=60, what="a held pod")
        result, recovered = finish(thread, box, run, asset_id)
        print(f"apiserver away {away:.1f} s; finished by {'recover' if recovered else 'the run'}")
        if not recovered:
            assert_outage_seen_and_survived(run)

        assert (result["outcome"], result["to"]) == ("rolled_back", CRASHLOOP_TAG), result
        assert image_of(cluster, namespace).endswith(":1.0.0")
        assert run.runtime.store.quarantine.is_quarantined(asset_id, CRASHLOOP_TAG)
        assert API_UNAVAILABLE not in " ".join(result["reasons"]), result
        wait_until(lambda: ready_pods(cluster, namespace, "app=api", 2), timeout=90)
    assert run.runtime.store.journal.find_open(asset_id) == []
    assert run.runtime.store.audit.verify().ok


def test_helm_release_update_survives_apiserver_restart_mid_watch(
    cluster: K8sCluster, namespace: str, watched: Callable[[Path], Watched], tmp_path: Path
) -> None:
    cluster.helm("helm3", tmp_path / "helm-home").run(
        "install",
        "web",
        cluster.oci_chart(),
        "--version",
        "1.0.0",
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "120s",
        "--plain-http",
        timeout=180,
    )
    asset_id = f"helm:{CLUSTER}/{namespace}/web"
    run = watched(write_config(tmp_path, cluster, namespace, window="25s"))
    thread, box = in_thread(run.runtime, lambda: update_asset(asset_id, to_version="1.0.1"))
    away = restart_mid_watch(cluster, run, asset_id, box)
    result, recovered = finish(thread, box, run, asset_id)
    print(f"apiserver away {away:.1f} s; finished by {'recover' if recovered else 'the run'}")

    assert (result["outcome"], result["to"]) == ("updated", "1.0.1"), result
    history = cluster.helm("helm3", tmp_path / "helm-home").json(
        "history", "web", "--namespace", namespace
    )
    assert (history[-1]["chart"], history[-1]["status"]) == ("demo-1.0.1", "deployed"), history
    if not recovered:
        assert_outage_seen_and_survived(run)
    assert ready_pods(cluster, namespace, "app.kubernetes.io/instance=web", 2)
    assert run.runtime.store.audit.verify().ok


def test_outage_longer_than_the_verify_window_leaves_the_attempt_for_recover(
    cluster: K8sCluster, namespace: str, watched: Callable[[Path], Watched], tmp_path: Path
) -> None:
    asset_id = deployment(cluster, namespace)
    run = watched(write_config(tmp_path, cluster, namespace, window="6s"))
    thread, box = in_thread(run.runtime, lambda: update_asset(asset_id, to_version="1.0.1"))
    wait_until(lambda: run.verifying(asset_id) or box, timeout=120, what="verify step")
    assert not box, box
    os.environ["TESTBED_RESTART_DOWNTIME"] = "15"
    try:
        started = time.monotonic()
        restarted: dict[str, Any] = {}

        def restart() -> None:
            try:
                restart_part("k8s", "apiserver")
            except BaseException as exc:
                restarted["error"] = exc

        restarter = threading.Thread(target=restart, daemon=True)
        restarter.start()
        thread.join(120)
        # The run gave up while the apiserver was still away: not after it came back.
        assert not thread.is_alive()
        assert restarter.is_alive(), f"the apiserver was back after {time.monotonic() - started}s"
        restarter.join(120)
    finally:
        os.environ.pop("TESTBED_RESTART_DOWNTIME", None)
    assert "error" not in restarted, restarted
    api_ready(cluster)

    error = box.get("error")
    assert isinstance(error, EngineUnavailableError), box
    text = str(error)
    assert text.startswith(f"{API_UNAVAILABLE} at {cluster.server}"), text
    assert "until the end of the verify window" in text and asset_id in text, text
    assert f"safe-updater recover {asset_id}" in text, text
    # A defined state: the attempt is open in phase verifying, nothing was rolled back or
    # quarantined, and the Deployment runs the new template.
    (open_row,) = run.runtime.store.journal.find_open(asset_id)
    assert (open_row.phase, open_row.to_version) == (Phase.VERIFYING, "1.0.1"), open_row
    assert not run.runtime.store.quarantine.is_quarantined(asset_id, "1.0.1")
    assert image_of(cluster, namespace).endswith(":1.0.1")

    with use_runtime(run.runtime):
        recovered = recover_updates(asset_id)
    assert [(r["outcome"], r["to"]) for r in recovered] == [("updated", "1.0.1")], recovered
    assert "re-verified" in recovered[0]["reasons"][0], recovered
    assert run.runtime.store.journal.find_open(asset_id) == []
    assert [a.outcome for a in run.runtime.store.journal.history(asset_id)] == [Outcome.UPDATED]
    assert run.runtime.store.audit.verify().ok
