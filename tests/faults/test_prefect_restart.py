"""The Prefect server restarts (or stays down) while an update run waits for approval.

Each test starts a Prefect server of its own (support.prefect_server_process: a subprocess on a
fixed port with a file-based SQLite database), runs `safe-updater update ASSET --wait --json` as a
subprocess against it (a Docker asset of the test bed, 1.0.0 -> 1.1.0: a minor update that needs
alice's approval), and takes the server away while the run is paused:

- killed with SIGKILL, started again, then stopped with SIGTERM and started again (same port,
  same database): the paused run is still there; `safe-updater approve RUN_ID` resumes it, it
  applies and verifies 1.1.0, and alice is in the audit chain as the approver;
- down for longer than the paused run's polling tolerates (the Prefect client's retries,
  PREFECT_CLIENT_MAX_RETRIES, set low here to keep the test short): the run ends with a clear
  message naming the server, and the request is closed as a defined outcome that
  `safe-updater history` shows: `awaiting_approval`, so `safe-updater approve ASSET` applies it
  once the server is back (docs/runbooks/dependency-outage.md).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.docker_scenarios import CLI, DockerScenario, describe
from support.prefect_server_process import PrefectServerProcess, prefect_server_process
from support.testbed import wait_until

pytestmark = pytest.mark.integration

CONFIG = (
    "approvals:\n  poll_interval: 1s\n"
    "policy:\n  default:\n    minor: approve\n    approval:\n      approvers: [alice]\n"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrefectServerProcess]:
    with prefect_server_process(tmp_path / "prefect") as started:
        yield started


def cli_env(scenario: DockerScenario, server: PrefectServerProcess, **extra: str) -> dict[str, str]:
    env = server.client_env()
    env = {k: v for k, v in env.items() if not k.startswith("SAFE_UPDATER_")}
    env.update(
        {
            "SAFE_UPDATER_CONFIG": str(scenario.config_path),
            "SAFE_UPDATER_HOME": str(scenario.home),
            "SAFE_UPDATER_ACTOR": "dave",
            **extra,
        }
    )
    return env


def cli(
    scenario: DockerScenario, server: PrefectServerProcess, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        env=cli_env(scenario, server, **extra),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class Waiting:
    """`safe-updater update ASSET --wait --json` running in the background."""

    def __init__(
        self, scenario: DockerScenario, server: PrefectServerProcess, tmp_path: Path, **extra: str
    ) -> None:
        self.out = tmp_path / "update.out"
        self.err = tmp_path / "update.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [CLI, "update", scenario.asset_id, "--wait", "--yes", "--json"],
                env=cli_env(scenario, server, **extra),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def finish(self, timeout: float = 240) -> tuple[int, str, str]:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"the update did not end: {self.err.read_text()[-3000:]}"
            ) from None
        return code, self.out.read_text(), self.err.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def waiting(tmp_path: Path) -> Iterator[Callable[..., Waiting]]:
    started: list[Waiting] = []

    def start(scenario: DockerScenario, server: PrefectServerProcess, **extra: str) -> Waiting:
        started.append(Waiting(scenario, server, tmp_path, **extra))
        return started[-1]

    yield start
    for item in started:
        item.stop()


def paused_run(server: PrefectServerProcess, update: Waiting) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        if update.process.poll() is not None:
            raise AssertionError(f"the update ended before it paused: {update.err.read_text()}")
        runs = [r for r in server.flow_runs("PAUSED") if r["name"].startswith("update ")]
        return runs[0] if runs else None

    found: dict[str, Any] = wait_until(find, timeout=120, interval=0.5, what="a paused update run")
    return found


def audit_records(scenario: DockerScenario, event: str) -> list[Any]:
    with scenario.store() as store:
        return [r for r in store.audit.export() if r.event == event]


def test_paused_run_survives_prefect_server_restarts_and_applies_after_approval(
    scenario: Callable[..., DockerScenario],
    server: PrefectServerProcess,
    waiting: Callable[..., Waiting],
) -> None:
    s = scenario(["1.0.0", "1.1.0"], config=CONFIG)
    s.start("1.0.0")
    update = waiting(s, server)
    run = paused_run(server, update)

    for sig in (signal.SIGKILL, signal.SIGTERM):
        pid = server.pid
        code = server.kill(sig)
        assert code != 0 or sig == signal.SIGTERM, code
        assert not server.healthy()
        time.sleep(3)  # the paused run polls a dead server for a while
        server.start()
        assert server.pid != pid
        # Same port and database: the run is still paused there, with its input form.
        state = server.flow_run(run["id"])["state"]
        assert state["type"] == "PAUSED", state
        assert update.process.poll() is None, update.err.read_text()

    approved = cli(s, server, "approve", run["id"], "--as", "alice", "--reason", "after restart")
    assert approved.returncode == 0, describe(approved)
    code, out, err = update.finish()
    assert code == 0, f"exit {code}\n{out}\n{err[-3000:]}"
    result = json.loads(out)
    assert (result["outcome"], result["to"]) == ("updated", "1.1.0"), result
    assert result["flow_run_id"] == run["id"]
    s.assert_serving("1.1.0")
    wait_until(
        lambda: server.flow_run(run["id"])["state"]["type"] == "COMPLETED",
        timeout=60,
        what="the resumed run completed on the restarted server",
    )

    [approval] = audit_records(s, "approval.approved")
    assert (approval.actor, approval.data["reason"]) == ("alice", "after restart")
    [started] = audit_records(s, "update.started")
    assert started.data["approvers"] == ["alice"] and started.data["flow_run_id"] == run["id"]
    verify = cli(s, server, "audit", "verify", "--json")
    assert verify.returncode == 0, describe(verify)


def test_server_down_longer_than_the_wait_tolerates_ends_as_awaiting_approval(
    scenario: Callable[..., DockerScenario],
    server: PrefectServerProcess,
    waiting: Callable[..., Waiting],
) -> None:
    s = scenario(["1.0.0", "1.1.0"], config=CONFIG)
    s.start("1.0.0")
    # Two retries (about 2 + 4 s with jitter) instead of five (about a minute).
    update = waiting(s, server, PREFECT_CLIENT_MAX_RETRIES="2")
    paused_run(server, update)
    server.kill(signal.SIGKILL)

    code, out, err = update.finish(timeout=180)
    # It gave up while the server was still away, with one line that says what happened.
    assert not server.healthy()
    assert code == 1, f"exit {code}\n{out}\n{err[-3000:]}"
    # (Prefect's own background workers also complain on stderr that the API is gone.)
    assert "Traceback" not in err, err[-3000:]
    [line] = [x for x in err.splitlines() if x.startswith("error: ")] or [err[-3000:]]
    assert line.startswith("error: the Prefect server at " + server.api_url), line
    for words in (
        "stopped answering while this run waited for approval",
        "nothing was applied",
        f"safe-updater approve {s.asset_id}",
        "history",
    ):
        assert words in line, line
    s.assert_serving("1.0.0")

    # A defined outcome in our own store, readable without the Prefect server.
    history = cli(s, server, "history", s.asset_id, "--json")
    assert history.returncode == 0, describe(history)
    [row] = json.loads(history.stdout)
    assert (row["outcome"], row["to"]) == ("awaiting_approval", "1.1.0"), row
    assert "stopped answering" in row["reason"], row
    [requested] = audit_records(s, "approval.requested")
    assert requested.data["to"] == "1.1.0", requested

    # Once the server is back, the kept request is approved by asset and applied.
    server.start()
    approved = cli(s, server, "approve", s.asset_id, "--as", "alice", "--json")
    assert approved.returncode == 0, describe(approved)
    result = json.loads(approved.stdout)
    assert (result["outcome"], result["to"]) == ("updated", "1.1.0"), result
    s.assert_serving("1.1.0")
    [approval] = audit_records(s, "approval.approved")
    assert approval.actor == "alice"
    verify = cli(s, server, "audit", "verify", "--json")
    assert verify.returncode == 0, describe(verify)
