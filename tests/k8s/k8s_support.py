"""Helpers for tests against the Kubernetes test cluster (`testbed/up k8s`, docs/test-cluster.md).

The cluster is a real kube-apiserver, kube-controller-manager, kube-scheduler and etcd on
127.0.0.1, with kwok as the fake kubelet: no container runs, pod status comes from kwok stages.
helm and kubectl are real binaries; they run with argument lists, never through a shell.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Pod labels the test cluster's kwok stages act on (testbed/k8s/kwok/stages.yaml).
FAIL_LABEL = "testbed.safe-updater.io/fail"  # runs, never Ready
CRASHLOOP_LABEL = "testbed.safe-updater.io/crashloop"  # CrashLoopBackOff, restarts grow

#: Env lines that `testbed/up k8s` writes (they come with `$TESTBED_DIR/env`).
ENV_KEYS = (
    "KUBECONFIG",
    "HELM3",
    "HELM4",
    "KUBECTL",
    "TESTBED_K8S_VERSION",
    "TESTBED_CHART_REPO_OCI",
    "TESTBED_CHART_REPO_HTTP",
)

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def demo_chart_versions() -> dict[str, str]:
    """{version: mode} of the demo chart in both repos; mode is ok | fail | crashloop."""
    versions: dict[str, str] = {}
    path = REPO_ROOT / "testbed" / "k8s" / "charts" / "versions.txt"
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2:
            versions[words[0]] = words[1]
    return versions


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy (returned) or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not true after {timeout:.1f} s: {what or predicate!r}")
        time.sleep(interval)


def loopback_only(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def tool_env(kubeconfig: Path, helm_home: Path | None = None) -> dict[str, str]:
    """Environment for helm/kubectl: this cluster's kubeconfig, own helm dirs, no proxies."""
    env = {
        k: v for k, v in os.environ.items() if k not in _PROXY_VARS and not k.startswith("HELM_")
    }
    env["KUBECONFIG"] = str(kubeconfig)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if helm_home is not None:
        env["HELM_CONFIG_HOME"] = str(helm_home / "config")
        env["HELM_CACHE_HOME"] = str(helm_home / "cache")
        env["HELM_DATA_HOME"] = str(helm_home / "data")
    return env


@dataclass
class Helm:
    """One real helm binary bound to the test cluster, with helm dirs of its own."""

    name: str  # "helm3" | "helm4"
    binary: Path
    kubeconfig: Path
    home: Path
    calls: list[list[str]] = field(default_factory=list)

    def run(
        self, *args: str, timeout: float = 180.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *args]
        self.calls.append(argv)
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=tool_env(self.kubeconfig, self.home),
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.name} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stderr.strip()}\n{result.stdout.strip()}"
            )
        return result

    def json(self, *args: str, timeout: float = 60.0) -> Any:
        return json.loads(self.run(*args, "-o", "json", timeout=timeout).stdout)

    @property
    def major(self) -> int:
        out = self.run("version", "--short", timeout=30).stdout.strip()
        match = re.match(r"v(\d+)\.", out)
        assert match, out
        return int(match.group(1))


@dataclass(frozen=True)
class K8sCluster:
    """The test cluster: paths and URLs from the env file, and a `kubernetes` API client."""

    kubeconfig: Path
    version: str
    helm3: Path
    helm4: Path
    kubectl_bin: Path
    chart_repo_oci: str  # oci://localhost:PORT/charts
    chart_repo_http: str  # http://127.0.0.1:PORT
    api_client: Any  # kubernetes.client.ApiClient

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> K8sCluster:
        from kubernetes import config

        kubeconfig = Path(env["KUBECONFIG"])
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        return cls(
            kubeconfig=kubeconfig,
            version=env["TESTBED_K8S_VERSION"],
            helm3=Path(env["HELM3"]),
            helm4=Path(env["HELM4"]),
            kubectl_bin=Path(env["KUBECTL"]),
            chart_repo_oci=env["TESTBED_CHART_REPO_OCI"].rstrip("/"),
            chart_repo_http=env["TESTBED_CHART_REPO_HTTP"].rstrip("/"),
            api_client=api_client,
        )

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api_client)

    def oci_chart(self, name: str = "demo") -> str:
        return f"{self.chart_repo_oci}/{name}"

    def helm(self, which: str, home: Path) -> Helm:
        binary = {"helm3": self.helm3, "helm4": self.helm4}[which]
        return Helm(name=which, binary=binary, kubeconfig=self.kubeconfig, home=home)

    def kubectl(self, *args: str, timeout: float = 60.0) -> str:
        result = subprocess.run(
            [str(self.kubectl_bin), "--request-timeout=20s", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=tool_env(self.kubeconfig),
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    # --- namespaces ------------------------------------------------------------------------

    def create_namespace(self, hint: str = "t") -> str:
        """A fresh namespace whose default ServiceAccount exists (pods can be created)."""
        from kubernetes import client

        base = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40].strip("-") or "t"
        name = f"{base}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(
                    name=name, labels={"testbed.safe-updater.io/test": "true"}
                )
            )
        )
        wait_until(
            lambda: any(
                sa.metadata.name == "default"
                for sa in self.core.list_namespaced_service_account(name).items
            ),
            timeout=30,
            what=f"default ServiceAccount in {name}",
        )
        return name

    def delete_namespace(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    # --- pods ------------------------------------------------------------------------------

    def pods(self, namespace: str, selector: str = "") -> list[Any]:
        """Pods that are not being deleted."""
        items = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return [p for p in items if p.metadata.deletion_timestamp is None]


def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def pod_images(pods: Sequence[Any]) -> set[str]:
    return {c.image for p in pods for c in p.spec.containers}


def ready_pods(cluster: K8sCluster, namespace: str, selector: str, count: int) -> list[Any] | None:
    """The pods of `selector` when exactly `count` exist and all are Ready, else None."""
    pods = cluster.pods(namespace, selector)
    if len(pods) == count and all(pod_ready(p) for p in pods):
        return pods
    return None
