"""Per-registry request budgets: the adapter asks before every HTTP request it sends.

:class:`TokenBucketBudget` is in memory (one process); :class:`SharedBudget` puts the buckets in
any store that offers ``acquire(key, capacity=, refill_per_second=, cost=) -> bool`` (the state
store's DB-backed budgets), so every run and process shares one budget per registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BudgetBackend", "BudgetLimit", "RequestBudget", "SharedBudget", "TokenBucketBudget"]


class RequestBudget(Protocol):
    def acquire(self, host: str) -> bool:
        """Take one request from ``host``'s budget; False when it is exhausted."""


class BudgetBackend(Protocol):
    def acquire(
        self, key: str, *, capacity: float, refill_per_second: float, cost: float = 1.0
    ) -> bool: ...


@dataclass(frozen=True)
class BudgetLimit:
    """A bucket of ``capacity`` requests refilled at ``refill_per_second``."""

    capacity: float
    refill_per_second: float

    def __post_init__(self) -> None:
        if self.capacity <= 0 or self.refill_per_second < 0:
            raise ValueError("a budget needs capacity > 0 and refill_per_second >= 0")


class TokenBucketBudget:
    """An in-memory token bucket per host. Thread-safe; the clock is injectable for tests."""

    def __init__(
        self,
        capacity: float = 100.0,
        refill_per_second: float = 1.0,
        *,
        per_host: Mapping[str, BudgetLimit] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default = BudgetLimit(capacity, refill_per_second)
        self._per_host = dict(per_host or {})
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, updated_at)
        self._lock = threading.Lock()

    def _limit(self, host: str) -> BudgetLimit:
        return self._per_host.get(host, self.default)

    def acquire(self, host: str) -> bool:
        limit = self._limit(host)
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.get(host, (limit.capacity, now))
            tokens = min(limit.capacity, tokens + max(now - updated, 0.0) * limit.refill_per_second)
            if tokens < 1.0:
                self._buckets[host] = (tokens, now)
                return False
            self._buckets[host] = (tokens - 1.0, now)
            return True

    def remaining(self, host: str) -> float:
        limit = self._limit(host)
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.get(host, (limit.capacity, now))
        return min(limit.capacity, tokens + max(now - updated, 0.0) * limit.refill_per_second)


class SharedBudget:
    """A :class:`RequestBudget` whose buckets live in a shared store, keyed ``registry:HOST``."""

    def __init__(
        self,
        backend: BudgetBackend,
        capacity: float = 100.0,
        refill_per_second: float = 1.0,
        *,
        per_host: Mapping[str, BudgetLimit] | None = None,
        key_prefix: str = "registry:",
    ) -> None:
        self._backend = backend
        self.default = BudgetLimit(capacity, refill_per_second)
        self._per_host = dict(per_host or {})
        self._prefix = key_prefix

    def acquire(self, host: str) -> bool:
        limit = self._per_host.get(host, self.default)
        return self._backend.acquire(
            f"{self._prefix}{host}",
            capacity=limit.capacity,
            refill_per_second=limit.refill_per_second,
            cost=1.0,
        )
