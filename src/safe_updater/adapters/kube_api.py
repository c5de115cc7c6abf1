"""The Kubernetes API: the client factory, paged lists, watches, and error translation.

This is the only module that imports the ``kubernetes`` client. Reads return the API's JSON as
plain dicts (``_preload_content=False``): cheaper than the client's models for large inventories,
and the same shape as ``kubectl get -o json`` (the unit tests use recorded objects).

Errors are translated once, here (:func:`translate_api_error`):

=====================================================  ==================================
connection refused, timeouts, resets, 5xx, 429          ``EngineUnavailableError`` (transient)
a TLS stream cut short (server restarted mid-watch)     ``EngineUnavailableError`` (transient)
404                                                     ``NotFoundError``
401                                                     ``AuthError`` (credentials)
403                                                     ``AuthError`` naming the verb and resource
                                                        and pointing at the shipped ClusterRole
409                                                     ``ConflictError``
400, 422                                                ``InvalidInputError``
a kubeconfig that cannot be loaded                      ``ConfigError``
a certificate that fails verification                   ``AuthError``
=====================================================  ==================================
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import urllib3
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

from safe_updater.adapters.errors import EngineUnavailableError
from safe_updater.domain.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    SafeUpdaterError,
)

log = logging.getLogger(__name__)

RBAC_FILE = "deployments/kubernetes/rbac.yaml"
RBAC_HINT = (
    f"apply {RBAC_FILE} (ClusterRole safe-updater) and bind it to the updater's "
    "ServiceAccount or user; see docs/kubernetes.md, section RBAC"
)
DEFAULT_PAGE_SIZE = 500
DEFAULT_REQUEST_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")

# kind -> (API group for RBAC, plural resource, api attribute, method suffix)
_KIND_API: dict[str, tuple[str, str, str, str]] = {
    "Deployment": ("apps", "deployments", "apps", "deployment"),
    "StatefulSet": ("apps", "statefulsets", "apps", "stateful_set"),
    "DaemonSet": ("apps", "daemonsets", "apps", "daemon_set"),
    "CronJob": ("batch", "cronjobs", "batch", "cron_job"),
    "ReplicaSet": ("apps", "replicasets", "apps", "replica_set"),
    "ControllerRevision": ("apps", "controllerrevisions", "apps", "controller_revision"),
    "Pod": ("", "pods", "core", "pod"),
}


def canonical_kind(kind: str) -> str:
    """``deployment`` / ``Deployment`` / ``deployments`` → ``Deployment``; raises when unknown."""
    lowered = kind.strip().lower().removesuffix("s")
    for known in _KIND_API:
        if known.lower() == lowered:
            return known
    raise InvalidInputError(
        f"{kind!r} is not a workload kind the updater knows",
        hint="use Deployment, StatefulSet, DaemonSet or CronJob",
    )


def resource_of(kind: str) -> str:
    """``apps/deployments``, ``batch/cronjobs``, ``pods``: how RBAC names the resource."""
    group, plural, _, _ = _KIND_API[canonical_kind(kind)]
    return f"{group}/{plural}" if group else plural


# --- errors ---------------------------------------------------------------------------------------


def translate_api_error(
    exc: BaseException,
    *,
    verb: str,
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    server: str | None = None,
) -> SafeUpdaterError:
    """One library error as an error of our tree (the caller raises it ``from exc``)."""
    where = f" in namespace {namespace}" if namespace else " (all namespaces)"
    target = f"{resource}/{name}" if name else resource
    what = f"{verb} {target}{where}"
    if isinstance(exc, ApiException) and exc.status:
        status = int(exc.status)
        message = _status_message(exc)
        if status == 401:
            return AuthError(
                f"the Kubernetes API{_at(server)} refused the credentials (401) to {what}",
                hint="the kubeconfig's token or client certificate is missing, expired or wrong",
            )
        if status == 403:
            return AuthError(
                f"forbidden: the updater may not {verb} {resource}{where} (missing RBAC verb "
                f"{verb!r} on {resource}): {message}",
                hint=RBAC_HINT,
            )
        if status == 404:
            return NotFoundError(f"{target}{where} was not found: {message}")
        if status == 409:
            return ConflictError(
                f"conflict on {what}: {message}", hint="it changed meanwhile; try again"
            )
        if status in (400, 422):
            return InvalidInputError(f"the Kubernetes API rejected {what}: {message}")
        if status == 429 or status == 408 or status >= 500:
            retry_after = _retry_after(exc)
            error = EngineUnavailableError(
                f"the Kubernetes API{_at(server)} answered {status} to {what}: {message}",
                hint="the API server is overloaded or restarting; this is retried",
            )
            error.retry_after = retry_after
            return error
        return PermanentError(f"the Kubernetes API answered {status} to {what}: {message}")
    if _is_cert_error(exc) or (
        isinstance(exc, urllib3.exceptions.SSLError) and not _is_connection_drop(exc)
    ):
        return AuthError(
            f"TLS verification of the Kubernetes API{_at(server)} failed: {_short(exc)}",
            hint="give the cluster's CA (certificate-authority-data) in the kubeconfig",
        )
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError, ApiException)):
        return EngineUnavailableError(
            f"the Kubernetes API{_at(server)} could not be reached to {what}: {_short(exc)}",
            hint="check that the API server runs and the kubeconfig's server address",
        )
    return SafeUpdaterError(f"{what} failed: {type(exc).__name__}: {_short(exc)}")


def _is_cert_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException) and _is_cert_error_shallow(reason):
            return True
        current = current.__cause__ or current.__context__
    return False


# OpenSSL's words for a TLS stream that ended without a close_notify: the peer went away.
_DROP_MARKERS = ("EOF", "eof", "reset", "Connection broken", "BAD_RECORD_MAC")


def _is_connection_drop(exc: BaseException) -> bool:
    """A TLS error that is really the connection going away (an API server restarted while a
    watch streamed), not a handshake or certificate problem: retrying helps."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError, EOFError)
        ):
            return True
        if isinstance(current, ssl.SSLError) and any(m in str(current) for m in _DROP_MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return any(m in str(exc) for m in _DROP_MARKERS)


def _is_cert_error_shallow(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLCertVerificationError) or (
        isinstance(exc, urllib3.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)
    )


def _status_message(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            data = json.loads(body)
        except ValueError:
            return body[:300]
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])[:500]
    return str(exc.reason or "")[:300]


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _at(server: str | None) -> str:
    return f" at {server}" if server else ""


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]


# --- the client factory ---------------------------------------------------------------------------


_CERT_DIR: list[str] = []


def _cert_dir() -> str:
    """One private directory (0700) for the process, removed at exit.

    The client library writes an inline kubeconfig's certificates and key to files that urllib3
    reads at every new connection, and caches them by content for the whole process; a
    directory removed any earlier would leave the cache (and every later client with the same
    kubeconfig) pointing at deleted files.
    """
    if not _CERT_DIR:
        path = tempfile.mkdtemp(prefix="safe-updater-kube-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        _CERT_DIR.append(path)
    return _CERT_DIR[0]


def new_api_client(
    *,
    kubeconfig: str | Path | None = None,
    kubeconfig_data: str | Mapping[str, Any] | None = None,
    context: str | None = None,
    in_cluster: bool = False,
    allow_insecure_tls: bool = False,
) -> k8s_client.ApiClient:
    """An API client from a kubeconfig file, inline kubeconfig (YAML text or dict), or the pod's
    service account (``in_cluster``). Neither given: ``KUBECONFIG`` or ``~/.kube/config``, as
    kubectl does.

    TLS is verified. A kubeconfig that turns verification off (``insecure-skip-tls-verify``) is
    refused with :class:`ConfigError` unless ``allow_insecure_tls``. Proxies are not taken from
    the environment.
    """
    given = sum(x is not None for x in (kubeconfig, kubeconfig_data)) + int(in_cluster)
    if given > 1:
        raise ConfigError(
            "give only one of kubeconfig, inline kubeconfig and in-cluster",
            field="kubeconfig",
        )
    configuration = k8s_client.Configuration()
    source = "in-cluster service account"
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        elif kubeconfig_data is not None:
            source = "inline kubeconfig"
            data = (
                yaml.safe_load(kubeconfig_data)
                if isinstance(kubeconfig_data, str)
                else dict(kubeconfig_data)
            )
            if not isinstance(data, dict):
                raise ConfigException("not a YAML mapping")
            k8s_config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
                data,
                context=context,
                client_configuration=configuration,
                temp_file_path=_cert_dir(),
            )
        else:
            source = str(kubeconfig) if kubeconfig is not None else "the default kubeconfig"
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig) if kubeconfig is not None else None,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot load the Kubernetes configuration from {source}"
            + (f" (context {context})" if context else "")
            + f": {_short(exc)}",
            hint="check the kubeconfig path, its context names, and that it is readable",
            source=source if kubeconfig is not None else None,
            field="kubeconfig",
        ) from exc
    if not configuration.verify_ssl and not allow_insecure_tls:
        raise ConfigError(
            f"the kubeconfig ({source}) turns TLS verification off (insecure-skip-tls-verify)",
            hint="put the cluster's CA in certificate-authority-data, or allow insecure TLS "
            "explicitly (allow_insecure_tls on the KubernetesCluster block)",
            field="insecure-skip-tls-verify",
        )
    if not configuration.verify_ssl:
        # Allowed explicitly just above; a man-in-the-middle could now act as the cluster, so
        # whoever reads the logs must see it.
        log.warning(
            "TLS certificate verification is OFF for the Kubernetes API at %s (%s sets "
            "insecure-skip-tls-verify; allowed by allow_insecure_tls)",
            configuration.host,
            source,
        )
    configuration.proxy = None
    # One quick reconnect for a dropped keep-alive connection; real retries are the tasks' job.
    configuration.retries = urllib3.Retry(
        total=1, connect=1, read=0, status=0, redirect=0, raise_on_status=False
    )
    return k8s_client.ApiClient(configuration)


# --- the API --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    resource_version: str
    continue_token: str | None


class KubeClient(Protocol):
    """The reads and patches inventory and updater need (``KubeApi``; a fake in unit tests)."""

    def list_page(
        self,
        kind: str,
        namespace: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Page: ...

    def list_all(
        self,
        kind: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]: ...

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]: ...

    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        *,
        dry_run: bool = False,
        field_manager: str = "safe-updater",
    ) -> dict[str, Any]: ...

    def delete(self, kind: str, namespace: str, name: str) -> bool: ...


class KubeApi:
    """The calls the updater makes, each translated once; reads return JSON dicts."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        self.api_client = api_client
        self.core = k8s_client.CoreV1Api(api_client)
        self.apps = k8s_client.AppsV1Api(api_client)
        self.batch = k8s_client.BatchV1Api(api_client)
        self.request_timeout = request_timeout
        self.page_size = page_size
        self._closed = False

    @classmethod
    def connect(
        cls,
        *,
        kubeconfig: str | Path | None = None,
        kubeconfig_data: str | Mapping[str, Any] | None = None,
        context: str | None = None,
        in_cluster: bool = False,
        allow_insecure_tls: bool = False,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> KubeApi:
        return cls(
            new_api_client(
                kubeconfig=kubeconfig,
                kubeconfig_data=kubeconfig_data,
                context=context,
                in_cluster=in_cluster,
                allow_insecure_tls=allow_insecure_tls,
            ),
            request_timeout=request_timeout,
        )

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.api_client.close()  # type: ignore[no-untyped-call]

    # -- generic ---------------------------------------------------------------------------------

    def _method(
        self, kind: str, action: str, *, all_namespaces: bool = False
    ) -> Callable[..., Any]:
        _, _, api_name, suffix = _KIND_API[canonical_kind(kind)]
        api = getattr(self, api_name)
        if all_namespaces:
            return getattr(api, f"list_{suffix}_for_all_namespaces")  # type: ignore[no-any-return]
        return getattr(api, f"{action}_namespaced_{suffix}")  # type: ignore[no-any-return]

    def call_json(
        self,
        method: Callable[..., Any],
        *args: Any,
        verb: str,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Call one client method and return the answer's JSON; errors translated."""
        kwargs.setdefault("_request_timeout", (CONNECT_TIMEOUT, self.request_timeout))
        try:
            response = method(*args, _preload_content=False, **kwargs)
            data = response.data
        except Exception as exc:
            raise translate_api_error(
                exc,
                verb=verb,
                resource=resource,
                namespace=namespace,
                name=name,
                server=self.server,
            ) from exc
        try:
            parsed = json.loads(data) if data else {}
        except ValueError as exc:
            raise EngineUnavailableError(
                f"the Kubernetes API answered {verb} {resource} with something that is not JSON"
            ) from exc
        return parsed if isinstance(parsed, dict) else {}

    def list_page(
        self,
        kind: str,
        namespace: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Page:
        """One page of a list (``limit`` / ``continue``); ``namespace`` None lists all."""
        method = (
            self._method(kind, "list", all_namespaces=True)
            if namespace is None
            else self._method(kind, "list")
        )
        args = () if namespace is None else (namespace,)
        kwargs: dict[str, Any] = {"limit": limit or self.page_size}
        if continue_token:
            kwargs["_continue"] = continue_token
        if label_selector:
            kwargs["label_selector"] = label_selector
        if field_selector:
            kwargs["field_selector"] = field_selector
        body = self.call_json(
            method, *args, verb="list", resource=resource_of(kind), namespace=namespace, **kwargs
        )
        meta = body.get("metadata") or {}
        return Page(
            items=list(body.get("items") or []),
            resource_version=str(meta.get("resourceVersion") or ""),
            continue_token=meta.get("continue") or None,
        )

    def list_all(
        self,
        kind: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every object, page by page (``limit`` / ``continue``), never one huge request.

        An expired continue token (410) restarts the list; objects already yielded are skipped.
        """
        seen: set[str] = set()
        restarts = 0
        token: str | None = None
        while True:
            try:
                page = self.list_page(
                    kind,
                    namespace,
                    limit=page_size,
                    continue_token=token,
                    label_selector=label_selector,
                    field_selector=field_selector,
                )
            except SafeUpdaterError as exc:
                cause = exc.__cause__
                if (
                    token
                    and isinstance(cause, ApiException)
                    and cause.status == 410
                    and restarts < 3
                ):
                    restarts += 1
                    token = None
                    log.info("list of %s: continue token expired; listing again", kind)
                    continue
                raise
            for item in page.items:
                uid = str((item.get("metadata") or {}).get("uid") or "")
                if restarts and uid in seen:
                    continue
                if uid:
                    seen.add(uid)
                yield item
            token = page.continue_token
            if not token:
                return

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        kind = canonical_kind(kind)
        return self.call_json(
            self._method(kind, "read"),
            name,
            namespace,
            verb="get",
            resource=resource_of(kind),
            namespace=namespace,
            name=name,
        )

    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, namespace, name)
        except NotFoundError:
            return None

    def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        *,
        dry_run: bool = False,
        field_manager: str = "safe-updater",
    ) -> dict[str, Any]:
        """A strategic merge patch (``dry_run``: the server runs admission, changes nothing)."""
        kind = canonical_kind(kind)
        kwargs: dict[str, Any] = {
            "_content_type": "application/strategic-merge-patch+json",
            "field_manager": field_manager,
        }
        if dry_run:
            kwargs["dry_run"] = "All"
        return self.call_json(
            self._method(kind, "patch"),
            name,
            namespace,
            dict(body),
            verb="patch",
            resource=resource_of(kind),
            namespace=namespace,
            name=name,
            **kwargs,
        )

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete one object; False when it was already gone."""
        kind = canonical_kind(kind)
        try:
            self.call_json(
                self._method(kind, "delete"),
                name,
                namespace,
                verb="delete",
                resource=resource_of(kind),
                namespace=namespace,
                name=name,
            )
        except NotFoundError:
            return False
        return True

    def watch(
        self,
        kind: str,
        namespace: str,
        *,
        resource_version: str,
        timeout_seconds: int,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_response: Callable[[Any], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) from ``resource_version`` for at most
        ``timeout_seconds`` (server side); bookmarks are asked for. ``on_response`` gets the raw
        response so another thread can close it to stop the watch."""
        kind = canonical_kind(kind)
        kwargs: dict[str, Any] = {
            "watch": True,
            "resource_version": resource_version,
            "timeout_seconds": timeout_seconds,
            "allow_watch_bookmarks": True,
            "_request_timeout": (CONNECT_TIMEOUT, timeout_seconds + 15),
        }
        if label_selector:
            kwargs["label_selector"] = label_selector
        if field_selector:
            kwargs["field_selector"] = field_selector
        info = {"verb": "watch", "resource": resource_of(kind), "namespace": namespace}
        try:
            response = self._method(kind, "list")(namespace, _preload_content=False, **kwargs)
        except Exception as exc:
            raise translate_api_error(exc, server=self.server, **info) from exc
        if on_response is not None:
            on_response(response)
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event
        except Exception as exc:
            raise translate_api_error(exc, server=self.server, **info) from exc
        finally:
            response.release_conn()

    # -- pods ------------------------------------------------------------------------------------

    def exec_in_pod(
        self,
        namespace: str,
        pod: str,
        command: list[str],
        *,
        container: str | None = None,
        timeout: float = 10.0,
    ) -> ExecResult:
        """Run ``command`` (argument list, no shell) in a pod through the ``exec`` subresource."""
        from kubernetes.stream import stream

        info = {"verb": "create", "resource": "pods/exec", "namespace": namespace, "name": pod}
        try:
            ws = stream(
                self.core.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=command,
                container=container,
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT, timeout),
            )
        except Exception as exc:
            raise translate_api_error(exc, server=self.server, **info) from exc
        output: list[str] = []
        timed_out = False
        try:
            ws.run_forever(timeout=timeout)
            if ws.is_open():
                timed_out = True
            output.append(ws.read_all() if hasattr(ws, "read_all") else "")
            code = None if timed_out else ws.returncode
        except Exception as exc:
            raise translate_api_error(exc, server=self.server, **info) from exc
        finally:
            ws.close()
        return ExecResult(
            exit_code=code if isinstance(code, int) else None,
            output="".join(output)[-4000:],
            timed_out=timed_out,
        )


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None
    output: str
    timed_out: bool


def interrupt_response(response: Any) -> None:
    """Stop a streaming response from another thread (a watch blocked in a read).

    Shutting the socket down wakes the blocked read at once, also under TLS; then the response
    is closed.
    """
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None) if connection is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    try:
        response.close()
    except Exception:  # already closed or half torn down: nothing left to stop
        log.debug("closing a watch response failed", exc_info=True)


def selector_string(selector: Mapping[str, Any] | None) -> str | None:
    """A label selector object (``matchLabels`` / ``matchExpressions``) as the query string."""
    if not selector:
        return None
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key = expr.get("key")
        operator = expr.get("operator")
        values = ",".join(expr.get("values") or [])
        if operator == "In":
            parts.append(f"{key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif operator == "Exists":
            parts.append(str(key))
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts) or None
