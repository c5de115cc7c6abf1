"""Kubernetes health probes: rollout status from watches, and exec in a pod of the new revision.

:class:`Reflector` is a small list-then-watch cache (client-go's reflector): one background
thread lists the objects a selector matches, then watches from the list's ``resourceVersion``
(server-side timeout, bookmarks), re-lists after ``410 Gone``, and backs off on errors. A probe's
``check`` only reads the caches, so a monitoring round costs no API request; there is no polling.
A reflector stops on :meth:`close` or when no ``check`` used it for ``idle_timeout``.

:class:`RolloutProbe` watches a workload, its revisions (ReplicaSets for a Deployment,
ControllerRevisions for a DaemonSet; a StatefulSet names its revision in its status) and its
pods, and turns the latest objects into a :class:`Sample` with
:func:`safe_updater.domain.rollout.rollout_sample`.

:class:`KubernetesExecProbe` runs a command in a ready pod of the new revision through the
``pods/exec`` subresource (needs ``create`` and ``get`` on ``pods/exec``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from safe_updater.adapters.kube_api import (
    KubeApi,
    canonical_kind,
    interrupt_response,
    selector_string,
)
from safe_updater.adapters.probes import exec_sample
from safe_updater.domain.errors import NotFoundError, SafeUpdaterError
from safe_updater.domain.health import ExecCheck, Sample
from safe_updater.domain.rollout import (
    PodState,
    RolloutCheck,
    new_revision,
    pod_state,
    rollout_sample,
)

log = logging.getLogger(__name__)

DEFAULT_WATCH_TIMEOUT = 60
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_SYNC_TIMEOUT = 5.0
_BACKOFF = (0.5, 1.0, 2.0, 5.0)


class Reflector:
    """The latest objects of one kind that a selector matches, kept by a background watch."""

    def __init__(
        self,
        api: KubeApi,
        kind: str,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        watch_timeout: int = DEFAULT_WATCH_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.kind = canonical_kind(kind)
        self.namespace = namespace
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._watch_timeout = max(1, int(watch_timeout))
        self._idle_timeout = idle_timeout
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, Any]] = {}
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._changed = threading.Condition(self._lock)
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self._last_used = monotonic()
        self.resource_version: str | None = None
        self.error: SafeUpdaterError | None = None
        self.events = 0
        self.lists = 0

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> Reflector:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run,
                name=f"reflector-{self.kind.lower()}-{self.namespace}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            interrupt_response(response)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def items(self) -> list[dict[str, Any]]:
        """A copy of the cached objects (restarts the watch if it stopped for idleness)."""
        self._last_used = self._monotonic()
        if not self._stop.is_set() and not self.running:
            self.start()
        with self._lock:
            return list(self._items.values())

    def wait_for_change(self, timeout: float) -> bool:
        """Block until the next event (for tests and callers that want to react at once)."""
        with self._changed:
            return self._changed.wait(timeout)

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self._monotonic() - self._last_used > self._idle_timeout:
                log.info("%s watch in %s idle; stopping", self.kind, self.namespace)
                self._synced.clear()  # the cache goes stale from here; a restart lists again
                self.resource_version = None
                return
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
                failures = 0
                self.error = None
            except SafeUpdaterError as exc:
                if self._stop.is_set():
                    return
                self.error = exc
                if _is_gone(exc):
                    self.resource_version = None
                    continue
                delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
                failures += 1
                log.warning(
                    "%s watch in %s: %s; again in %.1fs",
                    self.kind,
                    self.namespace,
                    exc.message,
                    delay,
                )
                self._stop.wait(delay)
            except Exception as exc:  # a bug here must not kill health checking silently
                if self._stop.is_set():
                    return
                self.error = SafeUpdaterError(f"watch failed: {type(exc).__name__}: {exc}")
                log.warning("%s watch in %s failed", self.kind, self.namespace, exc_info=True)
                self._stop.wait(_BACKOFF[-1])

    def _list(self) -> None:
        items: dict[str, dict[str, Any]] = {}
        token: str | None = None
        version = ""
        while True:
            page = self._api.list_page(
                self.kind,
                self.namespace,
                continue_token=token,
                label_selector=self._label_selector,
                field_selector=self._field_selector,
            )
            version = version or page.resource_version
            for obj in page.items:
                items[_key(obj)] = obj
            token = page.continue_token
            if not token:
                break
        with self._changed:
            self._items = items
            self.resource_version = version
            self.lists += 1
            self._changed.notify_all()
        self._synced.set()

    def _watch(self) -> None:
        assert self.resource_version is not None
        for event in self._api.watch(
            self.kind,
            self.namespace,
            resource_version=self.resource_version,
            timeout_seconds=self._watch_timeout,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            on_response=self._set_response,
        ):
            if self._stop.is_set():
                return
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    log.info(
                        "%s watch in %s: resourceVersion too old; listing again",
                        self.kind,
                        self.namespace,
                    )
                    self.resource_version = None
                    return
                raise SafeUpdaterError(f"watch error: {obj.get('message') or obj}")
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = str(version)
            if kind == "BOOKMARK":
                continue
            with self._changed:
                if kind == "DELETED":
                    self._items.pop(_key(obj), None)
                else:
                    self._items[_key(obj)] = obj
                self.events += 1
                self._changed.notify_all()
        self._response = None

    def _set_response(self, response: Any) -> None:
        self._response = response
        if self._stop.is_set():
            interrupt_response(response)


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _is_gone(exc: SafeUpdaterError) -> bool:
    status = getattr(exc.__cause__, "status", None)
    return status == 410


class RolloutProbe:
    """The rollout of one workload, judged from watched objects (see :mod:`domain.rollout`)."""

    def __init__(
        self,
        api: KubeApi,
        check: RolloutCheck,
        *,
        expected_image: tuple[str, str] | None = None,
        sync_timeout: float = DEFAULT_SYNC_TIMEOUT,
        watch_timeout: int = DEFAULT_WATCH_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._api = api
        self._check = check.model_copy(
            update={"workload_kind": canonical_kind(check.workload_kind)}
        )
        self._expected = expected_image
        self._sync_timeout = sync_timeout
        self._watch_timeout = watch_timeout
        self._idle_timeout = idle_timeout
        self._workload: Reflector | None = None
        self._revisions: Reflector | None = None
        self._pods: Reflector | None = None

    @property
    def name(self) -> str:
        return self._check.name

    @property
    def spec(self) -> RolloutCheck:
        return self._check

    def reflectors(self) -> list[Reflector]:
        return [r for r in (self._workload, self._revisions, self._pods) if r is not None]

    def close(self) -> None:
        for reflector in self.reflectors():
            reflector.close()

    def _reflector(
        self, kind: str, *, label_selector: str | None = None, field_selector: str | None = None
    ) -> Reflector:
        return Reflector(
            self._api,
            kind,
            self._check.namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            watch_timeout=self._watch_timeout,
            idle_timeout=self._idle_timeout,
        ).start()

    def _start(self) -> None:
        """Read the workload once for its selector, then start the watches."""
        check = self._check
        obj = self._api.get(check.workload_kind, check.namespace, check.workload)
        self._workload = self._reflector(
            check.workload_kind, field_selector=f"metadata.name={check.workload}"
        )
        if check.workload_kind == "CronJob":
            return
        selector = selector_string((obj.get("spec") or {}).get("selector"))
        if check.workload_kind == "Deployment":
            self._revisions = self._reflector("ReplicaSet", label_selector=selector)
        elif check.workload_kind == "DaemonSet":
            self._revisions = self._reflector("ControllerRevision", label_selector=selector)
        self._pods = self._reflector("Pod", label_selector=selector)

    def _ensure_started(self) -> None:
        if self._workload is None:
            self._start()
        deadline = time.monotonic() + self._sync_timeout
        for reflector in self.reflectors():
            reflector.wait_synced(max(0.0, deadline - time.monotonic()))

    def observe(self) -> tuple[dict[str, Any] | None, list[PodState], str | None]:
        """``(workload or None, pods of the new revision, problem)``; ``problem`` when a cache
        is not usable yet."""
        self._ensure_started()
        for reflector in self.reflectors():
            if not reflector.synced:
                reason = reflector.error.message if reflector.error else "not listed yet"
                return None, [], f"watch of {reflector.kind} not ready: {reason}"
        assert self._workload is not None
        items = self._workload.items()
        workload = items[0] if items else None
        if workload is None or self._pods is None:
            return workload, [], None
        revisions = self._revisions.items() if self._revisions is not None else []
        marker = new_revision(self._check.workload_kind, workload, revisions)
        if marker is None:
            return workload, [], None
        key, value = marker
        pods = [
            pod_state(p)
            for p in self._pods.items()
            if ((p.get("metadata") or {}).get("labels") or {}).get(key) == value
        ]
        return workload, sorted(pods, key=lambda p: p.name), None

    def ready_new_pods(self) -> list[str]:
        """Names of ready pods of the new revision (for exec checks)."""
        _, pods, _ = self.observe()
        return [p.name for p in pods if p.ready and not p.deleting]

    def check(self, at: datetime) -> Sample:
        try:
            workload, pods, problem = self.observe()
        except NotFoundError:
            return Sample(
                at=at,
                check=self.name,
                ok=False,
                fatal=True,
                detail=f"{self._check.workload_kind} {self._check.namespace}/"
                f"{self._check.workload} is gone",
            )
        except SafeUpdaterError as exc:
            return Sample(at=at, check=self.name, ok=False, detail=exc.message)
        if problem is not None:
            return Sample(at=at, check=self.name, ok=False, detail=problem)
        return rollout_sample(self._check, workload, pods, at=at, expected_image=self._expected)


class KubernetesExecProbe:
    """A command (argument list, no shell) in a ready pod of the new revision."""

    def __init__(
        self,
        api: KubeApi,
        rollout: RolloutProbe,
        spec: ExecCheck,
        *,
        container: str | None = None,
    ) -> None:
        self._api = api
        self._rollout = rollout
        self._spec = spec
        self._container = container

    @property
    def name(self) -> str:
        return self._spec.name

    def check(self, at: datetime) -> Sample:
        spec = self._spec
        try:
            pods = self._rollout.ready_new_pods()
        except SafeUpdaterError as exc:
            return Sample(at=at, check=self.name, ok=False, detail=exc.message)
        if not pods:
            return Sample(
                at=at, check=self.name, ok=None, detail="no ready pod of the new revision"
            )
        pod = pods[0]
        try:
            result = self._api.exec_in_pod(
                self._rollout.spec.namespace,
                pod,
                list(spec.command),
                container=self._container,
                timeout=spec.timeout.total_seconds(),
            )
        except SafeUpdaterError as exc:
            return Sample(at=at, check=self.name, ok=False, detail=f"exec in {pod}: {exc.message}")
        return exec_sample(at, self.name, spec, result, where=pod)


class StaticProbe:
    """A check with a fixed answer (a Helm release without workloads has no rollout to watch)."""

    def __init__(self, name: str, ok: bool, detail: str) -> None:
        self._name = name
        self._ok = ok
        self._detail = detail

    @property
    def name(self) -> str:
        return self._name

    def check(self, at: datetime) -> Sample:
        return Sample(at=at, check=self._name, ok=self._ok, detail=self._detail)
