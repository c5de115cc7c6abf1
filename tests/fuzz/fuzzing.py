"""Shared strategies and checks for the fuzz tests (imported as ``fuzzing``, like the domain
property tests import each other).

The contract every test here checks: a parser given bad input either returns a sane value or
raises one of our own errors (:class:`SafeUpdaterError`) whose message is non-empty and names what
was wrong; no other exception escapes, and the input is not changed.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st

from safe_updater.domain.errors import SafeUpdaterError

T = TypeVar("T")

# Deterministic (CI-stable) and without per-example deadlines: the machine may be loaded.
FUZZ = settings(derandomize=True, deadline=None, max_examples=150, database=None)
FUZZ_SMALL = settings(derandomize=True, deadline=None, max_examples=60, database=None)

huge_ints = st.sampled_from([2**63, -(2**63) - 1, 10**30, 10**300, -1, 0])
# Texts Python itself chokes on: more than 4300 digits, nesting deeper than the stack.
HOSTILE_JSON = ["1" * 5000, "[" * 20_000, '{"a":' * 5_000, "-" + "9" * 4400 + ".5e1"]
odd_floats = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 1e-320])
odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "\ud7ff", "ﬀ", "١٢", "²", "\u202e", "null", "[]", "{}"]),
)
scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(), huge_ints, odd_floats, st.floats(), odd_text
)
# Nested junk: what a JSON document (or YAML, or an API object) can hold, with odd leaves.
json_junk: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def dumps(value: Any) -> str:
    """JSON text of ``value``; Python writes NaN/Infinity, which ``json.loads`` accepts too."""
    return json.dumps(value, default=str)


def truncated(text: str, data: st.DataObject) -> str:
    """A prefix of ``text``, as a body cut off mid-transfer."""
    return text[: data.draw(st.integers(0, len(text)), label="cut")]


def outcome(
    call: Callable[[], T], *, names: tuple[str, ...] = (), what: str = ""
) -> T | SafeUpdaterError:
    """Run ``call``; return its value or our error, after checking that error's message.

    ``names``: the message must mention at least one of them (case-insensitive), i.e. it says
    which field, header or key was wrong. Any exception outside our tree fails the test.
    """
    try:
        return call()
    except SafeUpdaterError as error:
        text = str(error)
        assert error.message.strip(), f"{what}: empty message from {type(error).__name__}"
        if names:
            lowered = text.lower()
            assert any(name.lower() in lowered for name in names), (
                f"{what}: message {text!r} names none of {names}"
            )
        return error
    except Exception as error:  # the property: nothing else escapes
        raise AssertionError(
            f"{what}: {type(error).__name__} escaped instead of a SafeUpdaterError: {error}"
        ) from error


def unchanged(value: Any) -> Callable[[], None]:
    """A check that ``value`` (a dict, list, ...) is the same afterwards as it is now."""
    before = copy.deepcopy(value)

    def check() -> None:
        assert value == before or _nan_equal(value, before), "the input was changed"

    return check


def _nan_equal(a: Any, b: Any) -> bool:
    # NaN != NaN, so compare the JSON texts (NaN is spelled the same way in both).
    return dumps(a) == dumps(b)


def best_time(call: Callable[[], object], repeat: int = 5) -> float:
    """The minimum of ``repeat`` runs: the least disturbed by other processes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def assert_linear(
    parse: Callable[[T], object],
    make: Callable[[int], T],
    *,
    n: int,
    factor: float = 20.0,
    floor: float = 0.002,
    attempts: int = 5,
    what: str = "",
) -> None:
    """``parse(make(8n))`` takes less than ``factor`` times ``parse(make(n))``.

    Linear would be ~8x, quadratic ~64x. ``floor`` keeps tiny timings (timer noise) from
    failing it, and a noisy machine gets ``attempts`` tries; no absolute time is asserted.
    """
    small, large = make(n), make(8 * n)

    def run(value: T) -> None:
        # Rejecting the input is fine; taking quadratic time to do so is not.
        with contextlib.suppress(SafeUpdaterError):
            parse(value)

    ratios = []
    for _ in range(attempts):
        t_small = max(best_time(lambda: run(small)), floor)
        t_large = best_time(lambda: run(large))
        ratios.append(t_large / t_small)
        if t_large < factor * t_small:
            return
    raise AssertionError(f"{what}: 8x the input took {min(ratios):.1f}x the time (not linear)")
