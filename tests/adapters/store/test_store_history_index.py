"""history() and friends on 100,000 journal rows answer from an index, not a table scan.

Timing lives in bench/bench_store.py; here the plan is asserted, which does not flake.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, text

from safe_updater.adapters.store import StateStore
from safe_updater.adapters.store.diagnostics import explain
from safe_updater.adapters.store.journal import OPEN_PREDICATE
from safe_updater.adapters.store.schema import attempts

ROWS = 100_000
ASSETS = 500


def fill_journal(store: StateStore, rows: int = ROWS, assets: int = ASSETS) -> None:
    """Closed attempts, one a minute, spread over ``assets`` assets (bulk insert, no API)."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    batch: list[dict[str, object]] = []
    with store.engine.begin() as conn:
        for i in range(rows):
            at = start + timedelta(minutes=i)
            batch.append(
                {
                    "idempotency_key": f"bulk-{i}",
                    "asset_id": f"docker:host/app{i % assets}",
                    "from_version": "1.0.0",
                    "to_version": "1.0.1",
                    "change_type": "patch",
                    "phase": "closed",
                    "outcome": "updated" if i % 10 else "rolled_back",
                    "reason": "bulk",
                    "snapshot": {},
                    "applied": {},
                    "started_at": at,
                    "updated_at": at,
                    "finished_at": at,
                }
            )
            if len(batch) == 10_000:
                conn.execute(insert(attempts), batch)
                batch.clear()
        if batch:
            conn.execute(insert(attempts), batch)
    with store.engine.connect() as conn:
        # Fresh statistics, as autovacuum / a periodic ANALYZE would have them.
        conn.execute(text("ANALYZE"))
        conn.commit()


def assert_indexed(store: StateStore, plan: str, index: str) -> None:
    if store.dialect == "sqlite":
        assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # no sort of the whole result
    else:
        # PostgreSQL may also take a bitmap index scan and sort the few rows it finds: still
        # proportional to the answer, not to the table.
        assert index in plan, plan
        assert "Seq Scan" not in plan, plan


def test_journal_queries_use_indexes_on_100k_rows(store: StateStore) -> None:
    fill_journal(store)
    journal = store.journal
    since = datetime(2025, 2, 1, tzinfo=UTC)

    assert_indexed(store, explain(store, journal.history_statement()), "ix_attempts_started_at_id")
    assert_indexed(
        store,
        explain(store, journal.history_statement(since=since)),
        "ix_attempts_started_at_id",
    )
    assert_indexed(
        store,
        explain(store, journal.history_statement("docker:host/app7")),
        "ix_attempts_asset_id_started_at_id",
    )
    assert_indexed(
        store,
        explain(store, journal.history_statement("docker:host/app7", since=since)),
        "ix_attempts_asset_id_started_at_id",
    )
    assert_indexed(
        store, explain(store, select(attempts).where(OPEN_PREDICATE)), "uq_attempts_open_asset_id"
    )

    # And the answers are right.
    newest = journal.history(limit=3)
    assert [a.idempotency_key for a in newest] == ["bulk-99999", "bulk-99998", "bulk-99997"]
    per_asset = journal.history("docker:host/app7", limit=2)
    assert [a.idempotency_key for a in per_asset] == ["bulk-99507", "bulk-99007"]
    assert journal.count() == ROWS
    assert journal.count(asset_id="docker:host/app7") == ROWS // ASSETS
    assert journal.stats()["rolled_back"] == ROWS // 10
    assert journal.find_open() == []
