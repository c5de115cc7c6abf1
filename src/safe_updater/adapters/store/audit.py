"""The append-only, hash-chained audit log: the compliance record that outlives Prefect's history.

Each record's hash is ``sha256`` over the canonical JSON of its seq, time (ISO 8601, UTC),
event, asset id, actor, data and the previous record's hash (64 zeros for the first). The
``audit_head`` row holds the last seq and hash: appenders lock it, so concurrent writers queue
instead of forking the chain, and :meth:`AuditLog.verify` compares it with the log, so a
deleted tail is caught too, unless the head was moved back with it: only a head copied elsewhere
earlier (``verify(expect_head=...)``) catches that. See docs/state-store.md for what the chain
does and does not prove.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update

from safe_updater.adapters.store.database import Database
from safe_updater.adapters.store.jsondata import canonical, to_plain
from safe_updater.adapters.store.schema import GENESIS_HASH, audit_head, audit_log
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.journal import AuditRecord, AuditVerification

_HEAD_ID = 1
_STREAM_BATCH = 1000


def record_hash(
    *,
    seq: int,
    at: datetime,
    event: str,
    asset_id: str | None,
    actor: str,
    data: dict[str, Any],
    prev_hash: str,
) -> str:
    """The chain hash of one record; the definition an external verifier can re-implement."""
    body = {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "event": event,
        "asset_id": asset_id,
        "actor": actor,
        "data": data,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical(body)).hexdigest()


def _record(row: RowMapping) -> AuditRecord:
    return AuditRecord(
        seq=row["seq"],
        at=row["at"],
        event=row["event"],
        asset_id=row["asset_id"],
        actor=row["actor"],
        data=row["data"] or {},
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def _expected_hash(record: AuditRecord) -> str:
    return record_hash(
        seq=record.seq,
        at=record.at,
        event=record.event,
        asset_id=record.asset_id,
        actor=record.actor,
        data=record.data,
        prev_hash=record.prev_hash,
    )


class AuditLog:
    """Append, verify and export the audit chain."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def append(
        self, event: str, *, asset_id: str | None, actor: str, data: dict[str, Any]
    ) -> AuditRecord:
        """Add a record at the end of the chain; committed when this returns.

        ``data`` must not hold secrets: the log is exported and shown to operators.
        """
        if not event or not actor:
            raise InvalidInputError("an audit record needs an event and an actor", field="event")
        plain = to_plain(data, field="data")
        # Hashed as UTC ISO text with microseconds, which both backends store exactly.
        at = self._db.clock().astimezone(UTC)
        with self._db.write("append audit record") as conn:
            # The row lock (PostgreSQL) or BEGIN IMMEDIATE (SQLite) makes this read-then-write
            # atomic across processes: the next appender reads the head this one writes.
            head = (
                conn.execute(
                    select(audit_head).where(audit_head.c.id == _HEAD_ID).with_for_update()
                )
                .mappings()
                .one()
            )
            seq = int(head["seq"]) + 1
            prev_hash = str(head["hash"])
            digest = record_hash(
                seq=seq,
                at=at,
                event=event,
                asset_id=asset_id,
                actor=actor,
                data=plain,
                prev_hash=prev_hash,
            )
            conn.execute(
                insert(audit_log).values(
                    seq=seq,
                    at=at,
                    event=event,
                    asset_id=asset_id,
                    actor=actor,
                    data=plain,
                    prev_hash=prev_hash,
                    hash=digest,
                )
            )
            conn.execute(
                update(audit_head)
                .where(audit_head.c.id == _HEAD_ID)
                .values(seq=seq, hash=digest, updated_at=at)
            )
        return AuditRecord(
            seq=seq,
            at=at,
            event=event,
            asset_id=asset_id,
            actor=actor,
            data=plain,
            prev_hash=prev_hash,
            hash=digest,
        )

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last record: worth copying elsewhere (see the docs)."""
        with self._db.read("read audit head") as conn:
            row = conn.execute(select(audit_head).where(audit_head.c.id == _HEAD_ID)).one()
            return int(row.seq), str(row.hash)

    def latest(self, event: str, *, asset_id: str) -> AuditRecord | None:
        """The newest record of ``event`` for ``asset_id``, or None.

        Walks the log from its newest record back (the primary key), so it is quick for the
        recent records it is meant for, e.g. who asked for an approval that waits.
        """
        stmt = (
            select(audit_log)
            .where(audit_log.c.event == event, audit_log.c.asset_id == asset_id)
            .order_by(audit_log.c.seq.desc())
            .limit(1)
        )
        with self._db.read("read audit record") as conn:
            row = conn.execute(stmt).mappings().one_or_none()
        return None if row is None else _record(row)

    def export(self) -> Iterator[AuditRecord]:
        """Every record in seq order, streamed in batches (memory does not grow with the log)."""
        stmt = (
            select(audit_log).order_by(audit_log.c.seq).execution_options(yield_per=_STREAM_BATCH)
        )
        with self._db.read("export audit log", snapshot=True) as conn:
            for row in conn.execute(stmt).mappings():
                yield _record(row)

    def verify(self, *, expect_head: tuple[int, str] | None = None) -> AuditVerification:
        """Walk the chain; report the first record that was edited, deleted, moved or inserted.

        ``expect_head`` is a ``(seq, hash)`` copied from :meth:`head` earlier and kept where the
        database's writers cannot change it. Without it, cutting off the newest records *and*
        moving ``audit_head`` back leaves a shorter chain that is consistent in itself; with it,
        that (and a chain re-hashed from some record on) is caught.
        """
        if expect_head is not None and expect_head[0] < 1:
            raise InvalidInputError(
                f"an expected head needs a seq of 1 or more, not {expect_head[0]}",
                hint="copy it from `safe-updater audit head`",
                field="expect_head",
            )
        stmt = (
            select(audit_log).order_by(audit_log.c.seq).execution_options(yield_per=_STREAM_BATCH)
        )
        checked = 0
        expected_seq = 1
        prev_hash = GENESIS_HASH
        prev_prev_hash: str | None = None
        anchored_hash: str | None = None  # the hash of seq expect_head[0], once walked past it
        # One snapshot for head and records: an append during verify is not a false alarm.
        with self._db.read("verify audit log", snapshot=True) as conn:
            head = conn.execute(select(audit_head).where(audit_head.c.id == _HEAD_ID)).one_or_none()
            if head is None:
                return AuditVerification(
                    ok=False,
                    records=0,
                    problem="the chain head row (audit_head) is missing: it was deleted, so "
                    "neither appends nor a cut-off tail can be checked; restore the database "
                    "from a backup",
                )
            head_seq, head_hash = int(head.seq), str(head.hash)
            records = (_record(row) for row in conn.execute(stmt).mappings())
            record = next(records, None)
            while record is not None:
                # One record of look-ahead: it tells a re-hashed record from a moved one.
                following = next(records, None)
                if record.seq < expected_seq:
                    return _bad(
                        checked,
                        record.seq,
                        f"seq {record.seq} lies before seq 1: a record was inserted before the "
                        "first record",
                    )
                if record.seq != expected_seq:
                    return _bad(
                        checked,
                        expected_seq,
                        f"seq {expected_seq} is missing: the log goes from seq "
                        f"{expected_seq - 1} to seq {record.seq} (a record was deleted)",
                    )
                intact = _expected_hash(record) == record.hash
                if record.prev_hash != prev_hash:
                    if prev_prev_hash is not None and record.prev_hash == prev_prev_hash:
                        return _bad(
                            checked - 1,
                            record.seq - 1,
                            f"seq {record.seq - 1} was inserted: seq {record.seq} links to "
                            f"the record before it",
                        )
                    vouched = _vouched(record, following, head_seq, head_hash)
                    if record.seq > 1 and intact and vouched:
                        # This record and the chain after it are untouched, so the record
                        # before it is not the one it was chained to: that one was rewritten
                        # and its hash recomputed (anyone can: the hash has no secret).
                        return _bad(
                            checked - 1,
                            record.seq - 1,
                            f"seq {record.seq - 1} was changed and its hash recomputed (or the "
                            f"record replaced): seq {record.seq}, which is intact, was chained "
                            f"to a different seq {record.seq - 1}",
                        )
                    return _bad(
                        checked,
                        record.seq,
                        f"seq {record.seq} does not link to seq {record.seq - 1} (prev_hash "
                        "differs): records were reordered, replaced or deleted",
                    )
                if not intact:
                    return _bad(
                        checked,
                        record.seq,
                        f"seq {record.seq} does not match its hash: the record was edited",
                    )
                if expect_head is not None and record.seq == expect_head[0]:
                    anchored_hash = record.hash
                prev_prev_hash, prev_hash = prev_hash, record.hash
                expected_seq += 1
                checked += 1
                record = following
        last = expected_seq - 1
        if head_seq > last:
            return _bad(
                checked,
                last + 1,
                f"the chain head says the log ends at seq {head_seq} but it ends at seq "
                f"{last}: the records after it were deleted",
            )
        if head_seq < last:
            extra = (
                f"seq {last} lies" if head_seq + 1 == last else f"seq {head_seq + 1}..{last} lie"
            )
            return _bad(
                head_seq,
                head_seq + 1,
                f"{extra} past the chain head (seq {head_seq}): added outside the audit log",
            )
        if head_hash != prev_hash:
            return _bad(
                checked - 1,
                last,
                f"the chain head's hash differs from seq {last}'s: the last record was replaced",
            )
        if expect_head is not None:
            return _check_anchor(checked, last, expect_head, anchored_hash)
        return AuditVerification(ok=True, records=checked)


def _vouched(
    record: AuditRecord, following: AuditRecord | None, head_seq: int, head_hash: str
) -> bool:
    """Whether what comes after ``record`` confirms it: the next record links to it, or it is
    the last record and the chain head holds its hash."""
    if following is not None:
        return following.seq == record.seq + 1 and following.prev_hash == record.hash
    return head_seq == record.seq and head_hash == record.hash


def _check_anchor(
    checked: int, last: int, expect_head: tuple[int, str], found: str | None
) -> AuditVerification:
    seq, digest = expect_head
    short = digest[:12]
    if seq > last:
        return _bad(
            checked,
            last + 1,
            f"the log ends at seq {last}, but seq {seq} (hash {short}…) was recorded as the head "
            f"earlier: seq {last + 1}..{seq} were deleted and the chain head moved back",
        )
    if found != digest:
        return _bad(
            checked,
            seq,
            f"seq {seq} is not the record recorded as the head earlier (hash {short}…): the "
            f"chain was rewritten, or cut back and written again, at or before seq {seq}; "
            "every hash was recomputed, so the first changed record cannot be named",
        )
    return AuditVerification(ok=True, records=checked)


def _bad(checked: int, seq: int, problem: str) -> AuditVerification:
    return AuditVerification(ok=False, records=checked, first_bad_seq=seq, problem=problem)
