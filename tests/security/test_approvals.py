"""Only configured approvers may approve; a stranger's input is refused and recorded; with
``allow_self_approval: false`` whoever started an update may not approve it; the approver is in
the audit chain, and the chain verifies (issue 7).

The flows run against the session's Prefect server and a real SQLite store, with the stateful
fakes of tests/flows/test_update_asset.py standing in for Docker and the registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import resume_flow_run
from prefect.client.orchestration import get_client

from safe_updater.adapters.store import StateStore
from safe_updater.config import parse_config_text
from safe_updater.domain.assets import AssetKind
from safe_updater.domain.errors import PolicyViolationError
from safe_updater.domain.journal import AuditRecord, Outcome
from safe_updater.domain.policy import (
    NO_APPROVER_NAME,
    NOT_AN_APPROVER,
    SELF_APPROVAL,
    ApprovalRule,
    AssetContext,
    PolicyConfig,
    resolve_policy,
)
from safe_updater.flows.approve_asset import decide_waiting_update
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
# 1.0.1 -> 1.1.0 is a minor update: it needs approval under the default policy.
TAGS = ["1.0.1", "1.1.0"]


def _config(*, approvers: str = "[alice, bob]", self_approval: bool | None = None) -> str:
    text = (
        "approvals:\n  poll_interval: 1s\n"
        f"policy:\n  default:\n    approval:\n      approvers: {approvers}\n"
    )
    if self_approval is not None:
        text += f"      allow_self_approval: {str(self_approval).lower()}\n"
    return text


class Harness:
    def __init__(self, tmp_path: Path, config: str) -> None:
        self.world = FakeWorld(running={WEB: "1.0.1"})
        self.clock = FakeClock()
        self.store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
        self.runtime = Runtime(
            config=parse_config_text(config),
            store=self.store,
            registry=FakeRegistry(TAGS),
            inventories=[FakeInventory(self.world)],
            updaters={(AssetKind.DOCKER, "local"): FakeUpdater(self.world)},
            health=FakeHealthPlanner(self.world),
            clock=self.clock,
            sleep=self.clock.sleep,
            closers=[self.store.close],
        )

    @property
    def running(self) -> str:
        return self.world.running[WEB]

    def audit(self, event: str | None = None) -> list[AuditRecord]:
        return [r for r in self.store.audit.export() if event is None or r.event == event]


@pytest.fixture
def make(tmp_path: Path, prefect_server: None) -> Iterator[Callable[..., Harness]]:
    """Harnesses for flow runs, which need the session's Prefect server."""
    made: list[Harness] = []

    def factory(config: str) -> Harness:
        harness = Harness(tmp_path, config)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.runtime.close()


# --- the rule itself ------------------------------------------------------------------------------


def test_refusal_reasons() -> None:
    rule = ApprovalRule(approvers=["alice", "bob"], allow_self_approval=False)
    assert rule.refusal("mallory", approve=True, requested_by="alice") == NOT_AN_APPROVER
    assert rule.refusal("mallory", approve=False, requested_by="alice") == NOT_AN_APPROVER
    assert rule.refusal("  ", approve=True, requested_by=None) == NO_APPROVER_NAME
    assert rule.refusal("alice", approve=True, requested_by="alice") == SELF_APPROVAL
    assert rule.refusal("alice", approve=True, requested_by=" ALICE ") == SELF_APPROVAL
    assert rule.refusal("alice", approve=False, requested_by="alice") is None  # withdrawing
    assert rule.refusal("bob", approve=True, requested_by="alice") is None
    open_rule = ApprovalRule()  # the default: anyone, and self-approval allowed
    assert open_rule.allow_self_approval is True
    assert open_rule.refusal("alice", approve=True, requested_by="alice") is None


def test_self_approval_is_set_by_the_config_default_and_overrides() -> None:
    config = PolicyConfig.model_validate(
        {
            "default": {"approval": {"allow_self_approval": False, "quorum": 2}},
            "overrides": [
                {"match": {"asset": "docker:*/dev-*"}, "approval": {"allow_self_approval": True}}
            ],
        }
    )

    def rule(name: str) -> ApprovalRule:
        ctx = AssetContext(asset_id=f"docker:local/{name}", kind=AssetKind.DOCKER, name=name)
        return resolve_policy(config, ctx).approval

    assert rule("web").allow_self_approval is False
    dev = rule("dev-web")
    assert dev.allow_self_approval is True and dev.quorum == 2  # other keys kept


# --- a paused run ---------------------------------------------------------------------------------


def _start(**kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    return start_in_thread(update_asset, **kwargs)


def _wait_paused(h: Harness, *, refused: int = 0, deadline: float = 90) -> UUID:
    """The run's id once it is paused for approval and ``refused`` refusals are recorded (a
    refused input resumes the run, which then pauses again)."""
    end = time.monotonic() + deadline
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            if len(h.audit("approval.refused")) >= refused:
                for run in paused_runs(client):
                    return run.id
            time.sleep(0.3)
    raise AssertionError(f"no run paused for approval after {refused} refusals")


def _answer(run_id: UUID, approver: str, approve: bool = True) -> None:
    resume_flow_run(run_id, run_input={"approve": approve, "approver": approver, "reason": "t"})


def test_a_strangers_input_is_refused_and_recorded_and_the_run_keeps_waiting(
    make: Callable[..., Harness],
) -> None:
    h = make(_config())
    with use_runtime(h.runtime):
        thread, box = _start(asset_id=WEB, approval="pause", actor="dave")
        _answer(_wait_paused(h), "mallory")
        run_id = _wait_paused(h, refused=1)
        assert h.running == "1.0.1"  # nothing applied on a refused input
        _answer(run_id, "mallory", approve=False)  # nor may a stranger reject it
        run_id = _wait_paused(h, refused=2)
        assert thread.is_alive()
        _answer(run_id, "alice")
        thread.join(90)
    assert "error" not in box, box.get("error")
    assert box["result"]["outcome"] == "updated" and h.running == "1.1.0"
    refused = h.audit("approval.refused")
    assert [(r.actor, r.data["reason"], r.data["approve"]) for r in refused] == [
        ("mallory", NOT_AN_APPROVER, True),
        ("mallory", NOT_AN_APPROVER, False),
    ]
    _assert_approved_by(h, "alice", started_by="dave")


def test_self_approval_is_refused_when_configured(make: Callable[..., Harness]) -> None:
    h = make(_config(self_approval=False))
    with use_runtime(h.runtime):
        thread, box = _start(asset_id=WEB, approval="pause", actor="alice")
        _answer(_wait_paused(h), "alice")
        run_id = _wait_paused(h, refused=1)
        assert h.running == "1.0.1" and thread.is_alive()
        _answer(run_id, "bob")
        thread.join(90)
    assert "error" not in box, box.get("error")
    assert box["result"]["outcome"] == "updated" and h.running == "1.1.0"
    [refused] = h.audit("approval.refused")
    assert refused.actor == "alice"
    assert refused.data["reason"] == "self-approval is not allowed"
    assert refused.data["requested_by"] == "alice"
    _assert_approved_by(h, "bob", started_by="alice")


def _assert_approved_by(h: Harness, approver: str, *, started_by: str) -> None:
    """The approver is in the chain (its own record and the update's), and the chain holds."""
    [approved] = h.audit("approval.approved")
    assert approved.actor == approver and approved.asset_id == WEB
    [started] = h.audit("update.started")
    assert started.actor == started_by and started.data["approvers"] == [approver]
    events = [r.event for r in h.audit()]
    assert events.index("approval.approved") < events.index("update.started")
    verification = h.store.audit.verify()
    assert verification.ok and verification.records == len(events), verification.problem


# --- a deferred request, decided with `safe-updater approve ASSET` -------------------------------


def test_deferred_self_approval_is_refused_and_the_request_keeps_waiting(
    make: Callable[..., Harness],
) -> None:
    h = make(_config(self_approval=False))
    with use_runtime(h.runtime):
        waiting = update_asset(WEB, approval="defer", actor="alice")
        assert waiting["outcome"] == "awaiting_approval"
        with pytest.raises(PolicyViolationError, match="self-approval is not allowed") as info:
            decide_waiting_update(WEB, approve=True, approver="alice")
        assert "another approver must approve it" in str(info.value)
        assert h.running == "1.0.1"
        assert h.store.journal.history(WEB, limit=1)[0].outcome is Outcome.AWAITING_APPROVAL
        approved = decide_waiting_update(WEB, approve=True, approver="bob")
    assert approved["outcome"] == "updated" and h.running == "1.1.0"
    [refused] = h.audit("approval.refused")
    assert (refused.actor, refused.data["reason"]) == ("alice", SELF_APPROVAL)
    assert refused.data["requested_by"] == "alice"
    [approval] = h.audit("approval.approved")
    assert approval.actor == "bob"
    assert h.store.audit.verify().ok


def test_deferred_stranger_is_refused_before_anything_is_recorded_as_approved(
    make: Callable[..., Harness],
) -> None:
    h = make(_config())
    with use_runtime(h.runtime):
        update_asset(WEB, approval="defer", actor="dave")
        for approve in (True, False):
            with pytest.raises(PolicyViolationError, match="not a configured approver"):
                decide_waiting_update(WEB, approve=approve, approver="mallory")
        assert h.store.journal.history(WEB, limit=1)[0].outcome is Outcome.AWAITING_APPROVAL
        rejected = decide_waiting_update(WEB, approve=False, approver="alice", reason="later")
    assert rejected["outcome"] == "rejected" and h.running == "1.0.1"
    assert [r.actor for r in h.audit("approval.refused")] == ["mallory", "mallory"]
    assert h.audit("approval.approved") == []  # a refused approver never shows as approving
    assert [r.actor for r in h.audit("approval.rejected")] == ["alice"]
    assert h.store.audit.verify().ok


def test_self_approval_stays_allowed_by_default(make: Callable[..., Harness]) -> None:
    h = make(_config())
    with use_runtime(h.runtime):
        update_asset(WEB, approval="defer", actor="alice")
        approved = decide_waiting_update(WEB, approve=True, approver="alice")
    assert approved["outcome"] == "updated" and h.running == "1.1.0"
    assert h.audit("approval.refused") == []


def test_requester_withdrawing_their_own_request_is_allowed(make: Callable[..., Harness]) -> None:
    h = make(_config(self_approval=False))
    with use_runtime(h.runtime):
        update_asset(WEB, approval="defer", actor="alice")
        rejected = decide_waiting_update(WEB, approve=False, approver="alice")
    assert rejected["outcome"] == "rejected" and h.running == "1.0.1"
