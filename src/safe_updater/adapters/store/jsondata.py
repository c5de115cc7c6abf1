"""JSON payloads as the store keeps them: plain JSON types only, canonical when hashed."""

from __future__ import annotations

import json
from datetime import date, datetime
from enum import Enum
from typing import Any

from safe_updater.domain.errors import InvalidInputError


def _default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(type(value).__name__)


def to_plain(data: dict[str, Any] | None, *, field: str) -> dict[str, Any]:
    """A copy of ``data`` with only JSON types, exactly as it will read back from the database.

    Converting before storing (and hashing) means what a reader gets equals what was hashed:
    tuples become lists, datetimes ISO strings, keys strings.
    """
    if data is None:
        return {}
    try:
        plain = json.loads(json.dumps(data, default=_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{field} holds a value the state store cannot keep as JSON ({exc})",
            hint="pass str, int, float, bool, None, lists and dicts only",
            field=field,
        ) from exc
    if not isinstance(plain, dict):  # pragma: no cover - a dict in is a dict out
        raise InvalidInputError(f"{field} must be a JSON object", field=field)
    return plain


def canonical(obj: object) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8; the same bytes on every run and backend."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
