"""The update DAG's logic against a real Prefect server and a real (SQLite) state store, with
stateful fakes of our own ports standing in for Docker (covered for real in
tests/integration/test_docker_update_flow.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import resume_flow_run
from prefect.client.orchestration import get_client

from safe_updater.adapters.store import StateStore
from safe_updater.config import AppConfig, parse_config_text
from safe_updater.domain.assets import AssetKind
from safe_updater.domain.errors import PolicyViolationError
from safe_updater.domain.journal import Outcome, Phase
from safe_updater.domain.plans import AppliedChange, Snapshot
from safe_updater.flows.approve_asset import decide_waiting_update
from safe_updater.flows.recover_updates import recover_updates
from safe_updater.flows.rollback_asset import rollback_asset
from safe_updater.flows.update_asset import update_asset
from safe_updater.runtime import Runtime, use_runtime
from support.fakes import (
    FakeClock,
    FakeHealthPlanner,
    FakeInventory,
    FakeRegistry,
    FakeUpdater,
    FakeWorld,
)
from support.prefect_runs import paused_runs, start_in_thread

WEB = "docker:local/web"
TAGS = ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "2.0.0", "latest"]


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        config: AppConfig,
        tags: list[str],
        running: str,
        *,
        missing: tuple[str, ...] = (),
        fail_times: int = 0,
    ) -> None:
        self.world = FakeWorld(running={WEB: running})
        self.clock = FakeClock()
        self.store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
        self.registry = FakeRegistry(tags, fail_times=fail_times)
        self.updater = FakeUpdater(self.world, missing=missing)
        self.runtime = Runtime(
            config=config,
            store=self.store,
            registry=self.registry,  # type: ignore[arg-type]
            inventories=[FakeInventory(self.world)],  # type: ignore[list-item]
            updaters={(AssetKind.DOCKER, "local"): self.updater},
            health=FakeHealthPlanner(self.world),
            clock=self.clock,
            sleep=self.clock.sleep,
            closers=[self.store.close],
        )

    @property
    def running(self) -> str:
        return self.world.running[WEB]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def factory(
        *, config: str = "", tags: list[str] | None = None, running: str = "1.0.0", **kwargs: Any
    ) -> Harness:
        harness = Harness(
            tmp_path,
            parse_config_text(config) if config else AppConfig(),
            tags or TAGS,
            running,
            **kwargs,
        )
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.runtime.close()


def test_patch_is_applied_verified_and_committed(make: Any) -> None:
    h = make()
    with use_runtime(h.runtime):
        result = update_asset(WEB, approval="defer")
    assert result["outcome"] == "updated"
    assert (result["from"], result["to"], result["change_type"]) == ("1.0.0", "1.0.2", "patch")
    assert h.running == "1.0.2"
    assert ("commit", WEB, "1.0.2") in h.world.calls
    [attempt] = h.store.journal.history(WEB)
    assert attempt.outcome is Outcome.UPDATED and attempt.phase is Phase.CLOSED
    assert attempt.snapshot["snapshot"]["version"] == "1.0.0"
    assert h.store.audit.verify().ok


def test_failed_verification_rolls_back_quarantines_and_next_run_takes_next_version(
    make: Any,
) -> None:
    h = make()
    h.world.broken.add("1.0.2")
    with use_runtime(h.runtime):
        first = update_asset(WEB, approval="defer")
        assert first["outcome"] == "rolled_back"
        assert h.running == "1.0.0"
        assert h.store.quarantine.is_quarantined(WEB, "1.0.2")
        second = update_asset(WEB, approval="defer")
        # an operator asking for the quarantined version explicitly is refused, with the fix
        with pytest.raises(PolicyViolationError, match=r"1\.0\.2 is quarantined for") as refused:
            update_asset(WEB, to_version="1.0.2", approval="defer")
    assert (
        refused.value.hint == f"clear it first: safe-updater quarantine clear {WEB} --version 1.0.2"
    )
    assert second["outcome"] == "updated"
    assert second["to"] == "1.0.1"
    assert h.running == "1.0.1"
    outcomes = [a.outcome for a in h.store.journal.history(WEB)]
    assert outcomes == [Outcome.UPDATED, Outcome.ROLLED_BACK]
    verification = h.store.audit.verify()
    assert verification.ok and verification.records >= 6


def test_preflight_failure_changes_nothing(make: Any) -> None:
    h = make(missing=("1.0.2",))
    with use_runtime(h.runtime):
        result = update_asset(WEB, approval="defer")
    assert result["outcome"] == "failed"
    assert "nothing was changed" in result["reasons"][-1]
    assert h.running == "1.0.0"
    assert not any(call[0] == "apply" for call in h.world.calls)


def test_transient_registry_errors_are_retried(make: Any) -> None:
    h = make(fail_times=1)
    with use_runtime(h.runtime):
        result = update_asset(WEB, approval="defer")
    assert result["outcome"] == "updated"
    assert h.registry.requests == 2


def test_nothing_to_do_and_major_is_blocked(make: Any) -> None:
    h = make(tags=["1.0.0", "2.0.0"])
    with use_runtime(h.runtime):
        result = update_asset(WEB, approval="defer")
    assert result["outcome"] == "no_update"
    assert h.running == "1.0.0"
    assert any("2.0.0" in reason for reason in result["reasons"])


def test_minor_waits_for_approval_then_approve_applies_it(make: Any) -> None:
    h = make(tags=["1.0.1", "1.1.0"], running="1.0.1")
    with use_runtime(h.runtime):
        waiting = update_asset(WEB, approval="defer")
        assert waiting["outcome"] == "awaiting_approval"
        assert h.running == "1.0.1"
        approved = decide_waiting_update(WEB, approve=True, approver="alice", reason="ok")
    assert approved["outcome"] == "updated"
    assert h.running == "1.1.0"
    events = [r.event for r in h.store.audit.export()]
    assert "approval.requested" in events and "approval.approved" in events


def test_reject_records_and_changes_nothing(make: Any) -> None:
    h = make(tags=["1.0.1", "1.1.0"], running="1.0.1")
    with use_runtime(h.runtime):
        update_asset(WEB, approval="defer")
        rejected = decide_waiting_update(WEB, approve=False, approver="bob", reason="later")
    assert rejected["outcome"] == "rejected"
    assert h.running == "1.0.1"
    assert h.store.journal.history(WEB, limit=1)[0].outcome is Outcome.REJECTED


def test_only_configured_approvers_may_approve(make: Any) -> None:
    h = make(
        tags=["1.0.1", "1.1.0"],
        running="1.0.1",
        config="policy:\n  default:\n    approval:\n      approvers: [alice]\n",
    )
    with use_runtime(h.runtime):
        update_asset(WEB, approval="defer")
        with pytest.raises(Exception, match="may not approve"):
            decide_waiting_update(WEB, approve=True, approver="mallory")
    assert h.running == "1.0.1"
    assert "approval.refused" in [r.event for r in h.store.audit.export()]


def _run_in_thread(**kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    return start_in_thread(update_asset, **kwargs)


def _paused_run_id(deadline: float = 60) -> Any:
    end = time.monotonic() + deadline
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            for run in paused_runs(client):
                return run.id
            time.sleep(0.3)
    raise AssertionError("no run paused for approval")


@pytest.mark.parametrize("approve", [True, False])
def test_pause_for_approval_resumed_from_outside(make: Any, approve: bool) -> None:
    h = make(tags=["1.0.1", "1.1.0"], running="1.0.1", config="approvals:\n  poll_interval: 1s\n")
    with use_runtime(h.runtime):
        thread, box = _run_in_thread(asset_id=WEB, approval="pause")
        run_id = _paused_run_id()
        resume_flow_run(
            run_id, run_input={"approve": approve, "approver": "carol", "reason": "test"}
        )
        thread.join(60)
    assert "error" not in box, box.get("error")
    assert box["result"]["outcome"] == ("updated" if approve else "rejected")
    assert h.running == ("1.1.0" if approve else "1.0.1")


def test_approval_deadline_expires_and_changes_nothing(make: Any) -> None:
    h = make(
        tags=["1.0.1", "1.1.0"],
        running="1.0.1",
        config="approvals:\n  poll_interval: 1s\n"
        "policy:\n  default:\n    approval:\n      deadline: 2s\n",
    )
    with use_runtime(h.runtime):
        thread, _ = _run_in_thread(asset_id=WEB, approval="pause")
        thread.join(90)
    # Prefect fails a run whose pause timed out; the journal holds the real outcome.
    assert h.running == "1.0.1"
    assert h.store.journal.history(WEB, limit=1)[0].outcome is Outcome.EXPIRED


def test_approval_deadline_with_timeout_action_approve_applies_and_records_it(make: Any) -> None:
    h = make(
        tags=["1.0.1", "1.1.0"],
        running="1.0.1",
        config="approvals:\n  poll_interval: 1s\n"
        "policy:\n  default:\n    approval:\n      deadline: 2s\n      timeout_action: approve\n",
    )
    with use_runtime(h.runtime):
        thread, _ = _run_in_thread(asset_id=WEB, approval="pause")
        thread.join(120)
    assert h.running == "1.1.0"
    assert h.store.journal.history(WEB, limit=1)[0].outcome is Outcome.UPDATED
    approvals = [r for r in h.store.audit.export() if r.event == "approval.approved"]
    assert [r.actor for r in approvals] == ["timeout_action"]
    assert "timeout_action: approve" in approvals[0].data["reason"]


def test_recover_rolls_back_an_attempt_killed_during_verification(make: Any) -> None:
    h = make()
    h.world.broken.add("1.0.2")
    asset = FakeInventory(h.world).asset("web")
    snapshot = Snapshot(asset_id=WEB, version="1.0.0")
    attempt = h.store.journal.open_attempt(
        asset_id=WEB,
        from_version="1.0.0",
        to_version="1.0.2",
        change_type="patch",
        idempotency_key="crashed-run",
    )
    h.store.journal.advance(
        attempt.id,
        Phase.SNAPSHOTTED,
        snapshot={
            "asset": asset.model_dump(mode="json"),
            "snapshot": snapshot.model_dump(mode="json"),
        },
    )
    h.store.journal.advance(attempt.id, Phase.APPLYING)
    h.world.running[WEB] = "1.0.2"  # the crash hit after the new version started
    h.store.journal.advance(
        attempt.id,
        Phase.VERIFYING,
        applied=AppliedChange(asset_id=WEB, from_version="1.0.0", to_version="1.0.2").model_dump(
            mode="json"
        ),
    )
    with use_runtime(h.runtime):
        [result] = recover_updates(WEB)
    assert result["outcome"] == "rolled_back"
    assert h.running == "1.0.0"
    assert h.store.quarantine.is_quarantined(WEB, "1.0.2")
    assert h.store.journal.find_open(WEB) == []


def test_next_update_finishes_an_attempt_killed_while_applying(make: Any) -> None:
    h = make()
    asset = FakeInventory(h.world).asset("web")
    attempt = h.store.journal.open_attempt(
        asset_id=WEB,
        from_version="1.0.0",
        to_version="1.0.2",
        change_type="patch",
        idempotency_key="killed-run",
    )
    h.store.journal.advance(
        attempt.id,
        Phase.SNAPSHOTTED,
        snapshot={
            "asset": asset.model_dump(mode="json"),
            "snapshot": Snapshot(asset_id=WEB, version="1.0.0").model_dump(mode="json"),
        },
    )
    h.store.journal.advance(attempt.id, Phase.APPLYING)
    h.world.running[WEB] = "1.0.2"
    with use_runtime(h.runtime):
        result = update_asset(WEB, approval="defer")
    # Recovery rolled the unverified change back (no quarantine: it was never judged), then the
    # run updated normally.
    assert h.store.journal.get(attempt.id).outcome is Outcome.ROLLED_BACK
    assert not h.store.quarantine.is_quarantined(WEB, "1.0.2")
    assert result["outcome"] == "updated" and h.running == "1.0.2"


def test_manual_rollback_returns_to_previous_version_and_quarantines_current(make: Any) -> None:
    h = make()
    with use_runtime(h.runtime):
        update_asset(WEB, approval="defer")
        assert h.running == "1.0.2"
        result = rollback_asset(WEB, actor="dave")
    assert result["outcome"] == "rolled_back"
    assert h.running == "1.0.0"
    assert h.store.quarantine.is_quarantined(WEB, "1.0.2")


def test_rollback_budget_halts_the_asset(make: Any) -> None:
    h = make(config="rollback:\n  max_rollbacks: 1\n  within: 24h\n")
    h.world.broken.update({"1.0.2", "1.0.1"})
    with use_runtime(h.runtime):
        assert update_asset(WEB, approval="defer")["outcome"] == "rolled_back"
        halted = update_asset(WEB, approval="defer")
    assert halted["outcome"] == "skipped"
    assert any("halted" in reason for reason in halted["reasons"])
    assert h.running == "1.0.0"


def test_dry_run_changes_nothing(make: Any) -> None:
    h = make()
    with use_runtime(h.runtime):
        result = update_asset(WEB, dry_run=True)
    assert result["outcome"] == "skipped" and result["to"] == "1.0.2"
    assert h.running == "1.0.0" and h.store.journal.history(WEB) == []


def _events_for(asset_id: str, want: set[str], deadline: float = 30) -> set[str]:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    end = time.monotonic() + deadline
    seen: set[str] = set()
    with get_client(sync_client=True) as client:
        while time.monotonic() < end and not want <= seen:
            page = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(prefix=["safe-updater.update."]),
                    resource=EventResourceFilter(id=[f"safe-updater.asset.{asset_id}"]),
                ),
                limit=50,
            )
            seen = {e.event for e in page.events}
            time.sleep(0.5)
    return seen


def test_runs_emit_update_events_and_a_report_artifact(make: Any) -> None:
    from prefect.artifacts import Artifact

    from safe_updater.tasks.recording import artifact_key

    h = make()
    h.world.broken.add("1.0.2")
    with use_runtime(h.runtime):
        update_asset(WEB, approval="defer")
    want = {"safe-updater.update.applied", "safe-updater.update.rolled-back"}
    assert want <= _events_for(WEB, want)
    artifact = Artifact.get(artifact_key(WEB))
    assert artifact is not None and artifact.type == "table"
    assert "rolled_back" in str(artifact.data)


def test_a_second_run_of_a_busy_asset_changes_nothing_and_says_why(make: Any) -> None:
    from safe_updater.domain.errors import ConflictError

    h = make()
    # Another live run holds the asset: a new run refuses and changes nothing.
    with (
        use_runtime(h.runtime),
        h.store.locks.hold(WEB),
        pytest.raises(ConflictError, match="being changed by another run"),
    ):
        update_asset(WEB, approval="defer")
    assert h.running == "1.0.0"
    assert h.store.journal.history(WEB) == []


def test_report_is_published_after_the_lock_is_freed_and_its_failure_is_not_fatal(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The artifacts go out after the asset lock (and any fleet slot) is released, so a slow
    server does not hold up the next run; an artifact the server refuses fails nothing."""
    from safe_updater.flows import steps

    h = make()
    lock_held_while_publishing: list[bool] = []

    def refused(asset_id: str, rows: list[dict[str, Any]], summary: str) -> None:
        lock_held_while_publishing.append(h.store.locks.is_held(asset_id))
        raise RuntimeError("artifact refused: 503 Service Unavailable")

    monkeypatch.setattr(steps, "publish_report", refused)
    with use_runtime(h.runtime):
        state = update_asset(WEB, approval="defer", return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["outcome"] == "updated"
    assert h.running == "1.0.2"
    assert lock_held_while_publishing == [False]
    [attempt] = h.store.journal.history(WEB)
    assert attempt.outcome is Outcome.UPDATED and attempt.phase is Phase.CLOSED


class _EngineRestartProbe:
    """Passes twice, then the container engine is away for two rounds, then the container is
    found stopped (the daemon stopped it on its way down; it has no restart policy)."""

    name = "docker"

    def __init__(self) -> None:
        self.calls = 0

    def check(self, at: Any) -> Any:
        from safe_updater.adapters.errors import EngineUnavailableError
        from safe_updater.domain.health import Sample

        self.calls += 1
        if self.calls <= 2:
            return Sample(at=at, check=self.name, ok=True, detail="running")
        if self.calls <= 4:
            raise EngineUnavailableError("Docker engine unavailable: connection refused")
        return Sample(at=at, check=self.name, ok=False, detail="container exited (0)")


def test_an_engine_restart_during_verification_rolls_back_without_quarantine(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make()
    planner = h.runtime.health
    normal_plan = planner.plan
    monkeypatch.setattr(
        planner, "plan", lambda asset, applied: ([_EngineRestartProbe()], planner.policy)
    )
    with use_runtime(h.runtime):
        result = update_asset(WEB, approval="defer")
    assert result["outcome"] == "rolled_back", result
    assert h.running == "1.0.0"
    why = " ".join(result["reasons"])
    assert "after the container engine was unavailable" in why and "not quarantined" in why, why
    assert not h.store.quarantine.is_quarantined(WEB, "1.0.2")
    # The version was not barred: the next run (engine steady) applies it.
    monkeypatch.setattr(planner, "plan", normal_plan)
    with use_runtime(h.runtime):
        again = update_asset(WEB, approval="defer")
    assert again["outcome"] == "updated" and h.running == "1.0.2", again
    assert h.store.audit.verify().ok
