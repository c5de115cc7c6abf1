"""A Prefect server of a test's own, as a subprocess that can be killed and started again.

The session's server (the `prefect_server` fixture) must not go down under other tests, so a test
that takes the Prefect server away starts this one: `prefect server start` on 127.0.0.1 and a
fixed port, with a file-based SQLite database under the test's directory, so that runs, their
paused states and their inputs survive a restart. Every process is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.testbed import free_port, http_client

READY_TIMEOUT = 180.0  # a cold start migrates the database; on a busy 2-core box that is slow


@dataclass
class PrefectServerProcess:
    """`prefect server start --no-ui` on 127.0.0.1:`port`, its database in `home`."""

    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def database(self) -> Path:
        return self.home / "prefect.db"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def server_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "PYTEST_")) and not k.lower().endswith("_proxy")
        }
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.database}",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
        )
        return env

    def client_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a client process (the CLI) of this server."""
        env = {
            k: v
            for k, v in (os.environ if base is None else base).items()
            if not k.startswith(("PREFECT_", "PYTEST_"))
        }
        env.update(
            {
                "PREFECT_API_URL": self.api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        return env

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the server (again: same port, same database) and wait until it is healthy."""
        if self.running:
            raise RuntimeError(f"the Prefect server (pid {self.pid}) is still running")
        self.home.mkdir(parents=True, exist_ok=True)
        prefect = Path(sys.executable).with_name("prefect")
        argv = [str(prefect), "server", "start", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--no-ui"]
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start #{self.starts + 1} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                argv,
                env=self.server_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the Prefect server exited with {self.process.returncode}: {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"the Prefect server on port {self.port} was not healthy after "
                    f"{timeout:.0f} s: {self.log_tail()}"
                )
            time.sleep(0.3)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        try:
            with http_client(timeout=2.0) as client:
                return client.get(f"{self.api_url}/health").status_code == 200
        except Exception:
            return False

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 60.0) -> int:
        """Send `sig` to the server's PID and wait until it has exited; its exit code."""
        assert self.process is not None, "not started"
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def stop(self) -> None:
        if self.running:
            self.kill(signal.SIGTERM, timeout=20)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # -- reads through the REST API (this process's Prefect settings point elsewhere) ----------

    def flow_runs(self, state_type: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"sort": "START_TIME_DESC", "limit": 50}
        if state_type is not None:
            body["flow_runs"] = {"state": {"type": {"any_": [state_type]}}}
        with http_client(timeout=10.0) as client:
            response = client.post(f"{self.api_url}/flow_runs/filter", json=body)
            response.raise_for_status()
            return list(response.json())

    def flow_run(self, run_id: str) -> dict[str, Any]:
        with http_client(timeout=10.0) as client:
            response = client.get(f"{self.api_url}/flow_runs/{run_id}")
            response.raise_for_status()
            return dict(response.json())


@contextlib.contextmanager
def prefect_server_process(home: Path) -> Iterator[PrefectServerProcess]:
    """A started server; stopped by its PID afterwards, whatever the test did to it."""
    server = PrefectServerProcess(home)
    server.start()
    try:
        yield server
    finally:
        server.stop()
