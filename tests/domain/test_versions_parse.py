"""Tag parsing: grammar, schemes, the pre-release/suffix heuristic, CalVer and digest-only tags."""

from __future__ import annotations

import pytest

from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.versions import MAX_TAG_LENGTH, Scheme, Version, parse_tag

S, C, D = Scheme.SEMVER, Scheme.CALVER, Scheme.DIGEST_ONLY


@pytest.mark.parametrize(
    ("tag", "scheme", "prefix", "release", "precision"),
    [
        ("1.2.3", S, "", (1, 2, 3), 3),
        ("v1.2.3", S, "v", (1, 2, 3), 3),
        ("V1.2.3", S, "V", (1, 2, 3), 3),
        ("v2.2", S, "v", (2, 2, 0), 2),  # WUD #8
        ("3", S, "", (3, 0, 0), 1),
        ("1.20", S, "", (1, 20, 0), 2),
        ("1.20.0", S, "", (1, 20, 0), 3),
        ("1.20.0.0", S, "", (1, 20, 0), 4),
        ("4.0.12.2823", S, "", (4, 0, 12, 2823), 4),  # WUD #566
        ("1.2.3.4.5", S, "", (1, 2, 3, 4, 5), 5),
        ("01.002.3", S, "", (1, 2, 3), 3),
        ("95083", S, "", (95083, 0, 0), 1),  # AIU #604 build numbers
        ("22.04", S, "", (22, 4, 0), 2),  # two-digit years are not dates
        ("2021.13.1", S, "", (2021, 13, 1), 3),  # no 13th month: a plain number
        ("2024", S, "", (2024, 0, 0), 1),  # a lone year could be a build number
    ],
)
def test_release_numbers(
    tag: str, scheme: Scheme, prefix: str, release: tuple[int, ...], precision: int
) -> None:
    version = parse_tag(tag)
    assert (version.scheme, version.prefix, version.release, version.precision) == (
        scheme,
        prefix,
        release,
        precision,
    )
    assert version.raw == tag
    assert str(version) == tag


@pytest.mark.parametrize(
    ("tag", "release"),
    [
        ("2021.12.16", (2021, 12, 16)),  # WUD #866
        ("2024.01", (2024, 1, 0)),
        ("2024.1", (2024, 1, 0)),
        ("v2024.12.1", (2024, 12, 1)),
        ("20240131", (2024, 1, 31)),
        ("2024-01-31", (2024, 1, 31)),
        ("20240131-1530", (2024, 1, 31, 15, 30)),
        ("20240131-153000", (2024, 1, 31, 15, 30)),
        ("20240131-153007", (2024, 1, 31, 15, 30, 7)),
        ("2024-01-31-0915", (2024, 1, 31, 9, 15)),
        ("2024.01.31-0915", (2024, 1, 31, 9, 15)),
        ("202401311530", (2024, 1, 31, 15, 30)),
        ("20240131153007", (2024, 1, 31, 15, 30, 7)),
    ],
)
def test_calendar_tags(tag: str, release: tuple[int, ...]) -> None:
    version = parse_tag(tag)
    assert version.scheme is C
    assert version.release == release
    assert version.suffix == ""


@pytest.mark.parametrize(
    ("tag", "scheme", "suffix"),
    [
        ("20240131-1", C, "1"),  # a one-digit group is not a time
        ("20240131-2460", C, "2460"),  # hour 24 is not a time
        ("20241301", S, ""),  # month 13: a plain number
        ("19691231", S, ""),  # before the first year we take for a date
        ("2024-13-01", S, "13-01"),
        ("20240131-153000_RC", C, ""),  # AIU #453: the _RC marker is build metadata
        ("2024.01.31-alpine", C, "alpine"),
    ],
)
def test_calendar_edges(tag: str, scheme: Scheme, suffix: str) -> None:
    version = parse_tag(tag)
    assert (version.scheme, version.suffix) == (scheme, suffix)


@pytest.mark.parametrize(
    "tag",
    [
        "latest",
        "stable",
        "main",
        "edge",
        "nightly",
        "alpine",
        "version-5.6.16",  # AIU #413: needs a tag transform, not a guess
        "sha-4f2a9c1",
        "4f2a9c1",
        "4f2a9c1e8b7d6c5b4a39281706f5e4d3c2b1a098",
        "vlatest",
        "v",
        "_",
    ],
)
def test_digest_only_tags(tag: str) -> None:
    version = parse_tag(tag)
    assert version.scheme is D
    assert version.release == ()
    assert version.family == (D, tag)


# The heuristic in one table: a segment is a pre-release only when it starts with a known
# pre-release word; anything else is a compatibility suffix.
@pytest.mark.parametrize(
    ("tag", "prerelease", "suffix", "build", "revision"),
    [
        ("1.2.3-rc.1", ("rc", 1), "", None, None),
        ("1.2.3-rc1", ("rc", 1), "", None, None),
        ("1.2.3-RC1", ("rc", 1), "", None, None),
        ("1.2.3-alpha", ("alpha",), "", None, None),
        ("1.2.3-beta.2", ("beta", 2), "", None, None),
        ("1.2.3-pre", ("pre",), "", None, None),
        ("1.2.3-dev", ("dev",), "", None, None),
        ("1.2.3-SNAPSHOT", ("snapshot",), "", None, None),
        ("1.2.3-alpha.beta", ("alpha", "beta"), "", None, None),
        ("1.2.3-a1", ("a", 1), "", None, None),
        ("1.2.3-b2", ("b", 2), "", None, None),
        ("1.2.3-m3", ("m", 3), "", None, None),
        ("3.13.0rc1", ("rc", 1), "", None, None),
        ("3.13.0b2-slim-bookworm", ("b", 2), "slim-bookworm", None, None),
        ("2.3.1.RC1", ("rc", 1), "", None, None),
        ("1.2.3-rc.1-alpine", ("rc", 1), "alpine", None, None),
        ("1.2.3-alpine", (), "alpine", None, None),
        ("1.2.3-alpine3.19", (), "alpine3.19", None, None),
        ("7.9.1-1-ubi8", (), "1-ubi8", None, None),  # Keel #823
        ("2.4-debian-12", (), "debian-12", None, None),
        ("1.25-bookworm", (), "bookworm", None, None),
        ("3.12-slim", (), "slim", None, None),
        ("3.12.1-management-alpine", (), "management-alpine", None, None),
        ("1.2.3-apache", (), "apache", None, None),  # unknown word: a suffix, never a pre-release
        ("1.2.3-b", (), "b", None, None),  # a bare letter is too vague for a pre-release
        ("1.2.3-1", (), "1", None, None),  # a package revision, not SemVer's numeric pre-release
        ("1.2.3.Final", (), "Final", None, None),
        ("1.2.3-", (), "-", None, None),  # a dangling separator is kept, not dropped
        ("1.2.3.", (), ".", None, None),
        ("1.2.3_build.5", (), "", "build.5", None),
        ("17.0.9_9-jdk-jammy", (), "jdk-jammy", "9", None),
        ("1.2.3-rc.1_abc-alpine", ("rc", 1), "alpine", "abc", None),
        ("1.25.7.5604-980a13e02", (), "", "980a13e02", None),  # AIU #413
        ("1.2.3-alpine-4f2a9c1", (), "alpine", "4f2a9c1", None),
        ("1.25.3-debian-11-r2", (), "debian-11", None, 2),  # Bitnami rebuilds
        ("4.0.12.2823-ls245", (), "", None, 245),  # LinuxServer builds
        ("1.2.3-r0", (), "", None, 0),
        ("1.2.3-R2", (), "R2", None, None),
    ],
)
def test_prerelease_or_suffix(
    tag: str,
    prerelease: tuple[str | int, ...],
    suffix: str,
    build: str | None,
    revision: int | None,
) -> None:
    version = parse_tag(tag)
    assert version.scheme is S
    assert version.prerelease == prerelease
    assert version.is_prerelease is bool(prerelease)
    assert version.suffix == suffix
    assert version.build == build
    assert version.revision == revision
    assert version.family == (S, suffix)


@pytest.mark.parametrize(
    ("text", "prerelease", "build"),
    [
        ("1.2.3+build.5", (), "build.5"),
        ("1.2.3-rc.1+build.5", ("rc", 1), "build.5"),
        ("1.0.0-x.7.z.92", ("x", 7, "z", 92), None),  # strict SemVer: any identifier
        ("1.0.0-0.3.7", (0, 3, 7), None),
        ("1.0.0-beta-2", ("beta-2",), None),
        ("v0.1.0+git-abc", (), "git-abc"),
    ],
)
def test_chart_versions_are_strict_semver(
    text: str, prerelease: tuple[str | int, ...], build: str | None
) -> None:
    version = parse_tag(text, chart=True)
    assert (version.prerelease, version.build, version.suffix) == (prerelease, build, "")


@pytest.mark.parametrize(
    ("tag", "words"),
    [
        ("", "is empty"),
        ("a" * (MAX_TAG_LENGTH + 1), "129 characters long; the limit is 128"),
        ("-alpine", "starts with '-'"),
        (".hidden", "starts with '.'"),
        ("1.2.3+build", "contains '+' at position 6"),
        ("1.2 3", "contains ' ' at position 4"),
        ("1.2.3/x", "contains '/'"),
        ("ünï", "contains 'ü' at position 1"),
        ("1.2.\u0663", "contains"),  # a non-ASCII digit
        ("tag\n", "contains '\\n'"),
    ],
)
def test_invalid_tags_are_rejected_with_a_reason(tag: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_tag(tag)
    assert words in caught.value.message
    assert caught.value.hint


def test_non_text_is_rejected_as_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="must be text"):
        parse_tag(123)  # type: ignore[arg-type]


def test_longest_valid_tag_is_accepted() -> None:
    tag = "1." * 63 + "12"
    assert len(tag) == MAX_TAG_LENGTH
    assert parse_tag(tag).precision == 64


@pytest.mark.parametrize(
    "tag",
    [
        "1." * 5_000 + "1",
        "-a" * 5_000,
        "1.2.3" + "-a" * 5_000,
        "9" * 10_000,
        "1" + "_" * 10_000,
    ],
)
def test_huge_inputs_are_refused_by_length_first(tag: str) -> None:
    with pytest.raises(InvalidInputError, match="the limit is 128"):
        parse_tag(tag)


# Inputs at the length limit that would make a backtracking pattern explode; the scanner reads
# each character a bounded number of times, so these are as cheap as any tag.
@pytest.mark.parametrize(
    ("tag", "scheme", "suffix"),
    [
        ("1." * 63 + "1a", S, "a"),
        ("1" + "-a" * 63 + "-", S, "a" + "-a" * 62 + "-"),
        ("1.2.3" + "-rc" * 41, S, "rc" + "-rc" * 39),
        ("1.2.3-rc" + "." * 120, S, ""),
        ("2024" + "-01" * 41, C, "01" + "-01" * 38),
        ("a" * 128, D, ""),
        ("1" * 128, S, ""),
        ("1" + "_" * 127, S, ""),
    ],
)
def test_adversarial_tags_parse_correctly(tag: str, scheme: Scheme, suffix: str) -> None:
    version = parse_tag(tag)
    assert version.scheme is scheme
    assert version.suffix == suffix


def test_versions_are_frozen_values() -> None:
    version = parse_tag("1.2.3")
    assert version == parse_tag("1.2.3")
    assert hash(version) == hash(parse_tag("1.2.3"))
    with pytest.raises(ValueError, match="frozen"):
        version.raw = "x"  # type: ignore[misc]
    assert Version.model_validate_json(version.model_dump_json()) == version
