"""The ``KubernetesCluster`` Block: one cluster the updater manages; the factory for its client."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import ClassVar, cast

from kubernetes.client import ApiClient
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from safe_updater.adapters.kube_api import DEFAULT_REQUEST_TIMEOUT, KubeApi, new_api_client
from safe_updater.domain.errors import ConfigError

__all__ = ["KubernetesCluster", "load_cluster_block"]


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
        if self.kubeconfig is None:
            return new_api_client(
                kubeconfig=self.kubeconfig_path,
                context=self.context,
                in_cluster=self.in_cluster,
                allow_insecure_tls=self.allow_insecure_tls,
            )
        # Loaded from a private file, not as inline data: for inline data new_api_client writes
        # the CA and client certificates into a directory it deletes before the first request
        # (TLS then fails with FileNotFoundError), while from a file the kubernetes library keeps
        # them until the process exits. The file goes as soon as the client is built.
        path, remove = self.helm_kubeconfig()
        try:
            return new_api_client(
                kubeconfig=path,
                context=self.context,
                allow_insecure_tls=self.allow_insecure_tls,
            )
        except ConfigError as exc:
            raise ConfigError(
                f"the inline kubeconfig of KubernetesCluster block {self.name!r} is not usable: "
                f"{exc.message.split(': ', 1)[-1]}",
                hint="save the block again with a valid kubeconfig: its context names, the "
                "server, and certificates and keys inline (*-data fields)",
                field="kubeconfig",
            ) from None
        finally:
            remove()

    def get_api(self) -> KubeApi:
        """The updater's adapter over :meth:`get_api_client`."""
        return KubeApi(self.get_api_client(), request_timeout=self.request_timeout)

    def helm_kubeconfig(self) -> tuple[str | None, Callable[[], None]]:
        """A kubeconfig path for the helm binary, and how to remove it.

        helm reads credentials only from a file (argv and the environment are readable by other
        users of the host), so an inline kubeconfig is written to a file only this user can read,
        in a fresh private directory; call the returned function to delete it.
        """
        if self.kubeconfig is None:
            return self.kubeconfig_path, lambda: None
        directory = tempfile.mkdtemp(prefix="safe-updater-kube-")
        path = os.path.join(directory, "kubeconfig")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.kubeconfig.get_secret_value())
        return path, lambda: shutil.rmtree(directory, ignore_errors=True)


def load_cluster_block(name: str, *, field: str | None = None) -> KubernetesCluster:
    """The named ``KubernetesCluster`` block; a missing one is a ``ConfigError`` naming it."""
    try:
        # _sync=True: a plain call even when a caller runs this inside an event loop.
        loaded = KubernetesCluster.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError as exc:
        raise ConfigError(
            f"no KubernetesCluster block named {name!r} in the Prefect API",
            field=field,
            hint="create it (KubernetesCluster(...).save(name)) or fix the name",
        ) from exc
    return cast(KubernetesCluster, loaded)
