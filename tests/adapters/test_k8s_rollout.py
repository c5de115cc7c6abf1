"""Rollout judgement on objects recorded from the test cluster (kube-apiserver 1.37 + kwok).

The recordings (tests/adapters/data/k8s/*.json) hold a workload, the ReplicaSets or
ControllerRevisions it owns and its pods, as `kubectl get -o json` showed them:
- deployment_stalled: image updated to a version whose pods never become Ready (old pods serve);
- deployment_crashloop: the new pod is in CrashLoopBackOff with restarts;
- deployment_complete: a finished rollout of 3 replicas;
- statefulset_* / daemonset_*: the same for the revision-based controllers;
- cronjob: a CronJob (no rollout).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from safe_updater.domain.rollout import (
    RolloutCheck,
    new_revision,
    pod_state,
    rollout_sample,
)

DATA = Path(__file__).parent / "data" / "k8s"
AT = datetime(2026, 11, 25, tzinfo=UTC)


def recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def judge(name: str, *, fraction: float = 0.1, expected: tuple[str, str] | None = None) -> Any:
    rec = recorded(name)
    workload = rec["workload"]
    kind = workload["kind"]
    check = RolloutCheck(
        workload_kind=kind,
        namespace=workload["metadata"]["namespace"],
        workload=workload["metadata"]["name"],
        failure_fraction=fraction,
    )
    marker = new_revision(kind, workload, rec["revisions"])
    pods = []
    if marker is not None:
        key, value = marker
        pods = [pod_state(p) for p in rec["pods"] if p["metadata"]["labels"].get(key) == value]
    return rollout_sample(check, workload, pods, at=AT, expected_image=expected), marker, pods


@pytest.mark.parametrize(
    ("name", "ok", "fatal", "detail"),
    [
        ("deployment_complete", True, False, "rollout complete: 3/3"),
        ("deployment_stalled", None, False, "1 of 2 replicas updated"),
        ("deployment_crashloop", False, True, "CrashLoopBackOff"),
        ("statefulset_complete", True, False, "rollout complete: 2/2 replicas ready"),
        ("statefulset_stalled", None, False, "1 of 2 replicas"),
        ("daemonset_complete", True, False, "rollout complete: 3/3 pods available"),
        ("daemonset_stalled", None, False, "of 3"),
        ("cronjob", True, False, "next job"),
    ],
)
def test_recorded_rollouts(name: str, ok: bool | None, fatal: bool, detail: str) -> None:
    sample, _, _ = judge(name)
    assert sample.ok is ok, sample.detail
    assert sample.fatal is fatal
    assert detail in sample.detail


def test_new_revision_of_a_deployment_is_the_replica_set_of_its_revision() -> None:
    _, marker, pods = judge("deployment_stalled")
    assert marker is not None and marker[0] == "pod-template-hash"
    assert len(pods) == 1  # only the new pod, not the two old ones still serving
    assert not pods[0].ready and pods[0].broken is None  # failing readiness: not "broken"


def test_statefulset_new_pods_follow_update_revision() -> None:
    rec = recorded("statefulset_stalled")
    _, marker, pods = judge("statefulset_stalled")
    assert marker == ("controller-revision-hash", rec["workload"]["status"]["updateRevision"])
    assert [p.name for p in pods] == ["db-1"]  # the highest ordinal goes first


def test_daemonset_new_pods_follow_the_latest_controller_revision() -> None:
    _, marker, pods = judge("daemonset_stalled")
    assert marker is not None and marker[0] == "controller-revision-hash"
    assert len(pods) == 1 and not pods[0].ready


def test_crashloop_pod_is_broken_with_restarts() -> None:
    _, _, pods = judge("deployment_crashloop")
    (pod,) = pods
    assert pod.restarts > 0
    assert pod.broken is not None and "CrashLoopBackOff" in pod.broken


def test_a_high_failure_fraction_tolerates_the_crashing_pod() -> None:
    # 1 broken of 2 desired is 50%: not more than 0.5, so no fail-fast; the rollout is pending.
    sample, _, _ = judge("deployment_crashloop", fraction=0.5)
    assert sample.ok is None and not sample.fatal


def test_expected_image_mismatch_fails() -> None:
    sample, _, _ = judge("deployment_complete", expected=("web", "localhost:1/other:9"))
    assert sample.ok is False and not sample.fatal
    assert "someone else" in sample.detail


def test_expected_image_of_a_cronjob_is_its_job_template() -> None:
    image = recorded("cronjob")["workload"]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    sample, _, _ = judge("cronjob", expected=("job", image))
    assert sample.ok is True
