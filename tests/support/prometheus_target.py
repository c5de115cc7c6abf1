"""Have the test-bed Prometheus scrape this process's ``/metrics`` (served by serve_metrics)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from safe_updater.adapters.store import StateStore
from safe_updater.metrics import serve_metrics, stop_metrics
from support.testbed import PrometheusInfo


@contextmanager
def scraped_metrics(
    prometheus: PrometheusInfo, store: StateStore, *, timeout: float = 60.0
) -> Iterator[str]:
    """Serve ``store``'s metrics on 127.0.0.1:<free port> and register it with Prometheus.

    Yields the target's ``instance`` label (``127.0.0.1:PORT``) once Prometheus reports it up
    and has stored ``safe_updater_assets`` from it. Removes the target and stops the server.
    """
    server, thread = serve_metrics(store, "127.0.0.1", 0)
    instance = f"127.0.0.1:{server.server_address[1]}"
    name = f"safe-updater-metrics-{uuid.uuid4().hex[:8]}"
    try:
        prometheus.set_targets(name, [instance], {"test": name})
        wait_for(prometheus, f'safe_updater_assets{{instance="{instance}"}}', timeout=timeout)
        yield instance
    finally:
        prometheus.remove_targets(name)
        stop_metrics(server, thread)


def wait_for(prometheus: PrometheusInfo, promql: str, *, timeout: float) -> list[dict[str, Any]]:
    """Poll Prometheus (an outside process: no clock to inject) until ``promql`` has data."""
    deadline = time.monotonic() + timeout
    while True:
        result = prometheus.query(promql)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus has no data for {promql} after {timeout:g}s")
        time.sleep(0.5)
