"""`safe-updater serve` and `deployments export`: unit tests, and one end-to-end run that starts
the real Prefect server, serves the standard deployments, runs one and stops everything."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from safe_updater.cli import serve_cmds
from safe_updater.cli.app import main
from safe_updater.deployments.standard import (
    STANDARD_DEPLOYMENTS,
    Schedule,
    StandardDeployment,
    render_prefect_yaml,
)
from safe_updater.domain.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / ".venv" / "bin" / "safe-updater"
STANDARD_NAMES = {"scan", "update-fleet", "update-asset", "rollback-asset", "recover-updates"}


# --- deployments ---------------------------------------------------------------------------


def test_export_prints_the_rendered_prefect_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["deployments", "export"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == render_prefect_yaml()


def test_rendering_keeps_cron_schedules_and_own_tags() -> None:
    spec = StandardDeployment(
        name="nightly",
        module="scan_inventory",
        flow="scan_inventory",
        description="Nightly: a scan, with a colon.",
        schedule=Schedule(cron="0 3 * * *", timezone="Europe/Berlin"),
        parameters={"evaluate": False},
        tags=("safe-updater", "nightly"),
        concurrency_limit=2,
    )
    (deployment,) = yaml.safe_load(render_prefect_yaml([spec]))["deployments"]
    assert deployment["description"] == "Nightly: a scan, with a colon."
    assert deployment["schedules"] == [{"cron": "0 3 * * *", "timezone": "Europe/Berlin"}]
    assert deployment["parameters"] == {"evaluate": False}
    assert deployment["tags"] == ["safe-updater", "nightly"]
    assert deployment["concurrency_limit"] == {"limit": 2, "collision_strategy": "CANCEL_NEW"}
    assert deployment["entrypoint"] == "src/safe_updater/flows/scan_inventory.py:scan_inventory"


def test_a_schedule_has_one_kind() -> None:
    with pytest.raises(ValueError):
        Schedule()
    with pytest.raises(ValueError):
        Schedule(interval_seconds=60, cron="* * * * *")


def test_standard_deployment_names() -> None:
    assert {spec.name for spec in STANDARD_DEPLOYMENTS} == STANDARD_NAMES


# --- serve, the parts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("192.0.2.1", False), ("example.org", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert serve_cmds.is_loopback(host) is loopback


def test_server_environment(tmp_path: Path) -> None:
    env = serve_cmds.server_environment(
        tmp_path, "127.0.0.1", 4299, {"PREFECT_API_URL": "http://x/api", "PATH": "/bin"}
    )
    assert "PREFECT_API_URL" not in env
    assert env["PATH"] == "/bin"
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"
    assert env["PREFECT_SERVER_API_PORT"] == "4299"
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4299/api"
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == (
        f"sqlite+aiosqlite:///{tmp_path / 'prefect' / 'prefect.db'}"
    )
    # A database the operator chose wins.
    chosen = serve_cmds.server_environment(
        tmp_path, "::1", 1, {"PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://db"}
    )
    assert chosen["PREFECT_API_DATABASE_CONNECTION_URL"] == "postgresql+asyncpg://db"
    assert chosen["PREFECT_UI_API_URL"] == "http://[::1]:1/api"


def test_server_command_is_an_argument_list() -> None:
    command = serve_cmds.server_command("127.0.0.1", 4299, ui=False)
    assert command[-7:] == ["server", "start", "--host", "127.0.0.1", "--port", "4299", "--no-ui"]


def test_a_busy_port_is_bad_input() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InvalidInputError, match=f"127.0.0.1:{port}"):
            serve_cmds.LocalServer.start(Path("/nonexistent"), "127.0.0.1", port)


def test_a_server_that_dies_names_its_log(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    server = serve_cmds.LocalServer(process, log_path, "http://127.0.0.1:9/api", "")
    try:
        with pytest.raises(serve_cmds.ServerError) as error:
            server._wait_ready(timeout=60)
        assert "code 3" in str(error.value)
        assert str(log_path) in str(error.value)
    finally:
        server.stop()


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        time.sleep(1)  # let it install the handler; no timing is asserted
        serve_cmds.LocalServer(process, tmp_path / "log", "", "").stop(timeout=2)
        assert process.poll() == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_non_loopback_host_warns_about_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning comes first; the serving itself is replaced here."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    calls: list[str] = []

    def stop_here(config: Path | None) -> None:
        calls.append("prepared")
        raise KeyboardInterrupt

    monkeypatch.setattr(serve_cmds, "prepare_environment", stop_here)
    result = CliRunner().invoke(_serve_app(), ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert "no authentication" in result.output
    assert calls == ["prepared"]


def _serve_app() -> typer.Typer:
    app = typer.Typer()
    serve_cmds.register(app)
    return app


# --- serve, end to end ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _request(url: str, body: Any = None, timeout: float = 10) -> tuple[int, str, bytes]:
    data = None if body is None else json.dumps(body).encode()
    # A SQLite-backed Prefect server answers 503 while its database is busy; Prefect's own
    # client retries those with back-off, and so does this test's bare client.
    for attempt in range(6):
        request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == 5:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _wait_for(what: str, check: Any, timeout: float, process: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited with {process.returncode} before {what}"
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            value = check()
            if value:
                return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def service_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """No PREFECT_* in the environment (serve starts its own server); a config with one
    Kubernetes target whose API is never called, so no Docker engine is needed."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "unused"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    config = tmp_path / "safe-updater.yaml"
    config.write_text(
        yaml.safe_dump({"targets": {"kubernetes": [{"name": "t", "kubeconfig": str(kubeconfig)}]}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SAFE_UPDATER_"))}
    env["SAFE_UPDATER_HOME"] = str(tmp_path / "home")
    env["SAFE_UPDATER_CONFIG"] = str(config)
    yield env


def test_serve_end_to_end(service_env: dict[str, str], tmp_path: Path) -> None:
    port, metrics_port = _free_port(), _free_port()
    api = f"http://127.0.0.1:{port}/api"
    output = (tmp_path / "serve.out").open("wb")
    process = subprocess.Popen(
        [str(BINARY), "serve", "--port", str(port), "--metrics-port", str(metrics_port)],
        env=service_env,
        cwd=tmp_path,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    descendants: set[int] = set()
    began = time.monotonic()
    try:
        _wait_for("the server", lambda: _request(f"{api}/health")[0] == 200, 180, process)
        ready = time.monotonic() - began
        status, content_type, _ = _request(f"http://127.0.0.1:{port}/")
        assert status == 200
        assert content_type.startswith("text/html")

        def deployments() -> dict[str, Any]:
            _, _, body = _request(f"{api}/deployments/filter", {})
            found = {d["name"]: d for d in json.loads(body)}
            return found if set(found) >= STANDARD_NAMES else {}

        served = _wait_for("the standard deployments", deployments, 180, process)
        assert served["scan"]["schedules"], "scan runs on a schedule"
        _, _, body = _request(
            f"{api}/deployments/{served['recover-updates']['id']}/create_flow_run", {}
        )
        run_id = json.loads(body)["id"]
        created = time.monotonic()

        def finished() -> str | None:
            state = json.loads(_request(f"{api}/flow_runs/{run_id}")[2])["state_type"]
            return state if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

        assert _wait_for("the run", finished, 180, process) == "COMPLETED"
        # Measured, never asserted (docs/serve.md quotes them; the host may be busy).
        print(f"server ready after {ready:.1f} s; run completed {time.monotonic() - created:.1f} s")
        metrics = _wait_for(
            "/metrics",
            lambda: _request(f"http://127.0.0.1:{metrics_port}/metrics")[2].decode(),
            60,
            process,
        )
        assert "safe_updater_" in metrics

        descendants = _children(process.pid)
        assert descendants, "the Prefect server runs as a child process"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in descendants) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [pid for pid in descendants if _alive(pid)] == []
    finally:
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            if process.poll() is None:
                process.kill()
                process.wait()
        for pid in descendants | _children(process.pid):
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        output.close()
        sys.stdout.write((tmp_path / "serve.out").read_text()[-3000:])
