"""Change types between two tags, including the real-world cases in peers.md §3.2."""

from __future__ import annotations

import pytest

from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.versions import ChangeType, classify, is_newer, parse_tag

MAJOR, MINOR, PATCH = ChangeType.MAJOR, ChangeType.MINOR, ChangeType.PATCH
PRE, BUILD, NONE = ChangeType.PRERELEASE, ChangeType.BUILD, ChangeType.NONE
DOWN, INCOMP = ChangeType.DOWNGRADE, ChangeType.INCOMPARABLE


@pytest.mark.parametrize(
    ("current", "candidate", "expected"),
    [
        # plain SemVer levels
        ("1.2.3", "2.0.0", MAJOR),
        ("1.2.3", "1.3.0", MINOR),
        ("1.2.3", "1.2.4", PATCH),
        ("1.2.3", "1.2.2", DOWN),
        ("2.0.0", "1.9.9", DOWN),
        ("1.2.3", "1.2.3", NONE),
        ("0.1.0", "0.2.0", MINOR),  # structural; 0.x caution is the policy's business
        # v prefix (Keel #544, WUD #8)
        ("v1.2.3", "1.2.4", PATCH),
        ("1.2.3", "v1.3.0", MINOR),
        ("v2.2", "v2.3", MINOR),
        ("V1.2.3", "v1.2.3", NONE),
        # precision aliases (AIU #375, #736)
        ("1.20", "1.20.0", NONE),
        ("1.20.0", "1.20", NONE),
        ("1", "1.0.0", NONE),
        ("1.20", "1.20.1", PATCH),
        ("1.20.1", "1.21", MINOR),
        ("1.20.0.0", "1.20", NONE),
        # 4-part versions (WUD #566, #1261, Emby #375)
        ("4.0.9.2244", "4.0.12.2823", PATCH),
        ("4.0.12.2823", "4.0.9.2244", DOWN),
        ("4.9.0.12", "4.9.0.9", DOWN),
        ("4.9.0.9", "4.9.0.12", PATCH),
        ("4.0.12", "4.0.12.1", PATCH),
        ("4.0.12.2823", "4.1.0.1", MINOR),
        # CalVer never meets SemVer (WUD #866, #1177)
        ("10.11.4", "2021.12.16", INCOMP),
        ("2021.12.16", "10.11.4", INCOMP),
        ("2021.12.16", "2022.01.03", MAJOR),
        ("2024.01", "2024.02", MINOR),
        ("2024.01", "2024.1.0", NONE),
        ("20240131", "20240201", MINOR),
        ("20240131", "20240130", DOWN),
        ("2024-01-31", "20240131", NONE),
        # date-time tags order in time (AIU #453)
        ("20240131-1530", "20240131-1645", PATCH),
        ("20240131-1645", "20240131-1530", DOWN),
        ("20240131-153000_RC", "20240131-154500", PATCH),
        ("20240131-154500", "20240131-153000_RC", DOWN),
        ("20240131", "20240131-0001", PATCH),
        # suffixes: only the same image variant compares (Keel #823)
        ("7.9.1-1-ubi8", "3.0.0", INCOMP),
        ("7.9.1-1-ubi8", "7.9.2-1-ubi8", PATCH),
        ("7.9.1-1-ubi8", "3.0.0-1-ubi8", DOWN),
        ("1.2.3-alpine", "1.2.4", INCOMP),
        ("1.2.3", "1.2.4-alpine", INCOMP),
        ("1.2.3-alpine", "1.3.0-alpine", MINOR),
        ("2.4-debian-12", "2.5-debian-12", MINOR),
        ("2.4-debian-12", "2.5-debian-13", INCOMP),
        ("1.25.3-debian-11-r2", "1.25.3-debian-11-r3", PATCH),
        ("1.25.3-debian-11-r3", "1.25.4-debian-11-r0", PATCH),
        ("1.25.4-debian-11-r0", "1.25.3-debian-11-r9", DOWN),
        ("1.2.3", "1.2.3-r0", NONE),
        ("4.0.12.2823-ls240", "4.0.12.2823-ls245", PATCH),
        # pre-releases (SemVer 2.0 §11; Keel #63, #252, #317)
        ("1.2.3-rc.1", "1.2.3-rc.2", PRE),
        ("1.2.3-rc.2", "1.2.3-rc.1", DOWN),
        ("1.2.3-alpha", "1.2.3-beta", PRE),
        ("1.2.3-rc9", "1.2.3-rc10", PRE),  # numbers in words order as numbers
        ("1.2.3", "1.2.4-rc.1", PRE),  # pre-release of the next patch
        ("1.2.3", "1.3.0-rc.1", MINOR),  # a pre-release never makes a jump look smaller
        ("1.2.3", "2.0.0-alpha", MAJOR),
        ("1.2.3-rc.2", "1.2.3", PATCH),  # the final release of the current pre-release
        ("1.2.3", "1.2.3-rc.1", DOWN),
        ("1.2.3-rc.1", "1.2.4", PATCH),
        ("1.2.3-rc.1-alpine", "1.2.3-alpine", PATCH),
        ("1.2.3-rc.1-alpine", "1.2.3", INCOMP),
        ("3.13.0rc1-slim", "3.13.0-slim", PATCH),
        # build metadata never orders
        ("1.2.3_b1", "1.2.3_b2", BUILD),
        ("1.2.3", "1.2.3_b1", BUILD),
        ("v1.2.3_b1", "1.2.3_b1", NONE),
        ("1.2.3_b9", "1.2.4_b1", PATCH),
        ("1.25.7.5604-980a13e02", "1.25.7.5604-1234abc", BUILD),
        ("1.25.7.5604-980a13e02", "1.25.8.5700-1234abc", PATCH),
        ("17.0.9_9-jdk", "17.0.10_7-jdk", PATCH),
        ("17.0.9_9-jdk", "17.0.10_7-jre", INCOMP),
        # digest-only tags (AIU #270, #481)
        ("latest", "latest", NONE),
        ("latest", "stable", INCOMP),
        ("latest", "1.2.3", INCOMP),
        ("1.2.3", "latest", INCOMP),
        ("4f2a9c1", "4f2a9c2", INCOMP),
        # plain numbers (AIU #604)
        ("95083", "95057", DOWN),
        ("95057", "95083", MAJOR),
    ],
)
def test_classify(current: str, candidate: str, expected: ChangeType) -> None:
    assert classify(current, candidate) is expected
    assert classify(parse_tag(current), parse_tag(candidate)) is expected
    assert is_newer(current, candidate) is expected.is_upgrade


REVERSE = {NONE: NONE, BUILD: BUILD, INCOMP: INCOMP}


@pytest.mark.parametrize(
    ("current", "candidate"),
    [("1.2.3", "2.0.0"), ("1.20", "1.20.0"), ("1.2.3", "1.2.3_b1"), ("1.2.3-alpine", "1.2.4")],
)
def test_classify_reverses(current: str, candidate: str) -> None:
    forward = classify(current, candidate)
    assert classify(candidate, current) is REVERSE.get(forward, DOWN)


# The precedence chain from SemVer 2.0 §11, oldest first.
SEMVER_CHAIN = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "2.0.0",
    "2.1.0",
    "2.1.1",
]


@pytest.mark.parametrize("index", range(len(SEMVER_CHAIN) - 1))
def test_semver_precedence_chain(index: int) -> None:
    older, newer = SEMVER_CHAIN[index], SEMVER_CHAIN[index + 1]
    assert is_newer(older, newer)
    assert classify(newer, older) is DOWN
    assert parse_tag(older).sort_key < parse_tag(newer).sort_key


def test_sorting_by_key_orders_a_family() -> None:
    shuffled = ["1.0.0-beta.11", "2.1.1", "1.0.0-alpha", "1.0.0", "1.0.0-rc.1", "2.0.0"]
    ordered = sorted((parse_tag(tag) for tag in shuffled), key=lambda v: v.sort_key)
    assert [v.raw for v in ordered] == [
        "1.0.0-alpha",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.0.0",
        "2.1.1",
    ]


def test_classify_rejects_invalid_tags() -> None:
    with pytest.raises(InvalidInputError):
        classify("1.2.3", "bad tag")
    with pytest.raises(InvalidInputError):
        is_newer("", "1.2.3")


@pytest.mark.parametrize(
    ("change", "upgrade"),
    [
        (MAJOR, True),
        (MINOR, True),
        (PATCH, True),
        (PRE, True),
        (BUILD, False),
        (NONE, False),
        (DOWN, False),
        (INCOMP, False),
    ],
)
def test_upgrade_types(change: ChangeType, upgrade: bool) -> None:
    assert change.is_upgrade is upgrade
