"""KubernetesHealthPlanner and the exec probe, without a cluster (the watches are covered by
tests/k8s)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from safe_updater.adapters.k8s_health import KubernetesExecProbe, RolloutProbe
from safe_updater.adapters.kube_api import ExecResult
from safe_updater.adapters.probes import HttpProbe, TcpProbe
from safe_updater.config import AppConfig
from safe_updater.domain.assets import Asset, AssetKind, ImageRef
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.health import ExecCheck
from safe_updater.domain.plans import AppliedChange
from safe_updater.domain.rollout import RolloutCheck
from safe_updater.k8s_health_planning import KubernetesHealthPlanner, release_workloads
from support.fake_kube import FakeKubeApi, deployment

AT = datetime(2026, 11, 25, tzinfo=UTC)
H = "safe-updater.io/health."


def k8s_asset(**labels: str) -> Asset:
    return Asset(
        id="k8s:c/ns/deployment/web",  # type: ignore[arg-type]
        kind=AssetKind.KUBERNETES,
        target="c",
        name="web",
        namespace="ns",
        workload_kind="Deployment",
        container="app",
        image=ImageRef.parse("localhost:5000/web:1.0.0"),
        current_version="1.0.0",
        labels=dict(labels),
    )


def planner(api: Any = None) -> KubernetesHealthPlanner:
    return KubernetesHealthPlanner(AppConfig(), {"c": api or FakeKubeApi()})


def test_plan_for_a_workload() -> None:
    asset = k8s_asset(
        **{
            H + "http": "http://127.0.0.1:8080/healthz",
            H + "tcp": "127.0.0.1:5432",
            H + "exec": "pg_isready -q",
            H + "window": "45s",
            H + "failure-fraction": "25%",
        }
    )
    applied = AppliedChange(
        asset_id=asset.id,
        from_version="1.0.0",
        to_version="1.0.1",
        data={"image_after": "localhost:5000/web:1.0.1"},
    )
    probes, policy = planner().plan(asset, applied)
    assert [type(p) for p in probes] == [RolloutProbe, HttpProbe, TcpProbe, KubernetesExecProbe]
    rollout = probes[0]
    assert isinstance(rollout, RolloutProbe)
    assert rollout.name == "rollout deployment/web" and rollout.spec.failure_fraction == 0.25
    assert policy.window == timedelta(seconds=45)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({H + "docker": "true"}, "does not apply to Kubernetes"),
        ({H + "failure-fraction": "2"}, "not a fraction"),
        ({H + "nonsense": "1"}, "not a known health label"),
    ],
)
def test_bad_annotations_are_refused(labels: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        planner().plan(k8s_asset(**labels), None)


def test_plan_for_a_release_watches_every_workload_of_it() -> None:
    api = FakeKubeApi()
    api.add(deployment("demo-web", "x:1", labels={"app.kubernetes.io/instance": "demo"}))
    api.add(
        deployment(
            "demo-db",
            "x:1",
            kind="StatefulSet",
            annotations={
                "meta.helm.sh/release-name": "demo",
                "meta.helm.sh/release-namespace": "ns",
            },
        )
    )
    api.add(deployment("other", "x:1", labels={"app.kubernetes.io/instance": "other"}))
    assert release_workloads(api, "ns", "demo") == [  # type: ignore[arg-type]
        ("Deployment", "demo-web"),
        ("StatefulSet", "demo-db"),
    ]
    release = Asset(
        id="helm:c/ns/demo",  # type: ignore[arg-type]
        kind=AssetKind.HELM,
        target="c",
        name="demo",
        namespace="ns",
        current_version="1.0.0",
    )
    probes, _ = planner(api).plan(release, None)
    assert [p.name for p in probes] == [
        "rollout deployment/demo-web",
        "rollout statefulset/demo-db",
    ]

    empty = release.model_copy(update={"name": "nothing", "id": "helm:c/ns/nothing"})
    (probe,) = planner(api).plan(empty, None)[0]
    assert probe.check(AT).ok is True


class StubRollout:
    spec = RolloutCheck(namespace="ns", workload="web")

    def __init__(self, pods: list[str]) -> None:
        self.pods = pods

    def ready_new_pods(self) -> list[str]:
        return self.pods


class StubExecApi:
    def __init__(self, result: ExecResult) -> None:
        self.result = result
        self.calls: list[tuple[Any, ...]] = []

    def exec_in_pod(self, namespace: str, pod: str, command: list[str], **kw: Any) -> ExecResult:
        self.calls.append((namespace, pod, command, kw))
        return self.result


@pytest.mark.parametrize(
    ("pods", "result", "ok"),
    [
        ([], ExecResult(0, "", False), None),
        (["web-1"], ExecResult(0, "", False), True),
        (["web-1"], ExecResult(2, "no db", False), False),
        (["web-1"], ExecResult(None, "", True), False),
    ],
)
def test_exec_probe_runs_in_a_ready_pod_of_the_new_revision(
    pods: list[str], result: ExecResult, ok: bool | None
) -> None:
    api = StubExecApi(result)
    probe = KubernetesExecProbe(
        api,
        StubRollout(pods),
        ExecCheck(command=("pg_isready", "-q")),
        container="app",  # type: ignore[arg-type]
    )
    sample = probe.check(AT)
    assert sample.ok is ok, sample.detail
    if pods:
        assert api.calls[0][:3] == ("ns", "web-1", ["pg_isready", "-q"])
        assert api.calls[0][3]["container"] == "app"
