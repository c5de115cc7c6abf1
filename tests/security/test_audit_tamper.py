"""Tampering with the audit chain is caught by `safe-updater audit verify`, which names the first
bad record (issue 7).

A chain of 20 records is written through the store API, then changed with raw SQL, the way
someone with write access to the database would, on SQLite and on PostgreSQL. Every case runs
the real CLI and asserts exit code 1, the first bad seq and what is wrong.

Tail truncation: deleting the newest records is caught by the chain head row. Deleting them
*and* moving the head row back (or recomputing every hash from some record on: the hash has no
secret) leaves a chain that is consistent in itself; only a head copied elsewhere earlier
(`audit head`, checked with `audit verify --expect-head SEQ:HASH`) catches it. Both halves are
asserted below, so a change in what is detectable shows up here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, text

from safe_updater.adapters.store import StateStore, record_hash
from safe_updater.domain.journal import AuditRecord

N = 20
K = 8  # the record tampered with: in the middle, with records on both sides

Cli = Callable[..., Any]


class _Clock:
    """One second per reading, so every record has its own time."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def store(store_url: str) -> Iterator[StateStore]:
    """A store holding a chain of N records written through the store API."""
    opened = StateStore.open(store_url, clock=_Clock())
    try:
        for i in range(1, N + 1):
            opened.audit.append(
                ("approval.approved", "update.applied", "pin.set", "quarantine.added")[i % 4],
                asset_id=None if i % 5 == 0 else f"docker:local/app{i % 3}",
                actor=("alice", "bob", "flow-run/7f3c")[i % 3],
                data={"n": i, "to": f"1.0.{i}", "reason": "nightly", "nested": {"ok": True}},
            )
        yield opened
    finally:
        opened.close()


def _records(store: StateStore) -> dict[int, AuditRecord]:
    return {record.seq: record for record in store.audit.export()}


def _sql(store: StateStore, *statements: tuple[str, dict[str, Any]]) -> None:
    """Raw SQL in one transaction, as an attacker with database access would run it."""
    with store.engine.begin() as conn:
        for sql, params in statements:
            conn.execute(text(sql), params)


def _rehashed(record: AuditRecord, **changes: Any) -> dict[str, Any]:
    """The record's columns after ``changes``, with a hash recomputed the documented way."""
    fields = {
        "seq": record.seq,
        "at": record.at,
        "event": record.event,
        "asset_id": record.asset_id,
        "actor": record.actor,
        "data": record.data,
        "prev_hash": record.prev_hash,
        **changes,
    }
    return {**fields, "hash": record_hash(**fields)}


def _set_row(conn: Connection, seq: int, row: dict[str, Any]) -> None:
    conn.execute(
        text(
            "UPDATE audit_log SET event = :event, actor = :actor, data = :data, "
            "prev_hash = :prev_hash, hash = :hash WHERE seq = :seq"
        ),
        {**row, "data": json.dumps(row["data"]), "seq": seq},
    )


def _forge_after(conn: Connection, store_record: AuditRecord, seq: int) -> str:
    """Insert a forged record at ``seq`` that links to ``store_record`` with a valid hash; the
    time is copied from the record it follows (raw SQL, so both backends store it alike)."""
    forged = _rehashed(
        store_record,
        seq=seq,
        event="approval.approved",
        actor="mallory",
        data={"forged": True},
        prev_hash=store_record.hash,
    )
    conn.execute(
        text(
            "INSERT INTO audit_log (seq, at, event, asset_id, actor, data, prev_hash, hash) "
            "SELECT :seq, at, :event, asset_id, :actor, :data, :prev_hash, :hash "
            "FROM audit_log WHERE seq = :source"
        ),
        {
            **forged,
            "data": json.dumps(forged["data"]),
            "source": store_record.seq,
        },
    )
    return str(forged["hash"])


def _shift_up(conn: Connection, first: int) -> None:
    # Two steps: a unique primary key is checked row by row on both backends.
    conn.execute(text("UPDATE audit_log SET seq = seq + 100000 WHERE seq >= :k"), {"k": first})
    conn.execute(text("UPDATE audit_log SET seq = seq - 99999 WHERE seq >= 100000"))


def _swap(store: StateStore, a: int, b: int) -> None:
    _sql(
        store,
        ("UPDATE audit_log SET seq = -1 WHERE seq = :a", {"a": a}),
        ("UPDATE audit_log SET seq = :a WHERE seq = :b", {"a": a, "b": b}),
        ("UPDATE audit_log SET seq = :b WHERE seq = -1", {"b": b}),
    )


def _assert_broken(cli: Cli, seq: int, *words: str) -> str:
    """`audit verify` exits 1 and names ``seq`` and what is wrong; returns the message."""
    shown = cli("audit", "verify")
    assert shown.code == 1, shown
    line = str(shown.out).strip()
    assert line.startswith(f"audit chain BROKEN at record {seq}: "), line
    for word in words:
        assert word in line, line
    data = cli("audit", "verify", "--json").json()
    assert data["ok"] is False and data["first_bad_seq"] == seq, data
    assert data["records"] == seq - 1, data  # every record before it checked out
    return line


def test_the_untouched_chain_verifies(store: StateStore, cli: Cli) -> None:
    shown = cli("audit", "verify")
    assert (shown.code, shown.out.strip()) == (0, f"audit chain OK: {N} records")
    assert store.audit.verify().records == N


def test_an_edited_field_is_named(store: StateStore, cli: Cli) -> None:
    _sql(store, ("UPDATE audit_log SET actor = 'mallory' WHERE seq = :k", {"k": K}))
    _assert_broken(cli, K, f"seq {K} does not match its hash", "edited")


def test_an_edited_data_field_is_named(store: StateStore, cli: Cli) -> None:
    _sql(
        store,
        (
            "UPDATE audit_log SET data = :data WHERE seq = :k",
            {"data": '{"n": 8, "to": "6.6.6", "reason": "nightly"}', "k": K},
        ),
    )
    _assert_broken(cli, K, f"seq {K} does not match its hash", "edited")


def test_an_edit_with_a_recomputed_hash_is_named(store: StateStore, cli: Cli) -> None:
    # The hash is documented and has no secret, so a careful editor recomputes it. The next
    # record still holds the old hash, and the records after it vouch for that one.
    record = _records(store)[K]
    with store.engine.begin() as conn:
        _set_row(conn, K, _rehashed(record, actor="mallory"))
    _assert_broken(cli, K, f"seq {K} was changed and its hash recomputed")


def test_a_deleted_record_is_named(store: StateStore, cli: Cli) -> None:
    _sql(store, ("DELETE FROM audit_log WHERE seq = :k", {"k": K}))
    _assert_broken(cli, K, f"seq {K} is missing", "deleted")


def test_a_deleted_first_record_is_named(store: StateStore, cli: Cli) -> None:
    _sql(store, ("DELETE FROM audit_log WHERE seq = 1", {}))
    _assert_broken(cli, 1, "seq 1 is missing", "deleted")


def test_a_deleted_record_with_the_rest_renumbered_is_named(store: StateStore, cli: Cli) -> None:
    last = _records(store)[N]
    _sql(
        store,
        ("DELETE FROM audit_log WHERE seq = :k", {"k": K}),
        ("UPDATE audit_log SET seq = seq - 1 WHERE seq > :k", {"k": K}),
        ("UPDATE audit_head SET seq = :n, hash = :h", {"n": N - 1, "h": last.hash}),
    )
    _assert_broken(cli, K, f"seq {K} does not link to seq {K - 1}", "deleted")


@pytest.mark.parametrize("other", [K + 1, K + 5])
def test_swapped_records_are_named(store: StateStore, cli: Cli, other: int) -> None:
    _swap(store, K, other)
    _assert_broken(cli, K, f"seq {K} does not link to seq {K - 1}", "reordered")


def test_swapped_and_rehashed_records_are_named(store: StateStore, cli: Cli) -> None:
    # Contents swapped and both hashes recomputed for their new seq: each record is consistent
    # in itself, but neither links to the record before it.
    records = _records(store)
    with store.engine.begin() as conn:
        first, second = records[K], records[K + 1]
        _set_row(conn, K, _rehashed(second, seq=K))
        _set_row(conn, K + 1, _rehashed(first, seq=K + 1))
    _assert_broken(cli, K, f"seq {K} does not link to seq {K - 1}", "reordered")


@pytest.mark.parametrize("move_head", [True, False], ids=["head-moved", "head-kept"])
def test_an_inserted_record_is_named(store: StateStore, cli: Cli, move_head: bool) -> None:
    # A forger shifts seq K.. up, writes a record at K that links to K-1 with a valid hash and
    # (optionally) moves the head. Without re-hashing every later record it still shows.
    before = _records(store)[K - 1]
    with store.engine.begin() as conn:
        _shift_up(conn, K)
        _forge_after(conn, before, K)
        if move_head:
            conn.execute(
                text(
                    "UPDATE audit_head SET seq = :n, "
                    "hash = (SELECT hash FROM audit_log WHERE seq = :n)"
                ),
                {"n": N + 1},
            )
    _assert_broken(cli, K, f"seq {K} was inserted")


def test_a_record_appended_outside_the_log_is_named(store: StateStore, cli: Cli) -> None:
    with store.engine.begin() as conn:
        _forge_after(conn, _records(store)[N], N + 1)
    _assert_broken(cli, N + 1, "past the chain head")


def test_a_record_inserted_before_the_first_is_named(store: StateStore, cli: Cli) -> None:
    with store.engine.begin() as conn:
        _forge_after(conn, _records(store)[1], 0)
    shown = cli("audit", "verify")
    assert shown.code == 1
    assert shown.out.strip().startswith("audit chain BROKEN at record 0: seq 0 lies before seq 1")


def test_a_replaced_last_record_is_named(store: StateStore, cli: Cli) -> None:
    record = _records(store)[N]
    with store.engine.begin() as conn:
        _set_row(conn, N, _rehashed(record, actor="mallory"))
    _assert_broken(cli, N, "the chain head's hash differs", "replaced")


def test_a_cut_off_tail_is_named(store: StateStore, cli: Cli) -> None:
    _sql(store, ("DELETE FROM audit_log WHERE seq > 15", {}))
    _assert_broken(cli, 16, "the chain head says the log ends at seq 20", "deleted")


def test_a_cut_off_tail_with_the_head_moved_back_needs_a_kept_head(
    store: StateStore, cli: Cli
) -> None:
    kept = cli("audit", "head")
    assert kept.code == 0
    head = kept.out.strip()
    assert head == f"{N}:{_records(store)[N].hash}"
    assert cli("audit", "verify", "--expect-head", head).code == 0

    _sql(
        store,
        ("DELETE FROM audit_log WHERE seq > 15", {}),
        ("UPDATE audit_head SET seq = 15, hash = (SELECT hash FROM audit_log WHERE seq = 15)", {}),
    )
    # The shorter chain is consistent in itself: without an outside anchor it verifies.
    assert cli("audit", "verify").code == 0
    shown = cli("audit", "verify", "--expect-head", head)
    assert shown.code == 1
    assert shown.out.strip().startswith(
        "audit chain BROKEN at record 16: the log ends at seq 15, but seq 20"
    ), shown.out
    assert "seq 16..20 were deleted and the chain head moved back" in shown.out


def test_a_rewritten_chain_needs_a_kept_head(store: StateStore, cli: Cli) -> None:
    head = cli("audit", "head").out.strip()
    records = _records(store)
    with store.engine.begin() as conn:
        prev = records[K - 1].hash
        for seq in range(K, N + 1):
            changes: dict[str, Any] = {"prev_hash": prev}
            if seq == K:
                changes["actor"] = "mallory"
            row = _rehashed(records[seq], **changes)
            _set_row(conn, seq, row)
            prev = row["hash"]
        conn.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})
    assert cli("audit", "verify").code == 0  # consistent in itself: the documented limit
    shown = cli("audit", "verify", "--expect-head", head)
    assert shown.code == 1
    assert shown.out.strip().startswith(f"audit chain BROKEN at record {N}: seq {N} is not the")
    assert "rewritten" in shown.out


def test_a_deleted_head_row_is_reported(store: StateStore, cli: Cli) -> None:
    _sql(store, ("DELETE FROM audit_head", {}))
    shown = cli("audit", "verify")
    assert shown.code == 1
    assert shown.out.strip().startswith("audit chain BROKEN: the chain head row")


@pytest.mark.parametrize("bad", ["20", "x:" + "a" * 64, "20:abc", "0:" + "a" * 64])
def test_a_malformed_expected_head_is_refused_in_one_line(
    store: StateStore, cli: Cli, bad: str
) -> None:
    shown = cli("audit", "verify", "--expect-head", bad)
    assert shown.code == 2, shown
    assert "is not SEQ:HASH" in shown.err and "audit head" in shown.err
    assert "Traceback" not in shown.err


def test_head_json(store: StateStore, cli: Cli) -> None:
    assert cli("audit", "head", "--json").json() == {"seq": N, "hash": _records(store)[N].hash}
