"""Properties of candidate ranking that must hold for any current tag and tag list."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_versions_properties import version_tags

from safe_updater.domain.versions import ChangeType, classify, parse_tags, rank_candidates

tag_lists = st.lists(
    st.one_of(version_tags(), st.text(alphabet="0123456789.-_valpinerc ", max_size=12)),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(version_tags(), tag_lists, st.booleans())
def test_ranking_never_proposes_a_downgrade(current: str, tags: list[str], allow: bool) -> None:
    ranking = rank_candidates(current, tags, allow_prerelease=allow)
    for verdict in ranking.accepted:
        assert verdict.change_type is not None and verdict.change_type.is_upgrade
        assert classify(current, verdict.tag) is verdict.change_type
        assert classify(verdict.tag, current) is ChangeType.DOWNGRADE
        assert verdict.version is not None
        assert verdict.version.family == ranking.current.family
        assert allow or not verdict.version.is_prerelease


@settings(max_examples=300, deadline=None)
@given(version_tags(), tag_lists, st.booleans())
def test_ranking_judges_every_tag_once_and_orders_newest_first(
    current: str, tags: list[str], allow: bool
) -> None:
    ranking = rank_candidates(current, tags, allow_prerelease=allow)
    assert sorted(v.tag for v in ranking.candidates) == sorted(tags)
    assert all(verdict.reason for verdict in ranking.candidates)
    accepted = ranking.accepted
    assert ranking.candidates[: len(accepted)] == accepted  # accepted ones come first
    keys = [v.version.sort_key for v in accepted if v.version is not None]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == len(keys)  # one tag per version: aliases are folded
    assert rank_candidates(current, parse_tags(tags), allow_prerelease=allow) == ranking
