"""The update journal: lifecycle, idempotency, durability across a crash, one open attempt."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import insert, select

from safe_updater.adapters.store import StateStore
from safe_updater.adapters.store.diagnostics import explain
from safe_updater.adapters.store.journal import OPEN_PREDICATE
from safe_updater.adapters.store.schema import attempts
from safe_updater.domain.errors import ConflictError, InvalidInputError, NotFoundError
from safe_updater.domain.journal import AttemptRecord, Outcome, Phase

if TYPE_CHECKING:
    from conftest import FakeClock

ASSET = "docker:local/web"


def _open(store: StateStore, key: str = "run-1", asset: str = ASSET) -> AttemptRecord:
    return store.journal.open_attempt(
        asset_id=asset,
        from_version="1.0.0",
        to_version="1.0.1",
        change_type="patch",
        idempotency_key=key,
        flow_run_id="0b5e-flow-run",
    )


def test_lifecycle_from_open_to_closed(store: StateStore) -> None:
    opened = _open(store)
    assert opened.phase is Phase.OPENED and opened.is_open
    assert opened.started_at.tzinfo is not None
    snap = store.journal.advance(opened.id, Phase.SNAPSHOTTED, snapshot={"image": "web:1.0.0"})
    applying = store.journal.advance(opened.id, Phase.APPLYING, applied={"container": "abc"})
    assert applying.snapshot == {"image": "web:1.0.0"}  # kept when not given again
    assert applying.applied == {"container": "abc"}
    assert applying.updated_at > snap.updated_at
    store.journal.advance(opened.id, Phase.VERIFYING)
    closed = store.journal.close(opened.id, Outcome.UPDATED, "healthy for 20s")
    assert closed.phase is Phase.CLOSED and not closed.is_open
    assert closed.outcome is Outcome.UPDATED and closed.reason == "healthy for 20s"
    assert closed.finished_at is not None
    assert store.journal.get(opened.id) == closed
    assert store.journal.find_open() == []


def test_idempotency_key_returns_the_existing_attempt(store: StateStore) -> None:
    first = _open(store, "key-a")
    store.journal.advance(first.id, Phase.APPLYING)
    again = _open(store, "key-a")
    assert again.id == first.id and again.phase is Phase.APPLYING
    store.journal.close(first.id, Outcome.UPDATED, "ok")
    assert _open(store, "key-a").outcome is Outcome.UPDATED  # still the same row once closed
    assert store.journal.count() == 1
    assert store.journal.get_by_key("key-a") is not None
    assert store.journal.get_by_key("nope") is None


def test_one_open_attempt_per_asset(store: StateStore) -> None:
    first = _open(store, "key-a")
    with pytest.raises(ConflictError, match=rf"{ASSET} has an open attempt #{first.id}; run"):
        _open(store, "key-b")
    other = _open(store, "key-c", asset="docker:local/db")  # other assets are not blocked
    assert other.id != first.id
    store.journal.close(first.id, Outcome.ROLLED_BACK, "unhealthy")
    assert _open(store, "key-b").is_open


def test_the_database_itself_refuses_a_second_open_attempt(store: StateStore) -> None:
    # The partial unique index holds even for a writer that skips the journal's own check.
    first = _open(store, "key-a")
    row = {
        "idempotency_key": "raw",
        "asset_id": ASSET,
        "from_version": "1",
        "to_version": "2",
        "change_type": "patch",
        "phase": "applying",
        "snapshot": {},
        "applied": {},
        "started_at": first.started_at,
        "updated_at": first.started_at,
    }
    with pytest.raises(Exception, match=r"(?i)unique"), store.engine.begin() as conn:
        conn.execute(insert(attempts).values(**row))


def test_concurrent_opens_with_one_key_make_one_row(store: StateStore) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(_open(store, "same-key").id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 4
    assert store.journal.count() == 1


def test_concurrent_opens_for_one_asset_let_one_win(store: StateStore) -> None:
    won: list[int] = []
    conflicts: list[ConflictError] = []

    def worker(i: int) -> None:
        try:
            won.append(_open(store, f"key-{i}").id)
        except ConflictError as exc:
            conflicts.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1 and len(conflicts) == 3
    assert all("run `safe-updater recover`" in str(c) for c in conflicts)


def test_close_twice(store: StateStore) -> None:
    attempt = _open(store)
    closed = store.journal.close(attempt.id, Outcome.ROLLED_BACK, "health 404")
    assert store.journal.close(attempt.id, Outcome.ROLLED_BACK, "again") == closed
    with pytest.raises(ConflictError, match="already closed as rolled_back"):
        store.journal.close(attempt.id, Outcome.UPDATED, "no")
    with pytest.raises(ConflictError):
        store.journal.advance(attempt.id, Phase.VERIFYING)


def test_bad_calls(store: StateStore) -> None:
    with pytest.raises(NotFoundError):
        store.journal.get(999)
    with pytest.raises(NotFoundError):
        store.journal.advance(999, Phase.APPLYING)
    attempt = _open(store)
    with pytest.raises(InvalidInputError):
        store.journal.advance(attempt.id, Phase.CLOSED)
    with pytest.raises(InvalidInputError):
        store.journal.advance(attempt.id, Phase.APPLYING, snapshot={"bad": object()})
    with pytest.raises(InvalidInputError):
        _open(store, "")
    with pytest.raises(InvalidInputError):
        store.journal.history(limit=0)


def _crash_after_advance(url: str, ready: multiprocessing.synchronize.Event) -> None:
    store = StateStore.open(url)
    attempt = store.journal.open_attempt(
        asset_id=ASSET,
        from_version="1.0.0",
        to_version="1.0.1",
        change_type="patch",
        idempotency_key="crashing-run",
    )
    store.journal.advance(
        attempt.id, Phase.APPLYING, snapshot={"container": {"Image": "web:1.0.0"}}
    )
    ready.set()
    threading.Event().wait(120)  # the parent kills us here, mid-"side effect"


def test_advance_survives_a_killed_process(store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_crash_after_advance, args=(store_url, ready))
    proc.start()
    try:
        assert ready.wait(60), "the child did not reach the side effect"
        proc.kill()  # SIGKILL: no cleanup, no close(), exactly a crash
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(30)
    assert proc.exitcode == -9
    with StateStore.open(store_url) as recovered:
        [found] = recovered.journal.find_open(ASSET)
        assert found.phase is Phase.APPLYING
        assert found.snapshot == {"container": {"Image": "web:1.0.0"}}
        assert found.idempotency_key == "crashing-run"
        # Recovery can finish it, and the asset is free again.
        recovered.journal.advance(found.id, Phase.ROLLING_BACK, reason="recovered after crash")
        recovered.journal.close(found.id, Outcome.ROLLED_BACK, "recovered after crash")
        assert recovered.journal.find_open() == []


def test_find_open_history_count_and_stats(store: StateStore, clock: FakeClock) -> None:
    t0 = clock.now
    ids = []
    for i in range(6):
        asset = f"docker:local/app{i % 2}"
        attempt = _open(store, f"k{i}", asset=asset)
        ids.append(attempt.id)
        if i < 4:
            outcome = Outcome.UPDATED if i % 3 else Outcome.ROLLED_BACK
            store.journal.close(attempt.id, outcome, "done")
        clock.advance(60)
    assert [a.id for a in store.journal.find_open()] == ids[4:]
    assert [a.id for a in store.journal.find_open("docker:local/app0")] == [ids[4]]
    assert [a.id for a in store.journal.history()] == ids[::-1]
    assert [a.id for a in store.journal.history("docker:local/app1")] == [ids[5], ids[3], ids[1]]
    assert [a.id for a in store.journal.history(limit=2)] == [ids[5], ids[4]]
    since = t0 + timedelta(seconds=150)
    assert [a.id for a in store.journal.history(since=since)] == [ids[5], ids[4], ids[3]]
    assert store.journal.count() == 6
    assert store.journal.count(asset_id="docker:local/app0") == 3
    assert store.journal.count(outcome=Outcome.ROLLED_BACK) == 2  # i = 0 and 3
    assert store.journal.count(outcome=Outcome.UPDATED, since=since) == 0
    stats = store.journal.stats()
    assert stats["updated"] == 2 and stats["rolled_back"] == 2 and stats["failed"] == 0
    assert set(stats) == {o.value for o in Outcome}
    assert store.journal.stats(since=since)["rolled_back"] == 1


def test_find_open_uses_the_partial_index(store: StateStore) -> None:
    if store.dialect != "sqlite":
        pytest.skip("PostgreSQL picks a plan by table statistics; the history test covers it")
    plan = explain(store, select(attempts).where(OPEN_PREDICATE))
    assert "uq_attempts_open_asset_id" in plan, plan
