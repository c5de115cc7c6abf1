"""Properties of parsing and classification that must hold for any tag."""

from __future__ import annotations

import contextlib

import semver
from hypothesis import given, settings
from hypothesis import strategies as st

from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.versions import ChangeType, classify, parse_tag

PRERELEASE_WORDS = ["alpha", "beta", "rc", "pre", "dev", "preview", "snapshot"]
SUFFIXES = ["alpine", "1-ubi8", "debian-12", "slim", "slim-bookworm"]
NEUTRAL = {ChangeType.NONE, ChangeType.BUILD, ChangeType.INCOMPARABLE}
SAME = {ChangeType.NONE, ChangeType.BUILD}


@st.composite
def version_tags(draw: st.DrawFn) -> str:
    """Tags in every shape the parser knows, clustered so that families often collide."""
    shape = draw(st.sampled_from(["semver", "semver", "semver", "calver", "compact", "digest"]))
    if shape == "digest":
        return draw(st.sampled_from(["latest", "stable", "main", "4f2a9c1", "sha-1a2b3c4"]))
    if shape == "compact":
        day = draw(st.integers(1, 28))
        return f"202401{day:02d}" + draw(st.sampled_from(["", "-0930", "-1745", "-235959"]))
    if shape == "calver":
        parts = [draw(st.integers(2019, 2026)), draw(st.integers(1, 12))]
        parts += draw(st.lists(st.integers(0, 31), max_size=1))
    else:
        parts = draw(st.lists(st.integers(0, 12), min_size=1, max_size=4))
    tag = draw(st.sampled_from(["", "v", "V"])) + ".".join(str(part) for part in parts)
    if draw(st.booleans()):
        word = draw(st.sampled_from([*PRERELEASE_WORDS, "a", "b"]))
        number = draw(st.integers(0, 12))
        if word in ("a", "b"):
            tag += f"-{word}{number}"
        else:
            tag += draw(st.sampled_from([f"-{word}", f"-{word}.{number}", f"-{word}{number}"]))
    if draw(st.integers(0, 3)) == 0:
        tag += "_" + draw(st.sampled_from(["b1", "b2", "build.7"]))
    if draw(st.booleans()):
        tag += "-" + draw(st.sampled_from(SUFFIXES))
    if draw(st.integers(0, 3)) == 0:
        tag += f"-r{draw(st.integers(0, 5))}"
    return tag


tag_like_text = st.text(alphabet="0123456789.-_+vVabcdeflrsx/ ü", max_size=140)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=200), tag_like_text, version_tags()))
def test_parse_raises_only_invalid_input(text: str) -> None:
    try:
        version = parse_tag(text)
    except InvalidInputError as exc:
        assert exc.message
        return
    assert version.raw == text
    assert len(text) <= 128


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=140), tag_like_text))
def test_chart_parse_raises_only_invalid_input(text: str) -> None:
    with contextlib.suppress(InvalidInputError):
        parse_tag(text, chart=True)


@settings(max_examples=500, deadline=None)
@given(version_tags(), version_tags())
def test_classification_is_antisymmetric(a: str, b: str) -> None:
    forward, backward = classify(a, b), classify(b, a)
    if forward.is_upgrade:
        assert backward is ChangeType.DOWNGRADE
    elif forward is ChangeType.DOWNGRADE:
        assert backward.is_upgrade
    else:
        assert forward in NEUTRAL
        assert backward is forward


@settings(max_examples=500, deadline=None)
@given(version_tags(), version_tags(), version_tags())
def test_order_is_total_within_a_family(a: str, b: str, c: str) -> None:
    va, vb, vc = parse_tag(a), parse_tag(b), parse_tag(c)
    if va.family != vb.family:
        assert classify(a, b) is ChangeType.INCOMPARABLE
        return
    # Exactly one of older, same, newer; and it agrees with the sort key.
    change = classify(a, b)
    assert change is not ChangeType.INCOMPARABLE
    assert change.is_upgrade == (va.sort_key < vb.sort_key)
    assert (change is ChangeType.DOWNGRADE) == (va.sort_key > vb.sort_key)
    assert (change in SAME) == (va.sort_key == vb.sort_key)
    if vc.family == va.family:
        ab, bc, ac = change, classify(b, c), classify(a, c)
        if ab.is_upgrade and bc.is_upgrade:
            assert ac.is_upgrade
        if ab in SAME and bc in SAME:
            assert ac in SAME


@st.composite
def strict_semver(draw: st.DrawFn) -> str:
    core = ".".join(str(draw(st.integers(0, 4))) for _ in range(3))
    if not draw(st.booleans()):
        return core
    rest = draw(
        st.lists(
            st.one_of(st.integers(0, 12).map(str), st.sampled_from(PRERELEASE_WORDS)), max_size=5
        )
    )
    return f"{core}-{'.'.join([draw(st.sampled_from(PRERELEASE_WORDS)), *rest])}"


@settings(max_examples=500, deadline=None)
@given(strict_semver(), strict_semver())
def test_precedence_agrees_with_the_semver_library(a: str, b: str) -> None:
    expected = semver.Version.parse(a).compare(b)
    key_a, key_b = parse_tag(a).sort_key, parse_tag(b).sort_key
    assert (key_a > key_b) - (key_a < key_b) == expected
