"""Loop prevention: versions quarantined per asset after a rollback, and pins set by people."""

from __future__ import annotations

import builtins

from sqlalchemy import RowMapping, delete, func, select

from safe_updater.adapters.store.database import Database, dialect_insert
from safe_updater.adapters.store.schema import pins, quarantine
from safe_updater.domain.assets import AssetId
from safe_updater.domain.journal import PinEntry, QuarantineEntry


def _entry(row: RowMapping) -> QuarantineEntry:
    return QuarantineEntry(
        asset_id=AssetId(row["asset_id"]),
        version=row["version"],
        reason=row["reason"],
        attempt_id=row["attempt_id"],
        created_at=row["created_at"],
    )


def _pin(row: RowMapping) -> PinEntry:
    return PinEntry(
        asset_id=AssetId(row["asset_id"]),
        version=row["version"],
        reason=row["reason"],
        created_at=row["created_at"],
    )


class Quarantine:
    """Versions that failed on an asset and must not be applied to it again."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self, asset_id: str, version: str, reason: str, attempt_id: int | None = None
    ) -> QuarantineEntry:
        """Quarantine ``version`` for ``asset_id``; adding it again keeps the first entry."""
        stmt = (
            dialect_insert(self._db, quarantine)
            .values(
                asset_id=asset_id,
                version=version,
                reason=reason,
                attempt_id=attempt_id,
                created_at=self._db.clock(),
            )
            .on_conflict_do_nothing(index_elements=["asset_id", "version"])
        )
        with self._db.write("quarantine version") as conn:
            conn.execute(stmt)
            row = (
                conn.execute(
                    select(quarantine).where(
                        quarantine.c.asset_id == asset_id, quarantine.c.version == version
                    )
                )
                .mappings()
                .one()
            )
            return _entry(row)

    def is_quarantined(self, asset_id: str, version: str) -> bool:
        stmt = select(quarantine.c.id).where(
            quarantine.c.asset_id == asset_id, quarantine.c.version == version
        )
        with self._db.read("read quarantine") as conn:
            return conn.execute(stmt).first() is not None

    def versions(self, asset_id: str) -> set[str]:
        stmt = select(quarantine.c.version).where(quarantine.c.asset_id == asset_id)
        with self._db.read("read quarantine") as conn:
            return set(conn.execute(stmt).scalars())

    def list(self, asset_id: str | None = None) -> builtins.list[QuarantineEntry]:
        stmt = select(quarantine).order_by(quarantine.c.asset_id, quarantine.c.created_at)
        if asset_id is not None:
            stmt = stmt.where(quarantine.c.asset_id == asset_id)
        with self._db.read("read quarantine") as conn:
            return [_entry(row) for row in conn.execute(stmt).mappings()]

    def count(self) -> int:
        """Quarantined (asset, version) pairs, counted in the database."""
        with self._db.read("count quarantine") as conn:
            return int(conn.execute(select(func.count()).select_from(quarantine)).scalar_one())

    def clear(self, asset_id: str, version: str | None = None) -> int:
        """Release one version, or every version of the asset; returns how many were removed."""
        stmt = delete(quarantine).where(quarantine.c.asset_id == asset_id)
        if version is not None:
            stmt = stmt.where(quarantine.c.version == version)
        with self._db.write("clear quarantine") as conn:
            return int(conn.execute(stmt).rowcount)


class Pins:
    """An asset pinned to a version: the updater moves it to that version and nowhere else."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def set(self, asset_id: str, version: str, reason: str = "") -> PinEntry:
        stmt = dialect_insert(self._db, pins).values(
            asset_id=asset_id, version=version, reason=reason, created_at=self._db.clock()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["asset_id"],
            set_={
                "version": stmt.excluded.version,
                "reason": stmt.excluded.reason,
                "created_at": stmt.excluded.created_at,
            },
        )
        with self._db.write("pin asset") as conn:
            conn.execute(stmt)
            row = conn.execute(select(pins).where(pins.c.asset_id == asset_id)).mappings().one()
            return _pin(row)

    def clear(self, asset_id: str) -> bool:
        with self._db.write("unpin asset") as conn:
            return bool(conn.execute(delete(pins).where(pins.c.asset_id == asset_id)).rowcount)

    def get(self, asset_id: str) -> PinEntry | None:
        with self._db.read("read pin") as conn:
            row = conn.execute(select(pins).where(pins.c.asset_id == asset_id)).mappings().first()
            return None if row is None else _pin(row)

    def list(self) -> builtins.list[PinEntry]:
        with self._db.read("read pins") as conn:
            return [
                _pin(r) for r in conn.execute(select(pins).order_by(pins.c.asset_id)).mappings()
            ]
