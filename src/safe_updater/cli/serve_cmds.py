"""``safe-updater serve`` (the service: Prefect server, the standard deployments, /metrics),
``safe-updater deployments export`` (the prefect.yaml for work pools and workers) and
``safe-updater deployments apply`` (the same deployments on a process work pool)."""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from safe_updater.cli.common import ConfigOption, prepare_environment
from safe_updater.cli.prefect_auth import (
    CLIENT_AUTH_VARIABLE,
    SERVER_AUTH_VARIABLE,
    basic_header,
    check_auth_string,
    read_auth_file,
)
from safe_updater.deployments.standard import WORK_POOL
from safe_updater.domain.errors import InvalidInputError, SafeUpdaterError
from safe_updater.settings import Settings

log = logging.getLogger(__name__)

SERVER_READY_TIMEOUT = 120.0
SERVER_STOP_TIMEOUT = 15.0
DEFAULT_LIMIT = 4

deployments_app = typer.Typer(
    help="The standard deployments (schedules, parameters) that `serve` runs.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(deployments_app, name="deployments")


@deployments_app.command("export")
def export() -> None:
    """Print the prefect.yaml of the standard deployments (for `prefect deploy --all`)."""
    from safe_updater.deployments.standard import render_prefect_yaml

    sys.stdout.write(render_prefect_yaml())


@deployments_app.command("apply")
def apply(
    pool: Annotated[
        str, typer.Option("--pool", help="Work pool to register on (created as `process`).")
    ] = WORK_POOL,
    no_schedules: Annotated[
        bool,
        typer.Option(
            "--no-schedules",
            help="Register without schedules (and remove earlier ones): runs start only by "
            "hand, an automation or another flow.",
        ),
    ] = False,
) -> None:
    """Register the standard deployments on a work pool of the Prefect server at
    PREFECT_API_URL, for `prefect worker start --pool POOL` workers (docs/scale-out.md)."""
    from safe_updater.wiring import configure_prefect_environment

    # Before prefect is imported: analytics off, like every other command.
    configure_prefect_environment()
    from safe_updater.deployments.work_pool import apply_deployments

    result = apply_deployments(pool, schedules=not no_schedules)
    verb = "created" if result.work_pool_created else "exists"
    typer.echo(f"work pool {result.work_pool} (process): {verb}; server {result.api_url}")
    for item in result.deployments:
        schedules = f"{item.schedules} schedule(s)" if item.schedules else "no schedule"
        typer.echo(f"  {item.full_name}  {item.entrypoint}  {schedules}  {item.id}")


class ServerError(SafeUpdaterError):
    """The local Prefect server did not start."""


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address of the Prefect server and its UI.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the Prefect server and UI.")] = 4200,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", help="Port of /metrics (Prometheus).")
    ] = 9720,
    no_ui: Annotated[
        bool, typer.Option("--no-ui", help="Serve the Prefect API without its web UI.")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many flow runs at once.")
    ] = DEFAULT_LIMIT,
    auth_file: Annotated[
        Path | None,
        typer.Option(
            "--auth-file",
            help="File with one line `user:password` (mode 0600): the Prefect API and UI ask "
            "for it (basic auth). Or set PREFECT_SERVER_API_AUTH_STRING.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the service: a local Prefect server (UI on http://HOST:PORT), the standard deployments
    on their schedules, and /metrics. With PREFECT_API_URL set, use that server instead.
    Ctrl-C stops everything."""
    settings = Settings()
    auth = server_auth(auth_file, os.environ)
    _warn_about_exposure(host, auth is not None)
    external = os.environ.get("PREFECT_API_URL")
    server: LocalServer | None = None
    if auth is not None:
        # This process's client and the flow runs the runner starts (they inherit os.environ)
        # send it; the server child gets the server-side setting through its own environment.
        os.environ[CLIENT_AUTH_VARIABLE] = auth
        os.environ.pop(SERVER_AUTH_VARIABLE, None)
    stopping = threading.Event()
    try:
        with _stop_on_signals(stopping):
            if external:
                typer.echo(f"Using the Prefect server at {external}", err=True)
            else:
                server = LocalServer.start(settings.home, host, port, ui=not no_ui, auth=auth)
                typer.echo(
                    f"Prefect server ready in {server.ready_after:.1f} s: {server.ui_url} "
                    f"(pid {server.process.pid}, log {server.log_path}"
                    f"{', basic auth on' if auth else ''})",
                    err=True,
                )
                os.environ["PREFECT_API_URL"] = server.api_url
            os.environ.setdefault("PREFECT_HOME", str(prefect_home(settings.home)))
            prepare_environment(config)
            with _metrics(config, host, metrics_port):
                _serve_deployments(limit)
    except KeyboardInterrupt:
        pass
    except Exception as error:
        # The stop signal's KeyboardInterrupt can surface wrapped by whatever was running when
        # it arrived (pydantic-core reports it as a serialization error): still a clean stop.
        if not stopping.is_set():
            raise
        log.debug("stopped while %s", type(error).__name__)
    finally:
        if server is not None:
            server.stop()
    typer.echo("stopped", err=True)


def server_auth(auth_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The ``user:password`` the server asks for: from ``--auth-file``, or from
    ``PREFECT_SERVER_API_AUTH_STRING``; ``None`` without either."""
    from_env = environ.get(SERVER_AUTH_VARIABLE)
    if auth_file is not None:
        if from_env:
            raise InvalidInputError(
                f"both --auth-file and {SERVER_AUTH_VARIABLE} are set",
                hint=f"use one of them (unset {SERVER_AUTH_VARIABLE}, or drop --auth-file)",
            )
        return read_auth_file(auth_file)
    # Set but empty (a blank line in an EnvironmentFile) means off: the child never sees it.
    if from_env:
        return check_auth_string(from_env, source=SERVER_AUTH_VARIABLE)
    return None


def _warn_about_exposure(host: str, authenticated: bool) -> None:
    if is_loopback(host):
        return
    if authenticated:
        typer.echo(
            f"warning: --host {host} serves basic auth over plain HTTP, which sends the "
            "password in clear: put a TLS proxy in front (see docs/serve.md)",
            err=True,
        )
    else:
        typer.echo(
            f"warning: --host {host} exposes the Prefect UI and API beyond this machine, and "
            "they have no authentication: use --auth-file and a TLS proxy, or a proxy with "
            "auth (see docs/serve.md)",
            err=True,
        )


def _serve_deployments(limit: int) -> None:
    from prefect import serve as prefect_serve

    from safe_updater.deployments.standard import to_runner_deployments

    prefect_serve(*to_runner_deployments(), limit=limit)


@contextlib.contextmanager
def _stop_on_signals(stopping: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the service (Prefect's runner installs its own SIGTERM handler
    while serving). SIGINT is restored even when a shell started us with it ignored (``&``).
    ``stopping`` is set once either arrived."""

    def interrupt(signum: int, frame: object) -> None:
        stopping.set()
        raise KeyboardInterrupt

    previous_int = signal.signal(signal.SIGINT, interrupt)
    previous_term = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


@contextlib.contextmanager
def _metrics(config: Path | None, host: str, port: int) -> Iterator[None]:
    """``safe_updater.metrics.serve_metrics(store, host, port)`` in a thread, when it exists."""
    try:
        metrics: Any = importlib.import_module("safe_updater.metrics")
    except ImportError:
        metrics = None
    serve_metrics = getattr(metrics, "serve_metrics", None)
    if serve_metrics is None:
        typer.echo("metrics: safe_updater.metrics.serve_metrics is missing; no /metrics", err=True)
        yield
        return
    from safe_updater.wiring import open_store

    store = open_store(config)
    started: list[Any] = []

    def run() -> None:
        started.append(serve_metrics(store, host, port))

    thread = threading.Thread(target=run, name="safe-updater-metrics", daemon=True)
    thread.start()
    typer.echo(f"metrics: http://{_url_host(host)}:{port}/metrics", err=True)
    try:
        yield
    finally:
        thread.join(timeout=5)
        stop_metrics = getattr(metrics, "stop_metrics", None)
        if callable(stop_metrics) and started and isinstance(started[0], tuple):
            with contextlib.suppress(Exception):
                stop_metrics(*started[0])
            started.clear()
        for handle in _flatten(started):
            for method in ("shutdown", "stop", "close"):
                stop = getattr(handle, method, None)
                if callable(stop):
                    with contextlib.suppress(Exception):
                        stop()
                    break
        store.close()


def _flatten(values: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in values:
        flat.extend(value if isinstance(value, tuple | list) else [value])
    return [value for value in flat if value is not None]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def prefect_home(home: Path) -> Path:
    return home / "prefect"


def server_environment(
    home: Path,
    host: str,
    port: int,
    base: Mapping[str, str],
    *,
    ui: bool = True,
    auth: str | None = None,
) -> dict[str, str]:
    """The child server's environment: its home and SQLite database under the state dir, the
    API address the UI advertises, analytics off, and the basic-auth string (through the
    environment, never argv)."""
    prefect_dir = prefect_home(home)
    env = {
        key: value
        for key, value in base.items()
        if key not in ("PREFECT_API_URL", SERVER_AUTH_VARIABLE)
    }
    if auth is not None:
        env[SERVER_AUTH_VARIABLE] = auth
    env["PREFECT_HOME"] = str(prefect_dir)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_API_HOST"] = host
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env["PREFECT_UI_API_URL"] = f"http://{_url_host(host)}:{port}/api"
    env["PREFECT_SERVER_UI_ENABLED"] = "true" if ui else "false"
    env.setdefault(
        "PREFECT_API_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{prefect_dir / 'prefect.db'}"
    )
    return env


def server_command(host: str, port: int, *, ui: bool = True) -> list[str]:
    prefect = Path(sys.executable).with_name("prefect")
    launcher = [str(prefect)] if prefect.exists() else [sys.executable, "-m", "prefect"]
    return [
        *launcher,
        "server",
        "start",
        "--host",
        host,
        "--port",
        str(port),
        "--ui" if ui else "--no-ui",
    ]


@dataclass
class LocalServer:
    """``prefect server start`` as a child process, stopped by its PID."""

    process: subprocess.Popen[bytes]
    log_path: Path
    api_url: str
    ui_url: str
    ready_after: float = 0.0

    @classmethod
    def start(
        cls,
        home: Path,
        host: str,
        port: int,
        *,
        ui: bool = True,
        auth: str | None = None,
        timeout: float = SERVER_READY_TIMEOUT,
    ) -> LocalServer:
        _check_port_free(host, port)
        prefect_dir = prefect_home(home)
        prefect_dir.mkdir(parents=True, exist_ok=True)
        log_path = prefect_dir / "server.log"
        env = server_environment(home, host, port, os.environ, ui=ui, auth=auth)
        base = f"http://{_url_host(host)}:{port}"
        began = time.monotonic()
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(  # noqa: S603 - an argument list, never a shell
                server_command(host, port, ui=ui),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C reaches only us, and we stop the server after the
                # runner has paused the deployments through it.
                start_new_session=True,
            )
        server = cls(process, log_path, f"{base}/api", f"{base}/")
        try:
            server._wait_ready(timeout)
            if auth is not None:
                server._check_auth(auth)
        except BaseException:
            server.stop()
            raise
        server.ready_after = time.monotonic() - began
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerError(
                    f"the Prefect server exited with code {code} before it was ready",
                    hint=f"see {self.log_path}",
                )
            if _healthy(f"{self.api_url}/health"):
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the Prefect server did not answer {self.api_url}/health "
                    f"within {timeout:.0f} s",
                    hint=f"see {self.log_path}",
                )
            time.sleep(0.5)

    def _check_auth(self, auth: str) -> None:
        """The server must refuse a request without credentials and take ours: a Prefect that
        ignored the setting would serve an open API while we claim it is protected."""
        probe = f"{self.api_url}/admin/version"
        without, with_auth = _status(probe), _status(probe, basic_header(auth))
        if without != 401:
            raise ServerError(
                f"the Prefect server answered {probe} without credentials with HTTP {without}, "
                f"not 401: it does not enforce {SERVER_AUTH_VARIABLE}",
                hint=f"check the Prefect version and {self.log_path}; until then keep --host on "
                "loopback behind a proxy with auth",
            )
        if with_auth != 200:
            raise ServerError(
                f"the Prefect server refused our own credentials at {probe} (HTTP {with_auth})",
                hint=f"see {self.log_path}",
            )

    def stop(self, timeout: float = SERVER_STOP_TIMEOUT) -> None:
        """SIGTERM, wait ``timeout`` seconds, then SIGKILL."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _status(url: str, authorization: str | None = None) -> int | None:
    """The HTTP status of ``GET url``; ``None`` when nothing answers."""
    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise InvalidInputError(
                f"cannot listen on {host}:{port}: {error.strerror}",
                hint="choose another --port, or set PREFECT_API_URL to use the server there",
            ) from error
