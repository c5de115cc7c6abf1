"""HelmReleaseUpdater's decisions with a stateful fake helm (the real one: tests/k8s/)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from safe_updater.adapters.chart_sources import ChartSources
from safe_updater.adapters.errors import OperationInProgressError
from safe_updater.adapters.helm_cli import HelmCli, HelmStatus, ReleaseRevision
from safe_updater.adapters.helm_updater import HelmReleaseUpdater
from safe_updater.domain.assets import Asset, AssetKind, helm_asset_id
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.plans import Snapshot

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeHelm(HelmCli):
    """Release history in memory; rollback appends a revision like helm does."""

    def __init__(self, revisions: list[tuple[str, str]]) -> None:
        super().__init__("fake-helm")
        self.revs = [
            ReleaseRevision(revision=i + 1, status=HelmStatus(s), chart=f"demo-{v}", updated=NOW)
            for i, (v, s) in enumerate(revisions)
        ]
        self.rollbacks: list[int] = []
        self.on_history: list[Any] = []

    def history(self, release: str, namespace: str, *, max_revisions: int = 256) -> Any:
        if self.on_history:
            self.on_history.pop(0)(self)
        return list(self.revs)

    def get_values(self, release: str, namespace: str, **kwargs: Any) -> dict[str, Any]:
        return {}

    def rollback(self, release: str, revision: int, namespace: str, **kwargs: Any) -> None:
        self.rollbacks.append(revision)
        chart = self.revs[revision - 1].chart
        self.revs = [r.model_copy(update={"status": HelmStatus.SUPERSEDED}) for r in self.revs]
        self.revs.append(
            ReleaseRevision(
                revision=len(self.revs) + 1, status=HelmStatus.DEPLOYED, chart=chart, updated=NOW
            )
        )


class NoRegistry:
    def list_tags(self, image: Any) -> list[str]:
        raise AssertionError("not used")

    def digest(self, image: Any) -> str:
        raise AssertionError("not used")

    def created_at(self, image: Any) -> None:
        raise AssertionError("not used")


WEB = Asset(
    id=helm_asset_id("c", "ns", "web"),
    kind=AssetKind.HELM,
    target="c",
    name="web",
    namespace="ns",
    current_version="1.0.0",
    chart="demo",
)


def updater(helm: FakeHelm, **kwargs: Any) -> tuple[HelmReleaseUpdater, list[float]]:
    sources = ChartSources(
        [{"release": "ns/*", "source": "oci://localhost:5000/charts"}], NoRegistry()
    )
    slept: list[float] = []
    clock = {"now": NOW}

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock["now"] += timedelta(seconds=seconds)

    made = HelmReleaseUpdater(helm, sources, sleep=sleep, now=lambda: clock["now"], **kwargs)
    return made, slept


def test_snapshot_takes_the_last_deployed_revision_and_refuses_pending() -> None:
    helm = FakeHelm([("1.0.0", "superseded"), ("1.0.1", "deployed"), ("1.0.0", "superseded")])
    made, _ = updater(helm)
    snap = made.snapshot(WEB)
    assert (snap.version, snap.data["revision"], snap.data["latest_revision"]) == ("1.0.1", 2, 3)
    helm.revs.append(
        ReleaseRevision(revision=4, status=HelmStatus.PENDING_UPGRADE, chart="demo-2.0.0")
    )
    with pytest.raises(OperationInProgressError):
        made.snapshot(WEB)


def test_rollback_is_idempotent() -> None:
    helm = FakeHelm([("1.0.0", "superseded"), ("1.0.2", "deployed")])
    made, _ = updater(helm)
    snap = Snapshot(
        asset_id=WEB.id,
        version="1.0.0",
        data={"format": 1, "revision": 1, "chart_version": "1.0.0", "values": {}},
    )
    made.rollback(WEB, snap, None)
    made.rollback(WEB, snap, None)
    assert helm.rollbacks == [1]
    assert made.running_version(WEB) == "1.0.0"


def test_rollback_waits_for_a_fresh_pending_revision_then_rolls_over_it() -> None:
    helm = FakeHelm([("1.0.0", "deployed"), ("1.0.2", "pending-upgrade")])
    made, slept = updater(helm, pending_settle=5, poll_interval=1)
    snap = Snapshot(
        asset_id=WEB.id,
        version="1.0.0",
        data={"format": 1, "revision": 1, "chart_version": "1.0.0", "values": {}},
    )
    made.rollback(WEB, snap, None)
    assert sum(slept) == pytest.approx(5)  # waited out the settle time, measured from `updated`
    assert helm.rollbacks == [1]


def test_rollback_needs_a_helm_snapshot() -> None:
    made, _ = updater(FakeHelm([("1.0.0", "deployed")]))
    with pytest.raises(InvalidInputError):
        made.rollback(WEB, Snapshot(asset_id=WEB.id, version="1.0.0", data={}), None)


def test_revisions_and_apply_revision_roll_back_to_a_chosen_revision() -> None:
    from safe_updater.adapters.helm_models import RevisionNotFoundError
    from safe_updater.adapters.updater import AssetUpdater, RevisionUpdater

    helm = FakeHelm([("1.0.0", "superseded"), ("1.0.1", "superseded"), ("1.1.0", "deployed")])
    made, _ = updater(helm)
    assert isinstance(made, RevisionUpdater)
    _port: AssetUpdater = made  # the AssetUpdater port is unchanged
    assert [(r.revision, r.version, r.status) for r in made.revisions(WEB)] == [
        (1, "1.0.0", "superseded"),
        (2, "1.0.1", "superseded"),
        (3, "1.1.0", "deployed"),
    ]
    snap = made.snapshot(WEB)
    with pytest.raises(RevisionNotFoundError):
        made.apply_revision(WEB, snap, 9)
    applied = made.apply_revision(WEB, snap, 1)
    assert helm.rollbacks == [1]
    assert (applied.from_version, applied.to_version) == ("1.1.0", "1.0.0")
    assert applied.data == {
        "revision": 4,
        "chart_version": "1.0.0",
        "previous_revision": 3,
        "rollback_to": 1,
    }
    # A retried apply finds its own "Rollback to 1" revision and does not roll back again.
    helm.revs[-1] = helm.revs[-1].model_copy(update={"description": "Rollback to 1"})
    again = made.apply_revision(WEB, snap, 1)
    assert helm.rollbacks == [1] and again.data["revision"] == 4
    # Someone else's helm at work: transient, retried by the task.
    helm.revs.append(
        ReleaseRevision(revision=5, status=HelmStatus.PENDING_UPGRADE, chart="demo-2.0.0")
    )
    with pytest.raises(OperationInProgressError):
        made.apply_revision(WEB, snap, 2)


def test_snapshot_refuses_a_release_whose_newest_revision_failed_after_the_deployed_one() -> None:
    from safe_updater.domain.errors import ConflictError

    helm = FakeHelm([("1.0.0", "deployed"), ("1.0.2", "failed")])
    up, _ = updater(helm)
    with pytest.raises(ConflictError, match="revision 2 failed after revision 1") as caught:
        up.snapshot(WEB)
    assert "--force" in str(caught.value)
    assert helm.rollbacks == []
