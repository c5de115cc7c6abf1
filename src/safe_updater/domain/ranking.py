"""Rank the tags of a repository as update candidates for one current tag, explaining each.

Every tag gets a verdict with a reason in words. A tag is accepted only when it is newer than the
current version in the same scheme and with the same suffix, is not a pre-release (unless allowed)
and is not an alias of a tag already kept. Accepted tags come first, newest first; dropped tags
follow in the order they were listed. A downgrade is never accepted.

Assets that run images from the same repository share its tag list: parse it once with
:func:`parse_tags` and pass the :class:`ParsedTags` to :func:`rank_candidates` for each asset.
The index keeps each family's versions sorted, finds the current version and the major/minor
boundaries above it by binary search, and remembers the verdicts it has handed out, so an asset
costs a few look-ups per tag. Reasons therefore never name the current tag (the
:class:`Ranking` carries it): that is what lets assets share verdicts.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from itertools import groupby
from operator import itemgetter

from pydantic import BaseModel, ConfigDict

from safe_updater.domain.changes import ChangeType
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.tags import Scheme, SortKey, Version, parse_tag

Family = tuple[Scheme, str]
Placed = tuple[int, "TagVerdict"]  # a dropped verdict and the tag's listed position

_REPEATED = "listed more than once; the first listing is used"
_DOWNGRADE = "older than the current version; never downgrade"
_ITSELF = "the current tag itself"
_SAME = "same version as the current tag, spelled differently"
_SAME_BUILD = "same version as the current tag; only build metadata differs"
_PRERELEASE = "newer than the current version but a pre-release, and pre-releases are not allowed"
_FINAL = "final release of the current pre-release"
_REBUILD = "newer rebuild of the current version"
_NEWER = {
    ChangeType.MAJOR: "newer major release",
    ChangeType.MINOR: "newer minor release",
    ChangeType.PATCH: "newer patch release",
    ChangeType.PRERELEASE: "newer pre-release",
}
_by_position = itemgetter(0)


class TagVerdict(BaseModel):
    """Why one tag was taken or dropped as an update candidate. Shared between rankings."""

    model_config = ConfigDict(frozen=True)

    tag: str
    version: Version | None
    change_type: ChangeType | None
    accepted: bool
    reason: str


class Ranking(BaseModel):
    """Every listed tag judged against ``current``: accepted ones first, newest first."""

    model_config = ConfigDict(frozen=True)

    current: Version
    candidates: list[TagVerdict]

    @property
    def accepted(self) -> list[TagVerdict]:
        """The update candidates, newest first."""
        return [verdict for verdict in self.candidates if verdict.accepted]

    @property
    def dropped(self) -> list[TagVerdict]:
        return [verdict for verdict in self.candidates if not verdict.accepted]

    @property
    def best(self) -> TagVerdict | None:
        """The newest acceptable candidate, if any."""
        first = self.candidates[0] if self.candidates else None
        return first if first is not None and first.accepted else None


class _Slot:
    """One listed tag and the verdicts already given for it."""

    __slots__ = ("position", "problem", "tag", "verdicts", "version")

    def __init__(
        self, position: int, tag: str, version: Version | None, problem: str | None = None
    ) -> None:
        self.position = position
        self.tag = tag
        self.version = version
        self.problem = problem  # why an unparsed tag is dropped
        self.verdicts: dict[tuple[ChangeType | None, str, bool], TagVerdict] = {}

    def verdict(self, change: ChangeType | None, reason: str, accepted: bool = False) -> TagVerdict:
        key = (change, reason, accepted)
        found = self.verdicts.get(key)
        if found is None:
            found = TagVerdict(
                tag=self.tag,
                version=self.version,
                change_type=change,
                accepted=accepted,
                reason=reason,
            )
            self.verdicts[key] = found
        return found


def _slot_key(slot: _Slot) -> SortKey:
    assert slot.version is not None  # only parsed tags are sorted into families
    return slot.version.sort_key


# What one run gets for a given change level: the accepted verdict, or the dropped verdicts, or
# neither when the run holds several spellings and the winner depends on the current tag.
_Cell = tuple[TagVerdict | None, list[Placed]]


class _FamilyTags:
    """The valid, distinct tags of one family, sorted oldest first and grouped into runs.

    A run holds the tags that spell one version (equal sort keys, such as ``1.20`` and
    ``1.20.0``).
    """

    __slots__ = ("_cells", "_downgrades", "keys", "runs", "starts")

    def __init__(self, slots: list[_Slot]) -> None:
        self.runs: list[list[_Slot]] = []
        self.keys: list[SortKey] = []
        for key, members in groupby(sorted(slots, key=_slot_key), key=_slot_key):
            self.runs.append(list(members))
            self.keys.append(key)
        self.starts: list[int] = []  # how many tags precede each run
        count = 0
        for run in self.runs:
            self.starts.append(count)
            count += len(run)
        self._downgrades: list[Placed] | None = None
        self._cells: dict[tuple[ChangeType, bool], list[_Cell | None]] = {}

    def downgrades(self, below_run: int) -> list[Placed]:
        """Verdicts for every tag in the runs below ``below_run``; built once, then sliced."""
        if self._downgrades is None:
            self._downgrades = [
                (slot.position, slot.verdict(ChangeType.DOWNGRADE, _DOWNGRADE))
                for run in self.runs
                for slot in run
            ]
        end = self.starts[below_run] if below_run < len(self.runs) else len(self._downgrades)
        return self._downgrades[:end]

    def cells(self, level: ChangeType, allow_prerelease: bool) -> list[_Cell | None]:
        """Per run, filled on first use: its verdicts when it is a ``level`` step up."""
        found = self._cells.get((level, allow_prerelease))
        if found is None:
            found = self._cells[(level, allow_prerelease)] = [None] * len(self.runs)
        return found

    def cell(self, index: int, level: ChangeType, allow_prerelease: bool) -> _Cell:
        run = self.runs[index]
        change = _change_of(level, run)
        if run[0].version is not None and run[0].version.prerelease and not allow_prerelease:
            return None, [(slot.position, slot.verdict(change, _PRERELEASE)) for slot in run]
        if len(run) == 1:
            return run[0].verdict(change, _NEWER[change], accepted=True), []
        return None, []


def _change_of(level: ChangeType, run: list[_Slot]) -> ChangeType:
    # A pre-release of a patch-level step is PRERELEASE; of a minor or major step it stays that.
    version = run[0].version
    if level is ChangeType.PATCH and version is not None and version.prerelease:
        return ChangeType.PRERELEASE
    return level


class ParsedTags:
    """A repository's tag list, each tag parsed once; share it between the assets that use it.

    It fills caches lazily while rankings are built; sharing one between threads gives right
    results but may do some work twice.
    """

    __slots__ = ("_families", "_outside", "_slots", "chart")

    def __init__(self, slots: list[_Slot], *, chart: bool) -> None:
        self._slots = slots
        self.chart = chart
        members: dict[Family, list[_Slot]] = {}
        for slot in slots:
            if slot.version is not None:
                members.setdefault(slot.version.family, []).append(slot)
        self._families = {family: _FamilyTags(group) for family, group in members.items()}
        self._outside: dict[Family, list[Placed]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[str]:
        return (slot.tag for slot in self._slots)

    @property
    def versions(self) -> list[Version]:
        """The valid tags, parsed, without repeats, in listed order."""
        return [slot.version for slot in self._slots if slot.version is not None]

    def _outside_verdicts(self, cur: Version) -> list[Placed]:
        """Verdicts for every tag outside the current tag's family; they depend on nothing else."""
        found = self._outside.get(cur.family)
        if found is None:
            found = []
            for slot in self._slots:
                version = slot.version
                if version is None:
                    found.append((slot.position, slot.verdict(None, slot.problem or _REPEATED)))
                elif version.family != cur.family:
                    reason = _other_family_reason(cur, version)
                    found.append((slot.position, slot.verdict(ChangeType.INCOMPARABLE, reason)))
            self._outside[cur.family] = found
        return found


def parse_tags(tags: Iterable[str], *, chart: bool = False) -> ParsedTags:
    """Parse a tag list once; invalid tags are kept with their reason, repeats are marked."""
    seen: set[str] = set()
    slots: list[_Slot] = []
    for position, tag in enumerate(tags):
        if tag in seen:
            slots.append(_Slot(position, tag, None, _REPEATED))
            continue
        seen.add(tag)
        try:
            slots.append(_Slot(position, tag, parse_tag(tag, chart=chart)))
        except InvalidInputError as exc:
            slots.append(_Slot(position, tag, None, f"invalid: {exc.message}"))
    return ParsedTags(slots, chart=chart)


def rank_candidates(
    current: str | Version,
    tags: Iterable[str] | ParsedTags,
    *,
    allow_prerelease: bool = False,
    chart: bool = False,
) -> Ranking:
    """Judge every tag as an update of ``current``.

    ``chart=True`` reads chart versions (``+`` allowed) instead of OCI tags. Raises
    :class:`InvalidInputError` if ``current`` is not a valid tag; invalid listed tags are dropped
    with the reason.
    """
    cur = current if isinstance(current, Version) else parse_tag(current, chart=chart)
    index = tags if isinstance(tags, ParsedTags) else parse_tags(tags, chart=chart)
    dropped = list(index._outside_verdicts(cur))
    accepted: list[TagVerdict] = []
    family = index._families.get(cur.family)
    if family is not None:
        key = cur.sort_key
        low, high = bisect_left(family.keys, key), bisect_right(family.keys, key)
        dropped.extend(family.downgrades(low))
        for run in family.runs[low:high]:
            dropped.extend((slot.position, _same_verdict(cur, slot)) for slot in run)
        if high < len(family.runs) and cur.scheme is not Scheme.DIGEST_ONLY:
            _judge_newer(cur, family, high, allow_prerelease, accepted, dropped)
    dropped.sort(key=_by_position)
    candidates = accepted + [verdict for _, verdict in dropped]
    # Every verdict was built and validated by this module; skip validating the list again.
    return Ranking.model_construct(current=cur, candidates=candidates)


def _same_verdict(cur: Version, slot: _Slot) -> TagVerdict:
    if slot.tag == cur.raw:
        return slot.verdict(ChangeType.NONE, _ITSELF)
    assert slot.version is not None
    if slot.version.build != cur.build:
        return slot.verdict(ChangeType.BUILD, _SAME_BUILD)
    return slot.verdict(ChangeType.NONE, _SAME)


def _judge_newer(
    cur: Version,
    family: _FamilyTags,
    high: int,
    allow_prerelease: bool,
    accepted: list[TagVerdict],
    dropped: list[Placed],
) -> None:
    """Judge the runs from ``high`` up, all newer than ``cur``, newest first.

    Sort keys start with the release numbers, so the runs that raise the major number, the minor
    number, or only later numbers are found by binary search; the change types come out as
    :func:`~safe_updater.domain.changes.classify` defines them (a property test checks this).
    """
    major, minor = cur.release[0], cur.release[1]
    keys = family.keys
    major_from = bisect_left(keys, ((major + 1,),), high)
    minor_from = bisect_left(keys, ((major, minor + 1),), high, major_from)
    # Runs with the current release numbers (its final release, newer rebuilds) have reasons
    # that depend on the current tag; a flag of 2 sorts after both final and pre-release keys.
    later_from = bisect_left(keys, (cur.release, 2), high, minor_from)
    for level, start, end in (
        (ChangeType.MAJOR, major_from, len(keys)),
        (ChangeType.MINOR, minor_from, major_from),
        (ChangeType.PATCH, later_from, minor_from),
    ):
        cells = family.cells(level, allow_prerelease)
        for index in range(end - 1, start - 1, -1):
            cell = cells[index]
            if cell is None:
                cell = cells[index] = family.cell(index, level, allow_prerelease)
            verdict, drops = cell
            if verdict is not None:
                accepted.append(verdict)
            elif drops:
                dropped.extend(drops)
            else:
                change = _change_of(level, family.runs[index])
                _keep_one(cur, family.runs[index], change, _NEWER[change], accepted, dropped)
    for index in range(later_from - 1, high - 1, -1):
        run = family.runs[index]
        version = run[0].version
        assert version is not None
        change = _change_of(ChangeType.PATCH, run)
        if version.prerelease and not allow_prerelease:
            dropped.extend((slot.position, slot.verdict(change, _PRERELEASE)) for slot in run)
        elif change is ChangeType.PRERELEASE:
            _keep_one(cur, run, change, _NEWER[change], accepted, dropped)
        else:
            reason = _FINAL if cur.prerelease else _REBUILD
            _keep_one(cur, run, change, reason, accepted, dropped)


def _keep_one(
    cur: Version,
    run: list[_Slot],
    change: ChangeType,
    reason: str,
    accepted: list[TagVerdict],
    dropped: list[Placed],
) -> None:
    """Accept one tag of a run; drop its other spellings.

    Of several spellings of one version (1.20 / 1.20.0, v1.2 / 1.2) keep the one written like the
    current tag, so that successive runs do not flap between them; ties go to the first listed.
    """
    winner = run[0] if len(run) == 1 else max(run, key=lambda s: (_preference(cur, s), -s.position))
    accepted.append(winner.verdict(change, reason, accepted=True))
    if len(run) > 1:
        alias = f"same version as {winner.tag}, which is kept as it is spelled like the current tag"
        dropped.extend(
            (slot.position, slot.verdict(change, alias)) for slot in run if slot is not winner
        )


def _preference(cur: Version, slot: _Slot) -> tuple[bool, bool, bool]:
    version = slot.version
    assert version is not None
    return (
        version.prefix == cur.prefix,
        version.precision == cur.precision,
        version.build == cur.build,
    )


def _other_family_reason(cur: Version, version: Version) -> str:
    # Worded without the current tag's own suffix or scheme, so one verdict serves every asset.
    if cur.scheme is Scheme.DIGEST_ONLY:
        return (
            "the current tag is not a version, so it is tracked by its digest "
            "and never compared with other tags"
        )
    if version.scheme is Scheme.DIGEST_ONLY:
        return f"{version.raw!r} is not a version; such tags are tracked by digest only"
    if version.scheme != cur.scheme:
        return f"{version.scheme} tag, a different version scheme from the current tag's"
    variant = f"suffix {version.suffix!r}" if version.suffix else "no suffix"
    return f"different image variant ({variant}) from the current tag; only the same variant counts"
