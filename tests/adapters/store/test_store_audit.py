"""The hash-chained audit log: appends, tamper detection, concurrent writers, export."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, delete, insert, select, update

from safe_updater.adapters.store import StateStore, record_hash
from safe_updater.adapters.store.schema import GENESIS_HASH, audit_head, audit_log
from safe_updater.domain.errors import InvalidInputError


def _fill(store: StateStore, n: int = 5) -> None:
    for i in range(1, n + 1):
        store.audit.append(
            "safe-updater.update.applied",
            asset_id=f"docker:local/app{i}",
            actor="flow-run/abc",
            data={"from": "1.0.0", "to": f"1.0.{i}", "n": i, "nested": {"ok": True}},
        )


def _tamper(store: StateStore, change: Callable[[Connection], object]) -> None:
    with store.engine.begin() as conn:
        change(conn)


def test_append_links_records(store: StateStore) -> None:
    first = store.audit.append("pin", asset_id=None, actor="cli:alice", data={"v": (1, 2)})
    second = store.audit.append("unpin", asset_id="docker:h/a", actor="cli:alice", data={})
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    assert first.data == {"v": [1, 2]}  # stored as JSON; what was hashed is what reads back
    assert first.at.tzinfo is not None
    assert store.audit.head() == (2, second.hash)
    assert list(store.audit.export()) == [first, second]
    assert store.audit.verify().ok


def test_hash_is_reproducible_by_an_outside_verifier(store: StateStore) -> None:
    rec = store.audit.append("e", asset_id="a", actor="me", data={"b": 1, "a": "é"})
    assert rec.hash == record_hash(
        seq=1,
        at=rec.at,
        event="e",
        asset_id="a",
        actor="me",
        data={"a": "é", "b": 1},
        prev_hash=GENESIS_HASH,
    )


def test_empty_log_verifies(store: StateStore) -> None:
    result = store.audit.verify()
    assert result.ok and result.records == 0 and result.first_bad_seq is None


def test_bad_records_are_refused(store: StateStore) -> None:
    with pytest.raises(InvalidInputError):
        store.audit.append("", asset_id=None, actor="me", data={})
    with pytest.raises(InvalidInputError):
        store.audit.append("e", asset_id=None, actor="me", data={"x": object()})
    with pytest.raises(InvalidInputError):
        store.audit.append("e", asset_id=None, actor="me", data={"x": float("nan")})
    assert store.audit.head()[0] == 0


def _swap_seq_2_and_3(conn: Connection) -> None:
    conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(seq=-2))
    conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(seq=2))
    conn.execute(update(audit_log).where(audit_log.c.seq == -2).values(seq=3))


TAMPERING: dict[str, tuple[Callable[[Connection], object], int, str]] = {
    "edited data field": (
        lambda c: c.execute(
            update(audit_log)
            .where(audit_log.c.seq == 3)
            .values(data={"from": "1.0.0", "to": "6.6.6", "n": 3, "nested": {"ok": True}})
        ),
        3,
        "edited",
    ),
    "edited actor": (
        lambda c: c.execute(update(audit_log).where(audit_log.c.seq == 2).values(actor="x")),
        2,
        "edited",
    ),
    "edited hash": (
        lambda c: c.execute(update(audit_log).where(audit_log.c.seq == 4).values(hash="f" * 64)),
        4,
        "edited",
    ),
    "edited time": (
        lambda c: c.execute(
            update(audit_log)
            .where(audit_log.c.seq == 1)
            .values(at=datetime(2020, 1, 1, tzinfo=UTC))
        ),
        1,
        "edited",
    ),
    "deleted middle record": (
        lambda c: c.execute(delete(audit_log).where(audit_log.c.seq == 3)),
        3,
        "deleted",
    ),
    "deleted first record": (
        lambda c: c.execute(delete(audit_log).where(audit_log.c.seq == 1)),
        1,
        "deleted",
    ),
    "deleted last record": (
        lambda c: c.execute(delete(audit_log).where(audit_log.c.seq == 5)),
        5,
        "deleted",
    ),
    "reordered records": (_swap_seq_2_and_3, 2, "reordered"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_verify_names_the_first_bad_record(store: StateStore, case: str) -> None:
    _fill(store)
    assert store.audit.verify().ok
    change, bad_seq, word = TAMPERING[case]
    _tamper(store, change)
    result = store.audit.verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq, result.problem
    assert result.problem is not None and word in result.problem
    assert f"seq {bad_seq}" in result.problem
    assert result.records == bad_seq - 1  # every record before it checked out


def _forge(conn: Connection, seq: int, prev_hash: str) -> str:
    at = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    data = {"forged": True}
    digest = record_hash(
        seq=seq,
        at=at,
        event="forged",
        asset_id=None,
        actor="mallory",
        data=data,
        prev_hash=prev_hash,
    )
    conn.execute(
        insert(audit_log).values(
            seq=seq,
            at=at,
            event="forged",
            asset_id=None,
            actor="mallory",
            data=data,
            prev_hash=prev_hash,
            hash=digest,
        )
    )
    return digest


def test_verify_finds_a_record_inserted_in_the_middle(store: StateStore) -> None:
    _fill(store)

    def insert_at_3(conn: Connection) -> None:
        # A careful forger: shifts seq 3..5 up, writes a record with a valid hash at seq 3,
        # and moves the chain head. Without re-hashing every later record it still shows.
        for seq in (5, 4, 3):
            conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(seq=seq + 1))
        prev = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 2)).scalar_one()
        _forge(conn, 3, prev)
        last = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 6)).scalar_one()
        conn.execute(update(audit_head).values(seq=6, hash=last))

    _tamper(store, insert_at_3)
    result = store.audit.verify()
    assert not result.ok and result.first_bad_seq == 3, result.problem
    assert result.problem is not None and "inserted" in result.problem


def test_verify_finds_a_record_appended_behind_the_writers_back(store: StateStore) -> None:
    _fill(store)
    head_hash = store.audit.head()[1]
    _tamper(store, lambda conn: _forge(conn, 6, head_hash))
    result = store.audit.verify()
    assert not result.ok and result.first_bad_seq == 6, result.problem
    assert result.problem is not None and "past the chain head" in result.problem


def test_verify_finds_a_replaced_last_record(store: StateStore) -> None:
    _fill(store)

    def replace_last(conn: Connection) -> None:
        prev = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 4)).scalar_one()
        conn.execute(delete(audit_log).where(audit_log.c.seq == 5))
        _forge(conn, 5, prev)

    _tamper(store, replace_last)
    result = store.audit.verify()
    assert not result.ok and result.first_bad_seq == 5, result.problem


def test_concurrent_appends_from_threads_keep_one_chain(store: StateStore) -> None:
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(25):
                store.audit.append("e", asset_id=None, actor=f"thread-{i}", data={"j": j})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    result = store.audit.verify()
    assert result.ok and result.records == 100, result.problem
    assert [r.seq for r in store.audit.export()] == list(range(1, 101))


def _append_from_process(url: str, actor: str, count: int) -> None:
    with StateStore.open(url) as store:
        for j in range(count):
            store.audit.append("e", asset_id=None, actor=actor, data={"j": j})


def test_concurrent_appends_from_processes_keep_one_chain(
    store: StateStore, store_url: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_append_from_process, args=(store_url, f"proc-{i}", 40))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(120)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    result = store.audit.verify()
    assert result.ok and result.records == 80, result.problem
    actors = {r.actor for r in store.audit.export()}
    assert actors == {"proc-0", "proc-1"}


def test_export_streams_in_seq_order(store: StateStore) -> None:
    _fill(store, 1200)  # more than one yield_per batch
    seqs = [r.seq for r in store.audit.export()]
    assert seqs == list(range(1, 1201))
    assert store.audit.verify().records == 1200
