"""A ServiceAccount of the test cluster bound to given RBAC rules, and a kubeconfig for it whose
credential is a bearer token from the TokenRequest API (tests only)."""

from __future__ import annotations

import base64
import contextlib
import uuid
from pathlib import Path
from typing import Any

import yaml


class ServiceAccountLogin:
    """``rules``: a ClusterRole bound cluster-wide; ``namespaced_rules``: a ClusterRole bound with
    a RoleBinding in ``namespace`` only (how the Helm role is meant to be bound)."""

    def __init__(
        self,
        cluster: Any,  # k8s_support.K8sCluster
        namespace: str,
        rules: list[dict[str, Any]],
        *,
        namespaced_rules: list[dict[str, Any]] | None = None,
        token: str | None = None,
    ) -> None:
        from kubernetes import client

        self.cluster = cluster
        self.namespace = namespace
        self.name = f"su-test-{uuid.uuid4().hex[:8]}"
        self._rbac = client.RbacAuthorizationV1Api(cluster.api_client)
        self._namespaced = namespaced_rules is not None
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": self.name}
        subjects = [{"kind": "ServiceAccount", "name": self.name, "namespace": namespace}]
        cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": self.name}})
        self._rbac.create_cluster_role({"metadata": {"name": self.name}, "rules": rules})
        self._rbac.create_cluster_role_binding(
            {"metadata": {"name": self.name}, "roleRef": ref, "subjects": subjects}
        )
        if namespaced_rules is not None:
            helm_ref = {**ref, "name": f"{self.name}-ns"}
            self._rbac.create_cluster_role(
                {"metadata": {"name": helm_ref["name"]}, "rules": namespaced_rules}
            )
            self._rbac.create_namespaced_role_binding(
                namespace,
                {"metadata": {"name": self.name}, "roleRef": helm_ref, "subjects": subjects},
            )
        self.token: str = token or self.request_token()
        admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
        server = admin["clusters"][0]["cluster"]
        self.server: str = server["server"]
        self.ca_data: str = (
            server.get("certificate-authority-data")
            or base64.b64encode(Path(server["certificate-authority"]).read_bytes()).decode()
        )
        self.kubeconfig = self.kubeconfig_with(self.token)

    def request_token(self) -> str:
        token: str = self.cluster.core.create_namespaced_service_account_token(
            self.name, self.namespace, {"spec": {"expirationSeconds": 900}}
        ).status.token
        return token

    def kubeconfig_with(self, token: str) -> dict[str, Any]:
        """A kubeconfig for this cluster authenticating with ``token`` (right or wrong)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tb",
                    "cluster": {"server": self.server, "certificate-authority-data": self.ca_data},
                }
            ],
            "users": [{"name": self.name, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "tb", "user": self.name}}],
            "current-context": "sa",
        }

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the cluster-wide role's rules (the binding stays)."""
        self._rbac.patch_cluster_role(self.name, {"rules": rules})

    def close(self) -> None:
        from kubernetes.client.exceptions import ApiException

        with contextlib.suppress(ApiException):
            self._rbac.delete_cluster_role_binding(self.name)
        with contextlib.suppress(ApiException):
            self._rbac.delete_cluster_role(self.name)
        if self._namespaced:
            with contextlib.suppress(ApiException):
                self._rbac.delete_cluster_role(f"{self.name}-ns")
