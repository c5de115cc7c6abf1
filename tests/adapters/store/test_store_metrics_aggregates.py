"""The aggregate reads behind /metrics, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from safe_updater.adapters.store import StateStore
from safe_updater.domain.assets import Asset, AssetId, AssetKind
from safe_updater.domain.journal import Outcome

if TYPE_CHECKING:
    from conftest import FakeClock


def _attempt(
    store: StateStore, clock: FakeClock, asset_id: str, outcome: Outcome | None, seconds: float
) -> None:
    row = store.journal.open_attempt(
        asset_id=asset_id,
        from_version="1",
        to_version="2",
        change_type="patch",
        idempotency_key=f"{asset_id}-{clock.now.isoformat()}",
    )
    clock.advance(seconds)
    if outcome is not None:
        store.journal.close(row.id, outcome, "test")


def test_metric_aggregates(store: StateStore, clock: FakeClock) -> None:
    assert store.assets.last_seen() is None
    assert store.journal.count_open() == 0
    assert store.journal.count_awaiting_approval() == 0
    assert store.quarantine.count() == 0
    start = clock.now

    store.assets.upsert(
        [
            Asset(
                id=AssetId("helm:c/ns/r"),
                kind=AssetKind.HELM,
                target="c",
                name="r",
                namespace="ns",
                chart="r",
                current_version="1",
            )
        ]
    )
    seen = store.assets.last_seen()
    assert seen is not None and seen.tzinfo is not None and seen >= start

    _attempt(store, clock, "a", Outcome.UPDATED, 12)
    _attempt(store, clock, "a", Outcome.ROLLED_BACK, 300)
    _attempt(store, clock, "b", Outcome.AWAITING_APPROVAL, 0)
    _attempt(store, clock, "c", Outcome.AWAITING_APPROVAL, 0)
    _attempt(store, clock, "c", Outcome.UPDATED, 2)  # c's request was settled
    _attempt(store, clock, "d", None, 1)
    store.quarantine.add("a", "2", "rolled back")

    assert store.journal.outcome_counts() == {
        ("updated", "patch"): 2,
        ("rolled_back", "patch"): 1,
        ("awaiting_approval", "patch"): 2,
    }
    assert store.journal.count_open() == 1
    assert store.journal.count_awaiting_approval() == 1
    assert store.quarantine.count() == 1

    histogram = store.journal.duration_histogram((10.0, 60.0, 600.0), since=start)
    cumulative, count, total = histogram["updated"]
    assert (cumulative, count) == ([1, 2, 2], 2) and abs(total - 14) < 0.1
    assert histogram["rolled_back"][:2] == ([0, 0, 1], 1)
    assert "awaiting_approval" not in histogram
    assert store.journal.duration_histogram((10.0,), since=clock.now + timedelta(1)) == {}
