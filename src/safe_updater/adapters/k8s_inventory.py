"""Kubernetes inventory: opted-in Deployments, StatefulSets, DaemonSets and CronJobs as assets.

A workload opts in with the annotation ``safe-updater.io/enabled: "true"`` on the workload itself
(not on its pod template). One workload is one asset, ``k8s:<cluster>/<namespace>/<kind>/<name>``
(kind in lower case). Its image is one container's:

* the container (or init container) named by the annotation ``safe-updater.io/container``;
* otherwise the first container of the pod template.

The other containers are not updated; every container and init container image is listed in the
synthetic label ``safe-updater.io/images`` (``name=image``, init containers as ``init:name=image``,
comma-separated) so ``safe-updater assets`` can show them. A workload whose annotation names a
container it does not have, or whose image is not a registry reference, is skipped with a warning.

Workloads that Helm manages (label ``app.kubernetes.io/managed-by: Helm`` and the annotations
``meta.helm.sh/release-name`` / ``meta.helm.sh/release-namespace``) carry the synthetic label
``safe-updater.io/helm-release: <namespace>/<release>``, which links them to the release's
``helm:`` asset.

Lists are paged (``limit`` / ``continue``). With no ``namespaces`` (or a glob among them) the
inventory lists cluster-wide and filters; otherwise it lists each named namespace.
``exclude_namespaces`` (globs) always wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from safe_updater.adapters.kube_api import WORKLOAD_KINDS, KubeClient, canonical_kind
from safe_updater.domain.assets import (
    ENABLE_LABEL,
    LABEL_PREFIX,
    Asset,
    AssetKind,
    ImageRef,
    k8s_asset_id,
    parse_asset_id,
)
from safe_updater.domain.errors import InvalidInputError

log = logging.getLogger(__name__)

CONTAINER_ANNOTATION = f"{LABEL_PREFIX}container"
HELM_RELEASE_LABEL = f"{LABEL_PREFIX}helm-release"
IMAGES_LABEL = f"{LABEL_PREFIX}images"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
HELM_RELEASE_NAME = "meta.helm.sh/release-name"
HELM_RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"
SYNTHETIC_LABELS = (HELM_RELEASE_LABEL, IMAGES_LABEL)

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class WorkloadContainer:
    name: str
    image: str
    init: bool = False


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    """``value`` if it is a mapping (absent/null is empty); else an error naming ``field``.

    The API server sends these shapes, but a mutating webhook, a CRD-like proxy or a test fake
    may not: a list or a string here used to escape as ``AttributeError``.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{field} is a {type(value).__name__}, not an object")
    return value


def _mappings(value: Any, field: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInputError(f"{field} is a {type(value).__name__}, not a list")
    return [_mapping(item, f"{field}[{index}]") for index, item in enumerate(value)]


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidInputError(f"{field} is a {type(value).__name__}, not a string")
    return str(value)


def _pod_spec(kind: str, workload: Mapping[str, Any]) -> Mapping[str, Any]:
    # domain.rollout.pod_template_spec, with every step's type checked.
    spec = _mapping(workload.get("spec"), "spec")
    path = "spec"
    if kind == "CronJob":
        job = _mapping(spec.get("jobTemplate"), "spec.jobTemplate")
        spec = _mapping(job.get("spec"), "spec.jobTemplate.spec")
        path = "spec.jobTemplate.spec"
    template = _mapping(spec.get("template"), f"{path}.template")
    return _mapping(template.get("spec"), f"{path}.template.spec")


def _annotations(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = _mapping(workload.get("metadata"), "metadata")
    return _mapping(meta.get("annotations"), "metadata.annotations")


def workload_containers(kind: str, workload: Mapping[str, Any]) -> list[WorkloadContainer]:
    """Every init container and container of the workload's pod template, in that order.

    Raises :class:`InvalidInputError` naming the field when the object is not shaped like a
    workload (a list where an object belongs, a container that is not an object, ...).
    """
    spec = _pod_spec(kind, workload)
    out: list[WorkloadContainer] = []
    for key, init in (("initContainers", True), ("containers", False)):
        for index, c in enumerate(_mappings(spec.get(key), f"pod template {key}")):
            where = f"pod template {key}[{index}]"
            out.append(
                WorkloadContainer(
                    # str(None) as before: a nameless container matches no annotation.
                    name=_text(c.get("name"), f"{where}.name") if "name" in c else "None",
                    image=_text(c.get("image"), f"{where}.image"),
                    init=init,
                )
            )
    return out


def selected_container(kind: str, workload: Mapping[str, Any]) -> WorkloadContainer | None:
    """The container the asset updates: the annotated one, else the first container."""
    containers = workload_containers(kind, workload)
    wanted = _text(
        _annotations(workload).get(CONTAINER_ANNOTATION),
        f"metadata.annotations[{CONTAINER_ANNOTATION}]",
    )
    if wanted:
        return next((c for c in containers if c.name == wanted.strip()), None)
    return next((c for c in containers if not c.init), None)


def helm_release_of(workload: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(namespace, release)`` when Helm manages the workload."""
    meta = _mapping(workload.get("metadata"), "metadata")
    labels = _mapping(meta.get("labels"), "metadata.labels")
    annotations = _mapping(meta.get("annotations"), "metadata.annotations")
    release = annotations.get(HELM_RELEASE_NAME)
    if str(labels.get(MANAGED_BY_LABEL, "")).lower() != "helm" or not release:
        return None
    namespace = annotations.get(HELM_RELEASE_NAMESPACE) or meta.get("namespace") or ""
    return str(namespace), str(release)


def is_opted_in(workload: Mapping[str, Any]) -> bool:
    annotations = _annotations(workload)
    return str(annotations.get(ENABLE_LABEL, "")).strip().lower() == "true"


class KubernetesInventory:
    """Lists the opted-in workloads of one cluster (``cluster`` is its name in the config)."""

    kind = AssetKind.KUBERNETES

    def __init__(
        self,
        api: KubeClient,
        cluster: str,
        *,
        namespaces: Sequence[str] = (),
        exclude_namespaces: Sequence[str] = (),
        kinds: Sequence[str] = WORKLOAD_KINDS,
        page_size: int | None = None,
    ) -> None:
        self._api = api
        self._cluster = cluster
        self._namespaces = list(namespaces)
        self._exclude = list(exclude_namespaces)
        self._kinds = [canonical_kind(k) for k in kinds]
        self._page_size = page_size

    @property
    def target(self) -> str:
        return self._cluster

    def namespace_allowed(self, namespace: str) -> bool:
        if any(fnmatchcase(namespace, pattern) for pattern in self._exclude):
            return False
        if not self._namespaces:
            return True
        return any(fnmatchcase(namespace, pattern) for pattern in self._namespaces)

    def _scopes(self) -> list[str | None]:
        if not self._namespaces or any(_GLOB_CHARS & set(ns) for ns in self._namespaces):
            return [None]
        return [ns for ns in dict.fromkeys(self._namespaces) if self.namespace_allowed(ns)]

    def iter_workloads(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(kind, object)`` for every workload in the allowed namespaces, opted in or not."""
        for kind in self._kinds:
            for scope in self._scopes():
                for obj in self._api.list_all(kind, scope, page_size=self._page_size):
                    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
                    if self.namespace_allowed(namespace):
                        yield kind, obj

    def list_assets(self) -> list[Asset]:
        """Every opted-in workload, sorted by id."""
        assets = []
        for kind, obj in self.iter_workloads():
            asset = self.to_asset(kind, obj)
            if asset is not None:
                assets.append(asset)
        return sorted(assets, key=lambda a: a.id)

    def find(self, asset_id: str) -> Asset | None:
        """The workload ``k8s:<cluster>/<namespace>/<kind>/<name>`` as it is now, or None."""
        try:
            kind_of_id, parts = parse_asset_id(asset_id)
        except InvalidInputError:
            return None
        if kind_of_id is not AssetKind.KUBERNETES or parts[0] != self._cluster:
            return None
        _, namespace, kind_text, name = parts
        try:
            kind = canonical_kind(kind_text)
        except InvalidInputError:
            return None
        if kind not in self._kinds or not self.namespace_allowed(namespace):
            return None
        obj = self._api.find(kind, namespace, name)
        return None if obj is None else self.to_asset(kind, obj)

    def to_asset(self, kind: str, obj: Mapping[str, Any]) -> Asset | None:
        """The asset of one workload, or None when it did not opt in or cannot be updated
        (a workload not shaped like one is skipped with a warning naming the field)."""
        try:
            return self._to_asset(kind, obj)
        except InvalidInputError as exc:
            meta = obj.get("metadata") if isinstance(obj, Mapping) else None
            meta = meta if isinstance(meta, Mapping) else {}
            log.warning(
                "%s %s/%s: %s; skipped",
                kind,
                str(meta.get("namespace"))[:80],
                str(meta.get("name"))[:80],
                exc.message,
            )
            return None

    def _to_asset(self, kind: str, obj: Mapping[str, Any]) -> Asset | None:
        if not isinstance(obj, Mapping):
            raise InvalidInputError(f"the object is a {type(obj).__name__}, not an object")
        if not is_opted_in(obj):
            return None
        meta = _mapping(obj.get("metadata"), "metadata")
        namespace = _text(meta.get("namespace"), "metadata.namespace")
        name = _text(meta.get("name"), "metadata.name")
        if not namespace or not name:
            raise InvalidInputError("metadata.namespace and metadata.name are required")
        container = selected_container(kind, obj)
        if container is None:
            wanted = _annotations(obj).get(CONTAINER_ANNOTATION)
            log.warning(
                "%s %s/%s: no container %r; skipped (fix the %s annotation)",
                kind,
                namespace,
                name,
                wanted,
                CONTAINER_ANNOTATION,
            )
            return None
        try:
            image = ImageRef.parse(container.image)
        except InvalidInputError:
            log.warning(
                "%s %s/%s container %s runs %r, not a registry image reference; skipped",
                kind,
                namespace,
                name,
                container.name,
                container.image[:80],
            )
            return None
        labels = {k: str(v) for k, v in _annotations(obj).items() if k not in SYNTHETIC_LABELS}
        labels[IMAGES_LABEL] = ",".join(
            f"{'init:' if c.init else ''}{c.name}={c.image}" for c in workload_containers(kind, obj)
        )
        release = helm_release_of(obj)
        if release is not None:
            labels[HELM_RELEASE_LABEL] = f"{release[0]}/{release[1]}"
        return Asset(
            id=k8s_asset_id(self._cluster, namespace, kind, name),
            kind=AssetKind.KUBERNETES,
            target=self._cluster,
            name=name,
            namespace=namespace,
            workload_kind=kind,
            container=container.name,
            image=image,
            current_version=image.tag or image.digest or "",
            current_digest=image.digest,
            labels=labels,
        )
