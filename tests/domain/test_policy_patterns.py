"""Tag patterns (globs and guarded regexes) and pins."""

from __future__ import annotations

import pytest

from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.patterns import PinKind, matches, parse_pin, validate_pattern
from safe_updater.domain.versions import parse_tag


@pytest.mark.parametrize(
    ("pattern", "tag", "expected"),
    [
        ("1.2.*", "1.2.9", True),
        ("1.2.*", "1.20.0", False),
        ("*-alpine", "1.2.3-alpine", True),
        ("*-alpine", "1.2.3-alpine3.19", False),
        ("1.?.0", "1.5.0", True),
        ("1.[23].0", "1.3.0", True),
        ("LATEST", "latest", False),  # case-sensitive, like tags
        ("re:1\\.2\\.[0-9]+", "1.2.77", True),
        ("re:1\\.2", "1.2.3", False),  # whole tag
        ("re:.*-rc[0-9]*", "2.0.0-rc3", True),
        ("re:v?[0-9]+(\\.[0-9])?", "v1.2", True),
    ],
)
def test_matches(pattern: str, tag: str, expected: bool) -> None:
    assert matches(pattern, tag) is expected


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("re:(a+)+$", "repeats a group"),
        ("re:(a|aa)*", "repeats a group"),
        ("re:((ab)*c)+", "repeats a group"),
        ("re:(?:x+){2,}", "repeats a group"),
        ("re:(a)\\1", "backreference"),
        ("re:(?P<x>a)(?P=x)", "backreference"),
        ("re:[", "not a regex"),
        ("re:a)", "unbalanced"),
        ("", "empty or longer"),
        ("x" * 257, "empty or longer"),
    ],
)
def test_dangerous_or_broken_patterns_are_refused(pattern: str, problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem) as caught:
        validate_pattern(pattern)
    assert "glob" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "pattern",
    ["re:[0-9.]+", "re:(ab){1}c+", "re:(a|b)c*", "re:[(+*]+", "re:a{2}b", "re:(?i)latest"],
)
def test_safe_regexes_are_accepted(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern


def test_hostile_tag_does_not_hang_a_glob() -> None:
    # fnmatch's atomic groups keep this linear; a naive translation would backtrack for ages.
    assert not matches("*a*a*a*a*a*a*a*b", "a" * 128)


@pytest.mark.parametrize(
    ("pin", "kind", "admitted", "refused"),
    [
        ("1.2.3", PinKind.EXACT, ["1.2.3", "v1.2.3", "1.2.3.0"], ["1.2.4", "1.2.3-rc.1"]),
        ("1.20", PinKind.EXACT, ["1.20.0", "1.20"], ["1.20.1"]),
        ("1.x", PinKind.PREFIX, ["1.0.0", "1.99.3"], ["2.0.0", "0.9.0"]),
        ("1.2.*", PinKind.PREFIX, ["1.2.0", "1.2.9"], ["1.3.0"]),
        ("~1.2.3", PinKind.AT_LEAST_PREFIX, ["1.2.3", "1.2.9"], ["1.2.2", "1.3.0"]),
        ("^1.2.3", PinKind.AT_LEAST_PREFIX, ["1.2.3", "1.9.0"], ["1.2.2", "2.0.0"]),
        ("^0.2.3", PinKind.AT_LEAST_PREFIX, ["0.2.4"], ["0.3.0"]),
        ("2024.x", PinKind.PREFIX, ["2024.06.01"], ["2025.01.01"]),
        ("stable", PinKind.TAG, ["stable"], ["latest", "1.2.3"]),
    ],
)
def test_pins(pin: str, kind: PinKind, admitted: list[str], refused: list[str]) -> None:
    parsed = parse_pin(pin)
    assert parsed.kind is kind
    for tag in admitted:
        assert parsed.admits(tag, parse_tag(tag)), tag
    for tag in refused:
        assert not parsed.admits(tag, parse_tag(tag)), tag


@pytest.mark.parametrize("pin", ["", "~", "^latest", "a.x", "x" * 200, "~not a version"])
def test_bad_pins(pin: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_pin(pin)
    assert "1.x" in (caught.value.hint or "")
