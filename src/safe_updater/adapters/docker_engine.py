"""The Docker Engine, through the docker SDK: the only module that imports ``docker``.

:class:`ContainerEngine` is the port the updater, the inventory and the probes use;
:class:`DockerSdkEngine` is the real implementation. Library errors are translated here, once:

* daemon unreachable (socket missing, connection refused, timeout) → :class:`EngineUnavailableError`
* 404 on a container → :class:`ContainerNotFoundError`; on an image → :class:`ImageNotFoundError`
* a pull refused for credentials → :class:`RegistryAuthError`; registry down →
  :class:`RegistryUnavailableError`
* anything else the daemon refuses → :class:`ContainerError`

Registry credentials are passed to the SDK as a dict and never logged or put in error messages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.tls import TLSConfig

from safe_updater.adapters.errors import (
    ContainerError,
    EngineUnavailableError,
    ImageNotFoundError,
    RegistryAuthError,
    RegistryUnavailableError,
)
from safe_updater.adapters.registry_auth import is_loopback_host
from safe_updater.domain.assets import ImageRef
from safe_updater.domain.errors import (
    AuthError,
    InvalidInputError,
    NotFoundError,
    SafeUpdaterError,
)

log = logging.getLogger(__name__)

#: How every "the daemon is away" error starts, so logs, results and the CLI read alike.
ENGINE_UNAVAILABLE = "Docker engine unavailable"
_ENGINE_HINT = (
    "check that the Docker daemon runs and DOCKER_HOST or the target URL is right; an update "
    "it interrupted is finished by `safe-updater recover` (or the next update) once it is back"
)

DEFAULT_API_TIMEOUT = 60.0
# Listing more containers than this inspects them concurrently, with this many threads (the SDK's
# connection pool holds 10 connections).
_PARALLEL_INSPECT_MIN = 8
_INSPECT_WORKERS = 4


class ContainerNotFoundError(NotFoundError):
    """No container has that name or id."""


@dataclass(frozen=True)
class TlsSettings:
    """TLS for a ``tcp://`` engine URL: file paths, as ``docker --tlsverify`` takes them."""

    verify: bool = True
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


@dataclass(frozen=True)
class ContainerInfo:
    """A container as ``docker inspect`` shows it, with the fields the updater reads most."""

    id: str
    name: str
    image_ref: str
    image_id: str
    labels: dict[str, str]
    status: str
    attrs: dict[str, Any] = field(repr=False)

    @property
    def running(self) -> bool:
        return bool(self.attrs.get("State", {}).get("Running"))


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: list[str]
    repo_digests: list[str]
    config: dict[str, Any] = field(repr=False)

    def digest_for(self, image_ref: str | ImageRef) -> str | None:
        """The ``sha256:…`` of the RepoDigests entry for the repository of ``image_ref``."""
        try:
            wanted = image_ref if isinstance(image_ref, ImageRef) else ImageRef.parse(image_ref)
        except InvalidInputError:
            return None
        for entry in self.repo_digests:
            try:
                parsed = ImageRef.parse(entry)
            except InvalidInputError:
                continue
            if (parsed.registry, parsed.repository) == (wanted.registry, wanted.repository):
                return parsed.digest
        return None


@dataclass(frozen=True)
class ContainerState:
    status: str
    running: bool
    exit_code: int
    restart_count: int
    oom_killed: bool = False
    health_status: str | None = None
    failing_streak: int = 0
    health_output: str = ""


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None
    output: str
    timed_out: bool = False


class ContainerEngine(Protocol):
    """What the Docker path needs from an engine. Names are container names without ``/``."""

    def ping(self) -> None: ...

    def list_containers(
        self, *, all: bool = True, label: str | None = None
    ) -> list[ContainerInfo]: ...

    def find_container(self, name_or_id: str) -> ContainerInfo | None: ...

    def inspect_container(self, name_or_id: str) -> ContainerInfo: ...

    def inspect_image(self, ref_or_id: str) -> ImageInfo: ...

    def find_image(self, ref_or_id: str) -> ImageInfo | None: ...

    def pull(self, ref: str, *, auth: Mapping[str, str] | None = None) -> ImageInfo: ...

    def tag_image(self, image_id: str, ref: str) -> None: ...

    def remove_image(self, ref_or_id: str) -> bool: ...

    def create_container(self, name: str, image: str, config: Mapping[str, Any]) -> str: ...

    def connect_network(
        self, container: str, network: str, endpoint: Mapping[str, Any]
    ) -> None: ...

    def rename(self, container: str, new_name: str) -> None: ...

    def start(self, container: str) -> None: ...

    def stop(self, container: str, *, timeout: float) -> None: ...

    def remove(self, container: str, *, force: bool = False) -> None: ...

    def exec(self, container: str, command: Sequence[str], *, timeout: float) -> ExecResult: ...

    def state(self, container: str) -> ContainerState: ...


class DockerSdkEngine:
    """A Docker Engine reached over a unix socket or ``tcp://`` (optionally TLS)."""

    def __init__(self, client: docker.DockerClient, *, use_config_credentials: bool = True) -> None:
        """Wrap a ready client. ``use_config_credentials=False`` stops the SDK from falling back to
        the Docker config file (``DOCKER_CONFIG``) when a pull is given no credentials."""
        self._client = client
        self._api = client.api
        self._use_config_credentials = use_config_credentials
        if str(getattr(self._api, "base_url", "")).startswith("http+docker://"):
            # A unix socket never goes through a proxy: skip requests' scan of the environment
            # for proxy settings, which otherwise costs more than the call itself.
            self._api.trust_env = False

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        *,
        tls: TlsSettings | None = None,
        timeout: float = DEFAULT_API_TIMEOUT,
        use_config_credentials: bool = True,
    ) -> DockerSdkEngine:
        """Connect to ``url`` (``unix:///path``, ``tcp://host:port``); ``None`` means the local
        engine from ``DOCKER_HOST`` or the default socket."""
        tls_config: TLSConfig | bool = False
        if tls is not None:
            client_cert = (
                (tls.client_cert, tls.client_key) if tls.client_cert and tls.client_key else None
            )
            tls_config = TLSConfig(
                client_cert=client_cert,
                ca_cert=tls.ca_cert,
                verify=tls.ca_cert if tls.verify and tls.ca_cert else tls.verify,
            )
        target = url or "the local Docker engine"
        with _translate(f"connect to {target}"):
            if url is None:
                client = docker.from_env(timeout=int(timeout))
            elif tls_config:
                client = _tls_client(url, tls_config, int(timeout))
            else:
                client = docker.DockerClient(
                    base_url=url, version="auto", tls=tls_config, timeout=int(timeout)
                )
        _warn_if_unverified(client.api, target)
        return cls(client, use_config_credentials=use_config_credentials)

    def close(self) -> None:
        self._client.close()

    def ping(self) -> None:
        with _translate("ping the Docker engine"):
            self._api.ping()

    # --- containers ---------------------------------------------------------------------------

    def list_containers(self, *, all: bool = True, label: str | None = None) -> list[ContainerInfo]:
        """Containers (running only unless ``all``), optionally filtered by a label (``key`` or
        ``key=value``), fully inspected."""
        filters = {"label": label} if label else None
        with _translate("list containers"):
            summaries = self._api.containers(all=all, filters=filters)
        ids = [summary["Id"] for summary in summaries]
        if len(ids) > _PARALLEL_INSPECT_MIN:
            # One inspect per container: a few in flight at once hide the daemon's latency
            # (a scan of 200 containers spent most of its time waiting on these round trips).
            with ThreadPoolExecutor(_INSPECT_WORKERS, thread_name_prefix="docker-inspect") as pool:
                found = list(pool.map(self.find_container, ids))
        else:
            found = [self.find_container(container_id) for container_id in ids]
        return [info for info in found if info is not None]  # None: removed since the listing

    def find_container(self, name_or_id: str) -> ContainerInfo | None:
        """The container with exactly this name (or full id), or ``None``.

        Docker also resolves id *prefixes*; a name lookup that landed on another container's id
        prefix is not a match.
        """
        try:
            with _translate(f"inspect container {name_or_id}"):
                attrs = self._api.inspect_container(name_or_id)
        except ContainerNotFoundError:
            return None
        info = _container_info(attrs)
        if info.name != name_or_id and info.id != name_or_id:
            return None
        return info

    def inspect_container(self, name_or_id: str) -> ContainerInfo:
        info = self.find_container(name_or_id)
        if info is None:
            raise ContainerNotFoundError(
                f"no container named {name_or_id!r}", hint="check the name with `docker ps -a`"
            )
        return info

    def create_container(self, name: str, image: str, config: Mapping[str, Any]) -> str:
        """Create (not start) a container from a raw Engine API body plus ``image``."""
        body = {key: value for key, value in config.items() if key != "Image"}
        body["Image"] = image
        with _translate(f"create container {name} from {image}", image=image):
            created = self._api.create_container_from_config(body, name=name)
        container_id = str(created["Id"])
        log.info("created container %s (%s) from %s", name, container_id[:12], image)
        return container_id

    def connect_network(self, container: str, network: str, endpoint: Mapping[str, Any]) -> None:
        with _translate(f"connect {container} to network {network}"):
            self._api.connect_container_to_network(
                container,
                network,
                aliases=endpoint.get("Aliases"),
                links=endpoint.get("Links"),
                ipv4_address=(endpoint.get("IPAMConfig") or {}).get("IPv4Address"),
                ipv6_address=(endpoint.get("IPAMConfig") or {}).get("IPv6Address"),
                driver_opt=endpoint.get("DriverOpts"),
            )

    def rename(self, container: str, new_name: str) -> None:
        with _translate(f"rename container {container} to {new_name}"):
            self._api.rename(container, new_name)
        log.info("renamed container %s to %s", container[:12], new_name)

    def start(self, container: str) -> None:
        with _translate(f"start container {container}"):
            self._api.start(container)
        log.info("started container %s", container[:12])

    def stop(self, container: str, *, timeout: float) -> None:
        with _translate(f"stop container {container}"):
            self._api.stop(container, timeout=max(0, int(timeout)))
        log.info("stopped container %s", container[:12])

    def remove(self, container: str, *, force: bool = False) -> None:
        """Remove a container; a container that is already gone is not an error."""
        try:
            with _translate(f"remove container {container}"):
                self._api.remove_container(container, force=force)
        except ContainerNotFoundError:
            return
        log.info("removed container %s", container[:12])

    def state(self, container: str) -> ContainerState:
        """The container's state. A stopped container is only reported once the engine is
        known to stay: see :meth:`_confirm_engine_stays`."""
        info = self.inspect_container(container)
        state = info.attrs.get("State") or {}
        if state.get("Status") in ("exited", "dead"):
            self._confirm_engine_stays(container)
        health = state.get("Health") or {}
        logs = health.get("Log") or []
        return ContainerState(
            status=str(state.get("Status", "unknown")),
            running=bool(state.get("Running")),
            exit_code=int(state.get("ExitCode") or 0),
            restart_count=int(info.attrs.get("RestartCount") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            health_status=health.get("Status"),
            failing_streak=int(health.get("FailingStreak") or 0),
            health_output=str(logs[-1].get("Output") or "").strip()[:500] if logs else "",
        )

    def exec(self, container: str, command: Sequence[str], *, timeout: float) -> ExecResult:
        """Run ``command`` (an argument list, no shell) in a running container.

        The Engine API has no exec timeout: after ``timeout`` seconds the result says so, and the
        command is left to finish on its own.
        """
        with _translate(f"exec in container {container}"):
            exec_id = self._api.exec_create(container, list(command), stdout=True, stderr=True)[
                "Id"
            ]
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["output"] = self._api.exec_start(exec_id)
            except Exception as exc:  # reported to the caller below
                outcome["error"] = exc

        worker = threading.Thread(target=run, name="docker-exec", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            return ExecResult(exit_code=None, output="", timed_out=True)
        if "error" in outcome:
            with _translate(f"exec in container {container}"):
                raise outcome["error"]
        with _translate(f"exec in container {container}"):
            exit_code = self._api.exec_inspect(exec_id).get("ExitCode")
        raw = outcome.get("output") or b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return ExecResult(exit_code=exit_code, output=text.strip()[-1000:])

    # --- images -------------------------------------------------------------------------------

    def inspect_image(self, ref_or_id: str) -> ImageInfo:
        with _translate(f"inspect image {ref_or_id}", image=ref_or_id):
            attrs = self._api.inspect_image(ref_or_id)
        return ImageInfo(
            id=str(attrs["Id"]),
            tags=list(attrs.get("RepoTags") or []),
            repo_digests=list(attrs.get("RepoDigests") or []),
            config=dict(attrs.get("Config") or {}),
        )

    def find_image(self, ref_or_id: str) -> ImageInfo | None:
        try:
            return self.inspect_image(ref_or_id)
        except ImageNotFoundError:
            return None

    def pull(self, ref: str, *, auth: Mapping[str, str] | None = None) -> ImageInfo:
        """Pull ``ref`` (``repo:tag`` or ``repo@digest``) and return the local image.

        ``auth`` is ``{"username": ..., "password": ...}`` (or ``identitytoken``); it goes to the
        daemon in the ``X-Registry-Auth`` header and is never logged.
        """
        repository, tag = _split_ref(ref)
        auth_config: dict[str, str] | None = dict(auth) if auth else None
        if auth_config is None and not self._use_config_credentials:
            auth_config = {}  # anonymous: do not fall back to the Docker config file
        log.info("pulling %s%s", ref, " with credentials" if auth else "")
        try:
            with _translate(f"pull {ref}", image=ref, pull=True):
                stream = self._api.pull(
                    repository, tag=tag, stream=True, decode=True, auth_config=auth_config
                )
                for chunk in stream:
                    if isinstance(chunk, dict) and chunk.get("error"):
                        raise _PullStreamError(str(chunk["error"]))
        except SafeUpdaterError as exc:
            # A daemon going down mid-pull ends the stream with "context canceled" or cuts it
            # off; only whether it still answers tells that from a registry's refusal.
            if not isinstance(exc, EngineUnavailableError) and not self._answers():
                raise EngineUnavailableError(
                    f"{ENGINE_UNAVAILABLE}: the pull of {ref} was cut off ({exc.message[:200]})",
                    hint=_ENGINE_HINT,
                ) from exc
            raise
        return self.inspect_image(ref)

    def _confirm_engine_stays(self, container: str) -> None:
        """EngineUnavailableError if the daemon is shutting down.

        On SIGTERM dockerd closes its listener, then stops every container (live-restore off),
        while connections it had accepted before keep being served: through our pooled
        connection a daemon that is going away reports the containers it stops as "exited",
        which is not the container failing. Only a new connection tells: dropping the pool
        forces one.
        """
        self._api.close()  # closes idle pooled connections; the next request opens a new one
        try:
            self.ping()
        except EngineUnavailableError as exc:
            raise EngineUnavailableError(
                f"{ENGINE_UNAVAILABLE}: the daemon is shutting down (it stopped container "
                f"{container}): {exc.message}",
                hint=_ENGINE_HINT,
            ) from exc

    def _answers(self) -> bool:
        try:
            self.ping()
        except SafeUpdaterError:
            return False
        return True

    def tag_image(self, image_id: str, ref: str) -> None:
        repository, tag = _split_ref(ref)
        with _translate(f"tag image {image_id[:19]} as {ref}", image=image_id):
            self._api.tag(image_id, repository, tag=tag)

    def remove_image(self, ref_or_id: str) -> bool:
        """Remove (or untag) an image; False if it is in use or already gone."""
        try:
            with _translate(f"remove image {ref_or_id}", image=ref_or_id):
                self._api.remove_image(ref_or_id)
        except (ImageNotFoundError, ContainerError) as exc:
            log.info("image %s not removed: %s", ref_or_id, exc.message)
            return False
        log.info("removed image %s", ref_or_id)
        return True


class _PullStreamError(Exception):
    """An ``{"error": ...}`` line in the daemon's pull progress stream."""


def _split_ref(ref: str) -> tuple[str, str | None]:
    """``repo:tag`` → (repo, tag); ``repo@sha256:…`` → (repo, sha256:…) as the SDK wants it."""
    if "@" in ref:
        repository, digest = ref.split("@", 1)
        return repository, digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"


def _container_info(attrs: dict[str, Any]) -> ContainerInfo:
    config = attrs.get("Config") or {}
    return ContainerInfo(
        id=str(attrs["Id"]),
        name=str(attrs.get("Name", "")).lstrip("/"),
        image_ref=str(config.get("Image", "")),
        image_id=str(attrs.get("Image", "")),
        labels=dict(config.get("Labels") or {}),
        status=str((attrs.get("State") or {}).get("Status", "unknown")),
        attrs=attrs,
    )


_AUTH_FRAGMENTS = (
    "no basic auth credentials",
    "unauthorized",
    "authentication required",
    "denied",
    "401",
    "incorrect username or password",
)
_NOT_FOUND_FRAGMENTS = ("not found", "manifest unknown", "does not exist", "no such image")
_UNAVAILABLE_FRAGMENTS = (
    "connection refused",
    "i/o timeout",
    "timeout",
    "no such host",
    "connection reset",
    "503",
    "502",
    "504",
    "eof",
)


@contextmanager
def _translate(action: str, *, image: str | None = None, pull: bool = False) -> Iterator[None]:
    """Turn docker SDK and transport errors into our error tree, chained with ``from``."""
    try:
        yield
    except SafeUpdaterError:
        raise
    except docker.errors.NotFound as exc:
        explanation = _explanation(exc)
        if image is not None and (
            pull or isinstance(exc, docker.errors.ImageNotFound) or "image" in explanation.lower()
        ):
            raise ImageNotFoundError(
                f"{action}: image not found ({explanation})",
                hint="check that the tag exists in the registry",
            ) from exc
        raise ContainerNotFoundError(f"{action}: not found ({explanation})") from exc
    except docker.errors.APIError as exc:
        explanation = _explanation(exc)
        status = exc.status_code
        if pull:
            raise _pull_error(action, explanation, status) from exc
        if status == 409:
            raise ContainerError(f"{action}: conflict ({explanation})") from exc
        if status is not None and status >= 500 and "connection" in explanation.lower():
            raise EngineUnavailableError(
                f"{ENGINE_UNAVAILABLE}: {action}: {explanation}", hint=_ENGINE_HINT
            ) from exc
        raise ContainerError(f"{action}: {explanation}") from exc
    except _PullStreamError as exc:
        raise _pull_error(action, str(exc), None) from exc
    except requests.exceptions.SSLError as exc:
        # Not "did not answer": it answered, and its certificate did not check out.
        raise AuthError(
            f"{action}: TLS verification of the Docker engine failed ({_ssl_reason(exc)})",
            hint="give the engine's CA in the target's tls.ca_cert (or the DockerHost block's "
            "tls_ca_cert), or turn verification off explicitly with tls.verify: false",
        ) from exc
    except (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        # a response cut off mid-body: the daemon went away while answering
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
        ConnectionError,
        FileNotFoundError,
        TimeoutError,
    ) as exc:
        raise EngineUnavailableError(
            f"{ENGINE_UNAVAILABLE}: {action}: no answer ({type(exc).__name__})",
            hint=_ENGINE_HINT,
        ) from exc
    except docker.errors.DockerException as exc:
        text = str(exc)
        lowered = text.lower()
        if any(word in lowered for word in ("connection", "no such file", "timed out", "refused")):
            raise EngineUnavailableError(
                f"{ENGINE_UNAVAILABLE}: {action}: no answer", hint=_ENGINE_HINT
            ) from exc
        raise ContainerError(f"{action}: {text[:300]}") from exc


def _tls_client(url: str, tls: TLSConfig, timeout: int) -> docker.DockerClient:
    """A client whose TLS settings are the ones configured, whatever the environment says.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace a session's ``verify``, so
    with either set (common in containers and CI) the configured CA would silently give way to
    the system bundle, and ``verify: false`` to verification. Environment lookups are turned
    off before the first request; that first request asks the engine for its API version,
    which the SDK would otherwise do inside its constructor, before we could intervene.
    """
    probe = docker.APIClient(
        base_url=url, version=MINIMUM_DOCKER_API_VERSION, tls=tls, timeout=timeout
    )
    try:
        probe.trust_env = False
        version = str(probe.version(api_version=False)["ApiVersion"])
    finally:
        probe.close()
    client = docker.DockerClient(base_url=url, version=version, tls=tls, timeout=timeout)
    client.api.trust_env = False
    return client


def _warn_if_unverified(api: Any, target: str) -> None:
    """Log an engine reached without verified TLS: that is a choice someone made (``tls.verify:
    false``, ``DOCKER_TLS_VERIFY`` unset, a ``tcp://`` URL to another host without ``tls``), and
    whoever reads the logs must see it. A unix socket and a loopback address are not logged."""
    base = str(getattr(api, "base_url", ""))
    if base.startswith("https://") and getattr(api, "verify", True) is False:
        log.warning(
            "TLS certificate verification is OFF for the Docker engine %s (tls.verify: false)",
            target,
        )
    elif base.startswith("http://") and not is_loopback_host(urlsplit(base).netloc):
        log.warning(
            "the Docker engine %s is reached without TLS: anyone on the network path can read "
            "and drive it (give the target a tls: section)",
            target,
        )


def _ssl_reason(exc: BaseException) -> str:
    """The TLS library's own words (``certificate verify failed: …``), not the pool's wrapping."""
    text = str(exc)
    marker = "certificate verify failed"
    start = text.find(marker)
    if start < 0:
        return text[:200]
    return text[start:].split("(_ssl", 1)[0].strip(" :')")[:200]


def _pull_error(action: str, explanation: str, status: int | None) -> SafeUpdaterError:
    lowered = explanation.lower()
    if status == 401 or any(fragment in lowered for fragment in _AUTH_FRAGMENTS):
        return RegistryAuthError(
            f"{action}: the registry refused access ({explanation[:200]})",
            hint="configure credentials for this registry (RegistryCredentials block or "
            "docker login)",
        )
    if status == 404 or any(fragment in lowered for fragment in _NOT_FOUND_FRAGMENTS):
        return ImageNotFoundError(
            f"{action}: image not found ({explanation[:200]})",
            hint="check that the tag exists in the registry",
        )
    if any(fragment in lowered for fragment in _UNAVAILABLE_FRAGMENTS) or (
        status is not None and status >= 500
    ):
        return RegistryUnavailableError(f"{action}: registry unavailable ({explanation[:200]})")
    return ContainerError(f"{action}: {explanation[:300]}")


def _explanation(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)[:300]
