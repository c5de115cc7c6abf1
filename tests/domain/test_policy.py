"""decide(): actions per change type, targets, filters, quarantine, release age, windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from safe_updater.domain.assets import AssetKind
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.policy import (
    DIGEST,
    QUARANTINED_REASON,
    UNKNOWN_AGE_REASON,
    Action,
    AssetContext,
    CandidateDecision,
    Decision,
    EffectivePolicy,
    decide,
)
from safe_updater.domain.versions import ChangeType
from safe_updater.domain.windows import MaintenanceWindow

NOW = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)  # a Wednesday
CTX = AssetContext(asset_id="docker:local/web", kind=AssetKind.DOCKER, name="web")
TAGS = ["1.2.2", "1.2.4", "1.2.5", "1.3.0", "1.4.0", "2.0.0", "latest", "1.3.0-rc.1"]


def policy(**changes: Any) -> EffectivePolicy:
    return EffectivePolicy.model_validate(changes)


def run(
    current: str = "1.2.3",
    tags: list[str] | None = None,
    pol: EffectivePolicy | None = None,
    **kwargs: Any,
) -> Decision:
    return decide(CTX, current, TAGS if tags is None else tags, pol or policy(), now=NOW, **kwargs)


def by_tag(decision: Decision) -> dict[str, CandidateDecision]:
    return {c.tag: c for c in decision.candidates}


@pytest.mark.parametrize(
    ("actions", "auto", "approval"),
    [
        # defaults: patch auto, minor approve, major skip
        ({}, "1.2.5", "1.4.0"),
        ({"patch": "auto", "minor": "auto", "major": "auto"}, "2.0.0", None),
        ({"patch": "auto", "minor": "auto", "major": "approve"}, "1.4.0", "2.0.0"),
        ({"patch": "skip", "minor": "approve", "major": "skip"}, None, "1.4.0"),
        ({"patch": "approve", "minor": "approve", "major": "approve"}, None, "2.0.0"),
        ({"patch": "skip", "minor": "skip", "major": "skip"}, None, None),
        ({"patch": "approve", "minor": "skip", "major": "skip"}, None, "1.2.5"),
        ({"patch": "auto", "minor": "skip", "major": "approve"}, "1.2.5", "2.0.0"),
    ],
)
def test_action_per_change_type_picks_targets(
    actions: dict[str, str], auto: str | None, approval: str | None
) -> None:
    decision = run(pol=policy(**actions))
    assert (decision.auto_target, decision.approval_target) == (auto, approval)


def test_patch_is_applied_while_minor_waits_for_approval() -> None:
    decision = run(tags=["1.2.4", "1.3.0"])
    assert decision.auto_target == "1.2.4"
    assert decision.auto_change_type is ChangeType.PATCH
    assert decision.approval_target == "1.3.0"
    assert decision.approval_change_type is ChangeType.MINOR
    assert any("waits for approval" in reason for reason in decision.reasons)


def test_approval_target_must_be_newer_than_auto_target() -> None:
    # minor auto, patch approve: the approved patch would be older than the auto minor.
    decision = run(tags=["1.2.4", "1.3.0"], pol=policy(patch="approve", minor="auto"))
    assert decision.auto_target == "1.3.0"
    assert decision.approval_target is None


def test_every_tag_gets_a_reason_and_dropped_tags_have_no_action() -> None:
    decision = run()
    assert sorted(c.tag for c in decision.candidates) == sorted(TAGS)
    assert all(c.reason for c in decision.candidates)
    cands = by_tag(decision)
    assert cands["1.2.2"].change_type is ChangeType.DOWNGRADE
    assert cands["1.2.2"].action is None and not cands["1.2.2"].accepted
    assert cands["2.0.0"].action is Action.SKIP and not cands["2.0.0"].accepted
    assert "skipped by the policy" in cands["2.0.0"].reason
    assert cands["1.2.4"].accepted and "1.2.5 is newer and chosen" in cands["1.2.4"].reason


def test_prerelease_only_considered_when_prerelease_action_is_not_skip() -> None:
    assert not by_tag(run())["1.3.0-rc.1"].accepted
    decision = run(tags=["1.3.0-rc.1"], pol=policy(prerelease="approve", minor="auto"))
    cand = by_tag(decision)["1.3.0-rc.1"]
    # A pre-release of a minor step is a MINOR change, capped by the prerelease action.
    assert cand.accepted and cand.action is Action.APPROVE
    assert decision.auto_target is None and decision.approval_target == "1.3.0-rc.1"
    assert "pre-release" in cand.reason


def test_prerelease_change_type_uses_prerelease_action() -> None:
    decision = run("1.2.3-rc.1", ["1.2.3-rc.2"], pol=policy(prerelease="auto"))
    assert decision.auto_target == "1.2.3-rc.2"
    assert decision.auto_change_type is ChangeType.PRERELEASE


@pytest.mark.parametrize(
    ("changes", "tag", "accepted", "reason_part"),
    [
        ({"deny": ["1.2.5"]}, "1.2.5", False, "denied by pattern '1.2.5'"),
        ({"deny": ["1.2.*"]}, "1.2.4", False, "denied by pattern"),
        ({"deny": ["re:1\\.2\\.[45]"]}, "1.2.5", False, "denied by pattern"),
        ({"deny": ["re:1\\.2"]}, "1.2.5", True, "applied automatically"),  # whole-tag match
        ({"allow": ["1.3.*"]}, "1.2.5", False, "matches no allow pattern"),
        ({"allow": ["1.3.*"]}, "1.3.0", True, "need approval"),
        ({"pin": "1.2.4"}, "1.2.5", False, "outside the pin '1.2.4'"),
        ({"pin": "1.2.4"}, "1.2.4", True, "applied automatically"),
        ({"pin": "1.2.x"}, "1.3.0", False, "outside the pin"),
        ({"pin": "1.x"}, "1.4.0", True, "need approval"),
        ({"pin": "1.x"}, "2.0.0", False, "outside the pin"),
        ({"pin": "~1.2.3"}, "1.2.5", True, "applied automatically"),
        ({"pin": "^1.2"}, "1.4.0", True, "need approval"),
    ],
)
def test_allow_deny_and_pin(
    changes: dict[str, Any], tag: str, accepted: bool, reason_part: str
) -> None:
    cand = by_tag(run(pol=policy(major="approve", **changes)))[tag]
    assert cand.accepted is accepted
    assert reason_part in cand.reason


def test_pin_moves_auto_target_to_the_newest_admitted_version() -> None:
    decision = run(pol=policy(pin="1.2.4", minor="auto"))
    assert decision.auto_target == "1.2.4"
    assert decision.approval_target is None


@pytest.mark.parametrize("entry", ["1.2.5", "v1.2.5", "1.2.5.0"])
def test_quarantined_version_is_dropped_and_next_best_taken(entry: str) -> None:
    decision = run(quarantined=[entry])
    cand = by_tag(decision)["1.2.5"]
    assert not cand.accepted and cand.reason == QUARANTINED_REASON
    assert decision.auto_target == "1.2.4"


def test_quarantine_entries_that_are_not_tags_are_ignored() -> None:
    decision = run(quarantined=["sha256:" + "a" * 64, "not a tag!"])
    assert decision.auto_target == "1.2.5"


@pytest.mark.parametrize(
    ("released_ago", "accepted", "reason_part"),
    [
        (timedelta(days=4), True, "applied automatically"),
        (timedelta(days=3), True, "applied automatically"),
        (timedelta(days=2), False, "released 48h ago"),
        (timedelta(hours=-1), False, "released 0s ago"),  # clock skew: published "in the future"
    ],
)
def test_min_release_age(released_ago: timedelta, accepted: bool, reason_part: str) -> None:
    pol = policy(min_release_age="3d")
    decision = run(tags=["1.2.4"], pol=pol, release_times={"1.2.4": NOW - released_ago})
    cand = by_tag(decision)["1.2.4"]
    assert cand.accepted is accepted
    assert reason_part in cand.reason


def test_min_release_age_unknown_time_blocks_the_tag_only() -> None:
    pol = policy(min_release_age="1d")
    decision = run(
        tags=["1.2.4", "1.2.5"], pol=pol, release_times={"1.2.4": NOW - timedelta(days=9)}
    )
    assert by_tag(decision)["1.2.5"].reason == UNKNOWN_AGE_REASON
    assert decision.auto_target == "1.2.4"
    assert run(tags=["1.2.4"], pol=pol).auto_target is None  # no release_times at all


def test_young_newest_patch_falls_back_to_older_patch() -> None:
    times = {"1.2.4": NOW - timedelta(days=5), "1.2.5": NOW - timedelta(hours=1)}
    decision = run(tags=["1.2.4", "1.2.5"], pol=policy(min_release_age="2d"), release_times=times)
    assert decision.auto_target == "1.2.4"


def test_window_closed_still_computes_targets_and_says_when() -> None:
    window = MaintenanceWindow.parse("22:00-02:00 Europe/Berlin")
    decision = run(tags=["1.2.4"], pol=policy(windows=[window]))
    assert decision.auto_target == "1.2.4"
    assert decision.window_open is False
    assert decision.next_window == datetime(2025, 3, 5, 21, 0, tzinfo=UTC)
    assert any(
        r.startswith("outside maintenance window; next opens at 2025-03-05T22:00+01:00")
        for r in decision.reasons
    )


def test_window_open() -> None:
    window = MaintenanceWindow.parse("11:00-13:00 UTC")
    decision = run(tags=["1.2.4"], pol=policy(windows=[window]))
    assert decision.window_open and decision.next_window is None
    assert any(r.startswith("inside maintenance window") for r in decision.reasons)


def test_no_windows_means_always_open() -> None:
    decision = run()
    assert decision.window_open and decision.next_window is None


@pytest.mark.parametrize(
    ("action", "auto", "approval"),
    [("auto", "latest", None), ("approve", None, "latest"), ("skip", None, None)],
)
def test_digest_only_tag_follows_digest_action(
    action: str, auto: str | None, approval: str | None
) -> None:
    decision = run(
        "latest", ["latest", "stable", "1.2.3"], policy(digest=action), digest_changed=True
    )
    assert (decision.auto_target, decision.approval_target) == (auto, approval)
    cand = by_tag(decision)["latest"]
    assert cand.change_type == DIGEST
    assert not by_tag(decision)["stable"].accepted


def test_digest_only_unchanged_means_no_update() -> None:
    decision = run("latest", ["latest", "stable"])
    assert decision.auto_target is None and decision.approval_target is None
    assert any("tracked by digest" in r for r in decision.reasons)


def test_digest_change_of_a_version_tag_ranks_below_newer_versions() -> None:
    decision = run("1.2.3", ["1.2.3", "1.3.0"], digest_changed=True)
    assert decision.auto_target == "1.2.3" and decision.auto_change_type == DIGEST
    assert decision.approval_target == "1.3.0"
    newer_patch = run("1.2.3", ["1.2.3", "1.2.4"], digest_changed=True)
    assert newer_patch.auto_target == "1.2.4"


def test_digest_candidate_is_json_literal() -> None:
    decision = run("latest", ["latest"], digest_changed=True)
    data = decision.model_dump(mode="json")
    assert data["auto_change_type"] == "digest"
    assert data["candidates"][0]["change_type"] == "digest"
    assert data["candidates"][0]["action"] == "auto"


def test_quarantined_digest_tag_is_not_reapplied() -> None:
    decision = run("latest", ["latest"], digest_changed=True, quarantined=["latest"])
    assert decision.auto_target is None
    assert by_tag(decision)["latest"].reason == QUARANTINED_REASON


def test_invalid_current_tag_is_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        run("not a tag!")


def test_helm_chart_versions_with_plus_are_read() -> None:
    ctx = CTX.model_copy(update={"kind": AssetKind.HELM, "asset_id": "helm:c/prod/api"})
    decision = decide(ctx, "1.2.3+build.1", ["1.2.4+build.2"], policy(), now=NOW)
    assert decision.auto_target == "1.2.4+build.2"


def test_no_newer_tag_reason() -> None:
    decision = run(tags=["1.2.2", "1.2.3"])
    assert decision.auto_target is None
    assert "no update: no tag is newer than 1.2.3" in decision.reasons


def test_decision_requires_aware_now_when_windows_exist() -> None:
    window = MaintenanceWindow.parse("22:00-02:00")
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(CTX, "1.2.3", ["1.2.4"], policy(windows=[window]), now=datetime(2025, 1, 1))
