"""domain/rollout: the rollout rules as tables (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.rollout import (
    FAILURE_FRACTION_LABEL,
    PodState,
    RolloutCheck,
    assess_rollout,
    parse_failure_fraction,
    pod_state,
    split_rollout_labels,
)


def workload(
    kind: str = "Deployment",
    *,
    generation: int = 2,
    observed: int = 2,
    spec: dict[str, Any] | None = None,
    **status: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": "w", "namespace": "ns", "generation": generation},
        "spec": {"replicas": 3, **(spec or {})},
        "status": {"observedGeneration": observed, **status},
    }


def check(kind: str = "Deployment", fraction: float = 0.1) -> RolloutCheck:
    return RolloutCheck(workload_kind=kind, namespace="ns", workload="w", failure_fraction=fraction)


DONE = {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}


@pytest.mark.parametrize(
    ("obj", "ok", "fatal", "detail"),
    [
        (workload(**DONE), True, False, "rollout complete"),
        (workload(observed=1, **DONE), None, False, "observe generation 2"),
        (workload(**{**DONE, "updatedReplicas": 1}), None, False, "1 of 3 replicas updated"),
        (workload(**{**DONE, "replicas": 4}), None, False, "1 old replicas"),
        (workload(**{**DONE, "availableReplicas": 2}), None, False, "2 of 3 updated"),
        (workload(spec={"paused": True}, **DONE), None, False, "paused"),
        (workload(spec={"replicas": 0}), True, False, "0/0"),
        (
            workload(
                conditions=[
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": 'ReplicaSet "w-1" has timed out progressing.',
                    }
                ],
                **DONE,
            ),
            False,
            True,
            "progress deadline exceeded",
        ),
    ],
)
def test_deployment(obj: dict[str, Any], ok: bool | None, fatal: bool, detail: str) -> None:
    state = assess_rollout(check(), obj, [])
    assert (state.ok, state.fatal) == (ok, fatal)
    assert detail in state.detail


STS_DONE = {
    "replicas": 3,
    "readyReplicas": 3,
    "updatedReplicas": 3,
    "currentRevision": "w-2",
    "updateRevision": "w-2",
}


@pytest.mark.parametrize(
    ("obj", "ok"),
    [
        (workload("StatefulSet", **STS_DONE), True),
        (workload("StatefulSet", **{**STS_DONE, "currentRevision": "w-1"}), None),
        (workload("StatefulSet", **{**STS_DONE, "readyReplicas": 2}), None),
        # partition 2 of 3: one updated pod is the whole rollout
        (
            workload(
                "StatefulSet",
                spec={
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
                },
                **{**STS_DONE, "updatedReplicas": 1, "currentRevision": "w-1"},
            ),
            True,
        ),
        (
            workload(
                "StatefulSet",
                spec={
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}
                },
                **{**STS_DONE, "updatedReplicas": 1, "currentRevision": "w-1"},
            ),
            None,
        ),
        (
            workload(
                "StatefulSet",
                spec={"updateStrategy": {"type": "OnDelete"}},
                **{**STS_DONE, "updatedReplicas": 0},
            ),
            True,
        ),
    ],
)
def test_statefulset(obj: dict[str, Any], ok: bool | None) -> None:
    assert assess_rollout(check("StatefulSet"), obj, []).ok is ok


@pytest.mark.parametrize(
    ("status", "ok"),
    [
        ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}, True),
        ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 2, "numberAvailable": 3}, None),
        ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2}, None),
    ],
)
def test_daemonset(status: dict[str, Any], ok: bool | None) -> None:
    assert assess_rollout(check("DaemonSet"), workload("DaemonSet", **status), []).ok is ok


def broken(name: str) -> PodState:
    return PodState(name=name, broken="container app is in ImagePullBackOff")


@pytest.mark.parametrize(
    ("replicas", "broken_pods", "fraction", "fatal"),
    [
        (3, 1, 0.1, True),  # 33% > 10%
        (20, 2, 0.1, False),  # 10% is not more than 10%
        (20, 3, 0.1, True),
        (2, 1, 0.5, False),
        (1, 1, 0.0, True),
    ],
)
def test_failure_fraction(replicas: int, broken_pods: int, fraction: float, fatal: bool) -> None:
    obj = workload(spec={"replicas": replicas}, replicas=replicas, updatedReplicas=0)
    pods = [broken(f"p{i}") for i in range(broken_pods)]
    assert assess_rollout(check(fraction=fraction), obj, pods).fatal is fatal


def test_a_deleted_workload_is_fatal() -> None:
    state = assess_rollout(check(), None, [])
    assert state.fatal and "gone" in state.detail


@pytest.mark.parametrize(
    ("container_status", "phase", "broken"),
    [
        ({"state": {"waiting": {"reason": "ImagePullBackOff"}}}, "Pending", "ImagePullBackOff"),
        ({"state": {"waiting": {"reason": "ErrImagePull"}}}, "Pending", "ErrImagePull"),
        ({"state": {"waiting": {"reason": "ContainerCreating"}}}, "Pending", None),
        ({"state": {"running": {}}, "restartCount": 2}, "Running", "restarted 2"),
        ({"state": {"running": {}}}, "Running", None),
        ({"state": {"terminated": {"exitCode": 1}}}, "Failed", "pod failed"),
    ],
)
def test_pod_state(container_status: dict[str, Any], phase: str, broken: str | None) -> None:
    pod = {
        "metadata": {"name": "p", "labels": {"a": "b"}},
        "status": {"phase": phase, "containerStatuses": [{"name": "app", **container_status}]},
    }
    state = pod_state(pod)
    if broken is None:
        assert state.broken is None
    else:
        assert state.broken is not None and broken in state.broken


@pytest.mark.parametrize(
    ("value", "expected"), [("0.25", 0.25), ("10%", 0.1), ("0", 0.0), (" 0.5 ", 0.5)]
)
def test_parse_failure_fraction(value: str, expected: float) -> None:
    assert parse_failure_fraction({FAILURE_FRACTION_LABEL: value}, asset_id="a") == expected


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "abc", "100%"])
def test_parse_failure_fraction_rejects(value: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_failure_fraction({FAILURE_FRACTION_LABEL: value}, asset_id="k8s:c/ns/deployment/w")
    assert FAILURE_FRACTION_LABEL in str(info.value) and "k8s:c/ns/deployment/w" in str(info.value)


def test_default_fraction_and_split() -> None:
    assert parse_failure_fraction({}, asset_id="a") == 0.1
    rest, own = split_rollout_labels({FAILURE_FRACTION_LABEL: "0.2", "x": "y"})
    assert rest == {"x": "y"} and own == {FAILURE_FRACTION_LABEL: "0.2"}
