"""`safe-updater automations apply|list|delete` against the session's real Prefect server, and
its one-line errors when there is no server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from safe_updater.cli.app import main
from safe_updater.deployments.automations import ROLLBACK_PAUSE
from support.testbed import free_port

EXECUTABLE = Path(sys.executable).with_name("safe-updater")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`safe-updater ARGS` in this process (it talks to the test server); (code, out, err)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ours(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    code, out, err = _run(capsys, "automations", "list", "--json")
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # prepare_environment() would point PREFECT_HOME at the real state dir otherwise.
    monkeypatch.setenv("SAFE_UPDATER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))


def test_apply_is_idempotent_then_list_and_delete(
    prefect_server: None, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    suffix = uuid.uuid4().hex[:8]

    @flow(name=f"automation-cli-{suffix}")
    def stand_in() -> None:
        """Stands in for the fleet deployment, so the standard ones stay untouched."""

    from prefect.deployments.runner import RunnerDeployment

    deployment = stand_in.to_deployment(name="fleet")
    assert isinstance(deployment, RunnerDeployment)  # not the coroutine of an async caller
    deployment_id = deployment.apply()
    assert isinstance(deployment_id, uuid.UUID)
    target, absent = f"automation-cli-{suffix}/fleet", f"no-such-flow-{suffix}/scan"
    try:
        code, out, err = _run(
            capsys, "automations", "apply", "--pause", target, "--pause", absent, "--json"
        )
        assert code == 0, err
        [first] = json.loads(out)
        assert first["name"] == ROLLBACK_PAUSE and first["created"] is True
        assert first["targets"] == [target] and first["missing"] == [absent]

        code, out, err = _run(capsys, "automations", "apply", "--pause", target)
        assert code == 0, err
        assert out.startswith(f"updated '{ROLLBACK_PAUSE}' ({first['id']}): pauses {target}")
        with get_client(sync_client=True) as client:
            assert len(client.read_automations_by_name(ROLLBACK_PAUSE)) == 1

        [listed] = _ours(capsys)
        assert listed["id"] == first["id"] and listed["enabled"] is True
        assert listed["actions"] == f"pause-deployment {target}"
        assert listed["trigger"] == ("2 x safe-updater.update.rolled-back per resource within 24 h")
        code, out, _ = _run(capsys, "automations", "list")
        assert code == 0 and out.startswith("1 automations\n")  # the table (JSON above)

        code, out, err = _run(capsys, "automations", "delete", "--yes")
        assert code == 0, err
        assert out.strip() == f"deleted '{ROLLBACK_PAUSE}' ({first['id']})"
        assert _ours(capsys) == []
        with get_client(sync_client=True) as client:
            assert client.read_automations_by_name(ROLLBACK_PAUSE) == []
        code, out, _ = _run(capsys, "automations", "delete", "--yes")
        assert code == 0 and "no safe-updater automations" in out
    finally:
        with get_client(sync_client=True) as client:
            for automation in client.read_automations_by_name(ROLLBACK_PAUSE):
                client.delete_automation(automation.id)
            client.delete_deployment(deployment_id)


def test_apply_without_any_target_deployment_fails_in_one_line(
    prefect_server: None, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = f"no-such-flow-{uuid.uuid4().hex[:8]}/fleet"
    code, out, err = _run(capsys, "automations", "apply", "--pause", absent)
    assert code == 1 and out == ""
    assert err.startswith("error: nothing applied: none of the deployments") and absent in err
    assert "(fix: deploy them first" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "automations", "apply", "--pause", "no-slash")
    assert code == 2 and "is not FLOW/DEPLOYMENT" in err


def _without_server(tmp_path: Path, api_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SAFE_UPDATER_"))}
    env["SAFE_UPDATER_HOME"] = str(tmp_path / "home")  # no Prefect profile with a URL there
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return subprocess.run(
        [str(EXECUTABLE), "automations", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("server", ["unset", "unreachable"])
def test_no_server_is_one_line_and_exit_2(tmp_path: Path, server: str) -> None:
    url = None if server == "unset" else f"http://127.0.0.1:{free_port()}/api"
    result = _without_server(tmp_path, url)
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert result.stdout == "" and "Traceback" not in result.stderr
    if url is None:
        assert line.startswith("error: PREFECT_API_URL is not set")
        assert "(fix: start one with `safe-updater serve` and set PREFECT_API_URL=" in line
    else:
        assert line.startswith(f"error: the Prefect server at {url} does not answer")
        assert "fix PREFECT_API_URL" in line
