"""Tag patterns (allow/deny lists) and version pins.

Tags come from registries we do not control and patterns from labels anyone with deploy rights
can set, so matching must stay linear in the tag's length:

- globs (``1.2.*``, ``*-alpine``) go through :func:`fnmatch.fnmatchcase`, whose regex uses atomic
  groups, so no input backtracks;
- ``re:`` patterns are capped in length and refused when they contain the shapes that make a
  backtracking engine exponential (a repeated group that itself repeats or alternates, and
  backreferences), or so many variable repeats that it is a high-degree polynomial
  (``a*a*a*a*a*b`` tries every split of the tag: seconds per 128-character tag). Both kinds match
  the *whole* tag.

A pin keeps an asset on a version or a range: ``1.2.3`` (exactly that version; ``1.20`` equals
``1.20.0``), ``1.x`` / ``1.*`` / ``1.2.x`` (that prefix), ``~1.2.3`` (>= 1.2.3, same minor),
``^1.2.3`` (>= 1.2.3, same major; for 0.x the same minor), or a non-version tag such as
``stable`` (only that tag).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.versions import Scheme, Version, parse_tag

REGEX_PREFIX = "re:"
MAX_PATTERN_LENGTH = 256
# Bound on the number of ways a backtracking engine can split a tag among a regex's variable
# repeats: the product of one factor per repeat (129 for '*', '+' and '{m,}', as a tag has at most
# 128 characters; 4 for '?'; n - m + 2 for '{m,n}'). 4 * 129**3 admits the common
# 'v?[0-9]+\.[0-9]+\.[0-9]+' and keeps the worst tag near 100 ms; 'a*a*a*a*a*b' (129**5) took
# 2 s per tag and grows as n**5.
MAX_BACKTRACKING = 4 * 129**3
_UNBOUNDED_FACTOR = 129
_OPTIONAL_FACTOR = 4
_HINT = (
    "use a glob such as '1.2.*' or '*-alpine', or 're:<regex>' without a repeated group "
    "that repeats or alternates inside (write '[0-9.]+' rather than '([0-9]+\\.?)+')"
)


def validate_pattern(text: str) -> str:
    """Return ``text`` if it is a usable tag pattern; raise :class:`InvalidInputError`."""
    _compile(text)
    return text


def matches(pattern: str, tag: str) -> bool:
    """Whether ``tag`` matches ``pattern`` (a glob, or ``re:`` + a regex), whole tag."""
    return _compile(pattern)(tag)


def first_match(patterns: list[str], tag: str) -> str | None:
    """The first pattern ``tag`` matches, for the reason text; ``None`` if none does."""
    for pattern in patterns:
        if matches(pattern, tag):
            return pattern
    return None


@lru_cache(maxsize=1024)
def _compile(text: str) -> Callable[[str], bool]:
    if not text or len(text) > MAX_PATTERN_LENGTH:
        raise InvalidInputError(
            f"tag pattern {text[:40]!r} is empty or longer than {MAX_PATTERN_LENGTH} characters",
            hint=_HINT,
        )
    if not text.startswith(REGEX_PREFIX):
        return lambda tag: fnmatch.fnmatchcase(tag, text)
    body = text[len(REGEX_PREFIX) :]
    problem = _backtracking_risk(body)
    if problem:
        raise InvalidInputError(f"tag pattern {text!r} {problem}", hint=_HINT)
    try:
        compiled = re.compile(body)
    except re.error as error:
        raise InvalidInputError(
            f"tag pattern {text!r} is not a regex: {error}", hint=_HINT
        ) from None
    return lambda tag: compiled.fullmatch(tag) is not None


class _Group:
    __slots__ = ("alternates", "repeats")

    def __init__(self) -> None:
        self.repeats = False
        self.alternates = False


def _backtracking_risk(pattern: str) -> str | None:
    """Why ``pattern`` could backtrack exponentially, or ``None``.

    A single scan that tracks, per group, whether it contains a repeat or an alternation; a
    group with either that is itself repeated (``(a+)+``, ``(a|aa)*``) is refused. This is
    deliberately conservative: some safe patterns are refused too, and the hint shows the fix.
    """
    stack = [_Group()]
    closed: _Group | None = None  # the group just closed, if the next token may quantify it
    cost = 1  # product of the repeats' factors, see MAX_BACKTRACKING
    after_repeat = False  # a '?' or '+' right after a repeat makes it lazy/possessive
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            following = pattern[i + 1 : i + 2]
            if following.isdigit() and following != "0":
                return "uses a backreference"
            i, closed, after_repeat = i + 2, None, False
            continue
        if char == "[":
            i, closed, after_repeat = _skip_class(pattern, i), None, False
            continue
        if char == "(":
            if pattern.startswith("(?P=", i):
                return "uses a backreference"
            stack.append(_Group())
            i = _skip_group_prefix(pattern, i + 1)
            closed, after_repeat = None, False
            continue
        if char == ")":
            if len(stack) == 1:
                return "has an unbalanced ')'"
            closed = stack.pop()
            # A group that contains a repeat makes its parent contain one too.
            stack[-1].repeats |= closed.repeats
            stack[-1].alternates |= closed.alternates
            i, after_repeat = i + 1, False
            continue
        factor = 1
        if after_repeat and char in "?+":
            pass  # lazy or possessive modifier of the repeat just read, not a repeat itself
        elif char == "|":
            stack[-1].alternates = True
        elif char in "*+" or (char == "{" and _is_counted_repeat(pattern, i)):
            if closed is not None and (closed.repeats or closed.alternates):
                return "repeats a group that repeats or alternates (exponential backtracking)"
            stack[-1].repeats = True
            factor = _UNBOUNDED_FACTOR if char in "*+" else _counted_factor(pattern, i)
        elif char == "?":
            factor = _OPTIONAL_FACTOR
        after_repeat = factor > 1 or (char == "{" and _is_counted_repeat(pattern, i))
        cost *= factor
        if cost > MAX_BACKTRACKING:
            # Polynomial of high degree: each variable repeat multiplies the splits tried.
            return "has too many variable repeats (polynomial backtracking on long tags)"
        if char == "{" and after_repeat:
            i = pattern.find("}", i)  # skip the counts, so their ',' and digits are not atoms
        i += 1
        closed = None
    return None


def _skip_class(pattern: str, start: int) -> int:
    i = start + 1
    if pattern[i : i + 1] == "^":
        i += 1
    if pattern[i : i + 1] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def _skip_group_prefix(pattern: str, i: int) -> int:
    """Skip ``?:``, ``?P<name>``, ``?<=`` and the like so their ``?`` is not taken as a repeat."""
    if pattern[i : i + 1] != "?":
        return i
    if pattern.startswith("?P<", i):
        end = pattern.find(">", i)
        return len(pattern) if end < 0 else end + 1
    if pattern.startswith(("?<=", "?<!"), i):
        return i + 3
    return i + 2


def _is_counted_repeat(pattern: str, i: int) -> bool:
    """``{n,m}`` with m > 1 or open-ended repeats; ``{1}`` or a literal ``{`` does not."""
    end = pattern.find("}", i)
    if end < 0:
        return False
    low, _, high = pattern[i + 1 : end].partition(",")
    if not low.strip().isdigit() and low.strip():
        return False
    if "," not in pattern[i + 1 : end]:
        return low.strip().isdigit() and int(low) > 1
    return not high.strip() or (high.strip().isdigit() and int(high) > 1)


def _counted_factor(pattern: str, i: int) -> int:
    """The factor of a ``{m,n}`` repeat at ``i`` (one :func:`_is_counted_repeat` accepted)."""
    low, _, high = pattern[i + 1 : pattern.find("}", i)].partition(",")
    first = int(low) if low.strip().isdigit() else 0
    if not high.strip():
        return _UNBOUNDED_FACTOR
    # A count beyond the tag length cannot split it more ways than '*' does.
    return min(max(int(high) - first, 0) + 2, _UNBOUNDED_FACTOR)


class PinKind(StrEnum):
    EXACT = "exact"  # exactly this version
    PREFIX = "prefix"  # any version whose release starts with these numbers
    AT_LEAST_PREFIX = "at-least-prefix"  # that prefix and not older than the floor (~ and ^)
    TAG = "tag"  # a non-version tag: only that tag


@dataclass(frozen=True)
class Pin:
    """A parsed pin; :meth:`admits` says whether a candidate stays within it."""

    raw: str
    kind: PinKind
    prefix: tuple[int, ...] = ()
    floor: Version | None = None

    def admits(self, tag: str, version: Version | None) -> bool:
        if self.kind is PinKind.TAG or version is None or version.scheme is Scheme.DIGEST_ONLY:
            return tag == self.raw
        if self.kind is PinKind.EXACT:
            assert self.floor is not None  # set by parse_pin for EXACT
            return _same_version(self.floor, version)
        if version.release[: len(self.prefix)] != self.prefix:
            return False
        if self.kind is PinKind.AT_LEAST_PREFIX and self.floor is not None:
            return _padded(version.release) >= _padded(self.floor.release, len(version.release))
        return True


def parse_pin(text: str) -> Pin:
    """Parse a pin; raise :class:`InvalidInputError` naming the accepted forms."""
    raw = text.strip()
    hint = "pin a version (1.2.3), a prefix (1.x, 1.2.x), a range (~1.2.3, ^1.2) or a tag (stable)"
    if not raw or len(raw) > 128:
        raise InvalidInputError(f"pin {text[:40]!r} is empty or too long", hint=hint)
    if raw[0] in "~^":
        floor = _parse_release_version(raw[1:], raw, hint)
        release = floor.release
        if raw[0] == "~":
            keep = min(2, len(release))
        else:
            # npm's caret: the first non-zero component must not change (^0.2.3 stays on 0.2).
            keep = next((i + 1 for i, part in enumerate(release) if part != 0), len(release))
            keep = min(keep, len(release))
        return Pin(raw=raw, kind=PinKind.AT_LEAST_PREFIX, prefix=release[:keep], floor=floor)
    parts = raw.lstrip("vV").split(".")
    if len(parts) >= 2 and parts[-1] in ("x", "X", "*"):
        numbers = parts[:-1]
        if not all(part.isdigit() for part in numbers):
            raise InvalidInputError(f"pin {raw!r} is not a version prefix", hint=hint)
        return Pin(raw=raw, kind=PinKind.PREFIX, prefix=tuple(int(part) for part in numbers))
    try:
        version = parse_tag(raw)
    except InvalidInputError:
        raise InvalidInputError(f"pin {raw!r} is not a version or a tag", hint=hint) from None
    if version.scheme is Scheme.DIGEST_ONLY:
        return Pin(raw=raw, kind=PinKind.TAG)
    return Pin(raw=raw, kind=PinKind.EXACT, floor=version)


def validate_pin(text: str) -> str:
    parse_pin(text)
    return text


def _parse_release_version(text: str, raw: str, hint: str) -> Version:
    try:
        version = parse_tag(text)
    except InvalidInputError:
        raise InvalidInputError(f"pin {raw!r} is not a version range", hint=hint) from None
    if version.scheme is Scheme.DIGEST_ONLY:
        raise InvalidInputError(f"pin {raw!r} is not a version range", hint=hint)
    return version


def _padded(release: tuple[int, ...], length: int = 0) -> tuple[int, ...]:
    return release + (0,) * max(0, length - len(release))


def _same_version(a: Version, b: Version) -> bool:
    """Equal numbers (``1.20`` == ``1.20.0``) and pre-release; prefix and suffix do not matter."""
    size = max(len(a.release), len(b.release))
    return (
        a.scheme == b.scheme
        and _padded(a.release, size) == _padded(b.release, size)
        and a.prerelease == b.prerelease
    )
