"""Parse image tags and chart versions into comparable versions.

A tag is untrusted input from a registry. Its length is checked first (128 at most), then the
OCI tag grammar, then a hand-written scanner reads it left to right. The only regexes are single
character classes with one quantifier (no nesting, no alternation), so no input can make them
backtrack: every step is linear in the tag's length, and the length is bounded anyway.

How a tag is read, left to right::

    [v|V] RELEASE [PRE-RELEASE] [_BUILD] [-SUFFIX [-rN|-lsN] [-<git sha>]]

* ``RELEASE``: dot-separated numbers. ``1.20`` and ``1.20.0`` are the same version; a 4th part
  (``4.0.12.2823``) is kept and compared.
* Scheme: ``CALVER`` when the release is a date (``2021.12.16``, ``2024.01``, ``20240131``,
  ``2024-01-31``, optionally followed by a time ``-1530`` / ``-153000`` or written as
  ``YYYYMMDDHHMM[SS]``); ``DIGEST_ONLY`` when the tag does not start with a number (``latest``,
  ``stable``, ``main``, ``version-5.6.16``) or looks like a git sha; ``SEMVER`` otherwise.
* Pre-release or suffix: the first segment after the release (after ``-`` or ``.``, or glued on
  as in ``3.13.0rc1``) is a pre-release only when its first identifier is a known pre-release
  word (:data:`PRERELEASE_WORDS`, or ``a``/``b``/``m`` followed by digits). Anything else is a
  compatibility suffix (``alpine``, ``1-ubi8``, ``debian-12``, ``slim-bookworm``). The list is an
  allow-list on purpose: an unknown word taken for a suffix only hides updates, while an unknown
  suffix taken for a pre-release would let ``1.2.3-apache`` be "updated" to ``1.2.4``, which is a
  different image variant.
* Build metadata: ``_xyz`` (Helm writes SemVer's ``+`` as ``_`` in OCI tags; Temurin's
  ``17.0.9_9-jdk``) up to the next ``-``; ``+xyz`` in chart versions. A trailing git sha segment
  of a suffix (``1.25.7.5604-980a13e02``) is build metadata too. Build metadata never orders.
* Revision: a trailing ``-rN`` (Bitnami) or ``-lsN`` (LinuxServer) is a rebuild counter, ordered
  after the pre-release, so ``1.2.3-debian-12-r4`` and ``1.2.4-debian-12-r0`` share the suffix
  ``debian-12``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safe_updater.domain.errors import InvalidInputError

MAX_TAG_LENGTH = 128

# Single character classes with one bounded repetition: a regex engine matches these linearly.
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_CHART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
# Each of these is one character class with one quantifier, used with match/search/fullmatch:
# linear, and they move the scanner's inner loops into C.
_NUMERIC_RUN = re.compile(r"[0-9.]*")
_DIGIT_RUN = re.compile(r"[0-9]*")
_SEGMENT_END = re.compile(r"[-_+]")
_SHA_RE = re.compile(r"[0-9a-f]{7,64}")
_TAG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_DIGITS = frozenset("0123456789")
_TAG_HINT = "a tag is 1-128 letters, digits, '_', '.' or '-', and does not start with '.' or '-'"

PRERELEASE_WORDS = frozenset(
    {
        "alpha",
        "beta",
        "rc",
        "cr",
        "pre",
        "preview",
        "dev",
        "snapshot",
        "canary",
        "nightly",
        "milestone",
        "ea",
        "next",
        "experimental",
        "unstable",
    }
)
"""First identifiers that make a segment a pre-release (case-insensitive, digits may follow)."""

_SHORT_PRERELEASE_LETTERS = frozenset(
    {"a", "b", "m"}
)  # only as a1, b2, m3: alone they are too vague
_REVISION_WORDS = frozenset({"r", "ls"})
_MIN_YEAR, _MAX_YEAR = 1970, 2099


class Scheme(StrEnum):
    SEMVER = "semver"
    CALVER = "calver"
    DIGEST_ONLY = "digest-only"


PrereleaseKey = tuple[tuple[int, int | str], ...]
SortKey = tuple[tuple[int, ...], int, PrereleaseKey, int]


class Version(BaseModel):
    """A parsed tag. Order is defined only within one :attr:`family`, through :attr:`sort_key`."""

    model_config = ConfigDict(frozen=True)

    raw: str = Field(description="The tag as given.")
    scheme: Scheme
    prefix: str = Field(default="", description="'v', 'V' or ''.")
    release: tuple[int, ...] = Field(
        default=(),
        description="Numeric parts padded to 3, zeros beyond the 3rd stripped: 1.20 -> (1, 20, 0).",
    )
    precision: int = Field(default=0, description="How many numeric parts the tag spells out.")
    prerelease: tuple[str | int, ...] = Field(
        default=(), description="Pre-release identifiers, lower-cased; rc10 is ('rc', 10)."
    )
    build: str | None = Field(default=None, description="Build metadata; never orders.")
    suffix: str = Field(default="", description="Compatibility suffix such as 'alpine'.")
    revision: int | None = Field(default=None, description="Rebuild counter from -rN or -lsN.")

    def __str__(self) -> str:
        return self.raw

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Version:
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("_sort_key", None)  # the fields may have changed
        return copied

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    @property
    def family(self) -> tuple[Scheme, str]:
        """Versions compare only within one family: same scheme and same suffix.

        A digest-only tag is a family of its own, since ``latest`` and ``stable`` are unrelated.
        """
        if self.scheme is Scheme.DIGEST_ONLY:
            return (self.scheme, self.raw)
        return (self.scheme, self.suffix)

    @property
    def sort_key(self) -> SortKey:
        """Precedence within a family; equal keys mean the same version (``1.20`` == ``1.20.0``).

        A release sorts after its own pre-releases (SemVer 2.0 §11). Numeric identifiers sort
        before words; a shorter identifier list sorts first when it is a prefix of a longer one.
        """
        # Cached in the instance dict by hand: functools.cached_property takes a lock on 3.11,
        # and ranking reads this key for every tag. Pydantic compares and dumps fields only.
        found: SortKey | None = self.__dict__.get("_sort_key")
        if found is None:
            pre: PrereleaseKey = tuple(
                (0, part) if isinstance(part, int) else (1, part) for part in self.prerelease
            )
            found = (self.release, 0 if pre else 1, pre, self.revision or 0)
            self.__dict__["_sort_key"] = found
        return found


def parse_tag(tag: str, *, chart: bool = False) -> Version:
    """Parse an image tag (or, with ``chart=True``, a Helm chart version that may contain ``+``).

    Raises :class:`InvalidInputError` with the reason in words for a tag that is empty, longer than
    128 characters or outside the OCI tag grammar; raises nothing else.
    """
    _check_grammar(tag, chart=chart)
    try:
        return _scan(tag, chart=chart)
    except (ValueError, TypeError) as exc:  # pragma: no cover - the scanner is total by design
        raise InvalidInputError(f"tag {tag!r} could not be read: {exc}", hint=_TAG_HINT) from exc


def _check_grammar(tag: Any, *, chart: bool) -> None:
    what = "chart version" if chart else "tag"
    if not isinstance(tag, str):
        raise InvalidInputError(f"{what} must be text, not {type(tag).__name__}", hint=_TAG_HINT)
    if not tag:
        raise InvalidInputError(f"{what} is empty", hint=_TAG_HINT)
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidInputError(
            f"{what} {tag[:40]!r}... is {len(tag)} characters long; the limit is {MAX_TAG_LENGTH}",
            hint=_TAG_HINT,
        )
    if (_CHART_RE if chart else _TAG_RE).fullmatch(tag):
        return
    if tag[0] in ".-+":
        reason = f"starts with {tag[0]!r}; it must start with a letter, digit or '_'"
    else:
        allowed = _TAG_CHARS | {"+"} if chart else _TAG_CHARS
        index = next(i for i, char in enumerate(tag) if char not in allowed)
        reason = (
            f"contains {tag[index]!r} at position {index + 1}; "
            "only letters, digits, '_', '.' and '-' are allowed"
        )
    raise InvalidInputError(f"{what} {tag!r} {reason}", hint=_TAG_HINT)


def _scan(tag: str, *, chart: bool) -> Version:
    n = len(tag)
    start = 1 if n > 1 and tag[0] in "vV" and tag[1] in _DIGITS else 0
    prefix = tag[:start]
    if tag[start] not in _DIGITS or _looks_like_sha(tag):
        return Version(raw=tag, scheme=Scheme.DIGEST_ONLY)

    # The release is the run of digit groups joined by single dots; "1.2..3" stops after "1.2".
    span = _match(_NUMERIC_RUN, tag, start).group()
    groups = span.split(".")
    if "" in groups:
        del groups[groups.index("") :]
        span = ".".join(groups)
    pos = start + len(span)

    calendar = _read_calendar(tag, groups, pos)
    if calendar is None:
        scheme, parts = Scheme.SEMVER, [int(group) for group in groups]
    else:
        scheme, (parts, pos) = Scheme.CALVER, calendar

    prerelease: tuple[str | int, ...] = ()
    build: str | None = None
    if chart and pos < n and tag[pos] == "-":
        # Chart versions are strict SemVer: everything up to '+' is the pre-release.
        end = tag.find("+", pos)
        end = n if end < 0 else end
        prerelease = _identifiers(tag[pos + 1 : end].split("."))
        pos = end
    elif pos < n:
        seg_start = pos + 1 if tag[pos] in "-." else pos if tag[pos].isalpha() else -1
        if seg_start >= 0:
            seg_end = _segment_end(tag, seg_start)
            identifiers = tag[seg_start:seg_end].split(".")
            if _starts_prerelease(identifiers[0]):
                prerelease = _identifiers(identifiers)
                pos = seg_end
    if pos < n and tag[pos] == "+":
        build, pos = tag[pos + 1 :], n
    elif pos < n and tag[pos] == "_":
        end = tag.find("-", pos)
        end = n if end < 0 else end
        build, pos = tag[pos + 1 : end], end

    suffix = ""
    revision: int | None = None
    if pos < n:
        rest = tag[pos:]
        # A lone separator stays in the suffix so that "1.2.3-" is not taken for "1.2.3".
        suffix = rest[1:] if rest[0] in "-." and len(rest) > 1 else rest
        suffix, revision, sha = _peel_suffix(suffix)
        if build is None:
            build = sha

    return Version(
        raw=tag,
        scheme=scheme,
        prefix=prefix,
        release=_normalise(parts),
        precision=len(parts),
        prerelease=prerelease,
        build=build,
        suffix=suffix,
        revision=revision,
    )


def _match(pattern: re.Pattern[str], text: str, pos: int) -> re.Match[str]:
    found = pattern.match(text, pos)
    assert found is not None  # the patterns end in "*", so they match the empty string
    return found


def _segment_end(text: str, pos: int) -> int:
    found = _SEGMENT_END.search(text, pos)
    return len(text) if found is None else found.start()


def _normalise(parts: list[int]) -> tuple[int, ...]:
    # Padding to three and stripping zeros beyond it makes 1.20, 1.20.0 and 1.20.0.0 one version.
    trimmed = list(parts)
    while len(trimmed) > 3 and trimmed[-1] == 0:
        trimmed.pop()
    trimmed.extend([0] * (3 - len(trimmed)))
    return tuple(trimmed)


def _looks_like_sha(tag: str) -> bool:
    return _SHA_RE.fullmatch(tag) is not None and not tag.isdigit()


def _is_year(group: str) -> bool:
    return len(group) == 4 and _MIN_YEAR <= int(group) <= _MAX_YEAR


def _is_date(year: str, month: str, day: str) -> bool:
    return _is_year(year) and 1 <= int(month) <= 12 and 1 <= int(day) <= 31


def _time_parts(digits: str) -> list[int] | None:
    if len(digits) not in (4, 6):
        return None
    parts = [int(digits[i : i + 2]) for i in range(0, len(digits), 2)]
    if parts[0] > 23 or any(part > 59 for part in parts[1:]):
        return None
    return parts


def _read_calendar(tag: str, groups: list[str], pos: int) -> tuple[list[int], int] | None:
    """Return the date (and time) parts and the new position if the release is a date."""
    first = groups[0]
    if len(groups) >= 2:
        if _is_year(first) and 1 <= int(groups[1]) <= 12:
            parts = [int(group) for group in groups]
            return _with_time(tag, parts, pos) if len(parts) == 3 else (parts, pos)
        return None
    if len(first) in (8, 12, 14) and _is_date(first[:4], first[4:6], first[6:8]):
        if len(first) == 8:
            return _with_time(tag, [int(first[:4]), int(first[4:6]), int(first[6:8])], pos)
        clock = _time_parts(first[8:])
        if clock is None:
            return None
        return [int(first[:4]), int(first[4:6]), int(first[6:8]), *clock], pos
    dashed = tag[pos : pos + 6]
    if (
        _is_year(first)
        and len(dashed) == 6
        and dashed[0] == "-"
        and dashed[3] == "-"
        and all(char in _DIGITS for char in dashed[1:3] + dashed[4:6])
        and (pos + 6 == len(tag) or tag[pos + 6] not in _DIGITS)
        and _is_date(first, dashed[1:3], dashed[4:6])
    ):
        return _with_time(tag, [int(first), int(dashed[1:3]), int(dashed[4:6])], pos + 6)
    return None


def _with_time(tag: str, date: list[int], pos: int) -> tuple[list[int], int]:
    """Take a ``-HHMM`` or ``-HHMMSS`` time after a full date, so date-time tags order in time."""
    if pos < len(tag) and tag[pos] == "-":
        end = _match(_DIGIT_RUN, tag, pos + 1).end()
        if end == len(tag) or tag[end] in "-_":
            clock = _time_parts(tag[pos + 1 : end])
            if clock is not None:
                return [*date, *clock], end
    return date, pos


def _split_word(identifier: str) -> tuple[str, str]:
    """``rc10`` -> (``rc``, ``10``); the word is lower-cased."""
    cut = len(identifier)
    while cut > 0 and identifier[cut - 1] in _DIGITS:
        cut -= 1
    return identifier[:cut].lower(), identifier[cut:]


def _starts_prerelease(identifier: str) -> bool:
    word, digits = _split_word(identifier)
    return word in PRERELEASE_WORDS or (word in _SHORT_PRERELEASE_LETTERS and bool(digits))


def _identifiers(raw: list[str]) -> tuple[str | int, ...]:
    # SemVer compares "rc10" < "rc9" as text; splitting word and number orders them as people do.
    out: list[str | int] = []
    for identifier in raw:
        if identifier and all(char in _DIGITS for char in identifier):
            out.append(int(identifier))
            continue
        word, digits = _split_word(identifier)
        if word.isalpha() and digits:
            out.extend((word, int(digits)))
        else:
            out.append(identifier.lower())
    return tuple(out)


def _peel_suffix(suffix: str) -> tuple[str, int | None, str | None]:
    """Split a trailing git sha (build metadata) and ``-rN``/``-lsN`` revision off a suffix."""
    sha: str | None = None
    head, _, last = suffix.rpartition("-")
    if _looks_like_sha(last) and any(char in _DIGITS for char in last):
        sha, suffix = last, head
        head, _, last = suffix.rpartition("-")
    word, digits = _split_word(last)
    if word in _REVISION_WORDS and digits and last[: len(word)].islower():
        return head, int(digits), sha
    return suffix, None, sha
