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

**The API server going away** (restarted, overloaded, unreachable) is not a health signal: while
a watch cannot reconnect, or a read fails with a :class:`TransientError`, the probes answer
``ok=None`` ("Kubernetes API unavailable ...") instead of failing the workload. A watch that
reconnects resumes from its ``resourceVersion`` (or lists again after ``410 Gone``), so events
of the outage are not lost, and judging goes on. A window that then ends *healthy*, or
*unhealthy on the workload's merits* (a fatal sample, ``failure_threshold`` failures in a row),
stands. A window that ends undecided after an outage (still away, or back too late for enough
passes) did not judge the version: :func:`api_outage_error` turns it into an
:class:`EngineUnavailableError`, the attempt stays open in phase *verifying*, and ``recover``
verifies again over a full window, rather than rolling back (and quarantining) a version nobody
saw fail.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from safe_updater.adapters.errors import EngineUnavailableError
from safe_updater.adapters.kube_api import (
    KubeApi,
    canonical_kind,
    interrupt_response,
    selector_string,
)
from safe_updater.adapters.probes import exec_sample
from safe_updater.domain.errors import NotFoundError, SafeUpdaterError, TransientError
from safe_updater.domain.health import (
    ExecCheck,
    HealthPolicy,
    Sample,
    Verdict,
    VerdictState,
    evaluate,
)
from safe_updater.domain.rollout import (
    PodState,
    RolloutCheck,
    new_revision,
    pod_state,
    rollout_sample,
)

log = logging.getLogger(__name__)

#: How samples and errors name an API server outage (operators grep logs for it).
API_UNAVAILABLE = "Kubernetes API unavailable"
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
        # The last failure of the list or watch; None again once the server answers.
        self.error: SafeUpdaterError | None = None
        self._failures = 0
        self.events = 0
        self.lists = 0
        self.reconnects = 0

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

    @property
    def unavailable(self) -> TransientError | None:
        """The transient error (connection refused or reset, 5xx, timeout) that keeps the watch
        disconnected right now; the cache may be stale while it is set."""
        error = self.error
        return error if isinstance(error, TransientError) else None

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
        self._failures = 0
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
            except SafeUpdaterError as exc:
                if self._stop.is_set():
                    return
                self.error = exc
                if _is_gone(exc):
                    self.resource_version = None
                    continue
                delay = _BACKOFF[min(self._failures, len(_BACKOFF) - 1)]
                self._failures += 1
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
            self.error = None
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
                code = obj.get("code")
                message = f"watch error: {obj.get('message') or obj}"
                if isinstance(code, int) and (code == 429 or code >= 500):
                    # The server is shutting down or overloaded: an outage, not bad data.
                    raise EngineUnavailableError(message)
                raise SafeUpdaterError(message)
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
            return
        # The server accepted the watch: from here the cache is live again. Clearing the error
        # only when a watch ends (after up to watch_timeout) would keep reporting an outage
        # that is over.
        if self.error is not None:
            self.reconnects += 1
            log.info(
                "%s watch in %s: connected again from resourceVersion %s",
                self.kind,
                self.namespace,
                self.resource_version,
            )
        self.error = None
        self._failures = 0


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
        #: Why the latest sample could not judge the rollout: the API was unavailable. None
        #: once a sample came from live watches again.
        self.api_outage: TransientError | None = None
        #: The last outage any sample of this probe saw (kept after the API came back).
        self.outage_seen: TransientError | None = None

    @property
    def name(self) -> str:
        return self._check.name

    @property
    def server(self) -> str:
        return self._api.server

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
        """Names of ready pods of the new revision (for exec checks); raises the outage's
        :class:`TransientError` while a watch is disconnected (the pods may be gone)."""
        _, pods, _ = self.observe()
        outage = self.outage()
        if outage is not None:
            raise outage
        return [p.name for p in pods if p.ready and not p.deleting]

    def outage(self) -> TransientError | None:
        """The error of a watch that is disconnected by a transient failure right now."""
        for reflector in self.reflectors():
            error = reflector.unavailable
            if error is not None:
                return error
        return None

    def unavailable_sample(self, at: datetime, error: TransientError) -> Sample:
        """No verdict: the API server, not the workload, is what failed."""
        self.api_outage = self.outage_seen = error
        return Sample(
            at=at,
            check=self.name,
            ok=None,
            detail=f"{API_UNAVAILABLE} at {self.server}: {error.message}; "
            "not judged until the watch reconnects",
        )

    def check(self, at: datetime) -> Sample:
        try:
            workload, pods, problem = self.observe()
        except TransientError as exc:
            return self.unavailable_sample(at, exc)
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
            self.api_outage = None
            return Sample(at=at, check=self.name, ok=False, detail=exc.message)
        # Cached objects from before a disconnect may be stale: judge only live ones.
        outage = self.outage()
        if outage is not None:
            return self.unavailable_sample(at, outage)
        self.api_outage = None
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
        except TransientError as exc:
            return self._unavailable(at, exc)
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
        except TransientError as exc:
            return self._unavailable(at, exc)
        except SafeUpdaterError as exc:
            return Sample(at=at, check=self.name, ok=False, detail=f"exec in {pod}: {exc.message}")
        return exec_sample(at, self.name, spec, result, where=pod)

    def _unavailable(self, at: datetime, error: TransientError) -> Sample:
        return Sample(
            at=at,
            check=self.name,
            ok=None,
            detail=f"{API_UNAVAILABLE} at {self._api.server}: {error.message}; not judged",
        )


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


def api_outage_error(
    asset_id: str,
    probes: Sequence[object],
    verdict: Verdict,
    samples: Sequence[Sample],
    policy: HealthPolicy,
) -> EngineUnavailableError | None:
    """The error to raise instead of ``verdict`` when the window ended undecided after the
    Kubernetes API was unavailable during it, or None when the verdict stands.

    It stands when it is healthy, when the workload failed on its merits (a fatal sample or
    ``failure_threshold`` failures in a row, judged as if the window had not ended), or when no
    rollout probe saw an outage.
    """
    if verdict.state is not VerdictState.UNHEALTHY or not samples:
        return None
    rollouts = [p for p in probes if isinstance(p, RolloutProbe) and p.outage_seen is not None]
    if not rollouts:
        return None
    first = min(s.at for s in samples)
    on_merits = evaluate(samples, policy, started_at=first, now=first)
    if on_merits.state is VerdictState.UNHEALTHY:
        return None
    still = [p for p in rollouts if p.api_outage is not None]
    probe = (still or rollouts)[0]
    error = probe.api_outage or probe.outage_seen
    assert error is not None
    when = (
        "until the end of the verify window"
        if still
        else "during the verify window, and the rest of it was too short to judge"
    )
    return EngineUnavailableError(
        f"{API_UNAVAILABLE} at {probe.server} {when} of {asset_id} ({error.message}); the new "
        "version was neither judged nor rolled back, and the attempt stays open in phase "
        "verifying",
        hint=f"when the API server answers again, run `safe-updater recover {asset_id}`: it "
        "verifies again, then commits or rolls back (the next update of the asset does it too)",
    )
