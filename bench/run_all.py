"""Run every benchmark, one after another, and print a summary of their headline figures.

Each benchmark runs as its own process (so one's memory and threads do not skew the next), its
output is streamed and also kept in ``--out DIR`` (default: a new temporary directory). The
summary lists each benchmark's status, wall time and the lines that carry a goal or a ratio to
its same-run baseline. A benchmark whose test-bed part is not up is skipped with the reason.
Nothing is asserted; docs/performance.md explains every figure.

    source $TESTBED_DIR/env      # testbed/up docker registry postgres k8s
    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))

from support.testbed import load_testbed_env  # noqa: E402

#: A line worth repeating in the summary: it states a goal, a ratio, a verdict, or a figure
#: marked ok/over against its goal.
HEADLINE = re.compile(
    r"goal|ratio|\d\.?\d*x\b|verdict|\s(ok|over)$|list\(\)|upsert|^== ", re.IGNORECASE
)


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ("--quick",)
    needs: tuple[str, ...] = ()  # test-bed variables it cannot run without


BENCHES = [
    Bench("ranking", "bench_ranking.py"),
    Bench("store", "bench_store.py", quick_args=("--repeat", "5")),
    Bench("metrics", "bench_metrics.py", quick_args=("--runs", "10")),
    Bench("scan", "bench_scan.py", needs=("DOCKER_HOST", "TESTBED_REGISTRY")),
    Bench("docker-update", "bench_docker_update.py", needs=("DOCKER_HOST", "TESTBED_REGISTRY")),
    Bench("k8s", "bench_k8s.py", needs=("KUBECONFIG", "TESTBED_K8S_VERSION", "HELM3")),
    Bench(
        "fleet-postgres",
        "bench_fleet.py",
        args=("--prefect-db", "postgres"),
        needs=("DOCKER_HOST", "TESTBED_REGISTRY", "TESTBED_POSTGRES_ADMIN_URL"),
    ),
    Bench(
        "fleet-sqlite",
        "bench_fleet.py",
        args=("--prefect-db", "sqlite"),
        needs=("DOCKER_HOST", "TESTBED_REGISTRY"),
    ),
]


@dataclass
class Result:
    bench: Bench
    status: str
    seconds: float = 0.0
    headlines: tuple[str, ...] = ()


def run(bench: Bench, quick: bool, out: Path, env: dict[str, str]) -> Result:
    missing = [key for key in bench.needs if not env.get(key)]
    if missing:
        return Result(bench, f"skipped: {', '.join(missing)} unset (testbed/up ...)")
    argv = [sys.executable, str(BENCH / bench.script), *bench.args]
    if quick:
        argv += bench.quick_args
    print(f"\n##### {bench.name}: {' '.join(argv[1:])}", flush=True)
    log_path = out / f"{bench.name}.txt"
    lines: list[str] = []
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - our own scripts, no shell
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
            lines.append(line.rstrip())
        code = process.wait()
    took = time.perf_counter() - t0
    status = "ok" if code == 0 else f"exit {code} (see {log_path})"
    return Result(bench, status, took, tuple(line for line in lines if HEADLINE.search(line)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick size")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], metavar="NAME")
    parser.add_argument("--out", type=Path, help="directory for the full outputs")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="su-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**load_testbed_env(), **os.environ}
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    results = [run(bench, args.quick, out, env) for bench in chosen]
    one, five, _ = os.getloadavg()
    print(f"\n===== summary ({os.cpu_count()} CPUs, load average now {one:.1f} / {five:.1f})")
    for result in results:
        print(f"{result.bench.name:15} {result.status:10} {result.seconds:7.1f} s")
        for line in result.headlines:
            print(f"    {line.strip()}")
    print(f"full outputs: {out}")
    return 0 if all(r.status == "ok" or r.status.startswith("skipped") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
