"""Scrape time of /metrics with 10,000 assets and 10,000 / 100,000 journal rows (goal < 100 ms).

For each journal size, fills a fresh SQLite store (in a temporary directory) with 10,000 Docker
assets, then with closed journal rows (bulk insert, then ``Journal.rebuild_aggregates()``, as the
rows bypass ``Journal.close``) over 20 days, verify times on the updated and rolled-back ones,
200 open attempts, 500 quarantined versions, registry request counts, and a scan's pending
updates for 3,000 of the assets. Times ``generate_latest`` of the store registry (what
``/metrics`` returns), a GET over loopback from ``serve_metrics``, and the scan's write of the
pending updates of every asset (``AssetRepository.record_pending``). Baselines in the same run:
``generate_latest`` of an empty registry and a bare ``SELECT count(*) FROM assets``.
Prints medians; no assertions.

    .venv/bin/python bench/bench_metrics.py [--assets 10000] [--attempts 10000 100000] [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import insert, text

from safe_updater.adapters.store import StateStore
from safe_updater.adapters.store.assets import PendingUpdate
from safe_updater.adapters.store.schema import attempts
from safe_updater.domain.assets import Asset, AssetId, AssetKind, ImageRef
from safe_updater.metrics import build_registry, serve_metrics, stop_metrics


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def fill(store: StateStore, n_assets: int, n_attempts: int) -> None:
    store.assets.upsert(
        Asset(
            id=AssetId(f"docker:local/app{i:06d}"),
            kind=AssetKind.DOCKER,
            target="local",
            name=f"app{i:06d}",
            image=ImageRef(registry="127.0.0.1:5000", repository="demo/web", tag="1.0.0"),
            current_version="1.0.0",
        )
        for i in range(n_assets)
    )
    now = datetime.now(UTC)
    outcomes = ["updated"] * 6 + ["no_update", "rolled_back", "awaiting_approval", "failed"]
    changes = ["patch", "minor", "major", "digest"]
    rows = []
    for i in range(n_attempts):
        started = now - timedelta(days=20) + timedelta(seconds=i * 17)
        outcome = outcomes[i % len(outcomes)]
        verified = outcome in ("updated", "rolled_back")
        rows.append(
            {
                "idempotency_key": f"bench-{i}",
                "asset_id": f"docker:local/app{i % max(n_assets, 1):06d}",
                "from_version": "1.0.0",
                "to_version": "1.0.1",
                "change_type": changes[i % len(changes)],
                "phase": "closed",
                "outcome": outcome,
                "reason": "bench",
                "snapshot": {},
                "applied": {},
                "started_at": started,
                "updated_at": started + timedelta(seconds=i % 600),
                "finished_at": started + timedelta(seconds=i % 600),
                "verify_started_at": started if verified else None,
                "verify_seconds": float(i % 300) if verified else None,
            }
        )
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(attempts), rows[start : start + 5000])
    store.journal.rebuild_aggregates()
    for i in range(200):
        store.journal.open_attempt(
            asset_id=f"docker:local/app{i:06d}x",
            from_version="1",
            to_version="2",
            change_type="patch",
            idempotency_key=f"open-{i}",
        )
    for i in range(500):
        store.quarantine.add(f"docker:local/app{i:06d}", "1.0.1", "bench")
    for status in (200, 200, 401, 404, 429):
        store.budgets.record_request("127.0.0.1:5000", status)
    store.assets.record_pending(scan_plan(n_assets))


def scan_plan(n_assets: int) -> dict[str, PendingUpdate | None]:
    """What a scan of every asset records: an update for 3 in 10 of them, none for the rest."""
    kinds = [("auto", "patch"), ("auto", "digest"), ("approve", "minor")]
    return {
        f"docker:local/app{i:06d}": PendingUpdate(*kinds[i % 3], "1.0.1") if i % 10 < 3 else None
        for i in range(n_assets)
    }


def measure(n_assets: int, n_attempts: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore.open(f"sqlite:///{tmp}/state.db")
        try:
            t = time.perf_counter()
            fill(store, n_assets, n_attempts)
            print(
                f"filled {n_assets} assets, {n_attempts} journal rows "
                f"in {time.perf_counter() - t:.1f} s"
            )
            registry = build_registry(store)
            body = generate_latest(registry)
            empty = CollectorRegistry()

            def count_assets() -> None:
                with store.engine.connect() as conn:
                    conn.execute(text("SELECT count(*) FROM assets")).scalar_one()

            plan = scan_plan(n_assets)
            record = median_ms(lambda: store.assets.record_pending(plan), max(3, runs // 10))
            scrape = median_ms(lambda: generate_latest(registry), runs)
            baseline = median_ms(lambda: generate_latest(empty), runs)
            bare = median_ms(count_assets, runs)
            server, thread = serve_metrics(store, "127.0.0.1", 0, registry=registry)
            try:
                url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
                with httpx.Client(trust_env=False, timeout=60) as client:
                    http = median_ms(lambda: client.get(url).raise_for_status(), runs)
            finally:
                stop_metrics(server, thread)
        finally:
            store.close()

    lines = len(body.splitlines())
    print(f"exposition: {len(body)} bytes, {lines} lines")
    print(f"generate_latest(store registry)  median {scrape:7.2f} ms   (goal < 100 ms)")
    print(f"GET /metrics over loopback       median {http:7.2f} ms")
    print(f"scan: record_pending({n_assets} assets) median {record:7.1f} ms")
    print(f"baseline: empty registry         median {baseline:7.3f} ms")
    print(f"baseline: SELECT count(*) assets median {bare:7.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--attempts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    for n_attempts in args.attempts:
        measure(args.assets, n_attempts, args.runs)


if __name__ == "__main__":
    main()
