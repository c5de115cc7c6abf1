"""Shared helpers for the benchmarks that run against the test bed (``testbed/up docker registry``).

They read the test bed's values like the tests do (``$TESTBED_DIR/env``, overlaid by the process
environment), build a real runtime (Docker engine, registry client, a scratch SQLite state store)
from a config written to a temporary directory, start a Prefect server for the flows (the test
harness, unless ``PREFECT_API_URL`` points at one), and start and remove demo containers. Every
container a helper starts carries :data:`BENCH_LABEL` and is removed by :class:`Containers`.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# The test-bed helpers (env file, registry client, free ports) live with the tests.
sys.path.insert(0, str(REPO_ROOT / "tests"))

from support.testbed import (  # noqa: E402
    DEMO_LABEL,
    RegistryInfo,
    free_port,
    load_testbed_env,
    registry_from_env,
    wait_for_http,
)

BENCH_LABEL = "safe-updater.bench"

# Prefect reads these at import time: set them before anything imports prefect.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

__all__ = [
    "BENCH_LABEL",
    "Containers",
    "RegistryInfo",
    "bench_runtime",
    "free_port",
    "load_line",
    "median",
    "prefect_server",
    "print_header",
    "testbed",
    "wait_for_http",
]


def testbed() -> tuple[dict[str, str], RegistryInfo]:
    """The test bed's env (copied into ``os.environ`` where unset) and its anonymous registry."""
    env = load_testbed_env()
    missing = [key for key in ("DOCKER_HOST", "TESTBED_REGISTRY") if not env.get(key)]
    if missing:
        raise SystemExit(
            f"{', '.join(missing)} not set: start the test bed with `testbed/up docker registry` "
            "and source $TESTBED_DIR/env (or set TESTBED_DIR)"
        )
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return env, registry_from_env(env)


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def print_header(title: str) -> None:
    import platform

    print(f"== {title} ==")
    print(
        f"python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{load_line()}"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """``median (min, max, n)`` in seconds, for printing."""
    if not values:
        return "n/a"
    low, high = min(values), max(values)
    return f"{median(values):6.3f} s (min {low:.3f}, max {high:.3f}, n={len(values)})"


@contextlib.contextmanager
def prefect_server(database: str = "sqlite") -> Iterator[str]:
    """A Prefect API for the flows: ``PREFECT_API_URL`` if set; else a temporary server, on
    SQLite (Prefect's test harness) or, with ``database="postgres"``, a ``prefect server start``
    child on a scratch database of the test bed's PostgreSQL (dropped afterwards)."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    if database == "postgres":
        with postgres_prefect_server() as api_url:
            yield api_url
        return
    from prefect.testing.utilities import prefect_test_harness

    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=180):
        print(f"(temporary Prefect server on SQLite started in {time.perf_counter() - t0:.1f} s)")
        yield os.environ.get("PREFECT_API_URL", "harness")


@contextlib.contextmanager
def postgres_prefect_server() -> Iterator[str]:
    """``prefect server start`` on loopback with its database on the test bed's PostgreSQL,
    the set-up docs/scale-out.md recommends for fleets; stopped by its process group."""
    import signal
    import subprocess

    import sqlalchemy as sa
    from prefect.settings import PREFECT_API_URL, temporary_settings

    admin_url = load_testbed_env().get("TESTBED_POSTGRES_ADMIN_URL")
    if not admin_url:
        raise SystemExit(
            "TESTBED_POSTGRES_ADMIN_URL not set: start the test bed with `testbed/up postgres`"
        )
    name = f"bench_prefect_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db_url = (
        sa.engine.make_url(admin_url)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    home = tempfile.mkdtemp(prefix="su-bench-prefect-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    # The password reaches the server through its environment, never its argv.
    env.update(
        PREFECT_HOME=home,
        PREFECT_API_DATABASE_CONNECTION_URL=db_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    prefect_bin = str(Path(sys.executable).with_name("prefect"))
    argv = [prefect_bin, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    t0 = time.perf_counter()
    with open(Path(home) / "server.log", "wb") as log:
        server = subprocess.Popen(  # noqa: S603 - an argument list, no shell
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_http(f"{api_url}/health", timeout=180)
        print(
            f"(Prefect server on PostgreSQL, pid {server.pid}, started in "
            f"{time.perf_counter() - t0:.1f} s)"
        )
        with temporary_settings({PREFECT_API_URL: api_url}):
            os.environ["PREFECT_API_URL"] = api_url
            try:
                yield api_url
            finally:
                # Logs still queued for this server go out before it stops, not into an error.
                from prefect.logging.handlers import APILogHandler

                with contextlib.suppress(Exception):
                    APILogHandler.flush()
                del os.environ["PREFECT_API_URL"]
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(15)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def bench_runtime(config_text: str = "") -> Iterator[Any]:
    """A real runtime built from ``config_text`` with a scratch SQLite state store, installed
    with ``use_runtime`` for the block (the flows' tasks see it)."""
    from safe_updater.runtime import use_runtime
    from safe_updater.wiring import build_runtime

    with tempfile.TemporaryDirectory(prefix="su-bench-") as tmp:
        config = Path(tmp) / "safe-updater.yaml"
        config.write_text(config_text or "{}\n")
        saved = {k: os.environ.get(k) for k in ("SAFE_UPDATER_STATE_URL", "SAFE_UPDATER_HOME")}
        os.environ["SAFE_UPDATER_STATE_URL"] = f"sqlite:///{Path(tmp) / 'state.db'}"
        os.environ["SAFE_UPDATER_HOME"] = tmp
        try:
            runtime = build_runtime(config)
            try:
                with use_runtime(runtime):
                    yield runtime
            finally:
                runtime.close()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class Containers:
    """Starts containers on the test-bed engine and removes every one of them on exit."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.names: set[str] = set()

    def __enter__(self) -> Containers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_all()

    def run(
        self,
        image: str,
        *,
        name: str | None = None,
        port: int | None = None,
        labels: Mapping[str, str] | None = None,
        sleep: bool = False,
        wait: bool = True,
    ) -> tuple[str, int]:
        """Run ``image`` on the host network; ``sleep`` overrides the entrypoint with a cheap
        ``sleep`` and switches off the image's HEALTHCHECK. Returns (name, port)."""
        name = name or f"bench-{uuid.uuid4().hex[:10]}"
        port = port or free_port()
        self.names.add(name)
        kwargs: dict[str, Any] = {}
        if sleep:
            kwargs.update(entrypoint=["/bin/sleep", "3600"], healthcheck={"Test": ["NONE"]})
        self.client.containers.run(
            image,
            name=name,
            detach=True,
            network_mode="host",
            environment={"PORT": str(port)},
            labels={DEMO_LABEL: "1", BENCH_LABEL: "1", **(labels or {})},
            **kwargs,
        )
        if wait and not sleep:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", status=200, timeout=20)
        return name, port

    def run_many(self, specs: Sequence[dict[str, Any]], threads: int = 4) -> list[tuple[str, int]]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda spec: self.run(**spec), specs))

    def track(self, name: str) -> None:
        """Remove ``name`` too on exit (containers the updater created under a helper name)."""
        self.names.add(name)

    def remove(self, name: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(name, force=True)
        self.names.discard(name)

    def remove_all(self) -> None:
        from safe_updater.adapters.docker_updater import next_name, prev_name

        names = sorted(self.names)
        every = [n for name in names for n in (name, prev_name(name), next_name(name))]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self.remove, every))
        self.names.clear()


def docker_client() -> Any:
    import docker

    return docker.DockerClient(base_url=os.environ["DOCKER_HOST"], timeout=120)
