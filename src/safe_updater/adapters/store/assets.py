"""The inventory: assets found by the last scans, stored in bulk."""

from __future__ import annotations

import builtins
import contextlib
import gc
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from itertools import islice
from typing import NamedTuple

from sqlalchemy import Text, bindparam, cast, delete, func, select, update

from safe_updater.adapters.store.database import Database, dialect_insert
from safe_updater.adapters.store.schema import assets
from safe_updater.domain.assets import Asset, AssetKind

# The JSON as text, parsed by pydantic-core in one step: about three times faster for 10,000
# assets than json.loads followed by model_validate.
_DATA_TEXT = cast(assets.c.data, Text)

_CHUNK = 1000
"""Rows per executemany / IN list: far below SQLite's and PostgreSQL's parameter limits."""


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Build many objects without the cyclic garbage collector running in between.

    Ten thousand assets make tens of thousands of container objects, which trigger collections
    whose cost grows with everything else the process holds: half of a 10,000-asset ``list()``
    went to them (bench/bench_store.py). The assets hold no cycles, so nothing is left for the
    collector to find afterwards; it runs again at the next threshold.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class PendingUpdate(NamedTuple):
    """An update a scan found for an asset: what the policy would do with it."""

    action: str  # "auto" (applied by the next update run) or "approve" (offered for approval)
    change_type: str  # patch, minor, major, prerelease, digest
    target: str  # the version it would move to


# One executemany of UPDATE ... WHERE id = :b_id; the bind names must differ from the column
# names (SQLAlchemy reserves those for the SET clause; `target` is a column of assets).
_SET_PENDING = (
    update(assets)
    .where(assets.c.id == bindparam("b_id"))
    .values(
        pending_action=bindparam("b_action"),
        pending_change_type=bindparam("b_change_type"),
        pending_target=bindparam("b_target"),
    )
)


class AssetRepository:
    """Assets by id; a scan upserts what it found and removes what has gone from its target."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def upsert(self, items: Iterable[Asset]) -> None:
        """Insert or update assets in one transaction (first_seen is kept, last_seen moves)."""
        now = self._db.clock()
        # The last occurrence of an id wins, as if they had been written one after the other.
        by_id = {asset.id: asset for asset in items}
        if not by_id:
            return
        stmt = dialect_insert(self._db, assets)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "kind": stmt.excluded.kind,
                "target": stmt.excluded.target,
                "name": stmt.excluded.name,
                "current_version": stmt.excluded.current_version,
                "data": stmt.excluded.data,
                "last_seen": stmt.excluded.last_seen,
            },
        )
        rows = (
            {
                "id": asset.id,
                "kind": asset.kind.value,
                "target": asset.target,
                "name": asset.name,
                "current_version": asset.current_version,
                "data": asset.model_dump(mode="json"),
                "first_seen": now,
                "last_seen": now,
            }
            for asset in by_id.values()
        )
        with self._db.write("store assets") as conn:
            while chunk := builtins.list(islice(rows, _CHUNK)):
                conn.execute(stmt, chunk)

    def list(self, kind: AssetKind | None = None) -> builtins.list[Asset]:
        stmt = select(_DATA_TEXT).order_by(assets.c.id)
        if kind is not None:
            stmt = stmt.where(assets.c.kind == kind.value)
        with self._db.read("list assets") as conn:
            rows = conn.execute(stmt).scalars().all()
        with _collector_paused():
            return [Asset.model_validate_json(data) for data in rows]

    def get(self, asset_id: str) -> Asset | None:
        with self._db.read("read asset") as conn:
            data: str | None = conn.execute(
                select(_DATA_TEXT).where(assets.c.id == asset_id)
            ).scalar_one_or_none()
        return None if data is None else Asset.model_validate_json(data)

    def remove_missing(
        self, target: str, present_ids: set[str], *, kind: AssetKind | None = None
    ) -> int:
        """Delete assets of ``target`` whose ids are not in ``present_ids``; returns how many.

        ``target`` is the config's target name (``local``) or kind-qualified (``docker:local``);
        give the kind (either way) whenever you can: a Docker host and a Kubernetes cluster may
        share a name, and one's scan must not remove the other's assets.
        """
        prefix, sep, rest = target.partition(":")
        if sep and prefix in {k.value for k in AssetKind}:
            kind, target = AssetKind(prefix), rest
        stmt = select(assets.c.id).where(assets.c.target == target)
        if kind is not None:
            stmt = stmt.where(assets.c.kind == kind.value)
        with self._db.write("remove missing assets") as conn:
            stored = set(conn.execute(stmt).scalars())
            # The difference is computed here, not as NOT IN (10,000 ids): parameter limits.
            gone = sorted(stored - present_ids)
            it = iter(gone)
            while chunk := builtins.list(islice(it, _CHUNK)):
                conn.execute(delete(assets).where(assets.c.id.in_(chunk)))
        return len(gone)

    def record_pending(self, plans: Mapping[str, PendingUpdate | None]) -> None:
        """Store what a scan planned for each asset in ``plans``: its pending update, or None
        for none. Assets not in ``plans`` keep theirs (their target or registry could not be
        read); ids not in the inventory are ignored. One transaction, so a scrape sees the
        whole scan or none of it."""
        rows = (
            {
                "b_id": asset_id,
                "b_action": None if plan is None else plan.action,
                "b_change_type": None if plan is None else plan.change_type,
                "b_target": None if plan is None else plan.target,
            }
            for asset_id, plan in plans.items()
        )
        with self._db.write("store pending updates") as conn:
            while chunk := builtins.list(islice(rows, _CHUNK)):
                conn.execute(_SET_PENDING, chunk)

    def pending(self) -> dict[str, PendingUpdate]:
        """Each asset's pending update (assets without one left out)."""
        stmt = select(
            assets.c.id,
            assets.c.pending_action,
            assets.c.pending_change_type,
            assets.c.pending_target,
        ).where(assets.c.pending_action.is_not(None))
        with self._db.read("read pending updates") as conn:
            return {
                str(asset_id): PendingUpdate(str(action), str(change_type or ""), str(target or ""))
                for asset_id, action, change_type, target in conn.execute(stmt)
            }

    def pending_counts(self) -> dict[tuple[str, str], int]:
        """Assets with a pending update, by ``(action, change_type)`` (from the index alone)."""
        stmt = (
            select(assets.c.pending_action, assets.c.pending_change_type, func.count())
            .where(assets.c.pending_action.is_not(None))
            .group_by(assets.c.pending_action, assets.c.pending_change_type)
        )
        with self._db.read("count pending updates") as conn:
            return {(str(a), str(c or "")): int(n) for a, c, n in conn.execute(stmt)}

    def counts(self) -> dict[str, int]:
        """Assets per kind, every kind present (zeros included)."""
        counts = {kind.value: 0 for kind in AssetKind}
        stmt = select(assets.c.kind, func.count()).group_by(assets.c.kind)
        with self._db.read("count assets") as conn:
            for kind, n in conn.execute(stmt):
                counts[str(kind)] = int(n)
        return counts

    def last_seen(self) -> datetime | None:
        """When a scan last saw any asset (the newest ``last_seen``); None for no assets."""
        with self._db.read("read last scan time") as conn:
            # max() keeps the column's type, so the value comes back timezone-aware.
            value: datetime | None = conn.execute(select(func.max(assets.c.last_seen))).scalar()
        return value
