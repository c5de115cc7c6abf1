"""Updating one Docker container by recreating it, crash-safely, with a rollback that needs only the
snapshot.

Names carry the state, so any process can tell where an interrupted update stopped. For a container
``web``:

==============================  ==========================================================
``web``                          the serving container (old before the switch, new after)
``web.safe-updater-next``        the new container, created but not yet switched in
``web.safe-updater-prev``        the old container, stopped and kept until commit
==============================  ==========================================================

``apply`` runs five steps (:class:`ApplyStep`); after each one the engine is in a state that both
``apply`` (resume) and ``rollback`` recognise:

1. ``created-next``: ``web`` = old (running), ``web.safe-updater-next`` = new (created)
2. ``stopped-old``:  ``web`` = old (stopped), ``…-next`` = new (created)
3. ``renamed-old``:  ``…-prev`` = old (stopped), ``…-next`` = new (created), no ``web``
4. ``renamed-new``:  ``…-prev`` = old (stopped), ``web`` = new (created, not started)
5. ``started-new``:  ``…-prev`` = old (stopped), ``web`` = new (running)

The old container is never removed before the new one exists; only ``commit`` removes it. Which
container is which is decided by the ids and image ids recorded in the snapshot, never by name
alone. See docs/docker.md.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Generator, Mapping
from enum import StrEnum
from typing import Any

from safe_updater.adapters.docker_engine import ContainerEngine, ContainerInfo, ImageInfo
from safe_updater.adapters.errors import ContainerError, ImageNotFoundError
from safe_updater.domain.assets import Asset, AssetKind, ImageRef
from safe_updater.domain.errors import ConflictError, InvalidInputError, NotFoundError
from safe_updater.domain.plans import AppliedChange, Snapshot
from safe_updater.failpoints import failpoint

log = logging.getLogger(__name__)

PREV_SUFFIX = ".safe-updater-prev"
NEXT_SUFFIX = ".safe-updater-next"
SNAPSHOT_FORMAT = 1

CredentialsLookup = Callable[[str], Mapping[str, str] | None]
"""Registry host (``localhost:5000``, ``docker.io``) → ``{"username", "password"}`` or None."""

# Config fields that come from the image unless the user overrode them at `docker run` time.
_IMAGE_FIELDS = ("Cmd", "Entrypoint", "Healthcheck", "User", "WorkingDir", "StopSignal")
# Config fields that only the user sets.
_USER_FIELDS = (
    "Domainname",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "StopTimeout",
    "NetworkDisabled",
    "MacAddress",
)
_BUILTIN_NETWORKS = frozenset({"host", "none", "bridge", "default"})


class ApplyStep(StrEnum):
    """The step of ``apply`` that has just completed."""

    CREATED_NEXT = "created-next"
    STOPPED_OLD = "stopped-old"
    RENAMED_OLD = "renamed-old"
    RENAMED_NEW = "renamed-new"
    STARTED_NEW = "started-new"


def prev_name(name: str) -> str:
    return name + PREV_SUFFIX


def next_name(name: str) -> str:
    return name + NEXT_SUFFIX


def is_helper_name(name: str) -> bool:
    """True for the temporary names this module gives containers during an update."""
    return name.endswith(PREV_SUFFIX) or name.endswith(NEXT_SUFFIX)


class DockerContainerUpdater:
    """:class:`~safe_updater.adapters.updater.AssetUpdater` for Docker containers on one engine."""

    def __init__(
        self,
        engine: ContainerEngine,
        credentials: CredentialsLookup | None = None,
        *,
        stop_timeout: float = 10.0,
        remove_old_image: bool = False,
    ) -> None:
        self._engine = engine
        self._credentials = credentials or (lambda _registry: None)
        self._stop_timeout = stop_timeout
        self._remove_old_image = remove_old_image

    # --- the AssetUpdater steps ---------------------------------------------------------------

    def preflight(self, asset: Asset, target: str) -> None:
        """Pull the target image, so nothing is touched unless it exists locally."""
        self._pull(_image(asset).with_tag(target))

    def snapshot(self, asset: Asset) -> Snapshot:
        """The container's full config and the part of it the user set (image defaults removed)."""
        _image(asset)
        name = asset.name
        current = self._engine.find_container(name)
        if current is None:
            raise NotFoundError(
                f"container {name!r} of {asset.id} does not exist",
                hint="run `safe-updater scan` to refresh the inventory",
            )
        leftovers = [
            n for n in (prev_name(name), next_name(name)) if self._engine.find_container(n)
        ]
        if leftovers:
            raise ConflictError(
                f"an earlier update of {asset.id} did not finish ({', '.join(leftovers)} exist)",
                hint="run `safe-updater recover` (or `safe-updater rollback` for this asset) first",
            )
        image_info = self._engine.inspect_image(current.image_id)
        attrs = current.attrs
        config = attrs.get("Config") or {}
        host_config = attrs.get("HostConfig") or {}
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        endpoints, extra = _network_configs(host_config, networks, current.id)
        user = user_config(config, image_info.config, host_config, current.id)
        restore = restore_config(config, host_config, current.id)
        if endpoints:
            user["NetworkingConfig"] = {"EndpointsConfig": endpoints}
            restore["NetworkingConfig"] = {"EndpointsConfig": copy.deepcopy(endpoints)}
        version = _tag_of(current.image_ref) or asset.current_version
        digest = image_info.digest_for(current.image_ref) or asset.current_digest
        data = {
            "format": SNAPSHOT_FORMAT,
            "name": name,
            "container_id": current.id,
            "image_ref": current.image_ref,
            "image_id": current.image_id,
            "was_running": current.running,
            "config": config,
            "host_config": host_config,
            "networks": networks,
            "user_config": user,
            "restore_config": restore,
            "extra_networks": extra,
        }
        return Snapshot(asset_id=asset.id, version=version, digest=digest, data=data)

    def apply(self, asset: Asset, snapshot: Snapshot, target: str) -> AppliedChange:
        """Recreate the container on ``target``; resumes an apply that was interrupted."""
        for step in self.iter_apply(asset, snapshot, target):
            log.info("%s: apply step %s done", asset.id, step)
        return self._applied_change(asset, snapshot, target)

    def iter_apply(
        self, asset: Asset, snapshot: Snapshot, target: str
    ) -> Generator[ApplyStep, None, None]:
        """``apply`` one step at a time, yielding after each step (tests stop here to simulate
        a crash). Every step first checks whether it was already done."""
        data = _data(snapshot)
        name, old_id = data["name"], data["container_id"]
        target_ref = str(_image(asset).with_tag(target))
        new_image_id = self._ensure_image(target_ref).id

        old = self._engine.find_container(old_id)
        current = self._engine.find_container(name)
        pending = self._engine.find_container(next_name(name))
        new = current if current is not None and current.id != old_id else None
        if old is None:
            if new is not None and new.image_id == new_image_id:
                # Applied and committed already: only make sure it runs.
                if not self._engine.state(new.id).running:
                    self._engine.start(new.id)
                yield ApplyStep.STARTED_NEW
                return
            raise ConflictError(
                f"the container {name!r} ({old_id[:12]}) recorded in the snapshot of {asset.id} "
                "is gone",
                hint=f"roll back: `safe-updater rollback {asset.id}` re-creates it from the "
                "snapshot",
            )
        if old.name not in (name, prev_name(name)):
            raise ConflictError(
                f"the old container of {asset.id} is named {old.name!r}, not {name!r}",
                hint="rename it back by hand or roll back",
            )
        if new is not None and new.image_id != new_image_id:
            raise ConflictError(
                f"{name!r} on {asset.id} is another container ({new.id[:12]}, image "
                f"{new.image_ref}) than the snapshot's or the update's",
                hint="remove or rename it, then run the update again",
            )
        if new is not None and pending is not None:
            raise ConflictError(
                f"both {name!r} and {next_name(name)!r} hold new containers for {asset.id}",
                hint=f"roll back: `safe-updater rollback {asset.id}`",
            )
        if pending is not None and pending.image_id != new_image_id:
            log.info("%s: removing stale %s from another attempt", asset.id, pending.name)
            self._stop_and_remove(pending)
            pending = None

        # 1. create the new container under the temporary name
        if new is None and pending is None:
            new_id = self._engine.create_container(next_name(name), target_ref, data["user_config"])
            self._connect_extra_networks(new_id, data)
            pending = self._engine.inspect_container(new_id)
        yield ApplyStep.CREATED_NEXT

        # 2. stop the old one
        if self._engine.state(old.id).running:
            self._engine.stop(old.id, timeout=self._stop_timeout_for(data))
        yield ApplyStep.STOPPED_OLD

        # 3. keep it under the prev name
        if old.name == name:
            self._engine.rename(old.id, prev_name(name))
        yield ApplyStep.RENAMED_OLD

        # 4. give the new one the real name
        if new is None:
            assert pending is not None
            self._engine.rename(pending.id, name)
            new = pending
        yield ApplyStep.RENAMED_NEW

        # 5. start it
        if not self._engine.state(new.id).running:
            self._engine.start(new.id)
        yield ApplyStep.STARTED_NEW

    def commit(self, asset: Asset, snapshot: Snapshot, applied: AppliedChange) -> None:
        """Remove the kept old container (and, if configured, its image when nothing uses it)."""
        data = _data(snapshot)
        name, old_id = data["name"], data["container_id"]
        current = self._engine.find_container(name)
        if current is None or current.id == old_id:
            raise ConflictError(
                f"nothing to commit for {asset.id}: {name!r} is "
                + ("missing" if current is None else "still the old container"),
                hint="roll back instead, or run `safe-updater recover`",
            )
        for leftover_name in (prev_name(name), next_name(name)):
            leftover = self._engine.find_container(leftover_name)
            if leftover is not None and leftover.id != current.id:
                self._stop_and_remove(leftover)
        old = self._engine.find_container(old_id)
        if old is not None and old.id != current.id:
            self._stop_and_remove(old)
        if self._remove_old_image and data["image_id"] != current.image_id:
            self._remove_image_if_unused(data["image_id"], data["image_ref"])

    def rollback(self, asset: Asset, snapshot: Snapshot, applied: AppliedChange | None) -> None:
        """Bring back the snapshot's container, from its kept copy or re-created from the snapshot.

        Works from the snapshot alone (``applied`` may be None after a crash) and is idempotent.
        Afterwards exactly one container for the asset runs: ``<name>``, on the old image.
        """
        data = _data(snapshot)
        name, old_id, old_image_id = data["name"], data["container_id"], data["image_id"]

        # 1. remove the new container(s): the pending one and a `<name>` on another image
        pending = self._engine.find_container(next_name(name))
        if pending is not None and pending.id != old_id:
            self._stop_and_remove(pending)
        keeper: ContainerInfo | None = None
        current = self._engine.find_container(name)
        if current is not None:
            if current.id == old_id or current.image_id == old_image_id:
                keeper = current  # the old container, or one a previous rollback re-created
            else:
                self._stop_and_remove(current)

        failpoint("mid-rollback")  # nothing runs for the asset here: the worst place to die

        # 2. find the old container (normally `<name>.safe-updater-prev`)
        old = self._engine.find_container(old_id)
        kept = self._engine.find_container(prev_name(name))
        if keeper is None and old is not None:
            if old.name != name:
                self._engine.rename(old.id, name)
            keeper = self._engine.inspect_container(old.id)
        if kept is not None and (keeper is None or kept.id != keeper.id):
            self._stop_and_remove(kept)  # a leftover: the asset is already restored

        # 3. or re-create it from the snapshot
        if keeper is None:
            log.warning("%s: old container is gone; re-creating it from the snapshot", asset.id)
            image_ref = self._ensure_snapshot_image(asset, snapshot)
            new_id = self._engine.create_container(name, image_ref, data["restore_config"])
            self._connect_extra_networks(new_id, data)
            keeper = self._engine.inspect_container(new_id)

        # 4. run it
        if not self._engine.state(keeper.id).running:
            self._engine.start(keeper.id)
        log.info("%s: rolled back to %s (%s)", asset.id, snapshot.version, keeper.id[:12])

    def running_version(self, asset: Asset) -> str | None:
        """The tag of the running container named ``asset.name`` (None if it does not run)."""
        current = self._engine.find_container(asset.name)
        if current is None or not current.running:
            return None
        return _tag_of(current.image_ref) or current.image_ref

    # --- helpers ------------------------------------------------------------------------------

    def _applied_change(self, asset: Asset, snapshot: Snapshot, target: str) -> AppliedChange:
        data = _data(snapshot)
        new = self._engine.inspect_container(data["name"])
        return AppliedChange(
            asset_id=asset.id,
            from_version=snapshot.version,
            to_version=target,
            data={
                "name": data["name"],
                "old_container_id": data["container_id"],
                "new_container_id": new.id,
                "new_image_ref": new.image_ref,
                "new_image_id": new.image_id,
            },
        )

    def _pull(self, ref: ImageRef) -> str:
        auth = self._credentials(ref.registry)
        info = self._engine.pull(str(ref), auth=auth)
        return info.id

    def _ensure_image(self, ref: str) -> ImageInfo:
        found = self._engine.find_image(ref)
        if found is not None:
            return found
        self._pull(ImageRef.parse(ref))
        return self._engine.inspect_image(ref)

    def _ensure_snapshot_image(self, asset: Asset, snapshot: Snapshot) -> str:
        """The snapshot's image reference, pointing at the snapshot's image id again."""
        data = _data(snapshot)
        ref, image_id = str(data["image_ref"]), str(data["image_id"])
        if ref.startswith("sha256:"):
            if self._engine.find_image(image_id) is None:
                raise ImageNotFoundError(f"image {image_id} of {asset.id} is gone")
            return image_id
        local = self._engine.find_image(ref)
        if local is not None and local.id == image_id:
            return ref
        if self._engine.find_image(image_id) is None:
            parsed = ImageRef.parse(ref)
            source = f"{parsed.name}@{snapshot.digest}" if snapshot.digest else ref
            try:
                self._pull(ImageRef.parse(source))
            except ImageNotFoundError:
                if source == ref:
                    raise
                self._pull(parsed)
            pulled = self._engine.find_image(source)
            if pulled is None or (pulled.id != image_id and source != ref):
                raise ImageNotFoundError(
                    f"could not restore image {ref} ({image_id[:19]}) for {asset.id}",
                    hint="push the old image again, then roll back",
                )
            image_id = pulled.id
        self._engine.tag_image(image_id, ref)
        return ref

    def _connect_extra_networks(self, container_id: str, data: Mapping[str, Any]) -> None:
        for network, endpoint in (data.get("extra_networks") or {}).items():
            self._engine.connect_network(container_id, network, endpoint)

    def _stop_timeout_for(self, data: Mapping[str, Any]) -> float:
        own = (data.get("config") or {}).get("StopTimeout")
        return float(own) if isinstance(own, int | float) and own > 0 else self._stop_timeout

    def _stop_and_remove(self, container: ContainerInfo) -> None:
        try:
            if self._engine.state(container.id).running:
                self._engine.stop(container.id, timeout=self._stop_timeout)
        except NotFoundError:
            return
        except ContainerError as exc:
            log.warning("stopping %s failed (%s); removing it by force", container.name, exc)
        self._engine.remove(container.id, force=True)

    def _remove_image_if_unused(self, image_id: str, image_ref: str) -> None:
        users = [c for c in self._engine.list_containers(all=True) if c.image_id == image_id]
        if users:
            log.info("old image %s kept: used by %s", image_ref, ", ".join(c.name for c in users))
            return
        if not image_ref.startswith("sha256:"):
            self._engine.remove_image(image_ref)
        remaining = self._engine.find_image(image_id)
        if remaining is not None and not remaining.tags:
            self._engine.remove_image(image_id)


# --- container config, pure ---------------------------------------------------------------------


def user_config(
    config: Mapping[str, Any],
    image_config: Mapping[str, Any],
    host_config: Mapping[str, Any],
    container_id: str,
) -> dict[str, Any]:
    """The Engine API create body for what the *user* set: the container's config minus what its
    image contributed (ENV entries, labels, exposed ports, volumes, and Cmd/Entrypoint/Healthcheck/
    User/WorkingDir/StopSignal when equal to the image's). Created with a new image, the new
    image's own defaults (``APP_VERSION``, version labels) then apply.
    """
    image_env = set(image_config.get("Env") or [])
    image_labels = image_config.get("Labels") or {}
    body: dict[str, Any] = {
        "Env": [e for e in config.get("Env") or [] if e not in image_env],
        "Labels": {
            k: v for k, v in (config.get("Labels") or {}).items() if image_labels.get(k) != v
        },
    }
    for key in ("ExposedPorts", "Volumes"):
        image_keys = set((image_config.get(key) or {}).keys())
        own = {k: v for k, v in (config.get(key) or {}).items() if k not in image_keys}
        if own:
            body[key] = own
    for key in _IMAGE_FIELDS:
        if config.get(key) != image_config.get(key):
            body[key] = copy.deepcopy(config.get(key))
    _copy_user_fields(config, host_config, container_id, body)
    body["HostConfig"] = copy.deepcopy(dict(host_config))
    return body


def restore_config(
    config: Mapping[str, Any], host_config: Mapping[str, Any], container_id: str
) -> dict[str, Any]:
    """The create body that rebuilds the container exactly, on its *own* image."""
    body: dict[str, Any] = {
        key: copy.deepcopy(value)
        for key, value in config.items()
        if key not in ("Image", "Hostname", *_USER_FIELDS) and value is not None
    }
    _copy_user_fields(config, host_config, container_id, body)
    body["HostConfig"] = copy.deepcopy(dict(host_config))
    return body


def _copy_user_fields(
    config: Mapping[str, Any],
    host_config: Mapping[str, Any],
    container_id: str,
    body: dict[str, Any],
) -> None:
    for key in _USER_FIELDS:
        value = config.get(key)
        if value not in (None, "", False):
            body[key] = value
    hostname = config.get("Hostname") or ""
    network_mode = str(host_config.get("NetworkMode") or "")
    # Docker fills Hostname with the short id (or the host's name on the host network).
    if (
        hostname
        and hostname != container_id[:12]
        and network_mode != "host"
        and not network_mode.startswith("container:")
    ):
        body["Hostname"] = hostname


def _network_configs(
    host_config: Mapping[str, Any], networks: Mapping[str, Any], container_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(EndpointsConfig for the create call, further networks to connect after it)."""
    mode = str(host_config.get("NetworkMode") or "default")
    primary: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for network, endpoint in networks.items():
        if network in _BUILTIN_NETWORKS:
            continue
        user = {
            "IPAMConfig": (endpoint or {}).get("IPAMConfig") or None,
            "Links": (endpoint or {}).get("Links") or None,
            "Aliases": [a for a in (endpoint or {}).get("Aliases") or [] if a != container_id[:12]]
            or None,
            "DriverOpts": (endpoint or {}).get("DriverOpts") or None,
        }
        user = {k: v for k, v in user.items() if v is not None}
        if network == mode:
            primary[network] = user
        else:
            extra[network] = user
    return primary, extra


def _data(snapshot: Snapshot) -> dict[str, Any]:
    data = snapshot.data
    if data.get("format") != SNAPSHOT_FORMAT or "container_id" not in data:
        raise InvalidInputError(
            f"the snapshot of {snapshot.asset_id} is not a Docker container snapshot",
            hint="it was written by another version or asset kind; roll back by hand",
        )
    return data


def _image(asset: Asset) -> ImageRef:
    if asset.kind is not AssetKind.DOCKER or asset.image is None:
        raise InvalidInputError(
            f"{asset.id} is not a Docker container with an image reference",
            hint="the Docker updater handles docker:<host>/<container> assets",
        )
    return asset.image


def _tag_of(image_ref: str) -> str | None:
    try:
        return ImageRef.parse(image_ref).tag
    except InvalidInputError:
        return None
