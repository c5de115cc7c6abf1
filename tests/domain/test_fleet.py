"""Fleet plans: waves by group, canaries first, windows, failure budgets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from safe_updater.domain.fleet import (
    UNGROUPED,
    Disposition,
    FleetItem,
    needs_approval,
    plan_fleet,
    wave_halt_reason,
)

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def item(
    name: str, group: str | None = None, action: str | None = "auto", **kw: object
) -> FleetItem:
    return FleetItem(
        asset=f"docker:local/{name}",
        current="1.0.0",
        target="1.0.1" if action in ("auto", "approve") else None,
        change_type="patch",
        action=action,
        group=group,
        **kw,  # type: ignore[arg-type]
    )


def test_canaries_first_then_configured_order_then_alphabetical_then_ungrouped() -> None:
    plan = plan_fleet(
        [
            item("a", "zeta"),
            item("b"),
            item("c", "prod"),
            item("d", "canary"),
            item("e", "alpha"),
            item("f", "canary-eu"),
        ],
        now=NOW,
        canary=["canary", "canary-eu"],
        order=["prod"],
    )
    assert [w.name for w in plan.waves] == [
        "canary",
        "canary-eu",
        "prod",
        "alpha",
        "zeta",
        UNGROUPED,
    ]
    assert [w.canary for w in plan.waves] == [True, True, False, False, False, False]
    assert [p.wave for p in plan.assets] == [
        "zeta",
        UNGROUPED,
        "prod",
        "canary",
        "alpha",
        "canary-eu",
    ]


def test_nothing_to_do_errors_and_other_groups_stay_out_of_the_waves() -> None:
    plan = plan_fleet(
        [
            item("a", "web"),
            item("b", "web", action=None),
            item("c", "db"),
            item("d", "web", action="error"),
        ],
        now=NOW,
        groups=["web"],
    )
    assert [w.asset_ids for w in plan.waves] == [["docker:local/a"]]
    by_name = {p.item.asset.rsplit("/", 1)[1]: p for p in plan.assets}
    assert by_name["b"].disposition is Disposition.NONE
    assert by_name["c"].disposition is Disposition.NONE
    assert by_name["c"].note == "group db is not in this run"
    assert by_name["d"].disposition is Disposition.ERROR


def test_closed_window_waits_when_it_opens_within_window_wait_else_defers() -> None:
    soon = item("a", window_open=False, next_window=NOW + timedelta(minutes=30))
    late = item("b", window_open=False, next_window=NOW + timedelta(hours=5))
    never = item("c", window_open=False, next_window=None)
    plan = plan_fleet([soon, late, never], now=NOW, window_wait=timedelta(hours=1))
    wait, defer, no_opening = plan.assets
    assert wait.disposition is Disposition.WAIT
    assert wait.start_at == NOW + timedelta(minutes=30)
    assert wait.wave == UNGROUPED
    assert defer.disposition is Disposition.DEFER
    assert "deferred to the next scheduled run" in defer.note
    assert "beyond the fleet's window_wait of 1h" in defer.note
    assert no_opening.disposition is Disposition.DEFER
    assert [w.asset_ids for w in plan.waves] == [["docker:local/a"]]


def test_approval_is_needed_for_approve_actions_also_when_they_wait_for_a_window() -> None:
    plan = plan_fleet(
        [
            item("a", action="approve"),
            item("b", action="approve", window_open=False, next_window=NOW + timedelta(minutes=5)),
            item("c"),
        ],
        now=NOW,
        window_wait=timedelta(hours=1),
    )
    assert [needs_approval(p) for p in plan.assets] == [True, True, False]
    assert [p.item.asset for p in plan.needs_approval] == ["docker:local/a"]


def test_scan_rows_become_items() -> None:
    row = {
        "asset": "docker:local/web",
        "group": "",
        "current": "1.0.0",
        "target": "1.1.0",
        "change_type": "minor",
        "action": "approve (waits for window)",
        "window_open": False,
        "next_window": "2026-11-25T03:30:00+00:00",
        "reasons": "minor updates need approval",
    }
    parsed = FleetItem.from_row(row)
    assert parsed.action == "approve"
    assert parsed.group is None
    assert parsed.next_window == NOW + timedelta(minutes=30)


def test_failure_budget_counts_rollbacks_failures_and_crashes_only() -> None:
    plan = plan_fleet([item("a", "web"), item("b", "web"), item("c", "canary")], now=NOW)
    canary, web = plan.waves
    assert wave_halt_reason(canary, {"docker:local/c": "updated"}, 5) is None
    reason = wave_halt_reason(canary, {"docker:local/c": "rolled_back"}, 5)
    assert reason is not None and reason.startswith("canary wave canary: 1 of 1")
    ok = {"docker:local/a": "rolled_back", "docker:local/b": "skipped"}
    assert wave_halt_reason(web, ok, 1) is None
    both = {"docker:local/a": "rolled_back", "docker:local/b": "crashed"}
    reason = wave_halt_reason(web, both, 1)
    assert reason == (
        "wave web: 2 of 2 updates failed or rolled back (docker:local/a, docker:local/b), "
        "more than its failure budget of 1; the remaining waves were not started"
    )
