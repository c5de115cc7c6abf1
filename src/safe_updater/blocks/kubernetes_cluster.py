"""The ``KubernetesCluster`` Block: one cluster the updater manages; the factory for its client."""

from __future__ import annotations

from typing import ClassVar

from kubernetes.client import ApiClient
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from safe_updater.adapters.kube_api import DEFAULT_REQUEST_TIMEOUT, KubeApi, new_api_client

__all__ = ["KubernetesCluster"]


class KubernetesCluster(Block):
    """A Kubernetes cluster: a kubeconfig file, an inline kubeconfig (stored encrypted), or the
    service account of the pod the updater runs in.

    Example:
        ```python
        cluster = KubernetesCluster(name="prod", kubeconfig_path="/etc/su/kubeconfig",
                                    context="prod-admin")
        api = cluster.get_api()          # safe_updater.adapters.kube_api.KubeApi
        client = cluster.get_api_client()  # kubernetes.client.ApiClient
        ```
    """

    _block_type_name: ClassVar[str] = "Safe Updater Kubernetes Cluster"
    _block_type_slug: ClassVar[str] = "safe-updater-kubernetes-cluster"
    _description: ClassVar[str] = (
        "A Kubernetes cluster whose opted-in workloads and Helm releases Safe Auto-Updater "
        "keeps up to date."
    )

    name: str = Field(
        default="default",
        description="The cluster's name in asset ids: k8s:<name>/... and helm:<name>/...",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
    )
    kubeconfig_path: str | None = Field(
        default=None,
        description="Path of a kubeconfig file. Empty (and no inline kubeconfig, not "
        "in-cluster): KUBECONFIG or ~/.kube/config.",
    )
    kubeconfig: SecretStr | None = Field(
        default=None,
        description="An inline kubeconfig (YAML); stored encrypted. Certificates and keys must be "
        "inline (*-data fields).",
    )
    context: str | None = Field(default=None, description="Context in the kubeconfig.")
    in_cluster: bool = Field(
        default=False, description="Use the service account of the pod the updater runs in."
    )
    allow_insecure_tls: bool = Field(
        default=False,
        description="Accept a kubeconfig with insecure-skip-tls-verify. Off: TLS is verified.",
    )
    request_timeout: float = Field(
        default=DEFAULT_REQUEST_TIMEOUT, gt=0, description="API request timeout, seconds."
    )

    @model_validator(mode="after")
    def _one_source(self) -> KubernetesCluster:
        sources = [self.kubeconfig_path is not None, self.kubeconfig is not None, self.in_cluster]
        if sum(sources) > 1:
            raise ValueError("set only one of kubeconfig_path, kubeconfig and in_cluster")
        return self

    def get_api_client(self) -> ApiClient:
        """A ``kubernetes`` API client for this cluster (TLS verified)."""
        return new_api_client(
            kubeconfig=self.kubeconfig_path,
            kubeconfig_data=self.kubeconfig.get_secret_value() if self.kubeconfig else None,
            context=self.context,
            in_cluster=self.in_cluster,
            allow_insecure_tls=self.allow_insecure_tls,
        )

    def get_api(self) -> KubeApi:
        """The updater's adapter over :meth:`get_api_client`."""
        return KubeApi(self.get_api_client(), request_timeout=self.request_timeout)
