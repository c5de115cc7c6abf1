"""Candidate ranking: what is taken, what is dropped, and why."""

from __future__ import annotations

import pytest

from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.versions import (
    ChangeType,
    ParsedTags,
    Ranking,
    parse_tag,
    parse_tags,
    rank_candidates,
)


def verdicts(ranking: Ranking) -> dict[str, tuple[bool, ChangeType | None, str]]:
    return {v.tag: (v.accepted, v.change_type, v.reason) for v in ranking.candidates}


def accepted_tags(ranking: Ranking) -> list[str]:
    return [verdict.tag for verdict in ranking.accepted]


@pytest.mark.parametrize(
    ("current", "tags", "allow_prerelease", "expected"),
    [
        ("1.2.3", ["1.2.4", "2.0.0", "1.3.0", "1.2.2"], False, ["2.0.0", "1.3.0", "1.2.4"]),
        # Keel #823: never downgrade, never leave the suffix
        (
            "7.9.1-1-ubi8",
            ["3.0.0", "7.9.0-1-ubi8", "7.9.2-1-ubi8", "8.0.0"],
            False,
            ["7.9.2-1-ubi8"],
        ),
        # WUD #866: a date is not a newer version
        ("10.11.4", ["2021.12.16", "10.11.5", "latest"], False, ["10.11.5"]),
        ("2021.12.16", ["10.11.5", "2022.01.03", "2021.12.01"], False, ["2022.01.03"]),
        # WUD #566: 4-part numbers in order
        (
            "4.0.9.2244",
            ["4.0.12.2823", "4.0.10.1", "4.0.9.2243"],
            False,
            ["4.0.12.2823", "4.0.10.1"],
        ),
        # AIU #604: plain build numbers
        ("95083", ["95057", "95090"], False, ["95090"]),
        # AIU #453: date-time tags
        (
            "20240131-163830",
            ["20240131-162230_RC", "20240131-170000", "20240130-235959"],
            False,
            ["20240131-170000"],
        ),
        ("1.2.3", ["1.2.4-rc.1", "1.2.4", "1.3.0-beta"], False, ["1.2.4"]),
        (
            "1.2.3",
            ["1.2.4-rc.1", "1.2.4", "1.3.0-beta"],
            True,
            ["1.3.0-beta", "1.2.4", "1.2.4-rc.1"],
        ),
        ("1.2.3-rc.1", ["1.2.3-rc.2", "1.2.3", "1.2.3-rc.0"], True, ["1.2.3", "1.2.3-rc.2"]),
        ("1.2.3-alpine", ["1.2.4", "1.2.4-alpine", "1.2.4-slim"], False, ["1.2.4-alpine"]),
        (
            "1.25.3-debian-11-r2",
            ["1.25.3-debian-11-r3", "1.25.3-debian-11-r1"],
            False,
            ["1.25.3-debian-11-r3"],
        ),
        ("latest", ["1.2.3", "latest", "stable"], False, []),
        ("1.2.3", [], False, []),
    ],
)
def test_accepted_candidates(
    current: str, tags: list[str], allow_prerelease: bool, expected: list[str]
) -> None:
    ranking = rank_candidates(current, tags, allow_prerelease=allow_prerelease)
    assert accepted_tags(ranking) == expected
    assert len(ranking.candidates) == len(tags)
    assert ranking.current == parse_tag(current)


@pytest.mark.parametrize(
    ("current", "tag", "change", "words"),
    [
        ("1.2.3", "1.2.2", ChangeType.DOWNGRADE, "older than the current version; never downgrade"),
        ("1.2.3", "1.2.3", ChangeType.NONE, "the current tag itself"),
        ("1.20", "1.20.0", ChangeType.NONE, "same version as the current tag, spelled differently"),
        ("1.2.3", "1.2.3_b1", ChangeType.BUILD, "only build metadata differs"),
        (
            "1.2.3",
            "2021.12.16",
            ChangeType.INCOMPARABLE,
            "calver tag, a different version scheme from the current tag's",
        ),
        (
            "1.2.3",
            "1.2.4-alpine",
            ChangeType.INCOMPARABLE,
            "different image variant (suffix 'alpine') from the current tag",
        ),
        (
            "1.2.3-alpine",
            "1.2.4",
            ChangeType.INCOMPARABLE,
            "different image variant (no suffix) from the current tag",
        ),
        ("1.2.3", "latest", ChangeType.INCOMPARABLE, "'latest' is not a version"),
        (
            "latest",
            "1.2.3",
            ChangeType.INCOMPARABLE,
            "the current tag is not a version, so it is tracked by its digest",
        ),
        ("latest", "latest", ChangeType.NONE, "the current tag itself"),
        ("1.2.3", "1.2.4-rc.1", ChangeType.PRERELEASE, "pre-releases are not allowed"),
        ("1.2.3", "bad tag", None, "contains ' ' at position 4"),
        ("1.2.3", "x" * 200, None, "the limit is 128"),
    ],
)
def test_every_dropped_tag_says_why(
    current: str, tag: str, change: ChangeType | None, words: str
) -> None:
    [verdict] = rank_candidates(current, [tag]).candidates
    assert not verdict.accepted
    assert verdict.change_type is change
    assert words in verdict.reason
    assert (verdict.version is None) is (change is None)


@pytest.mark.parametrize(
    ("current", "tag", "change", "reason"),
    [
        ("1.2.3", "2.0.0", ChangeType.MAJOR, "newer major release"),
        ("1.2.3", "1.3.0", ChangeType.MINOR, "newer minor release"),
        ("1.2.3", "1.2.4", ChangeType.PATCH, "newer patch release"),
        ("1.2.3", "1.2.4-rc.1", ChangeType.PRERELEASE, "newer pre-release"),
        (
            "1.2.3-rc.1",
            "1.2.3",
            ChangeType.PATCH,
            "final release of the current pre-release",
        ),
        ("1.2.3-r1", "1.2.3-r2", ChangeType.PATCH, "newer rebuild of the current version"),
    ],
)
def test_accepted_tags_say_why(current: str, tag: str, change: ChangeType, reason: str) -> None:
    [verdict] = rank_candidates(current, [tag], allow_prerelease=True).candidates
    assert verdict.accepted
    assert (verdict.change_type, verdict.reason) == (change, reason)


def test_aliases_keep_the_spelling_of_the_current_tag() -> None:
    # AIU #375/#736: 1.20 and 1.20.0 must not flap; keep the form the asset already uses.
    ranking = rank_candidates("v1.20", ["1.21.0", "v1.21", "1.21", "v1.21.0"])
    assert accepted_tags(ranking) == ["v1.21"]
    reasons = {v.tag: v.reason for v in ranking.dropped}
    assert reasons == {
        tag: "same version as v1.21, which is kept as it is spelled like the current tag"
        for tag in ("1.21.0", "1.21", "v1.21.0")
    }
    assert all(v.change_type is ChangeType.MINOR for v in ranking.dropped)


def test_aliases_tie_break_on_listing_order() -> None:
    ranking = rank_candidates("1.2", ["v1.3", "V1.3"])
    assert accepted_tags(ranking) == ["v1.3"]


def test_exact_repeats_are_dropped() -> None:
    ranking = rank_candidates("1.0.0", ["1.0.1", "1.0.1", "bad tag", "bad tag"])
    assert [(v.tag, v.accepted, v.change_type) for v in ranking.candidates] == [
        ("1.0.1", True, ChangeType.PATCH),
        ("1.0.1", False, None),
        ("bad tag", False, None),
        ("bad tag", False, None),
    ]
    assert ranking.candidates[1].reason == "listed more than once; the first listing is used"
    assert ranking.candidates[2].reason.startswith("invalid: tag 'bad tag' contains")


def test_order_is_accepted_newest_first_then_dropped_as_listed() -> None:
    tags = ["1.0.0", "1.2.0", "latest", "1.1.0", "0.9.0", "1.3.0-rc.1"]
    ranking = rank_candidates("1.0.0", tags)
    assert [v.tag for v in ranking.candidates] == [
        "1.2.0",
        "1.1.0",
        "1.0.0",
        "latest",
        "0.9.0",
        "1.3.0-rc.1",
    ]
    assert ranking.best is not None and ranking.best.tag == "1.2.0"
    assert rank_candidates("1.0.0", ["0.9"]).best is None


def test_invalid_current_tag_is_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="contains ' '"):
        rank_candidates("not a tag", ["1.0.0"])


def test_shared_parsed_tags_give_the_same_ranking() -> None:
    tags = ["1.0.0", "1.1.0", "1.1.0-alpine", "2.0.0-rc.1", "bad tag", "1.1.0", "latest"]
    shared = parse_tags(tags)
    assert isinstance(shared, ParsedTags)
    assert len(shared) == len(tags)
    assert list(shared) == tags
    assert [v.raw for v in shared.versions] == [
        "1.0.0",
        "1.1.0",
        "1.1.0-alpine",
        "2.0.0-rc.1",
        "latest",
    ]
    for current in ("1.0.0", "1.0.0-alpine", "latest", "v0.9"):
        for allow in (False, True):
            assert rank_candidates(current, shared, allow_prerelease=allow) == rank_candidates(
                current, tags, allow_prerelease=allow
            )


def test_current_may_be_given_parsed() -> None:
    assert rank_candidates(parse_tag("1.0"), ["1.1"]) == rank_candidates("1.0", ["1.1"])


def test_chart_versions_rank_with_build_metadata() -> None:
    ranking = rank_candidates("1.2.3+build.1", ["1.2.4+build.2", "1.2.3+build.2"], chart=True)
    assert accepted_tags(ranking) == ["1.2.4+build.2"]
    assert verdicts(ranking)["1.2.3+build.2"][1] is ChangeType.BUILD


def test_rankings_serialise_to_json() -> None:
    ranking = rank_candidates("1.2.3", ["1.2.4", "bad tag"])
    assert Ranking.model_validate_json(ranking.model_dump_json()) == ranking


def test_assets_of_one_repository_share_verdicts() -> None:
    shared = parse_tags(["1.0.0", "1.1.0", "2.0.0", "latest"])
    first = rank_candidates("1.0.0", shared)
    second = rank_candidates("1.0.1", shared)
    assert [v.tag for v in first.accepted] == [v.tag for v in second.accepted] == ["2.0.0", "1.1.0"]
    assert first.accepted[0] is second.accepted[0]  # one immutable verdict, handed out twice
    assert first.current != second.current
