"""Label and annotation values, windows, durations, patterns and pins on bad input.

Labels come from anyone who may deploy; each value either parses or is refused with an
InvalidInputError that names the label key, and the labels themselves are left alone.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from fuzzing import FUZZ, odd_text, outcome, unchanged
from hypothesis import given
from hypothesis import strategies as st

from safe_updater.domain import labels as keys
from safe_updater.domain.durations import parse_duration
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.patterns import Pin, matches, parse_pin, validate_pattern
from safe_updater.domain.policy import EffectivePolicy, policy_from_labels
from safe_updater.domain.windows import MaintenanceWindow, parse_windows

ASSET = "k8s:prod/ns/deployment/web"
NOW = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)

POLICY_KEYS = sorted(keys.POLICY_KEYS)
# Near-misses of real values, so the parsers' inner branches run, not just the first check.
VALUE_PARTS = [
    "auto",
    "approve",
    "skip",
    "reject",
    "none",
    "always",
    "1",
    "0",
    "100",
    "101",
    "-1",
    "24h",
    "1h30m",
    "2d",
    "90s",
    "0s",
    ".",
    "1e400",
    "inf",
    "nan",
    "22:00-02:00",
    "mon-fri",
    "sat,sun",
    "0 2 * * 1-5",
    "for",
    "2h",
    "UTC",
    "Europe/Berlin",
    "Mars/Olympus",
    "*/0",
    "1-",
    "25:00",
    "~1.2",
    "^0.2.3",
    "1.x",
    "stable",
    "re:",
    "(a+)+",
    "[",
    "*-alpine",
    "1.2.*",
    ";",
    ",",
    " ",
    "-",
    ":",
    "/",
    "x" * 300,
]
label_values = st.one_of(
    odd_text,
    st.lists(st.sampled_from(VALUE_PARTS), min_size=1, max_size=6).map(" ".join),
    st.lists(st.sampled_from(VALUE_PARTS), min_size=1, max_size=4).map(",".join),
)
label_keys = st.one_of(
    st.sampled_from(POLICY_KEYS),
    st.sampled_from(POLICY_KEYS).map(lambda k: k + "x"),  # mistyped keys
    st.text(max_size=20),
)


@FUZZ
@given(st.dictionaries(label_keys, label_values, max_size=6))
def test_labels_parse_or_name_the_bad_key(labels: dict[str, str]) -> None:
    same = unchanged(labels)
    result = outcome(
        lambda: policy_from_labels(labels, asset_id=ASSET), names=tuple(labels), what="labels"
    )
    same()
    if isinstance(result, InvalidInputError):
        assert result.field in labels, result  # the key that was wrong
        assert ASSET in result.message  # and whose label it was
        return
    assert isinstance(result, dict)
    # What the labels set is a valid policy layer.
    merged = EffectivePolicy.model_validate(
        {
            **result,
            "approval": {**EffectivePolicy().approval.model_dump(), **result.get("approval", {})},
        }
    )
    assert merged is not None


@FUZZ
@given(st.one_of(label_values, st.sampled_from(VALUE_PARTS)))
def test_windows_parse_or_say_why(text: str) -> None:
    result = outcome(
        lambda: parse_windows(text),
        names=("window", "time", "cron", "zone", "duration", "field", "day", "hour", "minute"),
        what="parse_windows",
    )
    if isinstance(result, list):
        for window in result:
            assert isinstance(window, MaintenanceWindow)
            opening = window.next_open(NOW)
            assert opening is None or opening >= NOW
            # The text form of a window reads back as the same window.
            assert MaintenanceWindow.parse(str(window)).is_open(NOW) == window.is_open(NOW)


@FUZZ
@given(
    st.one_of(
        label_values,
        st.integers(),
        st.floats(),
        st.none(),
        st.booleans(),
        st.lists(
            st.sampled_from(["1", "h", "m", "s", ".", "d", "w", "ms", "9" * 20]), max_size=8
        ).map("".join),
    )
)
def test_durations_parse_to_a_finite_non_negative_timedelta_or_are_refused(value: object) -> None:
    result = outcome(
        lambda: parse_duration(value, field="health.window"),  # type: ignore[arg-type]
        names=("duration",),
        what="parse_duration",
    )
    if isinstance(result, InvalidInputError):
        assert result.field == "health.window"
        return
    assert isinstance(result, timedelta)
    assert result >= timedelta(0) and math.isfinite(result.total_seconds())


pattern_text = st.one_of(
    odd_text,
    st.text(alphabet="re:()[]{}*+?|\\^$.,0123456789aP<>=-!", max_size=40).map(lambda t: "re:" + t),
    st.text(alphabet="*?[]!.-a1", max_size=20),
)


@FUZZ
@given(pattern_text, st.text(alphabet="0123456789.-_abcv", max_size=128))
def test_patterns_validate_or_say_why_and_then_match_any_tag(pattern: str, tag: str) -> None:
    result = outcome(lambda: validate_pattern(pattern), names=("tag pattern",), what="pattern")
    if isinstance(result, str):
        assert isinstance(matches(pattern, tag), bool)


@FUZZ
@given(st.one_of(label_values, st.sampled_from(["~", "^", "v", "1.x.x", "~v1", "^x", "x.1"])))
def test_pins_parse_or_name_the_pin(text: str) -> None:
    result = outcome(lambda: parse_pin(text), names=("pin",), what="pin")
    if isinstance(result, Pin):
        assert result.raw == text.strip()
        assert isinstance(result.admits(result.raw, None), bool)
