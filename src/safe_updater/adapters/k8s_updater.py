"""Updating one workload container's image with a strategic merge patch; rollback re-patches it.

==========  ==========================================================================  ==========
step        what happens                                                                  changes
==========  ==========================================================================  ==========
preflight   the target image exists in its registry (``Registry.digest``); the workload   nothing
            and its container exist; Helm does not manage it; a server-side dry-run of
            the patch passes RBAC and admission
snapshot    the container's image, the workload's uid and generation, and its current    nothing
            revision (ReplicaSet / ControllerRevision / StatefulSet revisions)
apply       patch ``spec.template.spec.(init)containers[name=<c>].image`` and nothing     the image
            else (CronJob: ``spec.jobTemplate.spec.template...``); records the new
            generation. Already on the target image: nothing to do (resume after a crash)
commit      nothing: the controller keeps no old copy to drop                            nothing
rollback    patch the snapshot's image back, unless it is already there. Works from the  the image
            snapshot alone (``applied`` None after a crash during apply). StatefulSet:
            then delete its pods of the failed revision that are not Ready (below)
==========  ==========================================================================  ==========

The controller does the rest: a Deployment rolls its pods to a new ReplicaSet (rollback returns
to the old one), a StatefulSet or DaemonSet rolls its pods by revision. A CronJob has no rollout:
the change applies to jobs started afterwards.

A StatefulSet's rolling update waits for a broken pod to become Ready before it goes on, also
after the template was reverted, so its rollback deletes the pods of another revision that are
not Ready once the controller has observed the reverted template (Kubernetes' documented "forced
rollback"; needs ``delete`` on pods).

Someone else's change is never overwritten: ``apply`` refuses (``ConflictError``) when the
container runs neither the snapshot's image nor the target, and ``rollback`` when it runs neither
the snapshot's image nor the one ``apply`` set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from safe_updater.adapters.k8s_inventory import (
    HELM_RELEASE_LABEL,
    WorkloadContainer,
    helm_release_of,
    workload_containers,
)
from safe_updater.adapters.kube_api import KubeClient, canonical_kind
from safe_updater.adapters.registry import Registry
from safe_updater.domain.assets import Asset, AssetKind, ImageRef
from safe_updater.domain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PolicyViolationError,
)
from safe_updater.domain.plans import AppliedChange, Snapshot
from safe_updater.domain.rollout import (
    CONTROLLER_REVISION_HASH,
    DEPLOYMENT_REVISION_ANNOTATION,
    POD_TEMPLATE_HASH,
    pod_state,
)
from safe_updater.failpoints import failpoint

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1


def retag(reference: str, tag: str, digest: str | None = None) -> str:
    """``reference`` with its tag replaced, spelled as the user wrote it (no registry added).

    A digest in the original is dropped; ``digest`` pins the new reference (``repo:tag@digest``).
    """
    base = reference.split("@", 1)[0]
    slash = base.rfind("/")
    colon = base.rfind(":")
    if colon > slash:
        base = base[:colon]
    out = f"{base}:{tag}"
    return f"{out}@{digest}" if digest else out


def image_patch(kind: str, container: str, image: str, *, init: bool = False) -> dict[str, Any]:
    """The strategic merge patch that sets one container's image and nothing else."""
    key = "initContainers" if init else "containers"
    template: dict[str, Any] = {"spec": {key: [{"name": container, "image": image}]}}
    if kind == "CronJob":
        return {"spec": {"jobTemplate": {"spec": {"template": template}}}}
    return {"spec": {"template": template}}


class KubernetesImageUpdater:
    """The :class:`~safe_updater.adapters.updater.AssetUpdater` for ``k8s:`` assets."""

    def __init__(
        self,
        api: KubeClient,
        registry: Registry,
        *,
        observe_timeout: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._registry = registry
        self._observe_timeout = observe_timeout
        self._sleep = sleep
        self._monotonic = monotonic

    # -- the port --------------------------------------------------------------------------------

    def preflight(self, asset: Asset, target: str) -> None:
        kind, namespace, name, container = _identity(asset)
        obj = self._api.get(kind, namespace, name)
        release = helm_release_of(obj)
        if release is not None:
            raise PolicyViolationError(
                f"{asset.id} is managed by the Helm release {release[0]}/{release[1]}; "
                "patching it would drift from the release and the next helm upgrade would undo it",
                hint=f"update helm:{asset.target}/{release[0]}/{release[1]} instead "
                f"(see the {HELM_RELEASE_LABEL} label in `safe-updater assets`)",
            )
        found = _container(kind, obj, container, asset.id)
        reference = self._target_reference(found.image, target, asset)
        # ImageNotFoundError / RegistryAuthError when the registry does not serve the target.
        self._registry.digest(ImageRef.parse(found.image).with_tag(target))
        # Nothing changes: the server runs authentication, RBAC (patch) and admission only.
        self._api.patch(
            kind,
            namespace,
            name,
            image_patch(kind, container, reference, init=found.init),
            dry_run=True,
        )

    def snapshot(self, asset: Asset) -> Snapshot:
        kind, namespace, name, container = _identity(asset)
        obj = self._api.get(kind, namespace, name)
        found = _container(kind, obj, container, asset.id)
        meta = obj.get("metadata") or {}
        try:
            version = ImageRef.parse(found.image)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"{asset.id} container {container} runs {found.image[:80]!r}, not an image "
                "reference the updater can update"
            ) from exc
        return Snapshot(
            asset_id=asset.id,
            version=version.tag or version.digest or "",
            digest=version.digest,
            data={
                "format": SNAPSHOT_FORMAT,
                "kind": kind,
                "namespace": namespace,
                "name": name,
                "uid": meta.get("uid"),
                "container": container,
                "init": found.init,
                "image": found.image,
                "generation": meta.get("generation"),
                "resource_version": meta.get("resourceVersion"),
                "revision": self._revision(kind, obj),
            },
        )

    def apply(self, asset: Asset, snapshot: Snapshot, target: str) -> AppliedChange:
        data = _snapshot_data(snapshot)
        kind, namespace, name, container = (
            data["kind"],
            data["namespace"],
            data["name"],
            data["container"],
        )
        obj = self._api.get(kind, namespace, name)
        _check_uid(obj, data, asset.id)
        found = _container(kind, obj, container, asset.id)
        old = str(data["image"])
        new = self._target_reference(old, target, asset)
        if found.image == new or _same_tag(found.image, new):
            log.info("%s already runs %s; apply has nothing to do", asset.id, found.image)
            new = found.image
            result = obj
        elif found.image != old:
            raise ConflictError(
                f"{asset.id} container {container} runs {found.image!r}, neither the snapshot's "
                f"{old!r} nor the target {new!r}: someone else changed it",
                hint="take a new snapshot (run the update again) after checking who changed it",
            )
        else:
            result = self._api.patch(
                kind, namespace, name, image_patch(kind, container, new, init=found.init)
            )
            log.info("%s: patched container %s image %s -> %s", asset.id, container, old, new)
        meta = result.get("metadata") or {}
        return AppliedChange(
            asset_id=asset.id,
            from_version=snapshot.version,
            to_version=target,
            data={
                "format": SNAPSHOT_FORMAT,
                "kind": kind,
                "namespace": namespace,
                "name": name,
                "container": container,
                "init": found.init,
                "image_before": old,
                "image_after": new,
                "generation": meta.get("generation"),
                "resource_version": meta.get("resourceVersion"),
            },
        )

    def commit(self, asset: Asset, snapshot: Snapshot, applied: AppliedChange) -> None:
        """Nothing is kept for rollback outside the workload, so nothing to drop."""

    def rollback(self, asset: Asset, snapshot: Snapshot, applied: AppliedChange | None) -> None:
        data = _snapshot_data(snapshot)
        kind, namespace, name, container = (
            data["kind"],
            data["namespace"],
            data["name"],
            data["container"],
        )
        obj = self._api.find(kind, namespace, name)
        if obj is None:
            raise NotFoundError(
                f"{asset.id} is gone; there is nothing to roll back",
                hint="re-create the workload from its manifest",
            )
        found = _container(kind, obj, container, asset.id)
        old = str(data["image"])
        if found.image == old:
            log.info("%s already runs %s; no patch needed", asset.id, old)
            if kind == "StatefulSet":
                self._force_statefulset_rollback(asset.id, obj)
            return
        if applied is not None:
            after = str(applied.data.get("image_after") or "")
            if after and found.image != after:
                raise ConflictError(
                    f"{asset.id} container {container} runs {found.image!r}, not {after!r} that "
                    "the update set: someone changed it since; not overwriting it",
                    hint=f"set the image back to {old} by hand if that is still wanted",
                )
        result = self._api.patch(
            kind, namespace, name, image_patch(kind, container, old, init=found.init)
        )
        log.info("%s: rolled container %s back to %s", asset.id, container, old)
        # The template is back, the failed revision's pods still run (a StatefulSet's are not
        # deleted yet): a retry must finish from the "already runs the old image" branch above.
        failpoint("mid-rollback")
        if kind == "StatefulSet":
            self._force_statefulset_rollback(asset.id, result)

    def _force_statefulset_rollback(self, asset_id: str, obj: Mapping[str, Any]) -> None:
        """Delete the StatefulSet's pods of another revision that are not Ready.

        A StatefulSet's rolling update waits for a broken pod to become Ready before it goes on,
        also after the template was reverted (Kubernetes' documented "forced rollback": delete
        those pods by hand). Ready pods are left to the controller.
        """
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        generation = int(meta.get("generation") or 0)
        deadline = self._monotonic() + self._observe_timeout
        current: Mapping[str, Any] = obj
        while int((current.get("status") or {}).get("observedGeneration") or 0) < generation:
            if self._monotonic() >= deadline:
                log.warning("%s: the controller has not observed the rollback yet", asset_id)
                return
            self._sleep(0.2)
            found = self._api.find("StatefulSet", namespace, name)
            if found is None:
                return
            current = found
        revision = (current.get("status") or {}).get("updateRevision")
        if not revision:
            return
        uid = meta.get("uid")
        selector = _match_labels(current)
        for pod in self._api.list_all("Pod", namespace, label_selector=selector):
            state = pod_state(pod)
            pod_meta = pod.get("metadata") or {}
            owned = any(r.get("uid") == uid for r in pod_meta.get("ownerReferences") or [])
            other = state.labels.get(CONTROLLER_REVISION_HASH) != revision
            if owned and other and not state.ready and not state.deleting:
                log.info("%s: deleting pod %s of the failed revision", asset_id, state.name)
                self._api.delete("Pod", namespace, state.name)

    def running_version(self, asset: Asset) -> str | None:
        kind, namespace, name, container = _identity(asset)
        obj = self._api.find(kind, namespace, name)
        if obj is None:
            return None
        found = next((c for c in workload_containers(kind, obj) if c.name == container), None)
        if found is None:
            return None
        try:
            image = ImageRef.parse(found.image)
        except InvalidInputError:
            return None
        return image.tag or image.digest

    # -- helpers ---------------------------------------------------------------------------------

    def _target_reference(self, current: str, target: str, asset: Asset) -> str:
        """The new image reference; a digest-pinned image stays pinned (the registry's digest)."""
        try:
            ref = ImageRef.parse(current)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"{asset.id} runs {current[:80]!r}, not an image reference the updater can update"
            ) from exc
        if ref.digest is None:
            return retag(current, target)
        return retag(current, target, self._registry.digest(ref.with_tag(target)))

    def _revision(self, kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Which revision the pods run now (for the journal and the operator)."""
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        namespace = str(meta.get("namespace") or "")
        if kind == "StatefulSet":
            return {
                "current_revision": status.get("currentRevision"),
                "update_revision": status.get("updateRevision"),
            }
        if kind not in ("Deployment", "DaemonSet"):
            return {}
        owner = "ReplicaSet" if kind == "Deployment" else "ControllerRevision"
        selector = _match_labels(obj)
        owned = [
            item
            for item in self._api.list_all(owner, namespace, label_selector=selector)
            if any(
                ref.get("uid") == meta.get("uid")
                for ref in (item.get("metadata") or {}).get("ownerReferences") or []
            )
        ]
        if kind == "Deployment":
            wanted = (meta.get("annotations") or {}).get(DEPLOYMENT_REVISION_ANNOTATION)
            for rs in owned:
                rs_meta = rs.get("metadata") or {}
                if (rs_meta.get("annotations") or {}).get(DEPLOYMENT_REVISION_ANNOTATION) == wanted:
                    return {
                        "revision": wanted,
                        "replica_set": rs_meta.get("name"),
                        "pod_template_hash": (rs_meta.get("labels") or {}).get(POD_TEMPLATE_HASH),
                    }
            return {"revision": wanted}
        if not owned:
            return {}
        latest = max(owned, key=lambda r: int(r.get("revision") or 0))
        return {
            "revision": latest.get("revision"),
            "controller_revision": (latest.get("metadata") or {}).get("name"),
        }


def _identity(asset: Asset) -> tuple[str, str, str, str]:
    if asset.kind is not AssetKind.KUBERNETES or not (
        asset.namespace and asset.workload_kind and asset.container
    ):
        raise InvalidInputError(
            f"{asset.id} is not a Kubernetes workload asset with a namespace, kind and container"
        )
    return canonical_kind(asset.workload_kind), asset.namespace, asset.name, asset.container


def _snapshot_data(snapshot: Snapshot) -> dict[str, Any]:
    data = dict(snapshot.data)
    missing = [k for k in ("kind", "namespace", "name", "container", "image") if not data.get(k)]
    if data.get("format") != SNAPSHOT_FORMAT or missing:
        raise InvalidInputError(
            f"the snapshot of {snapshot.asset_id} is not a Kubernetes workload snapshot "
            f"(format {data.get('format')!r}, missing {', '.join(missing) or 'nothing'})",
            hint="it was written by another version of the updater; roll back by hand",
        )
    data["kind"] = canonical_kind(str(data["kind"]))
    return data


def _check_uid(obj: Mapping[str, Any], data: Mapping[str, Any], asset_id: str) -> None:
    uid = (obj.get("metadata") or {}).get("uid")
    if data.get("uid") and uid != data["uid"]:
        raise ConflictError(
            f"{asset_id} was deleted and re-created since the snapshot",
            hint="run the update again to take a new snapshot",
        )


def _container(kind: str, obj: Mapping[str, Any], name: str, asset_id: str) -> WorkloadContainer:
    found = next((c for c in workload_containers(kind, obj) if c.name == name), None)
    if found is None:
        raise NotFoundError(
            f"{asset_id} has no container {name!r}",
            hint="check the safe-updater.io/container annotation",
        )
    return found


def _same_tag(current: str, new: str) -> bool:
    """``repo:tag@digest`` already applied when the target is pinned to another digest form."""
    return current.split("@", 1)[0] == new.split("@", 1)[0] and "@" in new and "@" in current


def _match_labels(obj: Mapping[str, Any]) -> str | None:
    selector = (obj.get("spec") or {}).get("selector") or {}
    labels = selector.get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None
