"""Benchmarks of the Docker update path on the test bed: time to recover, and the orchestration
overhead of one update.

* **recover** (goal < 2 s): ``update_asset`` moves a demo container to 1.0.2, whose ``/healthz``
  answers 404; the run rolls back. Measured from the unhealthy verdict (the last health sample
  of the monitoring window, recorded by a wrapper around the runtime's probes) to the moment
  ``/healthz`` on the container's port answers 200 again (polled every 20 ms from a thread).
  Baseline, same run, same containers: the bare SDK sequence ``stop new; rename; start old``
  from the same state, measured the same way.
* **overhead** (goal < 1.5 s): wall time of ``update_asset`` 1.0.0 -> 1.0.1 (healthy) minus the
  monitoring window. Baseline: the same adapter calls (find, tag list, preflight, snapshot,
  apply, commit) made directly, without Prefect and without the journal.

Prints medians and ratios, asserts nothing; removes every container it starts.

    .venv/bin/python bench/bench_docker_update.py [--repeat 10] [--only recover|overhead] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from _common import (
    Containers,
    RegistryInfo,
    bench_runtime,
    docker_client,
    free_port,
    load_line,
    median,
    prefect_server,
    print_header,
    spread,
    testbed,
    wait_for_http,
)

ENABLE = "safe-updater.io/enabled"
HEALTH = "safe-updater.io/health."


# --- instruments ---------------------------------------------------------------------------------


class Poller:
    """GET ``url`` every ``interval`` seconds from a thread; keeps (perf_counter, status)."""

    def __init__(self, url: str, interval: float = 0.02) -> None:
        self.url = url
        self.interval = interval
        self.samples: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=0.5) as client:
            while not self._stop.is_set():
                try:
                    status: int | None = client.get(self.url).status_code
                except httpx.HTTPError:
                    status = None
                self.samples.append((time.perf_counter(), status))
                self._stop.wait(self.interval)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def first_ok_after(self, t0: float) -> float | None:
        return next((t for t, status in self.samples if t > t0 and status == 200), None)


@dataclass
class Timeline:
    """Perf-counter stamps of health samples and updater calls during one run."""

    samples: list[tuple[float, float, bool]] = field(default_factory=list)  # start, end, ok
    calls: dict[str, tuple[float, float]] = field(default_factory=dict)  # method -> start, end


class TimedProbe:
    def __init__(self, probe: Any, timeline: Timeline) -> None:
        self._probe = probe
        self._timeline = timeline

    @property
    def name(self) -> str:
        return str(self._probe.name)

    def check(self, at: Any) -> Any:
        start = time.perf_counter()
        sample = self._probe.check(at)
        self._timeline.samples.append((start, time.perf_counter(), bool(sample.ok)))
        return sample


class TimedPlanner:
    def __init__(self, planner: Any, timeline: Callable[[], Timeline]) -> None:
        self._planner = planner
        self._timeline = timeline

    def plan(self, asset: Any, applied: Any) -> Any:
        probes, policy = self._planner.plan(asset, applied)
        return [TimedProbe(p, self._timeline()) for p in probes], policy


class TimedUpdater:
    """Records when each AssetUpdater method started and ended."""

    def __init__(self, updater: Any, timeline: Callable[[], Timeline]) -> None:
        self._updater = updater
        self._timeline = timeline

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._updater, name)
        if not callable(method):
            return method

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._timeline().calls[name] = (start, time.perf_counter())

        return timed


@contextlib.contextmanager
def instrumented(runtime: Any) -> Iterator[Callable[[], Timeline]]:
    """Wrap the runtime's health planner and updaters; yields a getter of the current timeline
    (``reset`` by assigning a new one through the returned holder)."""
    holder = [Timeline()]
    current = lambda: holder[0]  # noqa: E731
    planner, updaters = runtime.health, runtime.updaters
    runtime.health = TimedPlanner(planner, current)
    runtime.updaters = {key: TimedUpdater(u, current) for key, u in updaters.items()}
    try:
        yield lambda: holder.__setitem__(0, Timeline()) or holder[0]
    finally:
        runtime.health, runtime.updaters = planner, updaters


def health_labels(port: int, **extra: str) -> dict[str, str]:
    labels = {
        ENABLE: "true",
        HEALTH + "http": f"http://127.0.0.1:{port}/healthz",
        HEALTH + "docker": "false",
    }
    labels.update({HEALTH + key.replace("_", "-"): value for key, value in extra.items()})
    return labels


# --- time to recover -----------------------------------------------------------------------------


def bench_recover(
    runtime: Any, containers: Containers, registry: RegistryInfo, repeat: int
) -> dict[str, list[float]]:
    from safe_updater.flows.update_asset import update_asset

    api = containers.client.api
    results: dict[str, list[float]] = {
        "flow": [],
        "verdict_to_rollback_call": [],
        "rollback_call": [],
        "rollback_to_serving": [],
        "baseline": [],
        "flow_wall": [],
    }
    with instrumented(runtime) as new_timeline:
        for i in range(repeat + 1):  # the first is a warm-up, not counted
            name = f"bench-recover-{uuid.uuid4().hex[:8]}"
            port = free_port()
            labels = health_labels(port, window="10s", interval="250ms", failure_threshold="2")
            containers.run(registry.image("1.0.0"), name=name, port=port, labels=labels)
            timeline = new_timeline()
            with Poller(f"http://127.0.0.1:{port}/healthz") as poller:
                t0 = time.perf_counter()
                result = update_asset(f"docker:local/{name}", to_version="1.0.2", approval="defer")
                wall = time.perf_counter() - t0
                wait_for_http(f"http://127.0.0.1:{port}/healthz", status=200, timeout=10)
                time.sleep(0.1)
            if result["outcome"] != "rolled_back":
                raise SystemExit(f"expected a rollback, got {result}")
            rb_start, rb_end = timeline.calls["rollback"]
            # The verdict is the last (failing) sample before the rollback began.
            verdict = max(end for _, end, _ok in timeline.samples if end < rb_start)
            serving = poller.first_ok_after(verdict)
            baseline = baseline_recover(api, containers, registry, name, port)
            containers.remove(name)
            if i == 0 or serving is None:
                continue
            results["flow"].append(serving - verdict)
            results["verdict_to_rollback_call"].append(rb_start - verdict)
            results["rollback_call"].append(rb_end - rb_start)
            results["rollback_to_serving"].append(serving - rb_end)
            results["baseline"].append(baseline)
            results["flow_wall"].append(wall)
    return results


def baseline_recover(
    api: Any, containers: Containers, registry: RegistryInfo, name: str, port: int
) -> float:
    """The same switch by hand: new (1.0.2) serves under ``name``, old is stopped and kept; then
    time ``stop new; rename new away; rename old back; start old`` until /healthz answers 200."""
    old, bad, kept = name, f"{name}.bench-bad", f"{name}.bench-prev"
    containers.track(bad)
    containers.track(kept)
    new_id = api.create_container(
        registry.image("1.0.2"),
        name=bad,
        environment={"PORT": str(port)},
        host_config=api.create_host_config(network_mode="host"),
    )["Id"]
    api.stop(old, timeout=10)
    api.rename(old, kept)
    api.rename(new_id, name)
    api.start(new_id)
    wait_for_http(f"http://127.0.0.1:{port}/healthz", status=404, timeout=10)
    with Poller(f"http://127.0.0.1:{port}/healthz") as poller:
        t0 = time.perf_counter()
        api.stop(new_id, timeout=10)
        api.rename(new_id, bad)
        api.rename(kept, name)
        api.start(name)
        wait_for_http(f"http://127.0.0.1:{port}/healthz", status=200, timeout=10)
        time.sleep(0.05)
    serving = poller.first_ok_after(t0)
    containers.remove(bad)
    return (serving or time.perf_counter()) - t0


# --- orchestration overhead ----------------------------------------------------------------------


def bench_overhead(
    runtime: Any, containers: Containers, registry: RegistryInfo, repeat: int, window: float
) -> dict[str, list[float]]:
    from safe_updater.flows.update_asset import update_asset

    results: dict[str, list[float]] = {
        "wall": [],
        "minus_window": [],
        "minus_monitoring": [],
        "before_first_call": [],
        "after_commit": [],
        "adapter_calls_in_flow": [],
        "baseline": [],
    }
    labels = dict(window=f"{window:g}s", interval="500ms")
    with instrumented(runtime) as new_timeline:
        for i in range(repeat + 1):  # the first is a warm-up, not counted
            name = f"bench-update-{uuid.uuid4().hex[:8]}"
            port = free_port()
            containers.run(
                registry.image("1.0.0"), name=name, port=port, labels=health_labels(port, **labels)
            )
            timeline = new_timeline()
            t0 = time.perf_counter()
            result = update_asset(f"docker:local/{name}", to_version="1.0.1", approval="defer")
            t1 = time.perf_counter()
            containers.remove(name)
            if result["outcome"] != "updated":
                raise SystemExit(f"expected an update, got {result}")
            monitoring = timeline.samples[-1][1] - timeline.samples[0][0]
            calls = timeline.calls
            adapter = sum(end - start for start, end in calls.values())
            baseline = baseline_update(runtime, containers, registry, labels)
            if i == 0:
                continue
            results["wall"].append(t1 - t0)
            results["minus_window"].append(t1 - t0 - window)
            results["minus_monitoring"].append(t1 - t0 - monitoring)
            results["before_first_call"].append(calls["preflight"][0] - t0)
            results["after_commit"].append(t1 - calls["commit"][1])
            results["adapter_calls_in_flow"].append(adapter)
            results["baseline"].append(baseline)
    return results


def baseline_update(
    runtime: Any, containers: Containers, registry: RegistryInfo, labels: dict[str, str]
) -> float:
    """find, tag list, preflight, snapshot, apply, commit: the adapters alone."""
    from safe_updater.domain.assets import AssetKind

    name = f"bench-base-{uuid.uuid4().hex[:8]}"
    port = free_port()
    containers.run(
        registry.image("1.0.0"), name=name, port=port, labels=health_labels(port, **labels)
    )
    updater = runtime.updaters[(AssetKind.DOCKER, "local")]._updater
    t0 = time.perf_counter()
    asset = runtime.find_asset(f"docker:local/{name}")
    assert asset.image is not None
    runtime.registry.clear_cache()
    runtime.registry.list_tags(asset.image)
    updater.preflight(asset, "1.0.1")
    snapshot = updater.snapshot(asset)
    applied = updater.apply(asset, snapshot, "1.0.1")
    updater.commit(asset, snapshot, applied)
    elapsed = time.perf_counter() - t0
    containers.remove(name)
    return elapsed


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, help="runs per benchmark (default 10, quick 3)")
    parser.add_argument("--only", choices=["recover", "overhead"])
    parser.add_argument("--window", type=float, default=2.0, help="monitoring window (overhead)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 10)

    _env, registry = testbed()
    print_header("Docker update path: time to recover, orchestration overhead")
    client = docker_client()
    for tag in ("1.0.0", "1.0.1", "1.0.2"):
        client.images.pull(registry.image(tag).rsplit(":", 1)[0], tag=tag)
    try:
        with prefect_server(), bench_runtime() as runtime, Containers(client) as containers:
            if args.only in (None, "recover"):
                report_recover(bench_recover(runtime, containers, registry, repeat))
            if args.only in (None, "overhead"):
                report_overhead(
                    bench_overhead(runtime, containers, registry, repeat, args.window), args.window
                )
    finally:
        client.close()
    print(f"after the run: {load_line()}")
    return 0


def report_recover(r: dict[str, list[float]]) -> None:
    print("\n-- time to recover (unhealthy verdict -> old version answers /healthz 200) --")
    print(f"update_asset + rollback:           {spread(r['flow'])}")
    print(f"  verdict -> rollback() called:    {spread(r['verdict_to_rollback_call'])}")
    print(f"  rollback() (engine calls):       {spread(r['rollback_call'])}")
    print(f"  rollback() returned -> 200:      {spread(r['rollback_to_serving'])}")
    print(f"baseline: SDK stop/rename/start:   {spread(r['baseline'])}")
    print(f"whole run (wall, incl. window):    {spread(r['flow_wall'])}")
    ratio = median(r["flow"]) / median(r["baseline"])
    goal = "met" if median(r["flow"]) < 2 else "MISSED"
    print(f"ratio to baseline: {ratio:.1f}x; goal < 2 s: {goal}")


def report_overhead(r: dict[str, list[float]], window: float) -> None:
    print(f"\n-- orchestration overhead of one update (window {window:g} s) --")
    print(f"update_asset wall time:            {spread(r['wall'])}")
    print(f"  minus the window:                {spread(r['minus_window'])}")
    print(f"  minus measured monitoring:       {spread(r['minus_monitoring'])}")
    print(f"  call -> preflight starts:        {spread(r['before_first_call'])}")
    print(f"  commit done -> call returns:     {spread(r['after_commit'])}")
    print(f"  adapter calls inside the flow:   {spread(r['adapter_calls_in_flow'])}")
    print(f"baseline: adapter calls directly:  {spread(r['baseline'])}")
    over = median(r["minus_window"])
    orchestration = over - median(r["baseline"])
    print(
        f"ratio (wall - window) / baseline: {over / median(r['baseline']):.1f}x; "
        f"orchestration alone ~{orchestration:.2f} s; goal < 1.5 s: "
        f"{'met' if over < 1.5 else 'MISSED'}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
