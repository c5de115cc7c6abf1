"""Version analysis: parse tags, classify changes, rank candidates. The public facade.

The parts live in :mod:`~safe_updater.domain.tags` (grammar, schemes, suffix and pre-release
rules), :mod:`~safe_updater.domain.changes` (change types) and
:mod:`~safe_updater.domain.ranking` (candidate ranking with reasons); import them from here.
"""

from __future__ import annotations

from safe_updater.domain.changes import ChangeType, as_version, classify, is_newer
from safe_updater.domain.ranking import (
    ParsedTags,
    Ranking,
    TagVerdict,
    parse_tags,
    rank_candidates,
)
from safe_updater.domain.tags import MAX_TAG_LENGTH, PRERELEASE_WORDS, Scheme, Version, parse_tag

__all__ = [
    "MAX_TAG_LENGTH",
    "PRERELEASE_WORDS",
    "ChangeType",
    "ParsedTags",
    "Ranking",
    "Scheme",
    "TagVerdict",
    "Version",
    "as_version",
    "classify",
    "is_newer",
    "parse_tag",
    "parse_tags",
    "rank_candidates",
]
