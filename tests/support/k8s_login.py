"""A ServiceAccount of the test cluster bound to given RBAC rules, and a kubeconfig for it whose
credential is a bearer token from the TokenRequest API (tests only)."""

from __future__ import annotations

import base64
import contextlib
import time
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

    def set_namespaced_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the rules of the role bound in ``namespace`` only (the binding stays)."""
        assert self._namespaced, "this login has no namespaced role"
        self._rbac.patch_cluster_role(f"{self.name}-ns", {"rules": rules})

    def may(self, verb: str, resource: str, group: str = "") -> bool:
        """Whether the API server's authorizer lets this ServiceAccount ``verb`` ``resource`` in
        ``namespace`` now (a SubjectAccessReview, asked as admin)."""
        from kubernetes import client

        review = client.AuthorizationV1Api(self.cluster.api_client).create_subject_access_review(
            {
                "spec": {
                    "user": f"system:serviceaccount:{self.namespace}:{self.name}",
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{self.namespace}",
                        "system:authenticated",
                    ],
                    "resourceAttributes": {
                        "namespace": self.namespace,
                        "verb": verb,
                        "group": group,
                        "resource": resource,
                    },
                }
            }
        )
        return bool(review.status.allowed)

    def wait_until_may(
        self, verb: str, resource: str, group: str = "", *, allowed: bool = True
    ) -> None:
        """RBAC changes reach the authorizer through an informer: wait (bounded) until this one
        has, so what the next request gets is the role's doing, not the informer's lag."""
        deadline = time.monotonic() + 30
        while self.may(verb, resource, group) is not allowed:
            if time.monotonic() > deadline:
                state = "allowed" if allowed else "denied"
                raise TimeoutError(f"{verb} {group}/{resource} not {state} after 30 s")
            time.sleep(0.1)

    def write_kubeconfig(self, path: Path) -> Path:
        """The kubeconfig as a file only its owner can read (for tools such as helm)."""
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(self.kubeconfig))
        return path

    def close(self) -> None:
        from kubernetes.client.exceptions import ApiException

        with contextlib.suppress(ApiException):
            self._rbac.delete_cluster_role_binding(self.name)
        with contextlib.suppress(ApiException):
            self._rbac.delete_cluster_role(self.name)
        if self._namespaced:
            with contextlib.suppress(ApiException):
                self._rbac.delete_cluster_role(f"{self.name}-ns")
