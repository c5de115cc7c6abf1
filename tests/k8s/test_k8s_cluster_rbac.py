"""RBAC: the updater works as a ServiceAccount bound to the shipped ClusterRole, and fails with a
message naming the missing verb when the role lacks it."""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_support import REPO_ROOT, K8sCluster, ready_pods, wait_until
from k8s_workloads import (
    BROKEN_TAG,
    broken_image_policy,
    create_workload,
    watch_rollout,
    workload_manifest,
)
from pydantic import SecretStr

from safe_updater.adapters.k8s_health import RolloutProbe
from safe_updater.adapters.k8s_inventory import KubernetesInventory
from safe_updater.adapters.k8s_updater import KubernetesImageUpdater
from safe_updater.adapters.kube_api import RBAC_FILE, KubeApi
from safe_updater.adapters.registry import OciRegistry
from safe_updater.blocks.kubernetes_cluster import KubernetesCluster
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
