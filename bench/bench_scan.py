"""Benchmark: scan 200 opted-in containers and their registries (goal: under 5 s).

Starts ``--containers`` cheap containers (the demo image with a ``sleep`` entrypoint and no
HEALTHCHECK) on the test-bed engine, opted in by label and spread over ``--repos`` repositories
pushed to the test-bed registry, then times the ``scan_inventory`` flow (against a temporary
Prefect server, or ``PREFECT_API_URL``) and, in the same run, a baseline: the containers listed
through the docker SDK plus one tag list per repository over httpx, with no policy and no store.
Prints numbers and ratios, asserts nothing. Removes every container, local image and registry
manifest it created.

    .venv/bin/python bench/bench_scan.py [--containers 200] [--repos 10] [--repeat 5] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import time
import uuid
from typing import Any

import httpx

from _common import (
    Containers,
    RegistryInfo,
    docker_client,
    load_line,
    median,
    prefect_server,
    print_header,
    spread,
    testbed,
)

ENABLE = "safe-updater.io/enabled"


def publish_repositories(
    registry: RegistryInfo, prefix: str, repos: int, tags: int
) -> dict[str, list[str]]:
    """``repos`` repositories with ``tags`` versions each (1.0.0 … and 1.1.0, 2.0.0)."""
    versions = [f"1.0.{k}" for k in range(max(1, tags - 2))] + ["1.1.0", "2.0.0"]
    published: dict[str, list[str]] = {}
    for i in range(repos):
        repo = f"{prefix}/app{i:02d}"
        published[repo] = []
        for version in versions[:tags]:
            registry.publish_demo(repo, version)
            published[repo].append(version)
    return published


def unpublish(registry: RegistryInfo, published: dict[str, list[str]]) -> None:
    for repo, tags in published.items():
        for tag in tags:
            with contextlib.suppress(httpx.HTTPError):
                registry.delete_tag(tag, repo)


def baseline_scan(client: Any, registry: RegistryInfo, repos: list[str]) -> float:
    """List the opted-in containers through the SDK, then one tag list per repository."""
    t0 = time.perf_counter()
    summaries = client.api.containers(filters={"label": f"{ENABLE}=true"})
    images = {s["Image"] for s in summaries}
    with registry.client() as http:
        for repo in repos:
            response = http.get(f"/v2/{repo}/tags/list")
            response.raise_for_status()
            response.json()
    elapsed = time.perf_counter() - t0
    assert len(images) >= len(repos), (len(images), len(repos))
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--containers", type=int, help="containers (default 200, quick 40)")
    parser.add_argument("--repos", type=int, default=10, help="repositories they run")
    parser.add_argument("--tags", type=int, default=12, help="tags per repository")
    parser.add_argument("--repeat", type=int, help="timed scans (default 5, quick 3)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile one extra scan")
    args = parser.parse_args(argv)
    n_containers = args.containers or (40 if args.quick else 200)
    repeat = args.repeat or (3 if args.quick else 5)

    _env, registry = testbed()
    print_header(f"scan of {n_containers} containers over {args.repos} repositories")
    client = docker_client()
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    published: dict[str, list[str]] = {}
    images: list[str] = []
    try:
        t0 = time.perf_counter()
        published = publish_repositories(registry, prefix, args.repos, args.tags)
        repos = sorted(published)
        for repo in repos:
            ref = registry.image("1.0.0", repo)
            client.images.pull(ref.rsplit(":", 1)[0], tag="1.0.0")
            images.append(ref)
        took = time.perf_counter() - t0
        print(f"set-up: {len(repos)} repositories pushed and pulled in {took:.1f} s")
        with Containers(client) as containers:
            t0 = time.perf_counter()
            specs = [
                {
                    "image": images[i % len(images)],
                    "name": f"bench-scan-{prefix[6:]}-{i:03d}",
                    "labels": {ENABLE: "true"},
                    "sleep": True,
                }
                for i in range(n_containers)
            ]
            containers.run_many(specs)
            print(f"set-up: {n_containers} containers started in {time.perf_counter() - t0:.1f} s")
            opted_in = len(client.api.containers(filters={"label": f"{ENABLE}=true"}))
            print(f"opted-in containers on the engine (others' included): {opted_in}")
            run_benchmark(client, registry, repos, repeat, args.profile)
    finally:
        t0 = time.perf_counter()
        for ref in images:
            with contextlib.suppress(Exception):
                client.images.remove(ref, force=True)
        unpublish(registry, published)
        client.close()
        print(f"clean-up: {time.perf_counter() - t0:.1f} s")
    return 0


def run_benchmark(
    client: Any, registry: RegistryInfo, repos: list[str], repeat: int, profile: bool
) -> None:
    from _common import bench_runtime
    from safe_updater.flows.scan_inventory import scan_inventory

    baseline_scan(client, registry, repos)  # warm the connection and the daemon's caches
    baselines = [baseline_scan(client, registry, repos) for _ in range(repeat)]

    with prefect_server(), bench_runtime() as runtime:
        t0 = time.perf_counter()
        plan = scan_inventory()
        first = time.perf_counter() - t0
        scans: list[float] = []
        inventory_only: list[float] = []
        for _ in range(repeat):
            runtime.registry.clear_cache()  # every timed scan asks the registry again
            t0 = time.perf_counter()
            plan = scan_inventory()
            scans.append(time.perf_counter() - t0)
        for _ in range(repeat):
            t0 = time.perf_counter()
            scan_inventory(evaluate=False)
            inventory_only.append(time.perf_counter() - t0)
        if profile:
            runtime.registry.clear_cache()
            profiler = cProfile.Profile()
            profiler.enable()
            scan_inventory()
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
            print(out.getvalue())

    pending = sum(1 for row in plan if row.get("target"))
    errors = [row for row in plan if row.get("action") == "error"]
    print(f"plan: {len(plan)} assets, {pending} with an update, {len(errors)} errors")
    for row in errors[:3]:
        print(f"  error: {row['asset']}: {row['reasons']}")
    print(f"baseline (SDK list + 1 tag list per repository): {spread(baselines)}")
    print(f"scan_inventory, first run (new store rows):      {first:6.3f} s")
    print(f"scan_inventory (registry cache cleared):         {spread(scans)}")
    print(f"scan_inventory(evaluate=False), inventory only:  {spread(inventory_only)}")
    print(
        f"ratio scan / baseline: {median(scans) / median(baselines):.1f}x; "
        f"goal < 5 s: {'met' if median(scans) < 5 else 'MISSED'}"
    )
    print(f"after the run: {load_line()}")


if __name__ == "__main__":
    raise SystemExit(main())
