"""Secrets canary: every credential Block holds a secret the runs really use, and after full runs
(good, failing and refused, through the CLI and through the flows) no form of any of them (raw,
base64, URL-encoded) is anywhere a person or a machine can read.

The canaries, one per Block, each one the value the run authenticates with:

- ``RegistryCredentials``: the auth registry's password (random per test bed; the Docker asset's
  image lives there, so detection, the engine's pull and the rollback all log in with it), and a
  random wrong password in a second block (the refused-login path).
- ``KubernetesCluster``: a ServiceAccount bearer token from the TokenRequest API, inside the
  block's inline kubeconfig (a ``SecretStr``); the ServiceAccount is bound to the shipped
  ClusterRoles, so the cluster authenticates and authorizes the Deployment update with the
  canary. A second block holds a random token the cluster refuses (the failing-auth path).
- ``NotificationWebhook``: a random token in the webhook URL's path; the loopback receiver
  checks that it arrived, so the URL was really used (and its first answers are 500s, so the
  notifier's failure path runs too).
- ``DockerHost`` holds no secret: its TLS fields are *paths* of certificate and key files, which
  the Docker SDK reads itself; no key material or password passes through a Block field, so there
  is no canary for it (none is invented here).

Where the test looks: CLI stdout and stderr (``--json`` and text, verbose errors), every log line
on the Prefect API (the CLI runs log at DEBUG), every flow run's parameters and state, every task
run, every artifact, every ``safe-updater.*``/``prefect.*`` event, the state database (journal,
audit log, quarantine) and its lock files as raw bytes, tracebacks and reprs of the in-process
errors, and the webhook bodies and headers the receiver got.

Needs `testbed/up docker registry k8s`.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from safe_updater.adapters.k8s_inventory import KubernetesInventory
from safe_updater.blocks.kubernetes_cluster import KubernetesCluster
from safe_updater.blocks.registry_credentials import RegistryCredentials
from safe_updater.blocks.webhook import NotificationWebhook
from safe_updater.domain.assets import ImageRef
from safe_updater.domain.errors import AuthError, SafeUpdaterError
from safe_updater.flows.update_asset import update_asset
from support.docker_scenarios import (
    HEALTH_INTERVAL,
    HEALTH_WINDOW,
    DockerScenario,
    describe,
    private_repo,
    publish_tags,
)
from support.k8s_login import ServiceAccountLogin
from support.leaks import Texts, error_texts, file_texts, forms, leaks, prefect_records
from support.testbed import RegistryInfo
from support.webhook_receiver import Receiver, webhook_receiver

# tests/k8s has no __init__.py: its helper module is found by path, like its own conftest does.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))

from k8s_support import ENV_KEYS, REPO_ROOT, K8sCluster, loopback_only, ready_pods, wait_until
from k8s_workloads import create_workload, workload_manifest

pytestmark = [pytest.mark.integration, pytest.mark.k8s, pytest.mark.usefixtures("prefect_server")]

CLUSTER = "tb"
RBAC = REPO_ROOT / "deployments" / "kubernetes" / "rbac.yaml"


def _shipped_rules(name: str) -> list[dict[str, Any]]:
    for doc in yaml.safe_load_all(RBAC.read_text()):
        if doc and doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == name:
            rules: list[dict[str, Any]] = doc["rules"]
            return rules
    raise AssertionError(f"no ClusterRole {name} in {RBAC}")


@pytest.fixture
def k8s_cluster(testbed_env: dict[str, str]) -> K8sCluster:
    env = {key: testbed_env.get(key) or os.environ.get(key, "") for key in ENV_KEYS}
    if not env["KUBECONFIG"] or not env["TESTBED_K8S_VERSION"]:
        pytest.skip("the k8s test bed is not up: `testbed/up k8s`")
    cluster = K8sCluster.from_env(env)
    if not loopback_only(cluster.server):
        pytest.skip(f"KUBECONFIG points at {cluster.server}, not at the loopback test cluster")
    return cluster


@pytest.fixture
def namespace(k8s_cluster: K8sCluster) -> Iterator[str]:
    name = k8s_cluster.create_namespace("canary")
    try:
        yield name
    finally:
        k8s_cluster.delete_namespace(name)


@pytest.fixture
def docker_asset(
    docker_client: Any, auth_registry: RegistryInfo, tmp_path: Path
) -> Iterator[DockerScenario]:
    repo = private_repo()
    publish_tags(auth_registry, repo, ["1.0.0", "1.0.1", "1.0.2"])
    scenario = DockerScenario(
        docker=docker_client, registry=auth_registry, workdir=tmp_path / "s", repo=repo
    )
    scenario.write_config()
    try:
        yield scenario
    finally:
        scenario.cleanup()


def _config(
    s: DockerScenario,
    *,
    namespace: str,
    registry_block: str,
    cluster_block: str,
    webhook_block: str,
) -> None:
    s.workdir.mkdir(parents=True, exist_ok=True)
    s.home.mkdir(parents=True, exist_ok=True)
    s.config_path.write_text(
        f"state:\n  url: {json.dumps(s.state_url)}\n"
        "targets:\n  docker:\n"
        f"    - name: {s.target}\n      url: {json.dumps(os.environ['DOCKER_HOST'])}\n"
        f"  kubernetes:\n    - name: {CLUSTER}\n      cluster_block: {cluster_block}\n"
        f"      namespaces: [{namespace}]\n      helm: {os.environ['HELM3']}\n"
        f"registries:\n  - host: {s.registry.host}\n    credentials_block: {registry_block}\n"
        f"notifications:\n  - name: ops\n    url_block: {webhook_block}\n    format: json\n"
        "    events: [updated, rolled-back, failed]\n"
        f"health:\n  window: {HEALTH_WINDOW}\n  interval: {HEALTH_INTERVAL}\n"
    )


def _cli(s: DockerScenario, outputs: Texts, label: str, *args: str, env: dict[str, str]) -> Any:
    done = s.cli(*args, env=env)
    outputs.append((f"{label}: {' '.join(args)} stdout", done.stdout))
    outputs.append((f"{label}: {' '.join(args)} stderr", done.stderr))
    return done


def _received(receiver: Receiver) -> Texts:
    with receiver.lock:
        return [
            (f"webhook request {n} body", r.body.decode("latin-1") + json.dumps(r.headers))
            for n, r in enumerate(receiver.requests)
        ]


def test_no_canary_of_any_block_leaks_from_full_runs(
    docker_asset: DockerScenario,
    auth_registry: RegistryInfo,
    k8s_cluster: K8sCluster,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = docker_asset
    assert auth_registry.username and auth_registry.password
    tag = uuid.uuid4().hex[:8]

    # --- the canaries, each in its Block -------------------------------------------------------
    registry_password = auth_registry.password
    wrong_password = "pw-" + secrets.token_urlsafe(18)
    hook_token = "hk-" + secrets.token_urlsafe(18)
    wrong_token = "tk-" + secrets.token_urlsafe(24)
    assert len(registry_password) >= 8, "the canary must be distinctive"

    login = ServiceAccountLogin(
        k8s_cluster,
        namespace,
        _shipped_rules("safe-updater"),
        namespaced_rules=_shipped_rules("safe-updater-helm"),
    )
    try:
        token = login.token
        # A JWT: header and claims are not secret, the signature is what authenticates.
        signature = token.rsplit(".", 1)[1]
        canaries = {
            "registry password": forms(registry_password, user=auth_registry.username),
            "wrong registry password": forms(wrong_password, user=auth_registry.username),
            "cluster token": forms(token) + forms(signature),
            "wrong cluster token": forms(wrong_token),
            "webhook token": forms(hook_token),
        }

        blocks = {k: f"canary-{k}-{tag}" for k in ("reg", "badreg", "k8s", "badk8s", "hook")}
        RegistryCredentials(
            registry=auth_registry.host,
            username=auth_registry.username,
            password=SecretStr(registry_password),
        ).save(blocks["reg"], overwrite=True)
        RegistryCredentials(
            registry=auth_registry.host,
            username=auth_registry.username,
            password=SecretStr(wrong_password),
        ).save(blocks["badreg"], overwrite=True)
        KubernetesCluster(
            name=CLUSTER, kubeconfig=SecretStr(yaml.safe_dump(login.kubeconfig))
        ).save(blocks["k8s"], overwrite=True)
        KubernetesCluster(
            name=CLUSTER, kubeconfig=SecretStr(yaml.safe_dump(login.kubeconfig_with(wrong_token)))
        ).save(blocks["badk8s"], overwrite=True)

        with webhook_receiver() as receiver:
            # The first notice fails twice (500, then 500 on its one retry): the failure path.
            receiver.statuses[:] = [500, 500]
            NotificationWebhook(
                url=SecretStr(receiver.url(f"/hook/{hook_token}")), format="json"
            ).save(blocks["hook"], overwrite=True)
            outputs = _full_runs(s, k8s_cluster, namespace, blocks, tmp_path, monkeypatch)
            assert any(hook_token in r.path for r in receiver.requests), (
                "the webhook URL from the block was never used"
            )
            assert len(receiver.requests) >= 3, receiver.requests
            outputs += _received(receiver)
    finally:
        login.close()

    # --- everything Prefect holds --------------------------------------------------------------
    records = prefect_records(name_contains=[s.name, "deployment-web", namespace])
    assert records.our_logs, "the runs wrote no logs: the check would prove nothing"
    assert records.our_artifacts, "the runs made no artifacts: the check would prove nothing"
    assert records.update_events, "no safe-updater.update.* events: the check would prove nothing"
    outputs += records.texts

    # --- the state store as raw bytes: journal, audit log, quarantine, lock files --------------
    stored = file_texts(s.workdir.glob("state.db*"))
    assert stored, "no state database: the check would prove nothing"
    outputs += stored

    found = {name: leaks(forms_, outputs) for name, forms_ in canaries.items()}
    assert found == {name: [] for name in canaries}, f"secrets leaked: {found}"


def _full_runs(
    s: DockerScenario,
    k8s_cluster: K8sCluster,
    namespace: str,
    blocks: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Texts:
    outputs: Texts = []
    repo = os.environ["TESTBED_IMAGE_REPO"]
    create_workload(k8s_cluster, workload_manifest("Deployment", "web", namespace, f"{repo}:1.0.0"))
    wait_until(lambda: ready_pods(k8s_cluster, namespace, "app=web", 2), timeout=90)
    k8s_asset = f"k8s:{CLUSTER}/{namespace}/deployment/web"
    s.start("1.0.0")
    empty = tmp_path / "no-docker-login"
    empty.mkdir()
    # Only the Blocks log in: no Docker config file, no kubeconfig of the admin.
    monkeypatch.setenv("DOCKER_CONFIG", str(empty))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    env = {"DOCKER_CONFIG": str(empty), "PREFECT_LOGGING_LEVEL": "DEBUG", "KUBECONFIG": ""}
    verbose = {**env, "SAFE_UPDATER_VERBOSE": "1"}

    def configure(registry: str, cluster: str) -> None:
        _config(
            s,
            namespace=namespace,
            registry_block=blocks[registry],
            cluster_block=blocks[cluster],
            webhook_block=blocks["hook"],
        )

    # 1. Good credentials, through the CLI: the Docker asset goes to 1.0.2 (unhealthy), is rolled
    # back and 1.0.2 quarantined; then to 1.0.1. The Deployment is updated as the ServiceAccount.
    configure("reg", "k8s")
    first = _cli(s, outputs, "good", "update", s.asset_id, "--yes", "--json", env=env)
    assert first.returncode == 3, describe(first)
    assert json.loads(first.stdout)["outcome"] == "rolled_back", first.stdout
    second = _cli(s, outputs, "good", "update", s.asset_id, "--yes", env=env)
    assert second.returncode == 0, describe(second)
    s.assert_serving("1.0.1")
    k8s_run = _cli(s, outputs, "good", "update", k8s_asset, "--yes", "--json", env=env)
    assert k8s_run.returncode == 0, describe(k8s_run)
    moved = json.loads(k8s_run.stdout)
    assert moved["outcome"] == "updated", moved
    image = k8s_cluster.apps.read_namespaced_deployment("web", namespace)
    assert image.spec.template.spec.containers[0].image == f"{repo}:{moved['to']}"
    for args in (
        ["scan", "--json"],
        ["scan"],
        ["assets", "--json"],
        ["history", "--json"],
        ["history"],
        ["quarantine", "list", "--json"],
        ["audit", "export"],
        ["audit", "verify"],
    ):
        done = _cli(s, outputs, "read", *args, env=env)
        assert done.returncode == 0, describe(done)

    # 2. The same through the flows, in process.
    with s.runtime():
        again = update_asset(k8s_asset, approval="defer")
        assert again["outcome"] in ("updated", "no_update", "awaiting_approval"), again
        outputs.append(("in-process k8s flow result", json.dumps(again, default=str)))

    # 3. The registry refuses the login: CLI (json, text, verbose) and in-process errors.
    configure("badreg", "k8s")
    for extra, e in ((["--json"], env), ([], env), ([], verbose)):
        refused = _cli(s, outputs, "refused", "update", s.asset_id, "--yes", *extra, env=e)
        assert refused.returncode not in (0, 3), describe(refused)
    errors: list[BaseException] = []
    with s.runtime() as runtime:
        with pytest.raises(SafeUpdaterError) as flow_error:
            update_asset(s.asset_id, approval="defer")
        errors.append(flow_error.value)
        with pytest.raises(SafeUpdaterError) as tags_error:
            runtime.registry.list_tags(ImageRef.parse(s.image("1.0.1")))
        errors.append(tags_error.value)
        asset = runtime.find_asset(s.asset_id)
        # The engine's pull with the refused login (Docker's own error text).
        with pytest.raises(Exception) as pull_error:
            runtime.updater_for(asset).preflight(asset, "1.0.2")
        errors.append(pull_error.value)

    # 4. The cluster refuses the token: CLI and in-process errors.
    configure("reg", "badk8s")
    for extra, e in ((["--json"], env), ([], verbose)):
        refused = _cli(s, outputs, "cluster refused", "update", k8s_asset, "--yes", *extra, env=e)
        assert refused.returncode not in (0, 3), describe(refused)
        assert (
            "401" in refused.stdout + refused.stderr
            or "auth" in (refused.stdout + refused.stderr).lower()
        ), describe(refused)
    scan = _cli(s, outputs, "cluster refused", "scan", "--json", env=env)
    outputs.append(("cluster refused scan exit", str(scan.returncode)))
    bad_block = KubernetesCluster.load(blocks["badk8s"], _sync=True)  # type: ignore[call-arg]
    api = bad_block.get_api()
    try:
        with pytest.raises(AuthError) as auth_error:
            KubernetesInventory(api, CLUSTER, namespaces=[namespace]).list_assets()
        errors.append(auth_error.value)
    finally:
        api.close()
    try:
        with s.runtime():
            with pytest.raises(SafeUpdaterError) as k8s_flow_error:
                update_asset(k8s_asset, approval="defer")
            errors.append(k8s_flow_error.value)
    except SafeUpdaterError as built:  # building the runtime may already fail: also an error
        errors.append(built)
    for n, error in enumerate(errors):
        outputs += error_texts(f"error {n}", error)
    return outputs
