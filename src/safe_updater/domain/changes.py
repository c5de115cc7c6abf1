"""What kind of change moving from one tag to another is.

For a candidate newer than the current version (same scheme, same suffix):

* ``MAJOR`` / ``MINOR`` / ``PATCH``: the first release number that differs is the 1st / 2nd /
  3rd-or-later (a 4th part such as ``4.0.12.2823`` -> ``4.0.12.2824`` is a patch). A newer
  ``-rN``/``-lsN`` rebuild of the same version, and the final release of the current pre-release
  (``1.2.3-rc.2`` -> ``1.2.3``), are patches too. CalVer maps the same way by position, so
  ``2024.01`` -> ``2025.01`` is a major change.
* ``PRERELEASE``: the candidate is a pre-release of the current release numbers
  (``1.2.3-rc.1`` -> ``1.2.3-rc.2``) or of a patch-level step (``1.2.3`` -> ``1.2.4-rc.1``).
  A pre-release of a minor or major step is ``MINOR`` or ``MAJOR``: being a pre-release never
  makes a bigger jump look smaller to the policy (the candidate's ``is_prerelease`` tells the rest).

Otherwise: ``NONE`` for equal precedence with the same build metadata (``1.20`` vs ``v1.20.0``),
``BUILD`` when only build metadata differs, ``DOWNGRADE`` when the candidate is older, and
``INCOMPARABLE`` across schemes or suffixes and between different digest-only tags. The relation
is antisymmetric: ``classify(a, b)`` is an upgrade exactly when ``classify(b, a)`` is
``DOWNGRADE``; ``NONE``, ``BUILD`` and ``INCOMPARABLE`` hold both ways.
"""

from __future__ import annotations

from enum import StrEnum

from safe_updater.domain.tags import Scheme, Version, parse_tag


class ChangeType(StrEnum):
    MAJOR = "major"
    MINOR = "minor"
    PATCH = "patch"
    PRERELEASE = "prerelease"
    BUILD = "build"
    NONE = "none"
    DOWNGRADE = "downgrade"
    INCOMPARABLE = "incomparable"

    @property
    def is_upgrade(self) -> bool:
        return self in _UPGRADES


_UPGRADES = frozenset({ChangeType.MAJOR, ChangeType.MINOR, ChangeType.PATCH, ChangeType.PRERELEASE})


def as_version(tag: str | Version) -> Version:
    """Accept a parsed version or parse a tag (raising :class:`InvalidInputError`)."""
    return tag if isinstance(tag, Version) else parse_tag(tag)


def classify(current: str | Version, candidate: str | Version) -> ChangeType:
    """The change type of moving from ``current`` to ``candidate``.

    Raises :class:`InvalidInputError` if a string argument is not a valid tag.
    """
    return classify_versions(as_version(current), as_version(candidate))


def classify_versions(old: Version, new: Version) -> ChangeType:
    """:func:`classify` for versions already parsed."""
    if old.family != new.family:
        return ChangeType.INCOMPARABLE
    if old.scheme is Scheme.DIGEST_ONLY:
        return ChangeType.NONE  # same family means the same mutable tag
    old_key, new_key = old.sort_key, new.sort_key
    if new_key < old_key:
        return ChangeType.DOWNGRADE
    if new_key == old_key:
        return ChangeType.NONE if old.build == new.build else ChangeType.BUILD
    level = _release_level(old.release, new.release)
    if new.is_prerelease and level in (ChangeType.PATCH, ChangeType.NONE):
        return ChangeType.PRERELEASE
    # Equal release numbers here mean a final release of a pre-release or a newer rebuild.
    return ChangeType.PATCH if level is ChangeType.NONE else level


def is_newer(current: str | Version, candidate: str | Version) -> bool:
    """True when ``candidate`` is an upgrade of ``current`` (same scheme and suffix, higher)."""
    return classify(current, candidate).is_upgrade


def _release_level(old: tuple[int, ...], new: tuple[int, ...]) -> ChangeType:
    for index in range(max(len(old), len(new))):
        if (old[index] if index < len(old) else 0) != (new[index] if index < len(new) else 0):
            if index == 0:
                return ChangeType.MAJOR
            return ChangeType.MINOR if index == 1 else ChangeType.PATCH
    return ChangeType.NONE
