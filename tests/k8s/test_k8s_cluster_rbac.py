"""RBAC: the updater works as a ServiceAccount bound to the shipped ClusterRoles, and fails with a
message naming the missing verb when a role lacks it; every verb of the workload role and of the
Helm role is shown to be needed by an operation of the updater."""

from __future__ import annotations

import contextlib
import copy
import functools
import http.server
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_support import REPO_ROOT, K8sCluster, ready_pods, tool_env, wait_until
from k8s_workloads import (
    BROKEN_TAG,
    broken_image_policy,
    create_workload,
    watch_rollout,
    workload_manifest,
)
from pydantic import SecretStr

from safe_updater.adapters.chart_sources import ChartSources
from safe_updater.adapters.helm_cli import (
    ChartRef,
    HelmAuthError,
    HelmCli,
    HelmTimeoutError,
    ValuesMode,
)
from safe_updater.adapters.helm_inventory import HelmInventory
from safe_updater.adapters.helm_updater import HelmReleaseUpdater
from safe_updater.adapters.k8s_health import RolloutProbe
from safe_updater.adapters.k8s_inventory import KubernetesInventory
from safe_updater.adapters.k8s_updater import KubernetesImageUpdater
from safe_updater.adapters.kube_api import RBAC_FILE, KubeApi
from safe_updater.adapters.registry import OciRegistry
from safe_updater.blocks.kubernetes_cluster import KubernetesCluster
from safe_updater.domain.assets import Asset, AssetKind, helm_asset_id
from safe_updater.domain.errors import AuthError
from safe_updater.domain.health import VerdictState
from safe_updater.domain.rollout import RolloutCheck
from support.k8s_login import ServiceAccountLogin

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


def sa_api(login: ServiceAccountLogin) -> KubeApi:
    """The updater's API client as the ServiceAccount, through the KubernetesCluster block."""
    block = KubernetesCluster(name="tb", kubeconfig=SecretStr(yaml.safe_dump(login.kubeconfig)))
    return block.get_api()


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
    api = sa_api(login)
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
    api = sa_api(login)
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
    api = sa_api(login)
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


# --- every verb of the shipped roles is needed ------------------------------------------------
#
# For each (rule, verb) of the shipped workload role: the role with just that verb removed makes
# the operation that needs it fail with our AuthError naming the verb and the resource; the full
# role (patched in place, same ServiceAccount and token) makes the same operation succeed.

WORKLOAD_ROLE = "safe-updater"


def _cases() -> list[Any]:
    """(rule index, verb, workload kind, operation, RBAC resource named in the error)."""
    ops = {
        # resources of rule 0 (apps workloads) and 1 (batch cronjobs)
        "list": "inventory",
        "get": "snapshot",
        "watch": "watch",
        "patch": "preflight",
    }
    table: list[tuple[int, str, str, str, str]] = []
    for verb, op in ops.items():
        table.append((0, verb, "Deployment", op, "apps/deployments"))
        table.append((1, verb, "CronJob", op, "batch/cronjobs"))
    table += [
        (2, "list", "Deployment", "snapshot", "apps/replicasets"),
        (2, "watch", "Deployment", "watch-revisions", "apps/replicasets"),
        (3, "list", "StatefulSet", "statefulset-rollback", "pods"),
        (3, "watch", "Deployment", "watch-pods", "pods"),
        (3, "delete", "StatefulSet", "statefulset-rollback", "pods"),
    ]
    return [pytest.param(*case, id=f"rule{case[0]}-{case[1]}-{case[3]}") for case in table]


def test_every_verb_of_the_shipped_workload_role_has_a_case() -> None:
    """A verb added to the role without an operation that needs it fails here."""
    granted = {
        (index, verb)
        for index, rule in enumerate(shipped_role(WORKLOAD_ROLE)["rules"])
        for verb in rule["verbs"]
    }
    covered = {(case.values[0], case.values[1]) for case in _cases()}
    assert granted == covered


def _asset(admin: KubeApi, namespace: str, kind: str) -> Any:
    asset = KubernetesInventory(admin, "tb", namespaces=[namespace]).find(
        f"k8s:tb/{namespace}/{kind.lower()}/web"
    )
    assert asset is not None
    return asset


def _run(
    op: str, api: KubeApi, admin: KubeApi, namespace: str, kind: str, registry: OciRegistry
) -> Any:
    """The updater's operation as the ServiceAccount (``api``); what it found, for asserts."""
    updater = KubernetesImageUpdater(api, registry)
    if op == "inventory":
        return [a.id for a in KubernetesInventory(api, "tb", namespaces=[namespace]).list_assets()]
    if op == "snapshot":
        return updater.snapshot(_asset(admin, namespace, kind)).data
    if op == "preflight":
        updater.preflight(_asset(admin, namespace, kind), "1.0.1")
        return True
    if op.startswith("watch"):
        watched = {"watch": kind, "watch-revisions": "ReplicaSet", "watch-pods": "Pod"}[op]
        version = admin.list_page(watched, namespace).resource_version
        # The call the rollout probe's reflectors make after their first list.
        return list(api.watch(watched, namespace, resource_version=version, timeout_seconds=1))
    if op == "statefulset-rollback":
        asset = _asset(admin, namespace, kind)
        snapshot, applied = _broken_statefulset_update(admin, asset, registry, namespace)
        updater.rollback(asset, snapshot, applied)
        return True
    raise AssertionError(op)


_BROKEN: dict[str, tuple[Any, Any]] = {}


def _broken_statefulset_update(
    admin: KubeApi, asset: Any, registry: OciRegistry, namespace: str
) -> tuple[Any, Any]:
    """Once per namespace: as admin, update the StatefulSet to the never-Ready tag and wait for
    its pod of that revision (the state a StatefulSet rollback must clean up)."""
    if namespace not in _BROKEN:
        updater = KubernetesImageUpdater(admin, registry)
        snapshot = updater.snapshot(asset)
        applied = updater.apply(asset, snapshot, BROKEN_TAG)

        def broken_pod() -> bool:
            pods = admin.list_all("Pod", namespace, label_selector="app=web")
            return any(
                str(c.get("image", "")).endswith(f":{BROKEN_TAG}")
                for p in pods
                for c in (p.get("spec") or {}).get("containers") or []
            )

        wait_until(broken_pod, timeout=90, what="a pod of the broken revision")
        _BROKEN[namespace] = (snapshot, applied)
    return _BROKEN[namespace]


@pytest.mark.parametrize(("rule", "verb", "kind", "op", "resource"), _cases())
def test_each_verb_of_the_workload_role_is_needed(
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    registry: OciRegistry,
    rule: int,
    verb: str,
    kind: str,
    op: str,
    resource: str,
) -> None:
    repo = os.environ["TESTBED_IMAGE_REPO"]
    full = shipped_role(WORKLOAD_ROLE)["rules"]
    assert verb in full[rule]["verbs"], f"rule {rule} of the shipped role has no {verb!r}"
    without = copy.deepcopy(full)
    without[rule]["verbs"] = [v for v in without[rule]["verbs"] if v != verb]
    replicas = 1 if kind == "StatefulSet" else 2
    with broken_image_policy(k8s_cluster, k8s_namespace) if kind == "StatefulSet" else _nothing():
        create_workload(
            k8s_cluster,
            workload_manifest(kind, "web", k8s_namespace, f"{repo}:1.0.0", replicas=replicas),
        )
        if kind != "CronJob":
            wait_until(
                lambda: ready_pods(k8s_cluster, k8s_namespace, "app=web", replicas), timeout=90
            )
        admin = KubeApi.connect(kubeconfig=str(k8s_cluster.kubeconfig))
        login = ServiceAccountLogin(k8s_cluster, k8s_namespace, without)
        api = sa_api(login)
        try:
            with pytest.raises(AuthError) as info:
                _run(op, api, admin, k8s_namespace, kind, registry)
            text = str(info.value)
            assert f"missing RBAC verb {verb!r} on {resource}" in text, text
            assert RBAC_FILE in text, text

            login.set_rules(full)
            # RBAC changes reach the authorizer through an informer: a moment, not a guarantee.
            (result,) = wait_until(
                lambda: _succeeds(op, api, admin, k8s_namespace, kind, registry),
                timeout=30,
                what=f"{op} with the full role",
            )
            if op == "inventory":
                assert result == [f"k8s:tb/{k8s_namespace}/{kind.lower()}/web"]
            if op == "statefulset-rollback" and verb == "delete":
                # The forced rollback deleted the never-Ready pod: 1.0.0 is back and Ready.
                wait_until(lambda: ready_pods(k8s_cluster, k8s_namespace, "app=web", 1), timeout=90)
        finally:
            _BROKEN.pop(k8s_namespace, None)
            api.close()
            admin.close()
            login.close()


def _succeeds(
    op: str, api: KubeApi, admin: KubeApi, namespace: str, kind: str, registry: OciRegistry
) -> tuple[Any] | None:
    try:
        result = _run(op, api, admin, namespace, kind, registry)
    except AuthError:
        return None
    return (result,)  # truthy for wait_until, even when a watch saw no event


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


# --- every verb of the shipped Helm role is needed ---------------------------------------------
#
# The updater's Helm operations (inventory, snapshot, preflight, apply, rollback) run the real
# helm binary as a ServiceAccount bound, in the release's namespace only, to `safe-updater-helm`.
# For each (rule, verb): with the full role the operation succeeds; with just that verb removed
# the same operation fails with our HelmAuthError naming the verb and the resource (or, where
# helm ignores the refusal, leaves the wrong state behind, which is asserted instead).
#
# The chart is the demo chart plus one template (below), so that 1.0.0 -> 1.0.1 creates, patches
# and deletes a ConfigMap, a Deployment and a CronJob: one kind for each rule of the role.

HELM_ROLE = "safe-updater-helm"
RELEASE = "web"

PROBE_TEMPLATE = """\
{{- /* test_k8s_cluster_rbac.py: objects only 1.0.0 has (-old) or only 1.0.1 has (-new), one
  per rule of the safe-updater-helm role, and a CronJob and a StatefulSet both have (patched on
  upgrade; helm 4 waits on the StatefulSet by listing its pods). */ -}}
{{- $name := include "demo.fullname" . -}}
{{- $only := ternary "old" "new" (eq .Chart.Version "1.0.0") -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}-{{ $only }}
data:
  version: {{ .Chart.Version | quote }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}-{{ $only }}
spec:
  replicas: 0
  selector:
    matchLabels: {app: {{ $name }}-{{ $only }}}
  template:
    metadata:
      labels: {app: {{ $name }}-{{ $only }}}
    spec:
      containers:
        - {name: web, image: "{{ .Values.image.repository }}:1.0.0"}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ $name }}-{{ $only }}
spec:
  suspend: true
  schedule: "0 0 1 1 *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - {name: job, image: "{{ .Values.image.repository }}:1.0.0"}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ $name }}
spec:
  suspend: true
  schedule: "0 0 1 1 *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - {name: job, image: "{{ .Values.image.repository }}:{{ .Chart.Version }}"}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $name }}
spec:
  replicas: 0
  serviceName: {{ $name }}
  selector:
    matchLabels: {app: {{ $name }}-sts}
  template:
    metadata:
      labels: {app: {{ $name }}-sts}
    spec:
      containers:
        - {name: web, image: "{{ .Values.image.repository }}:{{ .Chart.Version }}"}
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def chart_repo(k8s_cluster: K8sCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP chart repository on loopback (a thread of this process) with the probe chart in
    1.0.0 and 1.0.1; its URL."""
    work = tmp_path_factory.mktemp("helm-rbac-chart")
    src = work / "demo"
    shutil.copytree(REPO_ROOT / "testbed" / "k8s" / "charts" / "demo", src)
    (src / "templates" / "rbac-probe.yaml").write_text(PROBE_TEMPLATE)
    repo = work / "repo"
    repo.mkdir()
    helm = k8s_cluster.helm("helm3", work / "home")
    for version in ("1.0.0", "1.0.1"):
        helm.run(
            "package", str(src), "--version", version, "--app-version", version, "-d", str(repo)
        )
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(repo))
    )
    url = f"http://127.0.0.1:{server.server_address[1]}"
    helm.run("repo", "index", str(repo), "--url", url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _helm_cases() -> list[Any]:
    """(rule index, verb, helm, operation, RBAC resource named in the error).

    helm: ``helm3``, ``helm4``, or ``helm4-list-watch``: helm 4 with client-go's streaming lists
    off (``KUBE_FEATURE_WatchListClient=false``), which is how it talks to an API server without
    them: its watcher then lists before it watches, as every informer did before streaming lists.
    """
    table: list[tuple[int, str, str, str, str]] = [
        # helm's release storage: one Secret per revision.
        (0, "list", "helm3", "inventory", "secrets"),  # helm list
        (0, "get", "helm3", "snapshot", "secrets"),  # helm get values --revision
        (0, "create", "helm3", "apply", "secrets"),  # the new revision
        (0, "update", "helm3", "apply", "secrets"),  # the previous one becomes superseded
        (0, "delete", "helm3", "apply-at-history-max", "secrets"),  # --history-max pruning
    ]
    # The chart's objects: rule 1 a ConfigMap, rule 2 a Deployment, rule 3 a CronJob.
    for rule, resource in ((1, "configmaps"), (2, "apps/deployments"), (3, "batch/cronjobs")):
        table += [
            (rule, "get", "helm3", "preflight", resource),
            (rule, "create", "helm3", "apply", resource),
            (rule, "patch", "helm3", "apply", resource),
            (rule, "delete", "helm3", "apply-leaves-dropped", resource),
            (rule, "watch", "helm4", "rollback", resource),  # helm 4's --wait=watcher
            (rule, "list", "helm4-list-watch", "rollback", resource),
        ]
    table += [
        # rollback --wait: which ReplicaSet is the Deployment's new one (helm 3 and 4)
        (4, "list", "helm3", "rollback", "apps/replicasets"),
        # helm 4's rollback --wait reads a StatefulSet's pods; refused, it waits in vain
        (5, "list", "helm4", "rollback-times-out", "pods"),
    ]
    return [pytest.param(*case, id=f"rule{case[0]}-{case[1]}-{case[3]}") for case in table]


def _rbac_names(rule: dict[str, Any]) -> set[str]:
    """``apps/deployments``, ``configmaps``: how our errors name the rule's resources."""
    return {
        f"{group}/{resource}" if group else resource
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_every_verb_of_the_shipped_helm_role_has_a_case() -> None:
    """A verb added to the Helm role without an operation that needs it fails here."""
    granted = {
        (index, verb)
        for index, rule in enumerate(shipped_role(HELM_ROLE)["rules"])
        for verb in rule["verbs"]
    }
    covered = {(case.values[0], case.values[1]) for case in _helm_cases()}
    assert granted == covered


def _helm_cli(k8s_cluster: K8sCluster, which: str, home: Path, kubeconfig: Path) -> HelmCli:
    env = {k: v for k, v in tool_env(kubeconfig, home).items() if k.startswith("HELM_")}
    if which == "helm4-list-watch":
        env["KUBE_FEATURE_WatchListClient"] = "false"
    binary = k8s_cluster.helm3 if which == "helm3" else k8s_cluster.helm4
    return HelmCli(str(binary), kubeconfig=str(kubeconfig), timeout=60, env=env)


def _helm_asset(namespace: str) -> Asset:
    return Asset(
        id=helm_asset_id("tb", namespace, RELEASE),
        kind=AssetKind.HELM,
        target="tb",
        name=RELEASE,
        namespace=namespace,
        current_version="1.0.0",
        chart="demo",
    )


class _HelmCase:
    """One release in a fresh namespace; the updater as admin (to set the scene) and as the
    ServiceAccount (the operation under test)."""

    def __init__(
        self,
        cluster: K8sCluster,
        namespace: str,
        url: str,
        admin: HelmCli,
        sa: HelmCli,
        registry: OciRegistry,
        *,
        rollback_timeout: float,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.url = url
        self.asset = _helm_asset(namespace)
        self.admin = admin
        self.sources = ChartSources(
            [{"release": f"{namespace}/{RELEASE}", "source": url}], registry
        )
        self.as_admin = HelmReleaseUpdater(admin, self.sources, timeout=60)
        self.sa = sa
        self.as_sa = HelmReleaseUpdater(
            sa, self.sources, timeout=60, rollback_timeout=rollback_timeout
        )

    def install(self, *, revisions: int) -> None:
        chart = ChartRef(ref="demo", repo=self.url, version="1.0.0")
        flags = [f"--namespace={self.namespace}", *chart.args(), "--set=replicaCount=1"]
        self.admin.run(
            ["install"], [*flags, "--wait", "--timeout=60s"], [RELEASE, "demo"], what="install"
        )
        for _ in range(revisions - 1):  # same chart, same values: only a new revision
            self.admin.upgrade(RELEASE, chart, self.namespace, values=ValuesMode.REUSE)

    def run(self, op: str) -> Any:
        """``op`` as the ServiceAccount, from 1.0.0 deployed (1.0.1 for a rollback)."""
        snapshot = self.as_admin.snapshot(self.asset)
        if op == "inventory":
            inventory = HelmInventory(self.sa, "tb", self.sources, namespaces=[self.namespace])
            return [a.id for a in inventory.list_assets()]
        if op == "snapshot":
            return self.as_sa.snapshot(self.asset).version
        if op == "preflight":
            self.as_sa.preflight(self.asset, "1.0.1")
            return True
        if op.startswith("apply"):
            return self.as_sa.apply(self.asset, snapshot, "1.0.1").to_version
        if op.startswith("rollback"):
            applied = self.as_admin.apply(self.asset, snapshot, "1.0.1")
            self.as_sa.rollback(self.asset, snapshot, applied)
            return True
        raise AssertionError(op)

    def back_to_1_0_0(self) -> None:
        """As admin, after an apply: the release runs 1.0.0 again (a new revision)."""
        history = self.admin.history(RELEASE, self.namespace)
        good = [r for r in history if r.chart_version == "1.0.0"][-1]
        self.admin.rollback(RELEASE, good.revision, self.namespace, wait=False)

    def latest(self) -> str:
        latest = self.admin.history(RELEASE, self.namespace)[-1]
        return f"{latest.chart_version} {latest.status.value}"

    def exists(self, resource: str, name: str) -> bool:
        kind = resource.rpartition("/")[2].removesuffix("s")  # apps/deployments -> deployment
        out = self.cluster.kubectl("-n", self.namespace, "get", kind, "-o", "name")
        return any(line.endswith(f"/{name}") for line in out.splitlines())


@pytest.mark.parametrize(("rule", "verb", "which", "op", "resource"), _helm_cases())
def test_each_verb_of_the_helm_role_is_needed(
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    chart_repo: str,
    registry: OciRegistry,
    tmp_path: Path,
    rule: int,
    verb: str,
    which: str,
    op: str,
    resource: str,
) -> None:
    full = shipped_role(HELM_ROLE)["rules"]
    assert verb in full[rule]["verbs"], f"rule {rule} of the shipped role has no {verb!r}"
    without = copy.deepcopy(full)
    without[rule]["verbs"] = [v for v in without[rule]["verbs"] if v != verb]
    without = [r for r in without if r["verbs"]]  # a rule needs a verb: drop it when none is left
    group, _, plural = resource.rpartition("/")
    # Bound as the shipped role is meant to be: a RoleBinding in the release's namespace only.
    login = ServiceAccountLogin(k8s_cluster, k8s_namespace, [], namespaced_rules=full)
    try:
        home = tmp_path / "helm"
        admin_helm = "helm3" if which == "helm3" else "helm4"
        case = _HelmCase(
            k8s_cluster,
            k8s_namespace,
            chart_repo,
            _helm_cli(k8s_cluster, admin_helm, home, k8s_cluster.kubeconfig),
            _helm_cli(k8s_cluster, which, home, login.write_kubeconfig(tmp_path / "sa.conf")),
            registry,
            rollback_timeout=10 if op == "rollback-times-out" else 60,
        )
        case.install(revisions=10 if op == "apply-at-history-max" else 1)
        dropped = f"{RELEASE}-demo-old"  # an object of 1.0.0 that 1.0.1 no longer has

        # The full role: the operation succeeds.
        login.wait_until_may(verb, plural, group)
        result = case.run(op)
        if op == "inventory":
            assert result == [case.asset.id]
        if op == "snapshot":
            assert result == "1.0.0"
        if op.startswith("apply"):
            assert case.latest() == "1.0.1 deployed"
            if op == "apply-leaves-dropped":
                assert not case.exists(resource, dropped)
            case.back_to_1_0_0()
        if op.startswith("rollback"):
            assert case.latest() == "1.0.0 deployed"

        # Without the verb: the same operation fails, and the error says what is missing.
        login.set_namespaced_rules(without)
        login.wait_until_may(verb, plural, group, allowed=False)
        if op == "apply-leaves-dropped":
            # helm ignores a refused delete: the upgrade "succeeds", and the object 1.0.1
            # dropped stays behind (a Deployment of it would keep running).
            assert case.exists(resource, dropped)
            case.run(op)
            assert case.latest() == "1.0.1 deployed"
            assert case.exists(resource, dropped)
            return
        if op == "rollback-times-out":
            # helm 4 does not report the refused list; its wait sees status Unknown until the
            # deadline, and our error's hint points at this verb.
            with pytest.raises(HelmTimeoutError) as timeout:
                case.run(op)
            text = str(timeout.value)
            assert f"StatefulSet/{k8s_namespace}/{RELEASE}-demo not ready" in text, text
            assert "status: Unknown" in text and "`list` on pods" in text, text
            return
        with pytest.raises(HelmAuthError) as info:
            case.run(op)
        text = str(info.value)
        named = re.search(
            r"may not (\w+) (\S+) in namespace (\S+) \(missing RBAC verb '(\w+)'", text
        )
        assert named is not None, text
        # A rule covers several kinds; helm trips over whichever of the chart's comes first
        # (for rule 2, the StatefulSet or the Deployment).
        assert named.groups() == (verb, named[2], k8s_namespace, verb), text
        assert named[2] in _rbac_names(full[rule]), text
        assert resource in _rbac_names(full[rule])
        assert HELM_ROLE in text, text
    finally:
        login.close()


# --- the chart grants what the plain file grants -----------------------------------------------


def test_the_chart_grants_the_same_rules_as_the_plain_file(tmp_path: Path) -> None:
    helm = os.environ.get("HELM3")
    if not helm or not Path(helm).is_file():
        pytest.skip("HELM3 is not set: `testbed/up k8s` provides it")
    chart = REPO_ROOT / "deployments" / "helm" / "safe-updater"
    rendered = subprocess.run(
        [
            helm,
            "template",
            "su",
            str(chart),
            "--namespace=safe-updater",
            "--set=rbac.helm.namespaces={default}",
            "--set=rbac.exec.enabled=true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path)},
    )
    assert rendered.returncode == 0, rendered.stderr
    roles = {
        d["metadata"]["name"]: d["rules"]
        for d in yaml.safe_load_all(rendered.stdout)
        if d and d["kind"] == "ClusterRole"
    }
    fullname = next(name for name in roles if name.endswith("-workloads")).removesuffix(
        "-workloads"
    )
    pairs = {"safe-updater": "workloads", "safe-updater-helm": "helm", "safe-updater-exec": "exec"}
    assert set(roles) == {f"{fullname}-{suffix}" for suffix in pairs.values()}
    for plain, suffix in pairs.items():
        assert _normal(roles[f"{fullname}-{suffix}"]) == _normal(shipped_role(plain)["rules"]), (
            f"chart role {fullname}-{suffix} and {RBAC_FILE} role {plain} differ"
        )


def _normal(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) triples: the grant, whatever the rules' grouping and order."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
    }
