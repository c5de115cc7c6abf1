"""`safe-updater serve --auth-file`: the Prefect server it starts asks for basic auth, its own
deployments still run, the CLI commands that talk to the API work with PREFECT_API_AUTH_STRING
(and say what to set without it), bad auth files stop everything before it starts, and the
secret never reaches argv, the logs or an error."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from safe_updater.cli import serve_cmds
from safe_updater.cli.prefect_auth import AuthFileError, AuthStringError, read_auth_file

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / ".venv" / "bin" / "safe-updater"
STANDARD_NAMES = {"scan", "update-fleet", "update-asset", "rollback-asset", "recover-updates"}
# Distinctive, so a leak anywhere (argv, logs, errors) is found by a plain substring search.
USER, PASSWORD = "operator", "Pw-9f3c1e7a-never-printed"
SECRET = f"{USER}:{PASSWORD}"


def _auth_file(directory: Path, text: str, mode: int = 0o600) -> Path:
    path = directory / "prefect-auth"
    path.write_text(text)
    path.chmod(mode)
    return path


# --- the auth file -------------------------------------------------------------------------


def test_a_private_one_line_file_gives_its_line(tmp_path: Path) -> None:
    assert read_auth_file(_auth_file(tmp_path, SECRET + "\n")) == SECRET
    # A colon inside the password is part of it: only the first one splits.
    assert read_auth_file(_auth_file(tmp_path, "u:pa:ss")) == "u:pa:ss"


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        (SECRET, 0o644, "is open to group or others (mode 0644) (fix: chmod 600"),
        (SECRET, 0o640, "(mode 0640)"),
        (SECRET, 0o602, "(mode 0602)"),
        ("", 0o600, "is empty"),
        ("\n\n", 0o600, "is empty"),
        (PASSWORD, 0o600, "no colon"),
        (f":{PASSWORD}", 0o600, "the user part"),
        (f"{USER}:", 0o600, "the password part"),
        (f"{SECRET}\n{SECRET}\n", 0o600, "holds 2 lines"),
    ],
)
def test_bad_auth_files_are_refused(tmp_path: Path, text: str, mode: int, message: str) -> None:
    path = _auth_file(tmp_path, text, mode)
    with pytest.raises(AuthFileError) as error:
        read_auth_file(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)
    assert PASSWORD not in str(error.value)


def test_a_missing_auth_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AuthFileError, match=r"cannot read --auth-file .*missing: No such file"):
        read_auth_file(tmp_path / "missing")


def test_the_environment_variable_is_checked_too() -> None:
    assert serve_cmds.server_auth(None, {"PREFECT_SERVER_API_AUTH_STRING": SECRET}) == SECRET
    assert serve_cmds.server_auth(None, {}) is None
    assert serve_cmds.server_auth(None, {"PREFECT_SERVER_API_AUTH_STRING": ""}) is None
    with pytest.raises(AuthStringError, match="PREFECT_SERVER_API_AUTH_STRING holds no") as error:
        serve_cmds.server_auth(None, {"PREFECT_SERVER_API_AUTH_STRING": PASSWORD})
    assert PASSWORD not in str(error.value)


def test_the_server_child_gets_the_secret_in_its_environment(tmp_path: Path) -> None:
    inherited = {"PREFECT_SERVER_API_AUTH_STRING": "old:value", "PATH": "/bin"}
    env = serve_cmds.server_environment(tmp_path, "127.0.0.1", 4299, inherited, auth=SECRET)
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == SECRET
    assert not any(SECRET in part for part in serve_cmds.server_command("127.0.0.1", 4299))
    # Without auth, a value left in the environment does not switch it on behind our back.
    assert "PREFECT_SERVER_API_AUTH_STRING" not in serve_cmds.server_environment(
        tmp_path, "127.0.0.1", 4299, inherited
    )


def test_non_loopback_host_with_auth_asks_only_for_tls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    # serve exports the client variable; set-then-delete makes monkeypatch remove it after.
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "x")
    monkeypatch.delenv("PREFECT_API_AUTH_STRING")
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)

    def stop_here(config: Path | None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(serve_cmds, "prepare_environment", stop_here)
    app = typer.Typer()
    serve_cmds.register(app)
    path = _auth_file(tmp_path, SECRET)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--auth-file", str(path)])
    assert result.exit_code == 0, result.output
    assert "put a TLS proxy in front" in result.output
    assert "no authentication" not in result.output
    assert PASSWORD not in result.output
    assert os.environ["PREFECT_API_AUTH_STRING"] == SECRET


# --- the real command ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def service_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """No PREFECT_* in the environment; a config with one Kubernetes target whose API is never
    called (the flow run below only reads the store), so no test bed is needed."""
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


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        (SECRET, 0o644, "is open to group or others (mode 0644) (fix: chmod 600 "),
        ("", 0o600, "is empty"),
        (PASSWORD + "\n", 0o600, "holds no `user:password` (no colon)"),
    ],
)
def test_serve_refuses_a_bad_auth_file_and_starts_nothing(
    service_env: dict[str, str], tmp_path: Path, text: str, mode: int, message: str
) -> None:
    path = _auth_file(tmp_path, text, mode)
    port = _free_port()
    result = subprocess.run(
        [str(BINARY), "serve", "--port", str(port), "--auth-file", str(path)],
        env=service_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --auth-file "), result.stderr
    assert message in lines[0]
    assert PASSWORD not in result.stdout + result.stderr
    assert not (tmp_path / "home" / "prefect" / "server.log").exists(), "no server was started"
    assert not _listening(port)


def test_serve_refuses_both_sources(service_env: dict[str, str], tmp_path: Path) -> None:
    path = _auth_file(tmp_path, SECRET)
    env = {**service_env, "PREFECT_SERVER_API_AUTH_STRING": SECRET}
    result = subprocess.run(
        [str(BINARY), "serve", "--port", str(_free_port()), "--auth-file", str(path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "both --auth-file and PREFECT_SERVER_API_AUTH_STRING are set" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def _call(
    url: str, body: Any = None, auth: str | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    """(status, body) of one request; HTTP errors are answers too. 503 (SQLite busy) is
    retried like Prefect's own client does."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(6):
        request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
        request.add_header("Content-Type", "application/json")
        if auth is not None:
            token = base64.b64encode(auth.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == 5:
                return int(error.code), error.read()
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


def _proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:  # gone meanwhile
        return b""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BINARY), *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_serve_with_auth_file_end_to_end(service_env: dict[str, str], tmp_path: Path) -> None:
    port, metrics_port = _free_port(), _free_port()
    api = f"http://127.0.0.1:{port}/api"
    path = _auth_file(tmp_path, SECRET + "\n")
    output_path = tmp_path / "serve.out"
    output = output_path.open("wb")
    process = subprocess.Popen(
        [str(BINARY), "serve", "--port", str(port), "--metrics-port", str(metrics_port),
         "--auth-file", str(path)],
        env=service_env,
        cwd=tmp_path,
        stdout=output,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    descendants: set[int] = set()
    try:
        # Health stays open (probes need it); everything else asks for the credentials.
        _wait_for("the server", lambda: _call(f"{api}/health")[0] == 200, 180, process)
        assert _call(f"{api}/flows/filter")[0] == 401
        assert _call(f"{api}/flows/filter", {})[0] == 401
        assert _call(f"{api}/flows/filter", {}, auth=f"{USER}:wrong")[0] == 401
        status, body = _call(f"{api}/flows/filter", {}, auth=SECRET)
        assert status == 200, body
        assert isinstance(json.loads(body), list)
        # The UI is told to show its login form.
        status, body = _call(f"http://127.0.0.1:{port}/ui-settings")
        assert status == 200 and json.loads(body)["auth"] == "BASIC"

        def deployments() -> dict[str, Any]:
            status, body = _call(f"{api}/deployments/filter", {}, auth=SECRET)
            found = {d["name"]: d for d in json.loads(body)} if status == 200 else {}
            return found if set(found) >= STANDARD_NAMES else {}

        # The runner registered them: serve's own client sends the credentials.
        served = _wait_for("the standard deployments", deployments, 180, process)
        deployment_id = served["recover-updates"]["id"]
        status, body = _call(f"{api}/deployments/{deployment_id}/create_flow_run", {}, auth=SECRET)
        assert status == 201, body
        run_id = json.loads(body)["id"]
        seen_cmdlines: dict[int, bytes] = {}

        def finished() -> str | None:
            # Every process serve started so far, flow-run subprocesses included.
            for pid in _children(process.pid):
                seen_cmdlines.setdefault(pid, _proc(pid, "cmdline"))
            _, body = _call(f"{api}/flow_runs/{run_id}", auth=SECRET)
            state = json.loads(body)["state_type"]
            return state if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

        # The flow run subprocess reports its states and logs through the authenticated API.
        assert _wait_for("the run", finished, 240, process) == "COMPLETED"

        # Its logs arrive through the same authenticated API, in batches after the state.
        def logs() -> list[Any]:
            query = {"logs": {"flow_run_id": {"any_": [run_id]}}}
            status, body = _call(f"{api}/logs/filter", query, auth=SECRET)
            return list(json.loads(body)) if status == 200 else []

        assert _wait_for("the run's logs", logs, 120, process)

        # No secret in any argv; the server child has it in its (owner-only) environment.
        descendants = _children(process.pid)
        for pid in descendants | {process.pid}:
            seen_cmdlines.setdefault(pid, _proc(pid, "cmdline"))
        assert len(seen_cmdlines) >= 2
        assert [pid for pid, cmd in seen_cmdlines.items() if PASSWORD.encode() in cmd] == []
        servers = [pid for pid in descendants if b"server\0start" in _proc(pid, "cmdline")]
        assert servers, "the Prefect server runs as a child"
        assert f"PREFECT_SERVER_API_AUTH_STRING={SECRET}".encode() in _proc(servers[0], "environ")

        # The CLI commands that talk to the API: with PREFECT_API_AUTH_STRING they get through
        # (an unknown run is "not found", not "unauthorized"); without it, one line says what
        # to set and no traceback.
        client_env = {**service_env, "PREFECT_API_URL": api}
        authed_env = {**client_env, "PREFECT_API_AUTH_STRING": SECRET}
        unknown = str(uuid.uuid4())
        refused = _cli(client_env, "approve", unknown)
        assert refused.returncode == 1, refused.stderr
        assert "the Prefect API refused the request" in refused.stderr
        assert "set PREFECT_API_AUTH_STRING" in refused.stderr
        assert "Traceback" not in refused.stderr
        allowed = _cli(authed_env, "approve", unknown)
        assert allowed.returncode == 1
        assert f"no flow run {unknown}" in allowed.stderr, allowed.stderr

        # A command that runs its flow in this process, through the same API.
        refused = _cli(client_env, "recover", "--json")
        assert refused.returncode == 1, refused.stderr
        assert "set PREFECT_API_AUTH_STRING" in refused.stderr and "Traceback" not in (
            refused.stderr
        )
        allowed = _cli(authed_env, "recover", "--json")
        assert allowed.returncode == 0, allowed.stderr
        assert json.loads(allowed.stdout) == []

        refused = _cli(client_env, "automations", "list", "--json")
        assert refused.returncode == 1 and "set PREFECT_API_AUTH_STRING" in refused.stderr, (
            refused.stderr
        )
        allowed = _cli(authed_env, "automations", "list", "--json")
        assert allowed.returncode == 0, allowed.stderr
        assert isinstance(json.loads(allowed.stdout), list)

        refused = _cli(client_env, "deployments", "apply", "--pool", "auth-pool", "--no-schedules")
        assert refused.returncode == 1 and "set PREFECT_API_AUTH_STRING" in refused.stderr, (
            refused.stderr
        )
        allowed = _cli(authed_env, "deployments", "apply", "--pool", "auth-pool", "--no-schedules")
        assert allowed.returncode == 0, allowed.stderr
        assert "work pool auth-pool (process): created" in allowed.stdout
        status, body = _call(f"{api}/work_pools/auth-pool", auth=SECRET)
        assert status == 200 and json.loads(body)["type"] == "process"
        for result in (refused, allowed):
            assert PASSWORD not in result.stdout + result.stderr

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in descendants) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [pid for pid in descendants if _alive(pid)] == []
        output.close()
        serve_log = output_path.read_text()
        assert "basic auth on" in serve_log
        server_log = (tmp_path / "home" / "prefect" / "server.log").read_text()
        assert server_log, "the server wrote its log"
        for text in (serve_log, server_log):
            assert PASSWORD not in text
            assert base64.b64encode(SECRET.encode()).decode() not in text
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
        print(output_path.read_text()[-3000:])
