"""Benchmark: rank update candidates for a fleet (10,000 assets x 200 tags by default).

Run ``python bench/bench_ranking.py`` (``--quick`` for a smaller run). Prints numbers and never
asserts them; see bench/README.md for what they mean.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import semver

from safe_updater.domain.versions import parse_tags, rank_candidates

SUFFIXES = ["", "", "", "alpine", "slim", "debian-12", "1-ubi8"]
WORDS = ["alpha", "beta", "rc"]


@dataclass(frozen=True)
class Repository:
    tags: list[str]
    currents: list[str]  # one current tag per asset that runs an image from this repository


def _repository(rng: random.Random, n_tags: int, n_assets: int) -> Repository:
    """A tag list shaped like a busy public repository: variants, pre-releases, aliases, noise."""
    style = rng.choice(["semver", "v-semver", "two-part", "four-part", "calver"])
    variants = rng.sample(SUFFIXES, k=rng.randint(1, 3))
    tags: list[str] = ["latest", "stable", f"sha-{rng.getrandbits(28):07x}"]
    seen = set(tags)
    while len(tags) < n_tags:
        if style == "calver":
            core = f"{rng.randint(2019, 2025)}.{rng.randint(1, 12):02d}.{rng.randint(0, 4)}"
        elif style == "four-part":
            core = f"4.{rng.randint(0, 3)}.{rng.randint(0, 40)}.{rng.randint(1000, 9999)}"
        else:
            core = f"{rng.randint(0, 5)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"
            if style == "two-part" and rng.random() < 0.5:
                core = core.rsplit(".", 1)[0]
            if style == "v-semver":
                core = "v" + core
        if rng.random() < 0.1:
            core += f"-{rng.choice(WORDS)}.{rng.randint(1, 5)}"
        suffix = rng.choice(variants)
        tag = f"{core}-{suffix}" if suffix else core
        if tag not in seen:
            seen.add(tag)
            tags.append(tag)
    rng.shuffle(tags)
    versions = [tag for tag in tags if tag[0].isdigit() or tag[:2] in ("v0", "v1", "v2", "v3")]
    return Repository(tags=tags, currents=[rng.choice(versions) for _ in range(n_assets)])


def naive_baseline(repos: list[Repository]) -> int:
    """Per asset: parse every tag with semver.Version.parse (skip failures), sort. No sharing."""
    kept = 0
    for repo in repos:
        for _current in repo.currents:
            parsed = []
            for tag in repo.tags:
                try:
                    parsed.append(semver.Version.parse(tag))
                except ValueError:
                    continue
            parsed.sort()
            kept += len(parsed)
    return kept


def shared_ranking(repos: list[Repository]) -> int:
    """Ours: parse each repository's tags once, rank every asset against the shared index."""
    accepted = 0
    for repo in repos:
        index = parse_tags(repo.tags)
        for current in repo.currents:
            accepted += rank_candidates(current, index).best is not None
    return accepted


def unshared_ranking(repos: list[Repository]) -> int:
    """Ours without sharing: every asset parses its repository's tags again."""
    accepted = 0
    for repo in repos:
        for current in repo.currents:
            accepted += rank_candidates(current, repo.tags).best is not None
    return accepted


def _timed(run: Callable[[list[Repository]], int], repos: list[Repository]) -> tuple[float, float]:
    """CPU seconds and wall seconds; rates use CPU time, which other load on the host skews less."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    run(repos)
    return time.process_time() - cpu, time.perf_counter() - wall


def _peak_traced_mib(run: Callable[[list[Repository]], int], repos: list[Repository]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        run(repos)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def _max_rss_mib() -> float:
    # ru_maxrss is KiB on Linux and bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 assets instead of 10,000")
    parser.add_argument("--repos", type=int, help="repositories (default 500, quick 50)")
    parser.add_argument("--assets-per-repo", type=int, default=20)
    parser.add_argument("--tags", type=int, default=200, help="tags per repository")
    parser.add_argument("--seed", type=int, default=20260101)
    args = parser.parse_args(argv)

    n_repos = args.repos or (50 if args.quick else 500)
    rng = random.Random(args.seed)
    repos = [_repository(rng, args.tags, args.assets_per_repo) for _ in range(n_repos)]
    n_assets = n_repos * args.assets_per_repo
    evaluations = n_assets * args.tags
    print(
        f"workload: {n_repos} repositories x {args.assets_per_repo} assets = {n_assets:,} assets, "
        f"{args.tags} tags each ({evaluations:,} tag evaluations)"
    )

    rss_before = _max_rss_mib()
    results: dict[str, float] = {}
    for name, run in [
        ("naive baseline (semver.parse + sort)", naive_baseline),
        ("rank_candidates, shared ParsedTags", shared_ranking),
        ("rank_candidates, no sharing", unshared_ranking),
    ]:
        seconds, wall = _timed(run, repos)
        results[name] = seconds
        print(
            f"  {name:38} {seconds:7.2f} s CPU ({wall:6.2f} s wall) "
            f"{n_assets / seconds:9,.0f} assets/s {evaluations / seconds:11,.0f} tag evaluations/s"
        )
    rss_after = _max_rss_mib()

    baseline = results["naive baseline (semver.parse + sort)"]
    shared = results["rank_candidates, shared ParsedTags"]
    print(f"speed-up of shared ranking over the naive baseline: {baseline / shared:.2f}x")
    peak = _peak_traced_mib(shared_ranking, repos)
    print(f"peak traced memory of shared ranking (tracemalloc): {peak:.1f} MiB")
    print(
        f"process max RSS: {rss_after:.1f} MiB "
        f"(+{rss_after - rss_before:.1f} MiB during the timed runs)"
    )


if __name__ == "__main__":
    main()
