"""A scaled-out Safe Auto-Updater on the test bed: a Prefect server on PostgreSQL, the standard
deployments on a `process` work pool (`safe-updater deployments apply`), and two workers.

The `scaleout` fixture (session scope) builds it once:

1. two fresh PostgreSQL databases through `TESTBED_POSTGRES_ADMIN_URL`: one for Prefect
   (`postgresql+asyncpg://`), one for our state store, which the workers share;
2. `prefect server start` on a free loopback port with its own PREFECT_HOME, analytics off;
3. `safe-updater deployments apply --no-schedules` as a subprocess (the command under test);
4. `prefect worker start --pool safe-updater --name worker-a|worker-b --limit N` with
   `PREFECT_WORKER_QUERY_SECONDS=1`, each in its own empty directory (so flows are imported
   from the installed package, not from a checkout), with the config, the state database and
   the test bed's Docker settings in their environment.

Every process runs in its own session and is stopped by its process group at teardown
(SIGTERM, then SIGKILL); flow-run processes a worker left behind are stopped by their
`infrastructure_pid`, after checking that the PID still runs that flow run. The databases are
dropped last. This test process talks to the server through `PREFECT_API_URL`, set with
Prefect's `temporary_settings` for the session.

Needs `testbed/up docker registry postgres`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.docker_scenarios import private_repo, publish_tags
from support.testbed import RegistryInfo, free_port, http_status, missing_reason, run_demo_container

POOL = "safe-updater"
WORKERS = ("worker-a", "worker-b")
# Flow runs one worker runs at once. The fleet run holds one slot on its worker while it
# waits, so with the fleet's max_parallel above WORKER_LIMIT - 1 neither worker can take every
# per-asset run: both must work, which is what the test shows.
WORKER_LIMIT = 4
SERVER_READY_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
BIN = Path(sys.executable).parent
# Runs argv[1:] with SIGINT at its default: a child of a shell that started pytest in the
# background inherits SIGINT ignored, and a Prefect worker then ignores the SIGINT its own
# SIGTERM handler sends itself (docs/serve.md).
_EXEC_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Managed:
    """A child process in its own session (so its process group is its PID)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the group, then SIGKILL to the group after ``timeout`` seconds."""
        if self.process.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        # Children of the leader (uvicorn under `prefect server start`) may outlive it.
        _signal_group(self.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(5)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def start_process(
    name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
) -> Managed:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGINT, *argv],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Managed(name, process, log_path)


def base_environment(**extra: str) -> dict[str, str]:
    """This process's environment without Prefect, pytest or our own settings, plus ``extra``
    (DOCKER_HOST and DOCKER_CONFIG of the test bed stay)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "SAFE_UPDATER_", "PYTEST_"))
    }
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.update(extra)
    return env


# --- PostgreSQL ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Databases:
    prefect_url: str  # postgresql+asyncpg://, for the Prefect server
    state_url: str  # postgresql+psycopg://, for our state store


@contextlib.contextmanager
def fresh_databases(admin_url: str) -> Iterator[Databases]:
    """Two new databases on the test bed's server, dropped afterwards."""
    import sqlalchemy as sa

    suffix = uuid.uuid4().hex[:10]
    names = {"prefect": f"so_prefect_{suffix}", "state": f"so_state_{suffix}"}
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    base = sa.engine.make_url(admin_url)
    try:
        with admin.connect() as conn:
            for db in names.values():
                conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
        yield Databases(
            prefect_url=base.set(
                drivername="postgresql+asyncpg", database=names["prefect"]
            ).render_as_string(hide_password=False),
            state_url=base.set(
                drivername="postgresql+psycopg", database=names["state"]
            ).render_as_string(hide_password=False),
        )
    finally:
        with admin.connect() as conn:
            for db in names.values():
                # FORCE (PostgreSQL 13+): a leftover connection must not keep it alive.
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


# --- the cluster ---------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Handles of the running cluster, for tests."""

    api_url: str
    server: Managed
    workers: dict[str, Managed]
    databases: Databases
    config_path: Path
    workdir: Path
    state_url: str
    worker_limit: int = WORKER_LIMIT
    timings: dict[str, float] = field(default_factory=dict)
    apply_output: str = ""

    def state_store(self) -> Any:
        from safe_updater.adapters.store import StateStore

        return StateStore.open(self.state_url)

    def worker_logs(self) -> dict[str, str]:
        return {name: worker.log() for name, worker in self.workers.items()}

    def describe(self) -> str:
        """For assertion messages: the tails of every process's log."""
        parts = [f"--- server (pid {self.server.pid})\n{self.server.tail()}"]
        for name, worker in self.workers.items():
            parts.append(f"--- {name} (pid {worker.pid})\n{worker.tail()}")
        return "\n".join(parts)


def write_config(path: Path, state_url: str, *, max_parallel: int) -> Path:
    """The config every worker reads: the shared state database, the test-bed Docker engine as
    target `local`, short health windows, and the fleet's parallelism."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"state:\n  url: {json.dumps(state_url)}\n"
        "targets:\n  docker:\n"
        f"    - name: local\n      url: {json.dumps(os.environ['DOCKER_HOST'])}\n"
        # A 6 s window with 5 s probe timeouts: one probe slowed by a saturated machine must
        # not roll an update back (at load 200 a 3 s window with 2 s timeouts did).
        "health:\n  window: 6s\n  interval: 500ms\n  timeout: 5s\n"
        f"fleet:\n  max_parallel: {max_parallel}\n"
    )
    return path


def _wait_healthy(server: Managed, api_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"prefect server exited with {server.process.returncode}:\n{server.tail()}")
        status, body = http_status(f"{api_url}/health", timeout=2.0)
        if status == 200 and body.strip() == "true":
            return
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy within {timeout:.0f} s:\n{server.tail()}")


def _wait_workers_online(workers: Mapping[str, Managed], timeout: float) -> None:
    """Until the server lists every worker of the pool as ONLINE (its first heartbeat)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    online: set[str] = set()
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            for name, worker in workers.items():
                if worker.process.poll() is not None:
                    pytest.fail(f"{name} exited with {worker.process.returncode}:\n{worker.tail()}")
            online = {
                w.name
                for w in client.read_workers_for_work_pool(POOL)
                if str(getattr(w.status, "value", w.status)).upper() == "ONLINE"
            }
            if online >= set(workers):
                return
            time.sleep(0.5)
    pytest.fail(f"workers online after {timeout:.0f} s: {sorted(online)} of {sorted(workers)}")


def stop_leftover_flow_runs() -> None:
    """Flow-run processes run in sessions of their own, so stopping a worker's group leaves
    them. Any run not final by now is stopped through its `infrastructure_pid` (the PID the
    worker started), once /proc shows that PID still runs that flow run.

    Best effort: it runs at teardown, where an error must not hide the test's own result."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    live = [StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]
    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live))
            ),
            limit=200,
        )
        for run in runs:
            pid_text = (run.infrastructure_pid or "").rpartition(":")[2]
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if f"PREFECT__FLOW_RUN_ID={run.id}".encode() in environ:
                _signal_group(pid, signal.SIGKILL)


def _stop_all(processes: list[Managed]) -> None:
    for process in reversed(processes):
        process.stop()


@pytest.fixture
def scaleout(scaleout_cluster: Cluster) -> Iterator[Cluster]:
    """The session's cluster, with this test's Prefect client pointed at its server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: scaleout_cluster.api_url}):
        yield scaleout_cluster


@pytest.fixture(scope="session")
def scaleout_cluster(
    testbed_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    for key in ("DOCKER_HOST", "TESTBED_REGISTRY", "TESTBED_POSTGRES_ADMIN_URL"):
        if not testbed_env.get(key):
            pytest.skip(missing_reason(key))
    from prefect.settings import PREFECT_API_URL, temporary_settings

    workdir = tmp_path_factory.mktemp("scaleout")
    started: list[Managed] = []
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        databases = stack.enter_context(fresh_databases(testbed_env["TESTBED_POSTGRES_ADMIN_URL"]))
        # The stack unwinds in reverse: the processes stop before their databases are dropped.
        stack.callback(_stop_all, started)

        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        server = start_process(
            "server",
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-ui",
            ],
            base_environment(
                PREFECT_HOME=str(workdir / "server" / "home"),
                PREFECT_API_DATABASE_CONNECTION_URL=databases.prefect_url,
                PREFECT_SERVER_API_HOST="127.0.0.1",
                PREFECT_SERVER_API_PORT=str(port),
                PREFECT_LOGGING_SERVER_LEVEL="WARNING",
            ),
            workdir / "server",
            workdir / "server" / "server.log",
        )
        started.append(server)
        _wait_healthy(server, api_url, SERVER_READY_TIMEOUT)
        timings = {"server_ready_s": time.monotonic() - began}

        # The API URL is set per test (fixture `scaleout`), not for the session: a session-wide
        # setting would send every later test's client to this server.
        def stop_leftovers() -> None:
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                stop_leftover_flow_runs()

        stack.callback(stop_leftovers)

        # The workers share one state database on PostgreSQL, as workers on several hosts
        # must (its asset locks are advisory locks there). Migrated once, before any worker
        # opens it.
        state_url = databases.state_url
        from safe_updater.adapters.store import StateStore

        StateStore.open(state_url).close()
        config_path = write_config(
            workdir / "safe-updater.yaml", state_url, max_parallel=WORKER_LIMIT + 2
        )

        mark = time.monotonic()
        applied = subprocess.run(
            [str(BIN / "safe-updater"), "deployments", "apply", "--pool", POOL, "--no-schedules"],
            env=base_environment(PREFECT_API_URL=api_url, SAFE_UPDATER_HOME=str(workdir / "cli")),
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert applied.returncode == 0, f"apply: {applied.stdout}\n{applied.stderr}"
        timings["apply_s"] = time.monotonic() - mark

        mark = time.monotonic()
        workers: dict[str, Managed] = {}
        for name in WORKERS:
            home = workdir / name
            workers[name] = start_process(
                name,
                [
                    str(BIN / "prefect"),
                    "worker",
                    "start",
                    "--pool",
                    POOL,
                    "--name",
                    name,
                    "--type",
                    "process",
                    "--limit",
                    str(WORKER_LIMIT),
                ],
                base_environment(
                    PREFECT_API_URL=api_url,
                    PREFECT_HOME=str(home / "prefect"),
                    PREFECT_WORKER_QUERY_SECONDS="1",
                    PREFECT_LOGGING_LEVEL="INFO",
                    SAFE_UPDATER_CONFIG=str(config_path),
                    SAFE_UPDATER_HOME=str(home / "state"),
                ),
                home / "cwd",
                home / "worker.log",
            )
            started.append(workers[name])
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            _wait_workers_online(workers, timeout=90)
        timings["workers_online_s"] = time.monotonic() - mark
        timings["cluster_ready_s"] = time.monotonic() - began

        yield Cluster(
            api_url=api_url,
            server=server,
            workers=workers,
            databases=databases,
            config_path=config_path,
            workdir=workdir,
            state_url=state_url,
            timings=timings,
            apply_output=applied.stdout,
        )


# --- the containers ------------------------------------------------------------------------------

GROUP_LABEL = "safe-updater.io/group"


@dataclass(frozen=True)
class FleetAsset:
    """One opted-in demo container, `docker:local/<name>`, serving on `port`."""

    name: str
    port: int

    @property
    def asset_id(self) -> str:
        return f"docker:local/{self.name}"


@dataclass
class DockerFleet:
    docker: Any  # docker.DockerClient
    registry: RegistryInfo
    repo: str
    group: str
    assets: list[FleetAsset]

    def image(self, tag: str) -> str:
        return self.registry.image(tag, self.repo)

    def running_tags(self) -> dict[str, str | None]:
        """Asset name -> the tag of the image its container runs (None when it has none)."""
        found: dict[str, str | None] = {asset.name: None for asset in self.assets}
        for container in self.docker.containers.list(
            filters={"label": f"{GROUP_LABEL}={self.group}"}
        ):
            image = str((container.attrs.get("Config") or {}).get("Image") or "")
            if container.name in found:
                found[container.name] = image.rpartition(":")[2]
        return found

    def leftovers(self) -> list[str]:
        """Containers of the group other than the assets' own (e.g. `-prev`, `-next`)."""
        names = {asset.name for asset in self.assets}
        return sorted(
            c.name
            for c in self.docker.containers.list(
                all=True, filters={"label": f"{GROUP_LABEL}={self.group}"}
            )
            if c.name not in names
        )

    def versions(self) -> dict[str, str | None]:
        """Asset name -> what its `/version` answers (None when nothing answers)."""
        answers: dict[str, str | None] = {}
        for asset in self.assets:
            status, body = http_status(f"http://127.0.0.1:{asset.port}/version", timeout=2.0)
            answers[asset.name] = body.strip() if status == 200 else None
        return answers


@pytest.fixture
def docker_fleet(docker_client: Any, registry: RegistryInfo) -> Iterator[Any]:
    """Factory: `docker_fleet(n, tags=("1.0.0", "1.0.1"), start="1.0.0")` publishes the tags
    into a private repository and runs `n` opted-in containers of `start` in one new group
    (label safe-updater.io/group), each with an HTTP health label on its own port. Every
    container of the group is removed after the test."""
    import docker.errors

    made: list[DockerFleet] = []

    def make(
        n: int, *, tags: Sequence[str] = ("1.0.0", "1.0.1"), start: str = "1.0.0"
    ) -> DockerFleet:
        repo = private_repo("so")
        publish_tags(registry, repo, tags)
        group = f"so-{uuid.uuid4().hex[:8]}"
        fleet = DockerFleet(docker_client, registry, repo, group, [])
        made.append(fleet)
        docker_client.images.pull(registry.image(start, repo).rpartition(":")[0], tag=start)
        for index in range(n):
            asset = FleetAsset(f"{group}-{index:02d}", free_port())
            run_demo_container(
                docker_client,
                fleet.image(start),
                port=asset.port,
                name=asset.name,
                pull=False,
                labels={
                    "safe-updater.io/enabled": "true",
                    "safe-updater.io/health.http": f"http://127.0.0.1:{asset.port}/healthz",
                    GROUP_LABEL: group,
                },
                timeout=60.0,
            )
            fleet.assets.append(asset)
        return fleet

    yield make
    for fleet in made:
        # The low-level listing inspects nothing, so a container an update removes meanwhile
        # cannot fail the listing itself.
        for entry in docker_client.api.containers(
            all=True, filters={"label": f"{GROUP_LABEL}={fleet.group}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.api.remove_container(entry["Id"], force=True)
