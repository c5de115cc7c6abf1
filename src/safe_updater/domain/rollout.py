"""Kubernetes rollout health, the pure part: workload status and pods in, one :class:`Sample` out.

The adapter (:mod:`safe_updater.adapters.k8s_health`) watches a workload, its revisions
(ReplicaSets or ControllerRevisions) and its pods, and hands the latest objects, as the API's JSON
dicts, to :func:`rollout_sample`. The rules follow ``kubectl rollout status``:

* **Deployment**: ``observedGeneration >= generation``; ``updatedReplicas``, ``readyReplicas`` and
  ``availableReplicas`` equal the desired replicas and no old replica is left; a ``Progressing``
  condition with reason ``ProgressDeadlineExceeded`` is fatal.
* **StatefulSet**: ``observedGeneration >= generation``; with a partition, at least
  ``replicas - partition`` updated; otherwise ``updateRevision == currentRevision`` and every
  replica updated and ready. ``OnDelete``: the template is observed and the replicas are ready.
* **DaemonSet**: ``updatedNumberScheduled`` and ``numberAvailable`` equal
  ``desiredNumberScheduled``.
* **CronJob**: there is no rollout; the change applies to the next job. Healthy once the job
  template carries the expected image.

A rollout still in progress is *no verdict yet* (``ok=None``): it neither passes nor counts as a
failure, so the window's end is the deadline. Pods of the **new** revision in ``CrashLoopBackOff``,
``ImagePullBackOff``, ``ErrImagePull`` (and the like), failed, or restarting count as broken; when
more than ``failure_fraction`` of the desired pods are broken the sample is *fatal*, which ends the
window at once (fail fast).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.health import HEALTH_LABEL_PREFIX, Sample

FAILURE_FRACTION_KEY = "failure-fraction"
FAILURE_FRACTION_LABEL = HEALTH_LABEL_PREFIX + FAILURE_FRACTION_KEY
"""``safe-updater.io/health.failure-fraction``: the share of new pods that may be broken."""

DEFAULT_FAILURE_FRACTION = 0.1

ROLLOUT_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")

#: Container waiting reasons that will not fix themselves.
BROKEN_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "PreCreateHookError",
        "PostStartHookError",
    }
)

DEPLOYMENT_REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
CONTROLLER_REVISION_HASH = "controller-revision-hash"


class RolloutCheck(BaseModel):
    """Watch a workload's rollout; ``failure_fraction`` of the desired pods may be broken."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["rollout"] = "rollout"
    workload_kind: str = "Deployment"
    namespace: str
    workload: str
    failure_fraction: float = Field(default=DEFAULT_FAILURE_FRACTION, ge=0.0, lt=1.0)

    @property
    def name(self) -> str:
        return f"rollout {self.workload_kind.lower()}/{self.workload}"


class PodState(BaseModel):
    """What the rollout check needs to know about one pod."""

    model_config = ConfigDict(frozen=True)

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    ready: bool = False
    phase: str = ""
    broken: str | None = Field(default=None, description="Why the pod is broken, if it is.")
    restarts: int = 0
    deleting: bool = False


def pod_state(pod: Mapping[str, Any]) -> PodState:
    """Summarise one pod (the API's JSON)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    phase = str(status.get("phase") or "")
    broken: str | None = None
    restarts = 0
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for cs in statuses:
        restarts += int(cs.get("restartCount") or 0)
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if broken is None and reason in BROKEN_WAITING_REASONS:
            broken = f"container {cs.get('name')} is in {reason}"
            message = str(waiting.get("message") or "")
            if message:
                broken += f" ({message[:120]})"
    if broken is None and phase == "Failed":
        broken = f"pod failed ({status.get('reason') or 'no reason given'})"
    if broken is None and restarts > 0:
        broken = f"restarted {restarts} time(s)"
    return PodState(
        name=str(meta.get("name") or ""),
        labels=dict(meta.get("labels") or {}),
        ready=ready,
        phase=phase,
        broken=broken,
        restarts=restarts,
        deleting=meta.get("deletionTimestamp") is not None,
    )


def new_revision(
    kind: str, workload: Mapping[str, Any], revisions: Sequence[Mapping[str, Any]]
) -> tuple[str, str] | None:
    """``(pod label key, value)`` that marks pods of the workload's current template, or None
    while the controller has not created that revision yet.

    ``revisions`` are the workload's ReplicaSets (Deployment) or ControllerRevisions (DaemonSet);
    a StatefulSet names its revision in ``status.updateRevision``.
    """
    meta = workload.get("metadata") or {}
    uid = meta.get("uid")
    owned = [r for r in revisions if _owned_by(r, uid)]
    if kind == "Deployment":
        wanted = (meta.get("annotations") or {}).get(DEPLOYMENT_REVISION_ANNOTATION)
        if wanted is None:
            return None
        for rs in owned:
            rs_meta = rs.get("metadata") or {}
            if (rs_meta.get("annotations") or {}).get(DEPLOYMENT_REVISION_ANNOTATION) == wanted:
                value = (rs_meta.get("labels") or {}).get(POD_TEMPLATE_HASH)
                return (POD_TEMPLATE_HASH, value) if value else None
        return None
    if kind == "StatefulSet":
        update = (workload.get("status") or {}).get("updateRevision")
        return (CONTROLLER_REVISION_HASH, str(update)) if update else None
    if kind == "DaemonSet":
        if not owned:
            return None
        latest = max(owned, key=lambda r: int(r.get("revision") or 0))
        value = ((latest.get("metadata") or {}).get("labels") or {}).get(CONTROLLER_REVISION_HASH)
        return (CONTROLLER_REVISION_HASH, value) if value else None
    return None


def _owned_by(obj: Mapping[str, Any], uid: object) -> bool:
    if uid is None:
        return True
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def template_containers(kind: str, workload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every container and init container of the workload's pod template."""
    spec = pod_template_spec(kind, workload)
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def pod_template_spec(kind: str, workload: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = workload.get("spec") or {}
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


class RolloutState(BaseModel):
    model_config = ConfigDict(frozen=True)

    ok: bool | None
    detail: str
    fatal: bool = False


def assess_rollout(
    check: RolloutCheck,
    workload: Mapping[str, Any] | None,
    new_pods: Sequence[PodState],
    *,
    expected_image: tuple[str, str] | None = None,
) -> RolloutState:
    """Judge one observation of the rollout.

    ``new_pods`` are the pods of the new revision (see :func:`new_revision`); ``expected_image``
    is ``(container, image)`` as the update set it.
    """
    kind = check.workload_kind
    if workload is None:
        return RolloutState(ok=False, detail=f"{kind} {check.workload} is gone", fatal=True)
    if expected_image is not None:
        container, image = expected_image
        found = {c.get("name"): c.get("image") for c in template_containers(kind, workload)}
        if found.get(container) != image:
            return RolloutState(
                ok=False,
                detail=f"the template's container {container} runs {found.get(container)!r}, "
                f"not {image!r} (changed by someone else?)",
            )
    if kind == "CronJob":
        return RolloutState(ok=True, detail="job template updated; the next job runs it")
    meta = workload.get("metadata") or {}
    spec = workload.get("spec") or {}
    status = workload.get("status") or {}
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return RolloutState(
            ok=None, detail=f"waiting for the controller to observe generation {generation}"
        )
    if kind == "Deployment":
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "Progressing"
                and cond.get("reason") == "ProgressDeadlineExceeded"
            ):
                return RolloutState(
                    ok=False,
                    fatal=True,
                    detail=f"progress deadline exceeded: {cond.get('message') or ''}".strip(),
                )
    desired = _desired(kind, spec, status)
    live = [p for p in new_pods if not p.deleting]
    broken = [p for p in live if p.broken]
    if broken and len(broken) / max(desired, len(live), 1) > check.failure_fraction:
        first = broken[0]
        return RolloutState(
            ok=False,
            fatal=True,
            detail=f"{len(broken)} of {max(desired, len(live))} new pods broken "
            f"(more than {check.failure_fraction:.0%}): {first.name}: {first.broken}",
        )
    if kind == "Deployment":
        return _deployment(spec, status, desired)
    if kind == "StatefulSet":
        return _statefulset(spec, status, desired)
    if kind == "DaemonSet":
        return _daemonset(spec, status, desired)
    return RolloutState(ok=False, detail=f"unsupported workload kind {kind}", fatal=True)


def _desired(kind: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> int:
    if kind == "DaemonSet":
        return int(status.get("desiredNumberScheduled") or 0)
    replicas = spec.get("replicas")
    return 1 if replicas is None else int(replicas)


def _deployment(spec: Mapping[str, Any], status: Mapping[str, Any], desired: int) -> RolloutState:
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if spec.get("paused"):
        return RolloutState(ok=None, detail="the Deployment is paused; its rollout does not move")
    if updated < desired:
        return RolloutState(ok=None, detail=f"{updated} of {desired} replicas updated")
    if replicas > updated:
        return RolloutState(
            ok=None, detail=f"{replicas - updated} old replicas pending termination"
        )
    if available < updated or ready < desired:
        return RolloutState(
            ok=None, detail=f"{available} of {updated} updated replicas available, {ready} ready"
        )
    return RolloutState(
        ok=True, detail=f"rollout complete: {desired}/{desired} replicas updated and available"
    )


def _statefulset(spec: Mapping[str, Any], status: Mapping[str, Any], desired: int) -> RolloutState:
    strategy = spec.get("updateStrategy") or {}
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    if strategy.get("type") == "OnDelete":
        if ready < desired:
            return RolloutState(ok=None, detail=f"{ready} of {desired} replicas ready (OnDelete)")
        return RolloutState(
            ok=True, detail="template updated; OnDelete: pods change only when deleted"
        )
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    if partition > 0:
        wanted = max(desired - partition, 0)
        if updated < wanted:
            return RolloutState(
                ok=None, detail=f"{updated} of {wanted} replicas updated (partition {partition})"
            )
        if ready < desired:
            return RolloutState(ok=None, detail=f"{ready} of {desired} replicas ready")
        return RolloutState(
            ok=True, detail=f"partitioned rollout complete: {updated} updated, {ready} ready"
        )
    if updated < desired:
        return RolloutState(ok=None, detail=f"{updated} of {desired} replicas updated")
    if ready < desired:
        return RolloutState(ok=None, detail=f"{ready} of {desired} replicas ready")
    if status.get("updateRevision") != status.get("currentRevision"):
        return RolloutState(ok=None, detail="waiting for the update revision to become current")
    return RolloutState(ok=True, detail=f"rollout complete: {desired}/{desired} replicas ready")


def _daemonset(spec: Mapping[str, Any], status: Mapping[str, Any], desired: int) -> RolloutState:
    available = int(status.get("numberAvailable") or 0)
    if (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        if available < desired:
            return RolloutState(ok=None, detail=f"{available} of {desired} pods available")
        return RolloutState(
            ok=True, detail="template updated; OnDelete: pods change only when deleted"
        )
    updated = int(status.get("updatedNumberScheduled") or 0)
    if updated < desired:
        return RolloutState(ok=None, detail=f"{updated} of {desired} pods updated")
    if available < desired:
        return RolloutState(ok=None, detail=f"{available} of {desired} updated pods available")
    return RolloutState(ok=True, detail=f"rollout complete: {desired}/{desired} pods available")


def rollout_sample(
    check: RolloutCheck,
    workload: Mapping[str, Any] | None,
    new_pods: Sequence[PodState],
    *,
    at: datetime,
    expected_image: tuple[str, str] | None = None,
) -> Sample:
    state = assess_rollout(check, workload, new_pods, expected_image=expected_image)
    return Sample(at=at, check=check.name, ok=state.ok, detail=state.detail, fatal=state.fatal)


# --- annotations ---------------------------------------------------------------------------------


def split_rollout_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(other labels, rollout-only labels)``: the keys :func:`parse_health_labels` does not know
    (``health.failure-fraction``) are taken out, so both parsers stay strict."""
    rest = {k: v for k, v in labels.items() if k != FAILURE_FRACTION_LABEL}
    own = {k: v for k, v in labels.items() if k == FAILURE_FRACTION_LABEL}
    return rest, own


def parse_failure_fraction(labels: Mapping[str, str], *, asset_id: str) -> float:
    """``safe-updater.io/health.failure-fraction`` (0 to below 1, or a percentage like 10%)."""
    raw = labels.get(FAILURE_FRACTION_LABEL)
    if raw is None:
        return DEFAULT_FAILURE_FRACTION
    text = raw.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise InvalidInputError(
            f"label {FAILURE_FRACTION_LABEL} on {asset_id} ({text[:20]!r}) is not a fraction",
            hint="write a number from 0 up to (not including) 1, like 0.1, or a percentage: 10%",
            source=asset_id,
            field=FAILURE_FRACTION_LABEL,
        )
    return value
