"""Benchmark of a fleet update on the test bed (issue 6): 100 Docker containers, 10 at a time.

``update_fleet(dispatch="inline")`` with ``fleet.max_parallel: C`` moves ``N`` opted-in demo
containers (policy: patch auto) from 1.0.0 to 1.0.1 of a repository of their own, each watched
by a real HTTP health check for a ``--window`` monitoring window. Printed:

* the fleet's wall time against the ideal, ``ceil(N / C)`` waves of one window each (goal:
  within 1.25x of it);
* the baseline, measured in the same run: the wall time of single ``update_asset`` runs, split
  into the monitoring window and the rest (the per-asset orchestration overhead), and the ratio
  of the fleet's wall time to ``waves x`` that single-update time;
* where each per-asset run's time goes: per-asset spans (slot held, monitoring, before apply,
  after the verdict), Prefect task runs by task (from the API), Prefect API requests, Docker
  engine requests, registry requests and state-store transactions, counted in this process;
* memory: the peak RSS of this process and of the temporary Prefect server.

Prints numbers and ratios, asserts nothing. Every container, local image and registry tag it
makes is removed at the end, also when the run fails.

    .venv/bin/python bench/bench_fleet.py [--assets 100] [--parallel 10] [--window 2]
        [--single 3] [--profile] [--prefect-db sqlite|postgres] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import os
import pstats
import re
import resource
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
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
)

ENABLE = "safe-updater.io/enabled"
GROUP_LABEL = "safe-updater.io/group"
HEALTH = "safe-updater.io/health."
OLD, NEW = "1.0.0", "1.0.1"


def health_labels(port: int, window: float) -> dict[str, str]:
    """Opted in, an HTTP check on the container's own port; Docker's HEALTHCHECK off, so the
    verdict depends on the window alone (as in bench_docker_update)."""
    return {
        ENABLE: "true",
        HEALTH + "http": f"http://127.0.0.1:{port}/healthz",
        HEALTH + "docker": "false",
        HEALTH + "window": f"{window:g}s",
        HEALTH + "interval": "500ms",
    }


# --- instruments ---------------------------------------------------------------------------------


@dataclass
class Calls:
    """Thread-safe tally of timed calls by kind: count and summed seconds."""

    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.count[kind] += 1
            self.seconds[kind] += seconds

    def total(self) -> tuple[int, float]:
        return sum(self.count.values()), sum(self.seconds.values())

    def top(self, n: int) -> list[tuple[str, int, float]]:
        rows = [(k, self.count[k], self.seconds[k]) for k in self.count]
        return sorted(rows, key=lambda r: -r[2])[:n]


@dataclass
class AssetTimes:
    """Perf-counter stamps of one asset's adapter calls and health samples."""

    calls: dict[str, tuple[float, float]] = field(default_factory=dict)
    samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def monitoring(self) -> float:
        return self.samples[-1][1] - self.samples[0][0] if self.samples else 0.0


class Recorder:
    """Everything one measured stretch records; :func:`instrumented` feeds it."""

    def __init__(self) -> None:
        self.assets: dict[str, AssetTimes] = defaultdict(AssetTimes)
        self.prefect = Calls()
        # every attempt of a Prefect request by answer: the client retries 503s (a busy SQLite
        # server) and 423s (a concurrency slot not free yet) with back-off inside one request
        self.prefect_attempts = Calls()
        self.docker = Calls()
        self.registry = Calls()
        self.store = Calls()


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _prefect_kind(request: httpx.Request) -> str:
    path = _UUID.sub("{id}", request.url.path.split("/api", 1)[-1])
    path = re.sub(
        r"(/v2/concurrency_limits/)(?!increment|decrement|filter)[^/]+", r"\1{name}", path
    )
    return f"{request.method} {path}"


def _docker_kind(method: str, url: str) -> str:
    path = re.sub(r"^/v[0-9.]+", "", httpx.URL(url).path)
    path = re.sub(r"/containers/[^/]+", "/containers/{c}", path)
    path = re.sub(r"/images/.+/(json|tag|push|history)$", r"/images/{i}/\1", path)
    return f"{method} {path}"


@contextlib.contextmanager
def instrumented(runtime: Any, holder: list[Recorder]) -> Iterator[None]:
    """Count and time, into ``holder[0]``, every Prefect API request of this process (sync and
    async clients), every Docker SDK request, every registry request of the runtime, every
    state-store transaction, and per asset the updater calls and health samples."""
    from docker.api.client import APIClient
    from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient

    def rec() -> Recorder:
        return holder[0]

    sync_send = PrefectHttpxSyncClient.send
    async_send = PrefectHttpxAsyncClient.send
    docker_send = APIClient.send
    httpx_send, httpx_async_send = httpx.Client.send, httpx.AsyncClient.send

    def attempt(request: httpx.Request, status: int | str, t0: float) -> None:
        kind = f"{status} {_prefect_kind(request)}"
        rec().prefect_attempts.add(kind, time.perf_counter() - t0)

    def one_attempt(self: Any, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, PrefectHttpxSyncClient):
            return httpx_send(self, request, *args, **kwargs)
        t0 = time.perf_counter()
        try:
            response = httpx_send(self, request, *args, **kwargs)
        except httpx.HTTPError as error:
            attempt(request, type(error).__name__, t0)
            raise
        attempt(request, response.status_code, t0)
        return response

    async def one_async_attempt(
        self: Any, request: httpx.Request, *args: Any, **kwargs: Any
    ) -> Any:
        if not isinstance(self, PrefectHttpxAsyncClient):
            return await httpx_async_send(self, request, *args, **kwargs)
        t0 = time.perf_counter()
        try:
            response = await httpx_async_send(self, request, *args, **kwargs)
        except httpx.HTTPError as error:
            attempt(request, type(error).__name__, t0)
            raise
        attempt(request, response.status_code, t0)
        return response

    def timed_sync(self: Any, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return sync_send(self, request, *args, **kwargs)
        finally:
            rec().prefect.add(_prefect_kind(request), time.perf_counter() - t0)

    async def timed_async(self: Any, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await async_send(self, request, *args, **kwargs)
        finally:
            rec().prefect.add(_prefect_kind(request), time.perf_counter() - t0)

    def timed_docker(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return docker_send(self, request, *args, **kwargs)
        finally:
            rec().docker.add(_docker_kind(request.method, request.url), time.perf_counter() - t0)

    reg_send = runtime.registry._client.send

    def timed_registry(request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return reg_send(request, *args, **kwargs)
        finally:
            path = re.sub(r"/(manifests|blobs)/.+$", r"/\1/{ref}", request.url.path)
            path = re.sub(r"^/v2/.+/(tags|manifests|blobs)", r"/v2/{repo}/\1", path)
            rec().registry.add(f"{request.method} {path}", time.perf_counter() - t0)

    db = runtime.store._db

    def timed_tx(inner: Callable[..., Any], mode: str) -> Callable[..., Any]:
        @contextlib.contextmanager
        def wrapper(what: str, **kwargs: Any) -> Iterator[Any]:
            t0 = time.perf_counter()
            try:
                with inner(what, **kwargs) as conn:
                    yield conn
            finally:
                # ``what`` names the asset in some transactions; the kind is what counts.
                kind = re.sub(r"\s+(docker|helm|k8s):\S+", "", what)
                rec().store.add(f"{mode} {kind}", time.perf_counter() - t0)

        return wrapper

    import safe_updater.flows.update_fleet as fleet_module

    subflow = fleet_module.__dict__["update_asset"]

    def timed_subflow(**parameters: Any) -> Any:
        # The fleet's ``update`` task calls this: its wall time is the whole per-asset run as
        # the fleet's thread sees it (flow-run creation, slots, the run, the engine's exit).
        t0 = time.perf_counter()
        try:
            return subflow(**parameters)
        finally:
            rec().assets[parameters["asset_id"]].calls["subflow"] = (t0, time.perf_counter())

    with Patches() as patch:
        patch(PrefectHttpxSyncClient, "send", timed_sync)
        patch(PrefectHttpxAsyncClient, "send", timed_async)
        patch(APIClient, "send", timed_docker)
        patch(httpx.Client, "send", one_attempt)
        patch(httpx.AsyncClient, "send", one_async_attempt)
        patch(runtime.registry._client, "send", timed_registry)
        patch(db, "read", timed_tx(db.read, "read"))
        patch(db, "write", timed_tx(db.write, "write"))
        patch(fleet_module, "update_asset", timed_subflow)
        patch(runtime, "health", _TimedPlanner(runtime.health, rec))
        patch(runtime, "updaters", {k: _TimedUpdater(u, rec) for k, u in runtime.updaters.items()})
        yield


class Patches:
    """``patch(obj, name, value)`` sets attributes; leaving the block restores each one (or
    removes it where it was inherited or a method of the class)."""

    def __init__(self) -> None:
        self._undo: list[tuple[object, str, bool, Any]] = []

    def __enter__(self) -> Callable[[object, str, Any], None]:
        return self.patch

    def patch(self, obj: object, name: str, value: Any) -> None:
        own = name in getattr(obj, "__dict__", {})
        self._undo.append((obj, name, own, getattr(obj, "__dict__", {}).get(name)))
        setattr(obj, name, value)

    def __exit__(self, *exc: object) -> None:
        for obj, name, own, old in reversed(self._undo):
            if own:
                setattr(obj, name, old)
            else:
                delattr(obj, name)
        self._undo.clear()


class _TimedProbe:
    def __init__(self, probe: Any, times: AssetTimes) -> None:
        self._probe = probe
        self._times = times

    @property
    def name(self) -> str:
        return str(self._probe.name)

    def check(self, at: Any) -> Any:
        start = time.perf_counter()
        sample = self._probe.check(at)
        self._times.samples.append((start, time.perf_counter()))
        return sample

    def close(self) -> None:
        close = getattr(self._probe, "close", None)
        if callable(close):
            close()


class _TimedPlanner:
    def __init__(self, planner: Any, rec: Callable[[], Recorder]) -> None:
        self._planner = planner
        self._rec = rec

    def plan(self, asset: Any, applied: Any) -> Any:
        probes, policy = self._planner.plan(asset, applied)
        times = self._rec().assets[asset.id]
        return [_TimedProbe(p, times) for p in probes], policy


class _TimedUpdater:
    """Records, per asset, when each AssetUpdater method started and ended."""

    def __init__(self, updater: Any, rec: Callable[[], Recorder]) -> None:
        self._updater = updater
        self._rec = rec

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._updater, name)
        if not callable(method):
            return method

        def timed(asset: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(asset, *args, **kwargs)
            finally:
                self._rec().assets[asset.id].calls[name] = (start, time.perf_counter())

        return timed


# --- memory --------------------------------------------------------------------------------------


def _status_kib(pid: int | str, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (the temporary Prefect server and its workers)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents[ppid].append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory_line() -> str:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    children = _children(os.getpid())
    peak_children = sum(_status_kib(pid, "VmHWM") for pid in children)
    return (
        f"peak RSS: this process {own / 1024:.0f} MiB; its {len(children)} child processes "
        f"(the temporary Prefect server) {peak_children / 1024:.0f} MiB together"
    )


# --- the single-update baseline ------------------------------------------------------------------


@dataclass
class Single:
    wall: list[float] = field(default_factory=list)
    monitoring: list[float] = field(default_factory=list)
    before_apply: list[float] = field(default_factory=list)
    after_verdict: list[float] = field(default_factory=list)

    @property
    def overhead(self) -> list[float]:
        return [w - m for w, m in zip(self.wall, self.monitoring, strict=True)]


def bench_single(
    runtime: Any,
    containers: Containers,
    image: str,
    window: float,
    repeat: int,
    holder: list[Recorder],
    profile: bool,
) -> Single:
    """``repeat`` single ``update_asset`` runs (after one warm-up that also pulls 1.0.1), each
    on a fresh container that is removed right after."""
    from safe_updater.flows.update_asset import update_asset

    single = Single()
    for i in range(repeat + 1 + int(profile)):
        name = f"bench-single-{uuid.uuid4().hex[:8]}"
        port = free_port()
        containers.run(image, name=name, port=port, labels=health_labels(port, window))
        holder[0] = Recorder()
        asset_id = f"docker:local/{name}"
        profiler = cProfile.Profile() if profile and i == repeat + 1 else None
        t0 = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        result = update_asset(asset_id, approval="defer", planned_version=NEW)
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - t0
        containers.remove(name)
        if result["outcome"] != "updated":
            raise SystemExit(f"single update: expected updated, got {result}")
        if profiler is not None:
            print_profile(profiler, wall)
            continue
        if i == 0:
            continue  # warm-up: first pull of 1.0.1, first flow of the process
        times = holder[0].assets[asset_id]
        single.wall.append(wall)
        single.monitoring.append(times.monitoring)
        single.before_apply.append(times.calls["apply"][0] - t0)
        single.after_verdict.append(t0 + wall - times.samples[-1][1])
    return single


def print_profile(profiler: cProfile.Profile, wall: float) -> None:
    print(f"\n-- cProfile of one single update_asset (main thread, wall {wall:.3f} s) --")
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(r"safe_updater|prefect/(task|flow)_engine", 30)
    stats.sort_stats("tottime").print_stats(12)
    print(out.getvalue())


# --- the fleet -----------------------------------------------------------------------------------


def start_fleet(
    containers: Containers, image: str, prefix: str, n: int, window: float
) -> list[tuple[str, int]]:
    specs = []
    for i in range(n):
        port = free_port()
        specs.append(
            {
                "image": image,
                "name": f"bench-fleet-{prefix}-{i:03d}",
                "port": port,
                # Its own group: the fleet run must not touch other opted-in containers that
                # happen to run on the same engine (tests, other benchmarks).
                "labels": {**health_labels(port, window), GROUP_LABEL: f"bench-{prefix}"},
            }
        )
    return containers.run_many(specs, threads=8)


def verify_fleet(client: Any, fleet: list[tuple[str, int]]) -> list[str]:
    """Problems: a container not running 1.0.1 (by its image tag) or not answering 1.0.1."""
    problems = []
    with httpx.Client(trust_env=False, timeout=2.0) as http:
        for name, port in fleet:
            info = client.api.inspect_container(name)
            tag = str(info["Config"]["Image"]).rpartition(":")[2]
            running = info["State"]["Running"]
            try:
                answer = http.get(f"http://127.0.0.1:{port}/version").text.strip()
            except httpx.HTTPError as error:
                answer = f"no answer ({type(error).__name__})"
            if tag != NEW or not running or answer != NEW:
                problems.append(f"{name}: image tag {tag}, running {running}, /version {answer}")
    return problems


# perf_counter() + EPOCH_OFFSET = time.time(): the slots' ISO times onto the perf-counter stamps
EPOCH_OFFSET = time.time() - time.perf_counter()


def _iso(value: str | None) -> float | None:
    """An ISO time as a perf-counter stamp."""
    return datetime.fromisoformat(value).timestamp() - EPOCH_OFFSET if value else None


def task_run_profile(flow_run_ids: list[str]) -> tuple[dict[str, list[float]], list[float]]:
    """From the Prefect API: durations of the per-asset runs' task runs by task, and per run
    the time not spent in any task run (the engine's work between tasks)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    by_task: dict[str, list[float]] = defaultdict(list)
    in_tasks: dict[str, float] = defaultdict(float)
    with get_client(sync_client=True) as client:
        runs = []
        for start in range(0, len(flow_run_ids), 100):
            chunk = flow_run_ids[start : start + 100]
            runs += client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
            )
            offset = 0
            while True:
                page = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)),
                    sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                    limit=200,
                    offset=offset,
                )
                for task_run in page:
                    if task_run.start_time and task_run.end_time:
                        took = (task_run.end_time - task_run.start_time).total_seconds()
                        by_task[task_run.task_key.rsplit("-", 1)[0]].append(took)
                        in_tasks[str(task_run.flow_run_id)] += took
                if len(page) < 200:
                    break
                offset += 200
    between = [
        (run.end_time - run.start_time).total_seconds() - in_tasks[str(run.id)]
        for run in runs
        if run.start_time and run.end_time
    ]
    return by_task, between


def bench_fleet(
    runtime: Any, fleet: list[tuple[str, int]], holder: list[Recorder], group: str
) -> tuple[float, dict[str, Any]]:
    from safe_updater.flows.update_fleet import update_fleet

    holder[0] = Recorder()
    t0 = time.perf_counter()
    result = update_fleet(dispatch="inline", groups=[group])
    wall = time.perf_counter() - t0
    return wall, result


def report_fleet(
    n: int,
    parallel: int,
    window: float,
    wall: float,
    result: dict[str, Any],
    single: Single,
    rec: Recorder,
    t_start: float,
) -> None:
    rows = [row for row in result["assets"] if row["asset"].startswith("docker:local/bench-fleet")]
    outcomes: dict[str, int] = defaultdict(int)
    for row in rows:
        outcomes[str(row["outcome"])] += 1
    waves = math.ceil(n / parallel)
    ideal = waves * window
    single_wall = median(single.wall)
    print(f"\n-- fleet of {n} containers, max_parallel {parallel}, window {window:g} s --")
    print(f"outcomes: {dict(outcomes)}; halted: {result['halted']}")
    for row in [r for r in rows if r["outcome"] != "updated"][:3]:
        print(f"  {row['asset']}: {row['outcome']}: {row['reasons'][:300]}")
    print(f"update_fleet wall time:                 {wall:7.2f} s")
    print(f"ideal (ceil({n}/{parallel}) = {waves} waves x {window:g} s): {ideal:7.2f} s")
    print(f"ratio to ideal:                         {wall / ideal:7.2f}x (goal <= 1.25x)")
    print(
        f"ratio to {waves} x single update ({single_wall:.2f} s): "
        f"{wall / (waves * single_wall):5.2f}x"
    )

    acquired = [_iso(r["slot_acquired"]) for r in rows]
    released = [_iso(r["slot_released"]) for r in rows]
    held = [b - a for a, b in zip(acquired, released, strict=True) if a and b]
    first = min(a for a in acquired if a)
    last = max(b for b in released if b)
    times = [rec.assets[r["asset"]] for r in rows]
    calls = [t.calls["subflow"] for t in times if "subflow" in t.calls]
    subflow = [end - start for start, end in calls]
    monitoring = [t.monitoring for t in times if t.samples]
    print("\nwhere the fleet's wall time goes:")
    print(f"  call -> first slot acquired (scan, plan, limits): {first - t_start:6.2f} s")
    print(f"  first slot -> last slot released:                 {last - first:6.2f} s")
    print(f"  last slot released -> call returns:               {t_start + wall - last:6.2f} s")
    busy = sum(held) / (parallel * (last - first))
    print(f"  slot occupancy between first and last slot:       {busy:6.1%}")
    busy = sum(subflow) / (parallel * (max(e for _, e in calls) - min(s for s, _ in calls)))
    print(f"  thread occupancy (update_asset calls / {parallel} threads): {busy:6.1%}")
    print("per asset (one update_asset subflow of the fleet run):")
    print(f"  update_asset call (thread):    {spread(subflow)}")
    print(f"  of it the slot held:           {spread(held)}")
    print(f"  of it monitoring (window):     {spread(monitoring)}")
    rest = [h - m for h, m in zip(held, monitoring, strict=False)]
    print(f"  of it the rest (overhead):     {spread(rest)}")
    pairs = list(zip(times, acquired, released, strict=True))
    before = [t.calls["apply"][0] - a for t, a, _ in pairs if a and "apply" in t.calls]
    after = [b - t.samples[-1][1] for t, _, b in pairs if b and t.samples]
    apply = [t.calls["apply"][1] - t.calls["apply"][0] for t in times if "apply" in t.calls]
    print(f"  slot acquired -> apply starts: {spread(before)}")
    print(f"  apply (pull + recreate):       {spread(apply)}")
    print(f"  last sample -> slot released:  {spread(after)}")
    print(
        f"single update_asset (same run):  wall {spread(single.wall)}\n"
        f"  of it monitoring:              {spread(single.monitoring)}\n"
        f"  of it the rest (overhead):     {spread(single.overhead)}\n"
        f"  call -> apply starts:          {spread(single.before_apply)}\n"
        f"  last sample -> call returns:   {spread(single.after_verdict)}"
    )


def report_calls(
    rec: Recorder, n: int, by_task: Mapping[str, list[float]], between: list[float]
) -> None:
    print(f"\n-- calls made during the fleet run (summed over threads; per asset = / {n}) --")
    for title, calls in (
        ("Prefect API", rec.prefect),
        ("Prefect API attempts by answer (inside the requests above)", rec.prefect_attempts),
        ("Docker engine", rec.docker),
        ("registry", rec.registry),
        ("state store", rec.store),
    ):
        count, seconds = calls.total()
        print(
            f"{title}: {count} requests, {seconds:.2f} s; per asset {count / n:.1f} "
            f"requests, {seconds / n:.3f} s"
        )
        for kind, k_count, k_seconds in calls.top(8):
            each = k_seconds / k_count * 1000
            print(f"    {k_count:6d} x {each:7.1f} ms = {k_seconds:7.2f} s  {kind}")
    answers: dict[str, int] = defaultdict(int)
    for kind, count in rec.prefect_attempts.count.items():
        answers[kind.split(" ", 1)[0]] += count
    print(
        "Prefect attempts by answer, all requests: "
        + ", ".join(f"{answer} {count}" for answer, count in sorted(answers.items()))
    )
    if by_task:
        print("Prefect task runs of the per-asset runs (API start/end times), by task:")
        rows = sorted(by_task.items(), key=lambda kv: -sum(kv[1]))
        for task, took in rows:
            mid, top = median(took) * 1000, max(took) * 1000
            print(f"    {len(took):5d} x median {mid:7.1f} ms, max {top:7.1f} ms  {task}")
        total = sum(len(t) for t in by_task.values())
        print(f"    {total / n:.1f} task runs per asset")
        print(f"  per run, time outside any task run (engine between tasks): {spread(between)}")


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--assets", type=int, help="containers in the fleet (default 100, quick 20)"
    )
    parser.add_argument("--parallel", type=int, default=10, help="fleet.max_parallel")
    parser.add_argument("--window", type=float, default=2.0, help="monitoring window, seconds")
    parser.add_argument("--single", type=int, help="timed single updates (default 3, quick 2)")
    parser.add_argument("--profile", action="store_true", help="cProfile one more single update")
    parser.add_argument(
        "--prefect-db",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="database of the temporary Prefect server (postgres: the test bed's, as "
        "docs/scale-out.md recommends for fleets); ignored when PREFECT_API_URL is set",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n = args.assets or (20 if args.quick else 100)
    repeat = args.single or (2 if args.quick else 3)

    _env, registry = testbed()
    print_header(
        f"fleet update: {n} containers, max_parallel {args.parallel}, "
        f"Prefect server on {args.prefect_db}"
    )
    client = docker_client()
    prefix = uuid.uuid4().hex[:8]
    repo = f"bench/{prefix}/web"
    published: list[str] = []
    try:
        for tag in (OLD, NEW):
            registry.publish_demo(repo, tag)
            published.append(tag)
        image = registry.image(OLD, repo)
        client.images.pull(image.rsplit(":", 1)[0], tag=OLD)
        config = f"fleet:\n  max_parallel: {args.parallel}\n"
        holder = [Recorder()]
        with (
            prefect_server(args.prefect_db),
            bench_runtime(config) as runtime,
            Containers(client) as containers,
            instrumented(runtime, holder),
        ):
            single = bench_single(
                runtime, containers, image, args.window, repeat, holder, args.profile
            )
            t0 = time.perf_counter()
            fleet = start_fleet(containers, image, prefix, n, args.window)
            print(f"set-up: {n} containers started in {time.perf_counter() - t0:.1f} s")
            print(f"before the fleet run: {load_line()}")
            t_start = time.perf_counter()
            wall, result = bench_fleet(runtime, fleet, holder, f"bench-{prefix}")
            print(f"after the fleet run: {load_line()}")
            problems = verify_fleet(client, fleet)
            print(
                f"verified: {n - len(problems)} of {n} containers run {NEW} "
                "(image tag, running, /version)"
            )
            for problem in problems[:5]:
                print(f"  {problem}")
            report_fleet(n, args.parallel, args.window, wall, result, single, holder[0], t_start)
            ids = [str(r["flow_run_id"]) for r in result["assets"] if r.get("flow_run_id")]
            by_task, between = task_run_profile(ids)
            report_calls(holder[0], n, by_task, between)
            print(f"\n{memory_line()}")
    finally:
        t0 = time.perf_counter()
        with contextlib.suppress(Exception):
            for tag in (OLD, NEW):
                client.images.remove(registry.image(tag, repo), force=True)
        unpublish(registry, repo, published)
        client.close()
        print(f"clean-up: {time.perf_counter() - t0:.1f} s")
    print(f"after the run: {load_line()}")
    return 0


def unpublish(registry: RegistryInfo, repo: str, tags: list[str]) -> None:
    for tag in tags:
        with contextlib.suppress(httpx.HTTPError):
            registry.delete_tag(tag, repo)


if __name__ == "__main__":
    raise SystemExit(main())
