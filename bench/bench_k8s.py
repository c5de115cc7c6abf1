"""Kubernetes and Helm benchmarks on the test cluster (``testbed/up registry k8s``).

1. *Inventory* of many Deployments (default 5,000 in 50 namespaces, ``replicas: 0``, opted in):
   ``KubernetesInventory.list_assets()`` (paged lists of all four workload kinds, assets built)
   against one raw ``list_deployment_for_all_namespaces`` call of the ``kubernetes`` client
   (no paging, no asset building), in the same run. Goal: under 10 s and 200 MB. Prints the
   requests made, the page size, the tracemalloc peak (separate run) and the RSS growth.
2. *Time to recover a broken Helm upgrade*: ``update_asset`` on a ``helm:`` asset (demo chart
   1.0.0 -> 1.1.1 crash-loops; policy minor: auto, deny 1.0.2), from the first failing pod (the
   first failing rollout sample, or the first pod of the new revision seen crash-looping by a
   watcher polling every 100 ms, whichever is first) to ``helm rollback`` finished. Goal: under
   10 s beyond the probe interval. Baseline in the same run: a bare ``helm rollback --wait`` of
   the same release after the same broken upgrade.

Numbers and ratios only; nothing is asserted.

    source $TESTBED_DIR/env
    .venv/bin/python bench/bench_k8s.py [--deployments 5000] [--namespaces 50] [--repeat N]
        [--helm-runs 5] [--helm HELM3|HELM4] [--interval 1] [--only inventory|helm] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    REPO_ROOT,
    bench_runtime,
    load_line,
    median,
    prefect_server,
    print_header,
    spread,
)

sys.path.insert(0, str(REPO_ROOT / "tests" / "k8s"))

from k8s_support import CRASHLOOP_LABEL, ENV_KEYS, K8sCluster, loopback_only

from support.testbed import load_testbed_env

BENCH_NS_LABEL = "safe-updater.bench"


def cluster_from_env() -> K8sCluster:
    env = load_testbed_env()
    values = {key: env.get(key) or os.environ.get(key, "") for key in ENV_KEYS}
    if not values["KUBECONFIG"] or not values["TESTBED_K8S_VERSION"]:
        raise SystemExit(
            "KUBECONFIG/TESTBED_K8S_VERSION not set: start `testbed/up registry k8s` and set "
            "TESTBED_DIR (or source $TESTBED_DIR/env)"
        )
    for key, value in values.items():
        os.environ.setdefault(key, value)
    cluster = K8sCluster.from_env(values)
    if not loopback_only(cluster.server):
        raise SystemExit(f"KUBECONFIG points at {cluster.server}, not at the loopback test cluster")
    return cluster


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- 1. inventory ---------------------------------------------------------------------------------


def deployment_body(name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"safe-updater.io/enabled": "true", "safe-updater.io/group": "bench"},
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image},
                        {"name": "sidecar", "image": "localhost:5000/demo/sidecar:2.1.0"},
                    ]
                },
            },
        },
    }


@contextlib.contextmanager
def bench_namespaces(cluster: K8sCluster, count: int, prefix: str) -> Iterator[list[str]]:
    names = [f"{prefix}-{i:03d}" for i in range(count)]
    for name in names:
        cluster.core.create_namespace({"metadata": {"name": name, "labels": {BENCH_NS_LABEL: "1"}}})
    try:
        yield names
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                cluster.core.delete_namespace(name, propagation_policy="Background")


def create_deployments(cluster: K8sCluster, namespaces: list[str], total: int) -> float:
    """Create ``total`` Deployments spread over ``namespaces`` with 16 concurrent create calls."""
    image = f"{os.environ.get('TESTBED_REGISTRY', 'localhost:5000')}/demo/web:1.0.0"
    jobs = [(namespaces[i % len(namespaces)], f"app-{i:05d}") for i in range(total)]
    apps = cluster.apps

    def create(job: tuple[str, str]) -> None:
        namespace, name = job
        for attempt in range(5):
            try:
                apps.create_namespaced_deployment(namespace, deployment_body(name, image))
                return
            except Exception as exc:  # 429/5xx under load: back off and retry
                status = getattr(exc, "status", None)
                if status == 409:
                    return
                if attempt == 4 or status not in (429, 500, 503, 504, None):
                    raise
                time.sleep(0.2 * (attempt + 1))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, jobs))
    return time.perf_counter() - t0


@dataclass
class InventoryRun:
    seconds: float
    assets: int
    requests: int
    pages: dict[str, int] = field(default_factory=dict)
    rss_delta: int = 0


def run_inventory(cluster: K8sCluster, page_size: int | None) -> InventoryRun:
    from safe_updater.adapters.k8s_inventory import KubernetesInventory
    from safe_updater.adapters.kube_api import KubeApi

    api = KubeApi.connect(kubeconfig=cluster.kubeconfig)
    pages: dict[str, int] = {}
    list_page = api.list_page

    def counted(kind: str, *args: Any, **kwargs: Any) -> Any:
        pages[kind] = pages.get(kind, 0) + 1
        return list_page(kind, *args, **kwargs)

    api.list_page = counted  # type: ignore[method-assign]
    try:
        inventory = KubernetesInventory(api, "bench", page_size=page_size)
        gc.collect()
        before = rss_bytes()
        t0 = time.perf_counter()
        assets = inventory.list_assets()
        seconds = time.perf_counter() - t0
        delta = rss_bytes() - before
        return InventoryRun(seconds, len(assets), sum(pages.values()), pages, delta)
    finally:
        api.close()


def traced_inventory_peak(cluster: K8sCluster, page_size: int | None) -> tuple[int, int]:
    """(tracemalloc peak, bytes still held by the result) of one list_assets() call."""
    from safe_updater.adapters.k8s_inventory import KubernetesInventory
    from safe_updater.adapters.kube_api import KubeApi

    api = KubeApi.connect(kubeconfig=cluster.kubeconfig)
    try:
        inventory = KubernetesInventory(api, "bench", page_size=page_size)
        gc.collect()
        tracemalloc.start()
        assets = inventory.list_assets()
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del assets
        return peak, held
    finally:
        api.close()


def baseline_raw_list(cluster: K8sCluster) -> tuple[float, int, float, int]:
    """One unpaged ``list_deployment_for_all_namespaces``: (s, items) deserialised into the
    client's models, and (s, items) as raw JSON (``_preload_content=False`` + json.loads)."""
    from kubernetes import client

    from safe_updater.adapters.kube_api import new_api_client

    api_client = new_api_client(kubeconfig=cluster.kubeconfig)
    try:
        apps = client.AppsV1Api(api_client)
        t0 = time.perf_counter()
        models = apps.list_deployment_for_all_namespaces()
        models_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw = json.loads(apps.list_deployment_for_all_namespaces(_preload_content=False).data)
        raw_s = time.perf_counter() - t0
        return models_s, len(models.items), raw_s, len(raw["items"])
    finally:
        api_client.close()  # type: ignore[no-untyped-call]


def bench_inventory(
    cluster: K8sCluster, total: int, namespaces: int, repeat: int, page_size: int | None
) -> None:
    from safe_updater.adapters.kube_api import DEFAULT_PAGE_SIZE

    print(f"\n-- inventory of {total} Deployments in {namespaces} namespaces --")
    prefix = f"bench-inv-{uuid.uuid4().hex[:5]}"
    with bench_namespaces(cluster, namespaces, prefix) as names:
        created = create_deployments(cluster, names, total)
        print(
            f"created {total} Deployments (replicas 0) in {created:.1f} s "
            f"({total / created:.0f}/s, 16 concurrent create calls)"
        )
        runs = [run_inventory(cluster, page_size) for _ in range(repeat + 1)][1:]  # 1 warm-up
        bases = [baseline_raw_list(cluster) for _ in range(repeat)]
        peak, held = traced_inventory_peak(cluster, page_size)
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"(cleaning up: deleting {namespaces} namespaces in the background)")
    last = runs[-1]
    inv = [r.seconds for r in runs]
    base_models = [b[0] for b in bases]
    base_raw = [b[2] for b in bases]
    print(f"list_assets() (paged, assets built): {spread(inv)}")
    print(
        f"  assets: {last.assets} (cluster-wide, opted in); requests per call: {last.requests} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(last.pages.items()))}); "
        f"page size {page_size or DEFAULT_PAGE_SIZE}"
    )
    print(
        f"  memory: tracemalloc peak {peak / 2**20:.1f} MiB (result held {held / 2**20:.1f} "
        f"MiB, {held / max(1, last.assets):.0f} B/asset); RSS growth "
        f"{median([r.rss_delta for r in runs]) / 2**20:.1f} MiB; process max RSS "
        f"{maxrss / 2**20:.0f} MiB"
    )
    print(
        f"baseline: 1 raw list_deployment_for_all_namespaces (models, {bases[-1][1]} items): "
        f"{spread(base_models)}"
    )
    print(f"          the same as raw JSON (_preload_content=False): {spread(base_raw)}")
    ratio = median(inv) / median(base_models)
    goal_t = "met" if median(inv) < 10 else "MISSED"
    goal_m = "met" if peak < 200 * 2**20 else "MISSED"
    print(
        f"ratio to the baseline (models): {ratio:.2f}x, to raw JSON: "
        f"{median(inv) / median(base_raw):.2f}x; goal < 10 s: {goal_t}; "
        f"goal < 200 MB (tracemalloc peak): {goal_m}"
    )


# --- 2. time to recover a broken Helm upgrade ---------------------------------------------------


@dataclass
class Timeline:
    samples: list[tuple[float, bool | None]] = field(default_factory=list)  # end, ok
    calls: dict[str, tuple[float, float]] = field(default_factory=dict)


class TimedProbe:
    def __init__(self, probe: Any, timeline: Timeline) -> None:
        self._probe = probe
        self._timeline = timeline

    @property
    def name(self) -> str:
        return str(self._probe.name)

    def check(self, at: Any) -> Any:
        sample = self._probe.check(at)
        self._timeline.samples.append((time.perf_counter(), sample.ok))
        return sample

    def close(self) -> None:
        close = getattr(self._probe, "close", None)
        if close is not None:
            close()


class TimedPlanner:
    def __init__(self, planner: Any, timeline: Callable[[], Timeline]) -> None:
        self._planner = planner
        self._timeline = timeline

    def plan(self, asset: Any, applied: Any) -> Any:
        probes, policy = self._planner.plan(asset, applied)
        return [TimedProbe(p, self._timeline()) for p in probes], policy


class PodWatcher:
    """Polls the release's pods every 100 ms; the first time a pod of the broken revision (the
    crash-loop label) is seen not ready or crash-looping."""

    def __init__(self, cluster: K8sCluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.first_failing: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.first_failing is None:
            with contextlib.suppress(Exception):
                for pod in self.cluster.core.list_namespaced_pod(
                    self.namespace, label_selector=f"{CRASHLOOP_LABEL}=true"
                ).items:
                    statuses = pod.status.container_statuses or []
                    waiting = any(
                        s.state and s.state.waiting and s.state.waiting.reason for s in statuses
                    )
                    restarted = any((s.restart_count or 0) > 0 for s in statuses)
                    if statuses and (waiting or restarted or not all(s.ready for s in statuses)):
                        self.first_failing = time.perf_counter()
                        break
            self._stop.wait(0.1)

    def __enter__(self) -> PodWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def helm_config(cluster: K8sCluster, helm_bin: str, prefix: str, interval: float) -> str:
    oci = os.environ["TESTBED_CHART_REPO_OCI"]
    return (
        "targets:\n  kubernetes:\n"
        f"    - name: bench\n      kubeconfig: {cluster.kubeconfig}\n      helm: {helm_bin}\n"
        f'charts:\n  - release: "{prefix}-*/web"\n    source: "{oci}"\n    chart: demo\n'
        f"health:\n  window: 120s\n  interval: {interval:g}s\n  failure_threshold: 2\n"
        "policy:\n  default:\n    minor: auto\n    deny: ['1.0.2']\n"
    )


def helm_cmd(cluster: K8sCluster, helm_bin: str, home: Path, *args: str, timeout: float) -> str:
    from k8s_support import tool_env

    result = subprocess.run(  # noqa: S603 - an argument list, no shell
        [helm_bin, *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=tool_env(cluster.kubeconfig, home),
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def bench_helm(
    cluster: K8sCluster, helm_key: str, runs: int, interval: float, home: Path
) -> dict[str, list[float]]:
    from safe_updater.domain.assets import AssetKind
    from safe_updater.flows.update_asset import update_asset

    helm_bin = os.environ[helm_key]
    prefix = f"bench-helm-{uuid.uuid4().hex[:5]}"
    chart = cluster.oci_chart()
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "recover",
            "pod_to_sample",
            "sample_to_rollback_call",
            "rollback_call",
            "flow_wall",
            "baseline",
            "baseline_pod_to_done",
        )
    }
    holder = [Timeline()]
    with prefect_server(), bench_runtime(helm_config(cluster, helm_bin, prefix, interval)) as rt:
        rt.health = TimedPlanner(rt.health, lambda: holder[0])
        for key, updater in list(rt.updaters.items()):
            if key[0] is AssetKind.HELM:
                original = updater.rollback

                def timed(*args: Any, _orig: Any = original, **kwargs: Any) -> Any:
                    start = time.perf_counter()
                    try:
                        return _orig(*args, **kwargs)
                    finally:
                        holder[0].calls["rollback"] = (start, time.perf_counter())

                updater.rollback = timed  # type: ignore[method-assign]
        for i in range(runs):
            namespace = f"{prefix}-{i}"
            cluster.core.create_namespace(
                {"metadata": {"name": namespace, "labels": {BENCH_NS_LABEL: "1"}}}
            )
            try:
                helm_cmd(
                    cluster, helm_bin, home, "install", "web", chart, "--version", "1.0.0",
                    "--namespace", namespace, "--wait", "--timeout", "120s", "--plain-http",
                    timeout=180,
                )  # fmt: skip
                holder[0] = Timeline()
                with PodWatcher(cluster, namespace) as watcher:
                    t0 = time.perf_counter()
                    result = update_asset(f"helm:bench/{namespace}/web", approval="defer")
                    wall = time.perf_counter() - t0
                tl = holder[0]
                if (result["outcome"], result["to"]) != ("rolled_back", "1.1.1"):
                    print(f"run {i}: unexpected result {result}")
                    continue
                first_bad = next((t for t, ok in tl.samples if ok is False), None)
                starts = [t for t in (first_bad, watcher.first_failing) if t is not None]
                rb_start, rb_end = tl.calls["rollback"]
                out["recover"].append(rb_end - min(starts))
                if first_bad is not None and watcher.first_failing is not None:
                    out["pod_to_sample"].append(first_bad - watcher.first_failing)
                if first_bad is not None:
                    out["sample_to_rollback_call"].append(rb_start - first_bad)
                out["rollback_call"].append(rb_end - rb_start)
                out["flow_wall"].append(wall)
                # Baseline: the same broken upgrade by hand, then a bare `helm rollback --wait`.
                helm_cmd(
                    cluster, helm_bin, home, "upgrade", "web", chart, "--version", "1.1.1",
                    "--namespace", namespace, "--plain-http", timeout=120,
                )  # fmt: skip
                with PodWatcher(cluster, namespace) as watcher:
                    deadline = time.monotonic() + 60
                    while watcher.first_failing is None and time.monotonic() < deadline:
                        time.sleep(0.05)
                t1 = time.perf_counter()
                helm_cmd(
                    cluster, helm_bin, home, "rollback", "web", "3", "--namespace", namespace,
                    "--wait=watcher" if helm_key == "HELM4" else "--wait", "--timeout", "120s",
                    timeout=180,
                )  # fmt: skip
                done = time.perf_counter()
                out["baseline"].append(done - t1)
                if watcher.first_failing is not None:
                    out["baseline_pod_to_done"].append(done - watcher.first_failing)
                print(
                    f"run {i}: recover {out['recover'][-1]:.2f} s (helm rollback "
                    f"{out['rollback_call'][-1]:.2f} s), baseline {out['baseline'][-1]:.2f} s, "
                    f"flow {wall:.1f} s; {load_line()}"
                )
            finally:
                with contextlib.suppress(Exception):
                    cluster.core.delete_namespace(namespace, propagation_policy="Background")
    return out


def report_helm(r: dict[str, list[float]], interval: float, helm_key: str) -> None:
    print(
        f"\n-- time to recover a broken Helm upgrade ({helm_key}, probe interval {interval:g} s) --"
    )
    print(f"first failing pod -> helm rollback done:  {spread(r['recover'])}")
    print(f"  pod seen failing -> first failing sample: {spread(r['pod_to_sample'])}")
    print(f"  failing sample -> rollback() called:      {spread(r['sample_to_rollback_call'])}")
    print(f"  rollback() (helm rollback --wait):        {spread(r['rollback_call'])}")
    print(f"update_asset wall (install excluded):       {spread(r['flow_wall'])}")
    print(f"baseline: bare helm rollback --wait:        {spread(r['baseline'])}")
    print(f"  (baseline pod seen failing -> done:       {spread(r['baseline_pod_to_done'])})")
    if r["recover"] and r["baseline"]:
        over = median(r["recover"]) - interval
        print(
            f"ratio to the baseline: {median(r['recover']) / median(r['baseline']):.1f}x; "
            f"beyond the probe interval: {over:.2f} s; goal < 10 s: "
            f"{'met' if over < 10 else 'MISSED'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--deployments", type=int, help="default 5000 (quick 1000)")
    parser.add_argument("--namespaces", type=int, help="default 50 (quick 10)")
    parser.add_argument("--repeat", type=int, help="inventory runs (default 3, quick 1)")
    parser.add_argument("--page-size", type=int, default=None, help="default: KubeApi's (500)")
    parser.add_argument("--helm-runs", type=int, help="Helm recoveries (default 5, quick 2)")
    parser.add_argument("--helm", choices=["HELM3", "HELM4"], default="HELM3")
    parser.add_argument("--interval", type=float, default=1.0, help="probe interval (s)")
    parser.add_argument("--only", choices=["inventory", "helm"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    total = args.deployments or (1000 if args.quick else 5000)
    namespaces = args.namespaces or (10 if args.quick else 50)
    repeat = args.repeat or (1 if args.quick else 3)
    helm_runs = args.helm_runs or (2 if args.quick else 5)

    cluster = cluster_from_env()
    print_header("Kubernetes: inventory of many Deployments, recovery of a broken Helm upgrade")
    if args.only in (None, "inventory"):
        bench_inventory(cluster, total, namespaces, repeat, args.page_size)
    if args.only in (None, "helm"):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="su-bench-helm-") as home:
            report_helm(
                bench_helm(cluster, args.helm, helm_runs, args.interval, Path(home)),
                args.interval,
                args.helm,
            )
    print(f"after the run: {load_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
