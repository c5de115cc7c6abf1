"""Properties of decide(): never a downgrade, never a quarantined or denied version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from safe_updater.domain.assets import AssetKind
from safe_updater.domain.patterns import first_match
from safe_updater.domain.policy import Action, AssetContext, EffectivePolicy, decide
from safe_updater.domain.versions import classify, is_newer, parse_tag

NOW = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
CTX = AssetContext(asset_id="docker:local/app", kind=AssetKind.DOCKER, name="app")

numbers = st.integers(min_value=0, max_value=12)
suffixes = st.sampled_from(["", "-alpine", "-rc.1", "-beta2", "-debian-12-r3"])
prefixes = st.sampled_from(["", "v"])


@st.composite
def tags(draw: st.DrawFn) -> str:
    parts = draw(st.lists(numbers, min_size=1, max_size=4))
    return draw(prefixes) + ".".join(map(str, parts)) + draw(suffixes)


mixed_tags = st.one_of(tags(), st.sampled_from(["latest", "stable", "2024.01.31", "main"]))
actions = st.sampled_from(list(Action))


@st.composite
def policies(draw: st.DrawFn) -> EffectivePolicy:
    return EffectivePolicy.model_validate(
        {
            "patch": draw(actions),
            "minor": draw(actions),
            "major": draw(actions),
            "prerelease": draw(actions),
            "digest": draw(actions),
            "deny": draw(
                st.lists(st.sampled_from(["1.*", "*-alpine", "re:[0-9]+\\.2.*"]), max_size=2)
            ),
            "min_release_age": draw(st.sampled_from([None, "1d"])),
        }
    )


@settings(max_examples=300, deadline=None)
@given(
    current=tags(),
    candidates=st.lists(mixed_tags, max_size=25),
    policy=policies(),
    quarantine_picks=st.sets(st.integers(min_value=0, max_value=24), max_size=5),
    ages=st.lists(st.integers(min_value=0, max_value=72), min_size=25, max_size=25),
    digest_changed=st.booleans(),
)
def test_decide_never_picks_a_downgrade_quarantined_or_denied_version(
    current: str,
    candidates: list[str],
    policy: EffectivePolicy,
    quarantine_picks: set[int],
    ages: list[int],
    digest_changed: bool,
) -> None:
    quarantined = [candidates[i] for i in quarantine_picks if i < len(candidates)]
    release_times = {tag: NOW - timedelta(hours=ages[i]) for i, tag in enumerate(candidates)}
    decision = decide(
        CTX,
        current,
        candidates,
        policy,
        now=NOW,
        quarantined=quarantined,
        release_times=release_times,
        digest_changed=digest_changed,
    )
    current_version = parse_tag(current)
    for target, action in (
        (decision.auto_target, Action.AUTO),
        (decision.approval_target, Action.APPROVE),
    ):
        if target is None:
            continue
        chosen = next(c for c in decision.candidates if c.tag == target and c.accepted)
        assert chosen.action is action
        if target != current:
            assert is_newer(current_version, target), (current, target)
        else:
            assert digest_changed
        assert target not in quarantined
        assert not any(
            parse_tag(q).family == parse_tag(target).family
            and parse_tag(q).sort_key == parse_tag(target).sort_key
            for q in quarantined
        )
        assert first_match(policy.deny, target) is None
        if policy.min_release_age is not None:
            assert NOW - release_times[target] >= policy.min_release_age
    if decision.auto_target and decision.approval_target:
        assert is_newer(decision.auto_target, decision.approval_target) or (
            decision.auto_target == current and decision.approval_target != current
        )
    # every tag given is explained exactly once (repeats are explained as repeats)
    assert len(decision.candidates) == len(candidates) + (
        1 if digest_changed and current not in candidates else 0
    )
    assert all(c.reason for c in decision.candidates)


@settings(max_examples=200, deadline=None)
@given(current=tags(), candidate=tags())
def test_accepted_candidates_are_upgrades(current: str, candidate: str) -> None:
    policy = EffectivePolicy.model_validate(
        {"patch": "auto", "minor": "auto", "major": "auto", "prerelease": "auto"}
    )
    decision = decide(CTX, current, [candidate], policy, now=NOW)
    for cand in decision.candidates:
        if cand.accepted:
            assert classify(current, cand.tag).is_upgrade
