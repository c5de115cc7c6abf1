"""The kill matrix for Kubernetes image updates and Helm releases (the Docker one is
tests/integration/test_docker_crash_recovery.py): `safe-updater update` is killed with SIGKILL
at every step boundary of a real update (failpoints, see src/safe_updater/failpoints.py and
docs/testing.md), then `safe-updater recover` (or simply the next `safe-updater update`) must
leave the asset whole:

* one version serves: the Deployment's pod template image (a Helm release: its only `deployed`
  revision, no `pending-*` one, and its chart version) is the old version, or the new one only
  if that was verified; its pods are Ready and all run that version;
* no journal row is left open, and `safe-updater audit verify` exits 0;
* at most one quarantine entry per (asset, version); a bad version that failed on its merits
  ends quarantined, a good one never is.

Two kinds: a plain Deployment (`k8s:test/<ns>/deployment/api`, image `demo/web`; a `:1.0.2`
image's pods never get Ready through the namespace's admission policy, see k8s_workloads.py)
and a Helm release (`helm:test/<ns>/web`, the demo chart, whose 1.0.2 pods never get Ready).
`after-pull` is reached by both: their preflight pulls nothing, the point comes after the
registry's digest check and the server-side dry-run. Each case gets its own namespace.

Every process is a real subprocess of the installed CLI against the session's Prefect server.
Needs `testbed/up registry k8s`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from k8s_support import K8sCluster, pod_images, ready_pods, tool_env, wait_until
from k8s_workloads import broken_image_policy, create_workload, workload_manifest

from safe_updater.adapters.store import StateStore
from safe_updater.domain.journal import Outcome

pytestmark = pytest.mark.k8s

CLUSTER = "test"
CLI = str(Path(sys.executable).with_name("safe-updater"))
OLD, GOOD, BAD = "1.0.0", "1.0.1", "1.0.2"  # 1.0.2: pods run but never become Ready


@dataclass(frozen=True)
class Case:
    point: str
    target: str  # the version the killed update goes to: GOOD or BAD
    phase: str  # the journal phase the kill leaves the attempt in
    recovered: str  # the outcome `recover` records for the attempt

    @property
    def id(self) -> str:
        return f"{self.point}-{'good' if self.target == GOOD else 'bad'}"


CASES = [
    # commit side: a healthy new version
    Case("after-open", GOOD, "opened", "failed"),
    Case("after-pull", GOOD, "preflight", "failed"),
    Case("after-phase:snapshotted", GOOD, "snapshotted", "failed"),
    Case("after-phase:applying", GOOD, "applying", "rolled_back"),
    Case("after-apply", GOOD, "applying", "rolled_back"),
    Case("mid-verify", GOOD, "verifying", "updated"),
    Case("after-phase:committing", GOOD, "committing", "updated"),
    # rollback side: a version whose pods never become Ready
    Case("mid-verify", BAD, "verifying", "rolled_back"),
    Case("after-phase:rolling_back", BAD, "rolling_back", "rolled_back"),
    Case("mid-rollback", BAD, "rolling_back", "rolled_back"),
    Case("after-quarantine", BAD, "rolling_back", "rolled_back"),
]


@pytest.fixture(autouse=True)
def _prefect(prefect_server: None) -> None:
    """The CLI subprocesses run flows on the session's Prefect server."""


@dataclass
class K8sScenario:
    """One asset of one kind in its own namespace, with its config, state store and CLI."""

    kind: str  # "deployment" | "helm"
    cluster: K8sCluster
    namespace: str
    tmp_path: Path

    @property
    def asset_id(self) -> str:
        if self.kind == "helm":
            return f"helm:{CLUSTER}/{self.namespace}/web"
        return f"k8s:{CLUSTER}/{self.namespace}/deployment/api"

    @property
    def selector(self) -> str:
        return "app.kubernetes.io/instance=web" if self.kind == "helm" else "app=api"

    def configure(self, target: str) -> None:
        """Patch updates are automatic; the other patch version is denied, so `target` is the
        only candidate (also for the next run, once a bad target is quarantined)."""
        other = BAD if target == GOOD else GOOD
        oci = os.environ["TESTBED_CHART_REPO_OCI"]
        self.config.write_text(
            f"state:\n  url: sqlite:///{self.tmp_path / 'state.db'}\n"
            "targets:\n  kubernetes:\n"
            f"    - name: {CLUSTER}\n      kubeconfig: {self.cluster.kubeconfig}\n"
            f"      namespaces: [{self.namespace}]\n      helm: {os.environ['HELM3']}\n"
            f'charts:\n  - release: "{self.namespace}/web"\n    source: "{oci}"\n'
            "    chart: demo\n"
            # Short, so that the matrix stays affordable; kwok makes pods Ready at once.
            "health:\n  window: 3s\n  interval: 500ms\n  failure_threshold: 2\n"
            f"policy:\n  default:\n    patch: auto\n    minor: skip\n    deny: ['{other}']\n"
        )

    @property
    def config(self) -> Path:
        return self.tmp_path / "safe-updater.yaml"

    def start(self) -> None:
        """The asset at OLD with its pods Ready."""
        if self.kind == "helm":
            subprocess.run(
                self.helm_argv(
                    "install",
                    "web",
                    self.cluster.oci_chart(),
                    "--version",
                    OLD,
                    "--namespace",
                    self.namespace,
                    "--plain-http",
                ),
                env=tool_env(self.cluster.kubeconfig, self.tmp_path / "helm-home"),
                capture_output=True,
                text=True,
                timeout=180,
                check=True,
            )
        else:
            image = f"{os.environ['TESTBED_REGISTRY']}/demo/web:{OLD}"
            create_workload(
                self.cluster, workload_manifest("Deployment", "api", self.namespace, image)
            )
        self.wait_serving(OLD)

    def helm_argv(self, *args: str) -> list[str]:
        return [os.environ["HELM3"], *args, "--kubeconfig", str(self.cluster.kubeconfig)]

    def history(self) -> list[dict[str, Any]]:
        out = subprocess.run(
            self.helm_argv("history", "web", "--namespace", self.namespace, "-o", "json"),
            env=tool_env(self.cluster.kubeconfig),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return list(json.loads(out[out.index("[") :]))

    def template_version(self) -> str:
        """The version the asset's spec asks for: the Deployment's pod template image tag, or
        the chart version of the release's only `deployed` revision (no `pending-*` left)."""
        if self.kind == "helm":
            history = self.history()
            statuses = [h["status"] for h in history]
            assert statuses.count("deployed") == 1, history
            assert not [s for s in statuses if s.startswith("pending")], history
            [deployed] = [h for h in history if h["status"] == "deployed"]
            assert deployed["app_version"] == str(deployed["chart"]).removeprefix("demo-")
            return str(deployed["chart"]).removeprefix("demo-")
        deployment = self.cluster.apps.read_namespaced_deployment("api", self.namespace)
        [container] = deployment.spec.template.spec.containers
        return str(container.image).rsplit(":", 1)[1]

    def wait_serving(self, version: str) -> None:
        """Every pod of the asset is Ready and runs `version` (helm: the chart's appVersion tag);
        the controller may still be replacing the other revision's pods, so this waits."""

        def serving() -> bool:
            pods = ready_pods(self.cluster, self.namespace, self.selector, 2)
            return bool(pods) and {i.rsplit(":", 1)[1] for i in pod_images(pods or [])} == {version}

        wait_until(serving, timeout=90, interval=0.3, what=f"2 Ready pods of {version}")

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        from prefect.settings import PREFECT_API_URL

        child = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SAFE_UPDATER_", "PYTEST_", "PREFECT_"))
        }
        child.update(
            {
                "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "SAFE_UPDATER_CONFIG": str(self.config),
                "SAFE_UPDATER_HOME": str(self.tmp_path / "home"),
                "SAFE_UPDATER_ACTOR": "k8s-test",
                "COLUMNS": "200",
                **(env or {}),
            }
        )
        return subprocess.run(
            [CLI, *args], env=child, capture_output=True, text=True, timeout=420, check=False
        )

    def store(self) -> StateStore:
        return StateStore.open(f"sqlite:///{self.tmp_path / 'state.db'}")


def describe(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"


FINISHES = ("recover", "update-again")


@pytest.fixture
def namespaces(k8s_cluster: K8sCluster, k8s_namespace: str) -> Iterator[dict[str, str]]:
    """A namespace per finish: the fixture's, and one more made and deleted the same way."""
    other = k8s_cluster.create_namespace(f"{k8s_namespace[:30]}-again")
    try:
        yield {"recover": k8s_namespace, "update-again": other}
    finally:
        k8s_cluster.delete_namespace(other)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("kind", ["deployment", "helm"])
def test_killed_update_is_finished_safely(
    k8s_cluster: K8sCluster,
    namespaces: dict[str, str],
    tmp_path: Path,
    kind: str,
    case: Case,
) -> None:
    """Both finishes of one (kind, point), side by side on two assets in two namespaces: the
    CLI processes spend most of their time waiting on the Prefect server, the API server and
    helm, so two at once keep the matrix affordable on two cores."""
    with ThreadPoolExecutor(max_workers=len(FINISHES)) as pool:
        futures = {
            finish: pool.submit(
                run_case,
                K8sScenario(kind, k8s_cluster, namespaces[finish], tmp_path / finish),
                case,
                finish,
            )
            for finish in FINISHES
        }
    failed = {finish: f.exception() for finish, f in futures.items() if f.exception()}
    if failed:
        report = "\n\n".join(f"[finish {finish}] {error}" for finish, error in failed.items())
        raise AssertionError(report) from next(iter(failed.values()))


def run_case(s: K8sScenario, case: Case, finish: str) -> None:
    s.tmp_path.mkdir()
    with ExitStack() as stack:
        if s.kind == "deployment" and case.target == BAD:
            # Before any pod exists: the policy labels :1.0.2 pods at creation.
            stack.enter_context(broken_image_policy(s.cluster, s.namespace))
        s.configure(case.target)
        s.start()
        kill_then_finish(s, case, finish)


def kill_then_finish(s: K8sScenario, case: Case, finish: str) -> None:
    killed = s.cli(
        "update", s.asset_id, "--yes", "--json", env={"SAFE_UPDATER_FAILPOINTS": case.point}
    )
    assert killed.returncode == -signal.SIGKILL, describe(killed)
    with s.store() as store:
        [open_attempt] = store.journal.find_open(s.asset_id)
    assert (open_attempt.to_version, open_attempt.phase.value) == (case.target, case.phase)
    check_left_by_kill(s, case)

    if finish == "recover":
        done = s.cli("recover", "--json")
        assert done.returncode == (1 if case.recovered == "failed" else 0), describe(done)
        [recovered] = json.loads(done.stdout)
        assert (recovered["attempt_id"], recovered["outcome"]) == (
            open_attempt.id,
            case.recovered,
        ), recovered
        expected = GOOD if case.recovered == "updated" else OLD
    else:
        # The next scheduled run: it finishes the open attempt first, then decides afresh.
        done = s.cli("update", s.asset_id, "--yes", "--json")
        assert done.returncode == 0, describe(done)
        # A good version is applied (by recovery or by the new attempt); a bad one stays out.
        expected = GOOD if case.target == GOOD else OLD

    check_invariants(s, case, expected)


def check_left_by_kill(s: K8sScenario, case: Case) -> None:
    """The kill landed where the point says: the change is live after `after-apply`, the
    rollback is half done after `mid-rollback`."""
    if case.point == "after-apply":
        assert s.template_version() == GOOD
    if case.point == "mid-rollback":
        if s.kind == "helm":
            # helm's rollback was under way when the updater died (its child lives on).
            newest = s.history()[-1]
            assert newest["description"] == "Rollback to 1", newest
        else:
            # The template is patched back; the journal still says rolling_back.
            assert s.template_version() == OLD


def check_invariants(s: K8sScenario, case: Case, expected: str) -> None:
    # One version serves: the spec asks for it and every pod is Ready and runs it.
    s.wait_serving(expected)
    assert s.template_version() == expected

    verify = s.cli("audit", "verify", "--json")
    assert verify.returncode == 0, describe(verify)

    with s.store() as store:
        assert store.journal.find_open(s.asset_id) == []
        rows = store.journal.history(s.asset_id)
        entries = store.quarantine.list(s.asset_id)
    assert rows and all(r.outcome is not None for r in rows), rows
    if expected == GOOD:
        assert any(r.outcome is Outcome.UPDATED and r.to_version == GOOD for r in rows), rows
    per_version = Counter(e.version for e in entries)
    assert all(n == 1 for n in per_version.values()), entries
    if case.target == BAD:
        # It failed verification (before or after the kill): it must stay out.
        assert set(per_version) == {BAD}, entries
        assert any(r.outcome is Outcome.ROLLED_BACK for r in rows), rows
    else:
        assert per_version == Counter(), entries
