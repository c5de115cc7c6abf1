"""The Helm chart in deployments/helm/safe-updater (docs/packaging.md).

Rendering tests run the real `helm lint` / `helm template` (helm 3 and 4) and read the objects:
which ServiceAccount the pods use, the RBAC rules verb by verb, the security contexts, where the
database passwords end up. The `k8s` test installs the chart on the test cluster and checks, as
the chart's ServiceAccount, that the updater's calls and helm's upgrade/rollback are allowed and
that everything else is denied.
"""

from __future__ import annotations

import base64
import functools
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_support import Helm, K8sCluster, ready_pods, tool_env, wait_until

from safe_updater.adapters.kube_api import KubeApi, resource_of
from safe_updater.config import parse_config_text

RELEASE = "r1"
NAMESPACE = "su"
FULLNAME = f"{RELEASE}-safe-updater"
CHART_DIR = Path(__file__).resolve().parents[2] / "deployments" / "helm" / "safe-updater"

# Passwords that must never appear outside a Secret's (base64) data.
SERVER_PASSWORD = "pw-server-7f3a1c"
STATE_PASSWORD = "pw-state-92be04"
POSTGRES_VALUES: dict[str, Any] = {
    "prefectServer": {
        "database": {
            "url": f"postgresql+asyncpg://prefect:{SERVER_PASSWORD}@postgres.db.svc:5432/prefect"
        }
    },
    "updater": {
        "state": {
            "url": f"postgresql+psycopg://su:{STATE_PASSWORD}@postgres.db.svc:5432/safe_updater"
        }
    },
}

Rules = dict[tuple[str, str], set[str]]

READ = {"get", "list", "watch"}
CHART_OBJECTS = {"get", "list", "watch", "create", "patch", "delete"}

#: What the updater's Kubernetes code calls (adapters/kube_api.py and its users), per resource.
WORKLOAD_RULES: Rules = {
    ("apps", "deployments"): READ | {"patch"},
    ("apps", "statefulsets"): READ | {"patch"},
    ("apps", "daemonsets"): READ | {"patch"},
    ("batch", "cronjobs"): READ | {"patch"},
    ("apps", "replicasets"): {"list", "watch"},
    ("apps", "controllerrevisions"): {"list", "watch"},
    ("", "pods"): {"list", "watch", "delete"},
}

#: helm's release storage plus the kinds of common charts (templates/rbac.yaml says why).
HELM_RULES: Rules = {
    ("", "secrets"): {"get", "list", "create", "update", "delete"},
    ("", "configmaps"): CHART_OBJECTS,
    ("", "services"): CHART_OBJECTS,
    ("", "serviceaccounts"): CHART_OBJECTS,
    ("", "persistentvolumeclaims"): CHART_OBJECTS,
    ("apps", "deployments"): CHART_OBJECTS,
    ("apps", "statefulsets"): CHART_OBJECTS,
    ("apps", "daemonsets"): CHART_OBJECTS,
    ("batch", "jobs"): CHART_OBJECTS,
    ("batch", "cronjobs"): CHART_OBJECTS,
    ("apps", "replicasets"): {"list"},
    ("", "pods"): {"list"},
}

EXEC_RULES: Rules = {("", "pods/exec"): {"get", "create"}}


# --- helpers ----------------------------------------------------------------------------------


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=tool_env(Path("/nonexistent-kubeconfig"), Path("/nonexistent-helm-home")),
    )


def write_values(tmp_path: Path, values: Mapping[str, Any]) -> Path:
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return path


def render_text(helm: Path, tmp_path: Path, values: Mapping[str, Any] | None = None) -> str:
    args = ["template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE]
    if values:
        args += ["-f", str(write_values(tmp_path, values))]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(
    helm: Path, tmp_path: Path, values: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_text(helm, tmp_path, values)) if doc]


def objects(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """{name (namespace/name for namespaced RoleBindings): object} of one kind."""
    found: dict[str, dict[str, Any]] = {}
    for doc in docs:
        if doc["kind"] == kind:
            meta = doc["metadata"]
            key = meta["name"] if kind != "RoleBinding" else f"{meta['namespace']}/{meta['name']}"
            assert key not in found, f"two {kind} objects named {key}"
            found[key] = doc
    return found


def rule_map(rules: Iterable[Mapping[str, Any]]) -> Rules:
    result: Rules = {}
    for rule in rules:
        # Both would widen a rule beyond what the keys below show.
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                result.setdefault((group, resource), set()).update(rule["verbs"])
    return result


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: d["spec"]["template"]["spec"] for name, d in objects(docs, "Deployment").items()}


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- lint and render --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "postgres"])
def test_helm_lint_strict_passes(helm_binary: Path, tmp_path: Path, variant: str) -> None:
    args = ["lint", "--strict", str(CHART_DIR)]
    if variant == "postgres":
        args += ["-f", str(write_values(tmp_path, POSTGRES_VALUES))]
    result = run_helm(helm_binary, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_default_render_has_server_updater_and_no_secret(helm_binary: Path, tmp_path: Path) -> None:
    docs = render(helm_binary, tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "PersistentVolumeClaim",  # Prefect's SQLite
            "PersistentVolumeClaim",  # the state store's SQLite
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Service",
            "Deployment",
            "Deployment",
        ]
    ), kinds
    # No helm namespace listed: no helm role, no Secret access anywhere.
    assert set(objects(docs, "ClusterRole")) == {f"{FULLNAME}-workloads"}
    assert all(d["metadata"].get("namespace", NAMESPACE) == NAMESPACE for d in docs)

    deployments = objects(docs, "Deployment")
    server = deployments[f"{FULLNAME}-prefect-server"]["spec"]
    updater = deployments[f"{FULLNAME}-updater"]["spec"]
    # SQLite has one writer: one replica each, and the old pod goes before the new one starts.
    for spec in (server, updater):
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}

    server_pod, updater_pod = server["template"]["spec"], updater["template"]["spec"]
    (server_c,) = server_pod["containers"]
    assert server_c["command"] == ["prefect"]
    assert server_c["args"][:2] == ["server", "start"]
    assert env_of(server_c)["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env_of(server_c)["PREFECT_HOME"] == "/var/lib/safe-updater/prefect"
    assert server_pod["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": f"{FULLNAME}-prefect-server"
    }

    (updater_c,) = updater_pod["containers"]
    assert "command" not in updater_c  # the image's entrypoint: safe-updater
    args = updater_c["args"]
    assert args[0] == "serve"
    assert args[args.index("--metrics-port") + 1] == "9720"
    env = env_of(updater_c)
    assert env["PREFECT_API_URL"] == f"http://{FULLNAME}-prefect-server.{NAMESPACE}.svc:4200/api"
    assert env["KUBECONFIG"] == "/etc/safe-updater/kubeconfig"
    assert "SAFE_UPDATER_STATE_URL" not in env  # SQLite on the claim
    assert updater_c["image"] == server_c["image"] == "safe-updater:0.1.0"

    services = objects(docs, "Service")
    assert services[f"{FULLNAME}-prefect-server"]["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in services[f"{FULLNAME}-prefect-server"]["spec"]["ports"]] == [4200]


def test_pods_run_as_the_chart_service_account_and_only_the_updater_gets_a_token(
    helm_binary: Path, tmp_path: Path
) -> None:
    docs = render(helm_binary, tmp_path)
    (sa,) = objects(docs, "ServiceAccount").values()
    assert sa["metadata"]["name"] == FULLNAME
    assert sa["automountServiceAccountToken"] is False
    specs = pod_specs(docs)
    assert {s["serviceAccountName"] for s in specs.values()} == {FULLNAME}
    assert specs[f"{FULLNAME}-updater"]["automountServiceAccountToken"] is True
    assert specs[f"{FULLNAME}-prefect-server"]["automountServiceAccountToken"] is False
    # Every binding names that account and nothing else.
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for binding in objects(docs, kind).values():
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
            ]


def test_rbac_rules_are_exactly_the_verbs_the_code_uses(helm_binary: Path, tmp_path: Path) -> None:
    docs = render(
        helm_binary,
        tmp_path,
        {"rbac": {"helm": {"namespaces": ["shop", "team-a"]}, "exec": {"enabled": True}}},
    )
    roles = objects(docs, "ClusterRole")
    assert set(roles) == {f"{FULLNAME}-workloads", f"{FULLNAME}-helm", f"{FULLNAME}-exec"}
    assert rule_map(roles[f"{FULLNAME}-workloads"]["rules"]) == WORKLOAD_RULES
    assert rule_map(roles[f"{FULLNAME}-helm"]["rules"]) == HELM_RULES
    assert rule_map(roles[f"{FULLNAME}-exec"]["rules"]) == EXEC_RULES
    assert not objects(docs, "Role")  # no namespaced Roles: every rule is in a ClusterRole above

    # Every resource KubeApi can touch is covered (a new kind in the code fails here).
    workload_resources = {f"{group}/{res}" if group else res for group, res in WORKLOAD_RULES}
    kinds = ["Deployment", "StatefulSet", "DaemonSet", "CronJob", "ReplicaSet"]
    kinds += ["ControllerRevision", "Pod"]
    assert {resource_of(kind) for kind in kinds} == workload_resources

    # Workloads: cluster-wide (config namespaces empty). Helm: only where releases live.
    cluster_bindings = objects(docs, "ClusterRoleBinding")
    assert {b["roleRef"]["name"] for b in cluster_bindings.values()} == {
        f"{FULLNAME}-workloads",
        f"{FULLNAME}-exec",
    }
    role_bindings = objects(docs, "RoleBinding")
    assert set(role_bindings) == {f"shop/{FULLNAME}-helm", f"team-a/{FULLNAME}-helm"}
    assert {b["roleRef"]["name"] for b in role_bindings.values()} == {f"{FULLNAME}-helm"}

    # Nothing anywhere grants wildcards or cluster-scoped resources.
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert not {"nodes", "namespaces", "clusterroles", "clusterrolebindings"} & set(
                rule["resources"]
            ), rule


def test_namespaced_workload_rbac_uses_role_bindings_only(
    helm_binary: Path, tmp_path: Path
) -> None:
    docs = render(helm_binary, tmp_path, {"rbac": {"workloads": {"namespaces": ["shop", "web"]}}})
    assert not objects(docs, "ClusterRoleBinding")
    assert set(objects(docs, "RoleBinding")) == {
        f"shop/{FULLNAME}-workloads",
        f"web/{FULLNAME}-workloads",
    }


def test_rbac_create_false_renders_no_rbac(helm_binary: Path, tmp_path: Path) -> None:
    docs = render(helm_binary, tmp_path, {"rbac": {"create": False}})
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & {
        d["kind"] for d in docs
    }


def test_every_container_is_non_root_read_only_without_capabilities(
    helm_binary: Path, tmp_path: Path
) -> None:
    for values in (None, POSTGRES_VALUES):
        for name, spec in pod_specs(render(helm_binary, tmp_path, values)).items():
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True, name
            assert pod["runAsUser"] == 10001 and pod["runAsGroup"] == 10001, name
            assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
            for container in spec["containers"]:
                sc = container["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, name
                assert sc["readOnlyRootFilesystem"] is True, name
                assert sc["privileged"] is False, name
                assert sc["capabilities"] == {"drop": ["ALL"]}, name
                # A read-only root needs writable scratch space and the state volume.
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert {"/tmp", "/var/lib/safe-updater"} <= mounts, name
                assert container["resources"]["requests"] and container["resources"]["limits"]


def test_metrics_port_and_prometheus_annotations(helm_binary: Path, tmp_path: Path) -> None:
    docs = render(helm_binary, tmp_path)
    expected = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9720",
        "prometheus.io/path": "/metrics",
    }
    updater = objects(docs, "Deployment")[f"{FULLNAME}-updater"]["spec"]["template"]
    assert expected.items() <= updater["metadata"]["annotations"].items()
    (container,) = updater["spec"]["containers"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9720, "protocol": "TCP"}]
    service = objects(docs, "Service")[f"{FULLNAME}-updater-metrics"]
    assert service["metadata"]["annotations"] == expected
    assert service["spec"]["ports"][0]["port"] == 9720
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "updater"


def test_config_map_holds_a_valid_config_and_a_credential_free_kubeconfig(
    helm_binary: Path, tmp_path: Path
) -> None:
    config: dict[str, Any] = {
        "targets": {"kubernetes": [{"name": "prod", "namespaces": ["shop"]}]},
        "charts": [{"release": "shop/web", "source": "oci://localhost:5000/charts/web"}],
    }
    docs = render(helm_binary, tmp_path, {"config": config})
    (cm,) = objects(docs, "ConfigMap").values()
    text = cm["data"]["safe-updater.yaml"]
    assert yaml.safe_load(text) == config
    parsed = parse_config_text(text, source="configmap")  # the updater accepts it as it is
    assert [t.name for t in parsed.targets.kubernetes] == ["prod"]

    kubeconfig = yaml.safe_load(cm["data"]["kubeconfig"])
    (user,) = kubeconfig["users"]
    # The token is read from the kubelet-rotated file, never copied into the ConfigMap.
    assert user["user"] == {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}
    (cluster,) = kubeconfig["clusters"]
    assert cluster["cluster"]["server"] == "https://kubernetes.default.svc"
    assert "insecure-skip-tls-verify" not in cluster["cluster"]

    # A changed config rolls the updater pod.
    pod = objects(docs, "Deployment")[f"{FULLNAME}-updater"]["spec"]["template"]
    before = pod["metadata"]["annotations"]["checksum/config"]
    config["targets"]["kubernetes"][0]["namespaces"] = ["shop", "web"]
    again = objects(render(helm_binary, tmp_path, {"config": config}), "Deployment")
    after = again[f"{FULLNAME}-updater"]["spec"]["template"]["metadata"]["annotations"]
    assert after["checksum/config"] != before


def test_postgres_urls_live_only_in_a_secret(helm_binary: Path, tmp_path: Path) -> None:
    text = render_text(helm_binary, tmp_path, POSTGRES_VALUES)
    docs = [d for d in yaml.safe_load_all(text) if d]
    # The rendered manifests never carry a password in clear text...
    assert SERVER_PASSWORD not in text and STATE_PASSWORD not in text
    (secret,) = objects(docs, "Secret").values()
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    # ...only the Secret's data, and the pods reference it.
    assert data == {
        "prefect-database-url": POSTGRES_VALUES["prefectServer"]["database"]["url"],
        "state-url": POSTGRES_VALUES["updater"]["state"]["url"],
    }
    for cm in objects(docs, "ConfigMap").values():
        assert not {SERVER_PASSWORD, STATE_PASSWORD} & set(yaml.safe_dump(cm).split())
        assert "postgres" not in yaml.safe_dump(cm["data"])
    containers = {n: s["containers"][0] for n, s in pod_specs(docs).items()}
    server_env = env_of(containers[f"{FULLNAME}-prefect-server"])
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"] == {
        "secretKeyRef": {"name": f"{FULLNAME}-db", "key": "prefect-database-url"}
    }
    assert env_of(containers[f"{FULLNAME}-updater"])["SAFE_UPDATER_STATE_URL"] == {
        "secretKeyRef": {"name": f"{FULLNAME}-db", "key": "state-url"}
    }
    # With the databases elsewhere there is no SQLite claim left.
    assert not objects(docs, "PersistentVolumeClaim")
    for name, spec in pod_specs(docs).items():
        data_volume = next(v for v in spec["volumes"] if v["name"] == "data")
        assert data_volume == {"name": "data", "emptyDir": {}}, name


def test_existing_secrets_are_referenced_and_no_secret_is_created(
    helm_binary: Path, tmp_path: Path
) -> None:
    docs = render(
        helm_binary,
        tmp_path,
        {
            "prefectServer": {"database": {"existingSecret": {"name": "pg", "key": "prefect"}}},
            "updater": {"state": {"existingSecret": {"name": "pg", "key": "state"}}},
        },
    )
    assert not objects(docs, "Secret")
    containers = {n: s["containers"][0] for n, s in pod_specs(docs).items()}
    assert env_of(containers[f"{FULLNAME}-prefect-server"])[
        "PREFECT_API_DATABASE_CONNECTION_URL"
    ] == {"secretKeyRef": {"name": "pg", "key": "prefect"}}
    assert env_of(containers[f"{FULLNAME}-updater"])["SAFE_UPDATER_STATE_URL"] == {
        "secretKeyRef": {"name": "pg", "key": "state"}
    }


def test_a_state_url_in_the_config_is_refused(helm_binary: Path, tmp_path: Path) -> None:
    values = {"config": {"state": {"url": f"postgresql+psycopg://su:{STATE_PASSWORD}@db/x"}}}
    result = run_helm(
        helm_binary,
        "template",
        RELEASE,
        str(CHART_DIR),
        "-f",
        str(write_values(tmp_path, values)),
    )
    assert result.returncode != 0
    assert "config.state.url" in result.stderr and "updater.state" in result.stderr


def test_external_prefect_server(helm_binary: Path, tmp_path: Path) -> None:
    docs = render(
        helm_binary,
        tmp_path,
        {
            "prefectServer": {"enabled": False},
            "updater": {"prefectApiUrl": "http://prefect.prefect.svc:4200/api"},
        },
    )
    assert set(objects(docs, "Deployment")) == {f"{FULLNAME}-updater"}
    (container,) = pod_specs(docs)[f"{FULLNAME}-updater"]["containers"]
    assert env_of(container)["PREFECT_API_URL"] == "http://prefect.prefect.svc:4200/api"
    missing = run_helm(
        helm_binary,
        "template",
        RELEASE,
        str(CHART_DIR),
        "-f",
        str(write_values(tmp_path, {"prefectServer": {"enabled": False}})),
    )
    assert missing.returncode != 0 and "updater.prefectApiUrl is required" in missing.stderr


# --- on the test cluster ----------------------------------------------------------------------


def can_i(cluster: K8sCluster, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    scope = ["--all-namespaces"] if namespace is None else ["--namespace", namespace]
    result = subprocess.run(
        [str(cluster.kubectl_bin), "auth", "can-i", verb, resource, *scope, f"--as={user}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=tool_env(cluster.kubeconfig),
    )
    answer = result.stdout.strip()
    # Exit 1 with "no" is a denial; anything else (an error) must not pass for one.
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


def service_account_kubeconfig(
    cluster: K8sCluster, chart_kubeconfig: str, namespace: str, sa: str, directory: Path
) -> Path:
    """The chart's own kubeconfig (tokenFile, CA file) pointed at the test cluster's files.

    A TokenRequest token stands in for the kubelet-mounted one; server and CA are the test
    cluster's, since `kubernetes.default.svc` does not resolve here.
    """
    token = cluster.core.create_namespaced_service_account_token(
        sa, namespace, {"spec": {"expirationSeconds": 900}}
    ).status.token
    token_file = directory / "token"
    token_file.write_text(token)
    admin = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(base64.b64decode(admin["certificate-authority-data"]))
    config = yaml.safe_load(chart_kubeconfig)
    config["clusters"][0]["cluster"]["server"] = admin["server"]
    config["clusters"][0]["cluster"]["certificate-authority"] = str(ca_file)
    config["users"][0]["user"]["tokenFile"] = str(token_file)
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.mark.k8s
def test_install_grants_the_updater_exactly_what_it_needs(
    k8s_cluster: K8sCluster, k8s_namespace: str, helm: Helm, tmp_path: Path
) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    rbac_api = client.RbacAuthorizationV1Api(k8s_cluster.api_client)
    apps_ns = k8s_cluster.create_namespace("pack-releases")
    release = f"su-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-safe-updater"
    sa_user = f"system:serviceaccount:{k8s_namespace}:{fullname}"
    values = write_values(
        tmp_path,
        {
            "rbac": {"helm": {"namespaces": [apps_ns]}},
            # No storage provisioner on the test cluster: a claim would stay Pending and keep
            # the pods unscheduled. emptyDir lets kwok run them.
            "prefectServer": {"persistence": {"enabled": False}},
            "updater": {"persistence": {"enabled": False}},
        },
    )
    installed = False
    try:
        # No --wait: kwok marks pods Ready, but no container of the image runs here.
        helm.run("install", release, str(CHART_DIR), "-n", k8s_namespace, "-f", str(values))
        installed = True
        status = helm.json("status", release, "-n", k8s_namespace)
        assert status["info"]["status"] == "deployed"

        # The objects, read back from the API server.
        sa = k8s_cluster.core.read_namespaced_service_account(fullname, k8s_namespace)
        assert sa.automount_service_account_token is False
        for name in (f"{fullname}-updater", f"{fullname}-prefect-server"):
            deployment = k8s_cluster.apps.read_namespaced_deployment(name, k8s_namespace)
            assert deployment.spec.template.spec.service_account_name == fullname
        metrics = k8s_cluster.core.read_namespaced_service(
            f"{fullname}-updater-metrics", k8s_namespace
        )
        assert metrics.metadata.annotations["prometheus.io/port"] == "9720"
        assert metrics.spec.type == "ClusterIP"
        cm = k8s_cluster.core.read_namespaced_config_map(f"{fullname}-config", k8s_namespace)
        workloads = rbac_api.read_cluster_role(f"{fullname}-workloads")
        served = k8s_cluster.api_client.sanitize_for_serialization(workloads)
        assert rule_map(served["rules"]) == WORKLOAD_RULES
        rbac_api.read_cluster_role_binding(f"{fullname}-workloads")
        binding = rbac_api.read_namespaced_role_binding(f"{fullname}-helm", apps_ns)
        assert binding.role_ref.name == f"{fullname}-helm"

        # The controllers accepted the pod specs (ServiceAccount admission, security context)
        # and kwok runs them: one pod each, on the chart's account.
        for component in ("updater", "prefect-server"):
            selector = (
                f"app.kubernetes.io/instance={release},app.kubernetes.io/component={component}"
            )
            pods = wait_until(
                functools.partial(ready_pods, k8s_cluster, k8s_namespace, selector, 1),
                timeout=60,
                what=f"{component} pod",
            )
            assert pods[0].spec.service_account_name == fullname
            assert pods[0].spec.security_context.run_as_non_root is True

        # What the updater's code calls is allowed...
        allowed = [
            ("list", "deployments.apps", None),
            ("watch", "statefulsets.apps", None),
            ("get", "daemonsets.apps", "default"),
            ("patch", "deployments.apps", "default"),
            ("patch", "cronjobs.batch", apps_ns),
            ("list", "replicasets.apps", "default"),
            ("watch", "controllerrevisions.apps", apps_ns),
            ("delete", "pods", "default"),
            # helm, in the release namespace only
            ("get", "secrets", apps_ns),
            ("list", "secrets", apps_ns),
            ("create", "secrets", apps_ns),
            ("update", "secrets", apps_ns),
            ("delete", "secrets", apps_ns),
            ("create", "deployments.apps", apps_ns),
            ("patch", "configmaps", apps_ns),
        ]
        # ...and nothing else.
        denied = [
            ("delete", "nodes", None),
            ("get", "nodes", None),
            ("list", "namespaces", None),
            ("get", "secrets", k8s_namespace),
            ("get", "secrets", "kube-system"),
            ("list", "secrets", None),
            ("patch", "secrets", apps_ns),
            ("create", "deployments.apps", "default"),
            ("update", "deployments.apps", "default"),
            ("delete", "deployments.apps", "default"),
            ("update", "deployments.apps", apps_ns),
            ("create", "pods", "default"),
            ("create", "pods/exec", apps_ns),
            ("create", "clusterroles.rbac.authorization.k8s.io", None),
            ("create", "rolebindings.rbac.authorization.k8s.io", apps_ns),
            ("impersonate", "serviceaccounts", k8s_namespace),
        ]
        wrong = [c for c in allowed if not can_i(k8s_cluster, sa_user, *c)]
        wrong += [c for c in denied if can_i(k8s_cluster, sa_user, *c)]
        assert not wrong, f"RBAC differs from the plan for {wrong}"

        # Logged in as the account, through the chart's own kubeconfig form (tokenFile):
        sa_dir = tmp_path / "sa"
        sa_dir.mkdir()
        kubeconfig = service_account_kubeconfig(
            k8s_cluster, cm.data["kubeconfig"], k8s_namespace, fullname, sa_dir
        )
        # helm upgrades and rolls back a release in the bound namespace (the demo chart:
        # a Deployment and a ConfigMap)...
        helm.run(
            "install", "demo", "demo", "--repo", k8s_cluster.chart_repo_http,
            "--version", "1.0.0", "-n", apps_ns,
        )  # fmt: skip
        as_sa = Helm(helm.name, helm.binary, kubeconfig, tmp_path / "sa-helm")
        assert [r["name"] for r in as_sa.json("list", "-n", apps_ns)] == ["demo"]
        upgrade = ["upgrade", "demo", "demo", "--repo", k8s_cluster.chart_repo_http]
        upgrade += ["--version", "1.0.1", "-n", apps_ns]
        as_sa.run(*upgrade, "--dry-run=server")
        as_sa.run(*upgrade)
        wait = "--wait=watcher" if as_sa.major >= 4 else "--wait"
        as_sa.run("rollback", "demo", "1", "-n", apps_ns, wait, "--timeout", "90s")
        history = as_sa.json("history", "demo", "-n", apps_ns)
        assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"]
        assert history[-1]["chart"] == "demo-1.0.0"
        # ...but cannot list releases cluster-wide (that would read every Secret).
        everywhere = as_sa.run("list", "--all-namespaces", check=False)
        assert everywhere.returncode != 0 and "forbidden" in everywhere.stderr

        # The updater's own client, with the same kubeconfig: the paged cluster-wide list and
        # preflight's dry-run patch work; Secrets outside the release namespace do not.
        api = KubeApi.connect(kubeconfig=kubeconfig)
        try:
            names = {d["metadata"]["name"] for d in api.list_all("Deployment", None)}
            assert {f"{fullname}-updater", "demo-demo"} <= names
            demo = api.get("Deployment", apps_ns, "demo-demo")
            container = demo["spec"]["template"]["spec"]["containers"][0]
            patch = {"spec": {"template": {"spec": {"containers": [container]}}}}
            api.patch("Deployment", apps_ns, "demo-demo", patch, dry_run=True)
            with pytest.raises(ApiException) as denied_read:
                api.core.list_namespaced_secret(k8s_namespace)
            assert denied_read.value.status == 403
        finally:
            api.close()

        helm.run("uninstall", release, "-n", k8s_namespace)
        installed = False
        # Cluster-scoped objects go with the release.
        for read in (rbac_api.read_cluster_role, rbac_api.read_cluster_role_binding):
            with pytest.raises(ApiException) as gone:
                read(f"{fullname}-workloads")
            assert gone.value.status == 404
    finally:
        if installed:
            helm.run("uninstall", release, "-n", k8s_namespace, check=False)
        k8s_cluster.delete_namespace(apps_ns)
