"""Per-registry request budgets shared by every process using the store, and request counts."""

from __future__ import annotations

from sqlalchemy import select, update

from safe_updater.adapters.store.database import Database, dialect_insert
from safe_updater.adapters.store.schema import registry_requests, request_budgets
from safe_updater.domain.errors import InvalidInputError


class RequestBudgets:
    """A token bucket per key (usually a registry host), kept in the database.

    Flow runs in other processes and the CLI draw from the same bucket, so a fleet scan cannot
    exceed a registry's rate limit by running in parallel. The bucket starts full.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def acquire(self, key: str, *, capacity: int, refill_per_second: float, cost: int = 1) -> bool:
        """Take ``cost`` tokens if the bucket has them; False (and nothing taken) otherwise."""
        return self._take(key, capacity, refill_per_second, cost, take=True)[0]

    def seconds_until(
        self, key: str, *, capacity: int, refill_per_second: float, cost: int = 1
    ) -> float:
        """How long until ``cost`` tokens are there (0 when they are now); takes nothing."""
        return self._take(key, capacity, refill_per_second, cost, take=False)[1]

    def _take(
        self, key: str, capacity: int, refill_per_second: float, cost: int, *, take: bool
    ) -> tuple[bool, float]:
        if capacity < 1 or refill_per_second < 0 or not 1 <= cost <= capacity:
            raise InvalidInputError(
                f"budget {key!r}: need capacity >= 1, refill >= 0 and 1 <= cost <= capacity",
                field="budget",
            )
        now = self._db.clock()
        with self._db.write("request budget") as conn:
            conn.execute(
                dialect_insert(self._db, request_budgets)
                .values(key=key, tokens=float(capacity), updated_at=now)
                .on_conflict_do_nothing(index_elements=["key"])
            )
            row = conn.execute(
                select(request_budgets.c.tokens, request_budgets.c.updated_at)
                .where(request_budgets.c.key == key)
                .with_for_update()
            ).one()
            # A clock that went backwards refills nothing, and never un-spends tokens.
            elapsed = max(0.0, (now - row.updated_at).total_seconds())
            tokens = min(float(capacity), float(row.tokens) + elapsed * refill_per_second)
            granted = tokens >= cost
            if granted and take:
                tokens -= cost
            conn.execute(
                update(request_budgets)
                .where(request_budgets.c.key == key)
                .values(tokens=tokens, updated_at=max(now, row.updated_at))
            )
        if granted:
            return True, 0.0
        wait = float("inf") if refill_per_second == 0 else (cost - tokens) / refill_per_second
        return False, wait

    def record_request(self, host: str, status: int) -> None:
        """Count one registry request by host and HTTP status (0 for no answer), for metrics."""
        now = self._db.clock()
        stmt = dialect_insert(self._db, registry_requests).values(
            host=host, status=status, count=1, last_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["host", "status"],
            set_={"count": registry_requests.c.count + 1, "last_at": stmt.excluded.last_at},
        )
        with self._db.write("count registry request") as conn:
            conn.execute(stmt)

    def request_counts(self) -> dict[tuple[str, int], int]:
        """``(host, status) -> requests`` since the store was created."""
        stmt = select(
            registry_requests.c.host, registry_requests.c.status, registry_requests.c.count
        )
        with self._db.read("read registry request counts") as conn:
            return {(str(h), int(s)): int(n) for h, s, n in conn.execute(stmt)}
