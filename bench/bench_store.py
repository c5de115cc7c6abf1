"""State store benchmark: journal queries on 100,000 rows and a 10,000-asset inventory.

Prints numbers, asserts nothing. Goals: every journal/inventory read under 100 ms at 100,000
journal rows. Each indexed query is compared with the same SQL forced to a full scan in the
same run (SQLite ``NOT INDEXED``; PostgreSQL with index scans switched off), so the ratio says
what the indexes buy on this machine. Runs on SQLite always and on PostgreSQL when
``TESTBED_POSTGRES_URL`` is set (a scratch database is created and dropped).

    .venv/bin/python bench/bench_store.py [--rows 100000] [--assets 10000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from safe_updater.adapters.store import StateStore
from safe_updater.adapters.store.database import normalize_url
from safe_updater.adapters.store.schema import attempts
from safe_updater.domain.assets import Asset, AssetId, AssetKind, ImageRef

ASSET_SPREAD = 500
START = datetime(2025, 1, 1, tzinfo=UTC)


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm caches and the statement cache: we measure steady state
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def fill_journal(store: StateStore, rows: int) -> float:
    t0 = time.perf_counter()
    batch: list[dict[str, Any]] = []
    with store.engine.begin() as conn:
        for i in range(rows):
            at = START + timedelta(minutes=i)
            batch.append(
                {
                    "idempotency_key": f"bench-{i}",
                    "asset_id": f"docker:host/app{i % ASSET_SPREAD}",
                    "from_version": "1.0.0",
                    "to_version": "1.0.1",
                    "change_type": "patch",
                    "phase": "closed",
                    "outcome": "updated" if i % 10 else "rolled_back",
                    "reason": "bench",
                    "snapshot": {"image": "127.0.0.1:5000/demo/web:1.0.0"},
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
        conn.execute(text("ANALYZE"))
        conn.commit()
    return time.perf_counter() - t0


def raw_query(store: StateStore, where: str, params: dict[str, Any], *, scan: bool) -> None:
    """The history query as SQL, through its index or (``scan``) forced to a full scan."""
    table = "attempts NOT INDEXED" if scan and store.dialect == "sqlite" else "attempts"
    # A different text for the scan: psycopg prepares repeated statements, and a prepared
    # plan made with indexes enabled would ignore the SET LOCAL below.
    tag = "/* full scan */" if scan else "/* index */"
    sql = text(f"SELECT {tag} * FROM {table} {where} ORDER BY started_at DESC, id DESC LIMIT 100")
    with store.engine.connect() as conn, conn.begin():
        if scan and store.dialect == "postgresql":
            for knob in ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan"):
                conn.execute(text(f"SET LOCAL {knob} = off"))
        conn.execute(sql, params).all()


def bench_journal(store: StateStore, rows: int, repeat: int) -> None:
    fill_s = fill_journal(store, rows)
    print(f"  fill {rows:,} journal rows (bulk insert + ANALYZE): {fill_s:.2f} s")
    j = store.journal
    since = START + timedelta(minutes=rows - 5_000)
    asset = "docker:host/app7"
    api: list[tuple[str, Callable[[], object]]] = [
        ("history(limit=100)", lambda: j.history(limit=100)),
        ("history(asset, limit=100)", lambda: j.history(asset, limit=100)),
        ("history(since=last 5000 min)", lambda: j.history(since=since)),
        ("find_open()", j.find_open),
        ("count(asset_id=asset)", lambda: j.count(asset_id=asset)),
        ("stats(since=last 5000 min)", lambda: j.stats(since=since)),
        ("stats() all rows", j.stats),
    ]
    print(f"  {'journal API call':34} {'median ms':>10}  goal < 100 ms")
    for name, fn in api:
        ms = median_ms(fn, repeat)
        print(f"  {name:34} {ms:10.2f}  {'ok' if ms < 100 else 'OVER'}")

    raw: list[tuple[str, str, dict[str, Any]]] = [
        ("newest 100", "", {}),
        ("newest 100 of one asset", "WHERE asset_id = :a", {"a": asset}),
        ("newest 100 since", "WHERE started_at >= :s", {"s": since}),
    ]
    print(
        f"  {'history SQL (index vs full scan)':34} {'index ms':>10} {'scan ms':>10} {'ratio':>8}"
    )
    for name, where, params in raw:
        # The datetime parameter must be bound the way the store stores it on SQLite.
        bound = {
            k: (
                v.replace(tzinfo=None)
                if isinstance(v, datetime) and store.dialect == "sqlite"
                else v
            )
            for k, v in params.items()
        }
        indexed = median_ms(partial(raw_query, store, where, bound, scan=False), repeat)
        scanned = median_ms(partial(raw_query, store, where, bound, scan=True), repeat)
        print(f"  {name:34} {indexed:10.2f} {scanned:10.2f} {scanned / indexed:7.1f}x")


def make_asset(i: int) -> Asset:
    return Asset(
        id=AssetId(f"docker:bench/app{i:05d}"),
        kind=AssetKind.DOCKER,
        target="bench",
        name=f"app{i:05d}",
        image=ImageRef(registry="127.0.0.1:5000", repository="demo/web", tag="1.0.0"),
        current_version="1.0.0",
        labels={"safe-updater.io/enabled": "true", "safe-updater.io/group": "canary"},
    )


def _against_goal(ms: float, goal: float = 100.0) -> str:
    return f"{ms:.1f} ms  {'ok' if ms < goal else 'over'} (goal < {goal:.0f} ms)"


def bench_assets(store: StateStore, n: int, repeat: int) -> None:
    items = [make_asset(i) for i in range(n)]
    t0 = time.perf_counter()
    store.assets.upsert(items)
    insert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.assets.upsert(items)  # the common case: a rescan that finds the same assets
    update_s = time.perf_counter() - t0
    # Memory in separate runs: tracemalloc slows Python down several times.
    tracemalloc.start()
    store.assets.upsert(items)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    listed = store.assets.list()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(listed) == n
    del listed
    one = items[n // 2].id
    rows = [
        (
            f"upsert {n:,} new assets",
            f"{insert_s * 1000:.0f} ms ({insert_s / n * 1e6:.0f} us/asset)",
        ),
        (f"upsert {n:,} existing assets", f"{update_s * 1000:.0f} ms"),
        ("upsert peak Python memory", f"{peak / n:.0f} B/asset ({peak / 2**20:.1f} MiB)"),
        ("list() result memory", f"{held / n:.0f} B/asset"),
        (f"list() {n:,} assets", _against_goal(median_ms(store.assets.list, repeat))),
        ("get(one id)", f"{median_ms(lambda: store.assets.get(one), repeat):.2f} ms"),
        ("counts()", f"{median_ms(store.assets.counts, repeat):.2f} ms"),
    ]
    for name, value in rows:
        print(f"  {name:34} {value}")


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        yield f"sqlite:///{tmp}/state.db"


@contextmanager
def postgres_url(base: str) -> Iterator[str]:
    admin_url = normalize_url(base)
    name = f"su_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def run(label: str, url: str, args: argparse.Namespace) -> None:
    print(f"\n== {label} ==")
    t0 = time.perf_counter()
    store = StateStore.open(url)
    print(f"  open + migrate to head: {(time.perf_counter() - t0) * 1000:.0f} ms")
    try:
        t0 = time.perf_counter()
        StateStore.open(url).close()
        print(f"  re-open at head:        {(time.perf_counter() - t0) * 1000:.0f} ms")
        bench_journal(store, args.rows, args.repeat)
        bench_assets(store, args.assets, args.repeat)
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {args.rows:,} journal rows, {args.assets:,} assets")
    with sqlite_url() as url:
        run("SQLite (WAL, synchronous=FULL)", url, args)
    base = os.environ.get("TESTBED_POSTGRES_URL")
    if base:
        with postgres_url(base) as url:
            run("PostgreSQL", url, args)
    else:
        print("\n(PostgreSQL skipped: TESTBED_POSTGRES_URL is unset)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
