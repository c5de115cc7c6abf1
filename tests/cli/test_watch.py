"""`safe-updater watch`: the loop and its board with a fake cycle (clock, sleep and Ctrl-C real
signals), and end to end (`watch --once --dry-run`) on the test bed's Docker engine."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from safe_updater.cli.app import ExitCode
from safe_updater.cli.watch_cmds import clock_time, run_watch
from safe_updater.domain.errors import ConfigError, TransientError
from support.testbed import RegistryInfo, free_port, run_demo_container

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXECUTABLE = Path(sys.executable).with_name("safe-updater")


def row(asset: str, action: str, outcome: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "asset": asset,
        "group": extra.get("group", "web"),
        "wave": "canary",
        "current": extra.get("current", "1.0.0"),
        "target": extra.get("target", "1.0.1"),
        "change_type": extra.get("change_type", "patch"),
        "action": action,
        "outcome": outcome,
        "reasons": "",
        "flow_run_id": None,
    }


def fleet(
    *assets: dict[str, Any], dry_run: bool = False, halted: str | None = None
) -> dict[str, Any]:
    return {"dry_run": dry_run, "halted": halted, "waves": [], "assets": list(assets)}


class Clock:
    """The loop's clock; the fake sleep moves it, and a cycle takes `cycle_seconds`."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


def log_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False, color_system=None), out


class Script:
    """A fake cycle: returns the next result (or raises it), recording when it ran."""

    def __init__(self, clock: Clock, *steps: Any, seconds: float = 20) -> None:
        self.clock = clock
        self.steps = list(steps)
        self.started: list[datetime] = []
        self.seconds = seconds

    def __call__(self) -> Mapping[str, Any]:
        self.started.append(self.clock.now)
        step = self.steps.pop(0)
        if callable(step):
            step = step()
        self.clock.now += timedelta(seconds=self.seconds)
        if isinstance(step, BaseException):
            raise step
        result: Mapping[str, Any] = step
        return result


def ctrl_c() -> None:
    """What the terminal does on Ctrl-C: SIGINT to this (main) thread."""
    signal.raise_signal(signal.SIGINT)


@pytest.fixture(autouse=True)
def _sigint_restored() -> Iterator[None]:
    before = signal.getsignal(signal.SIGINT)
    yield
    assert signal.getsignal(signal.SIGINT) is before, "watch must restore the SIGINT handler"


def test_once_prints_the_table_and_the_runs_summary() -> None:
    clock = Clock()
    cycle = Script(
        clock,
        fleet(
            row("docker:local/web", "update", "updated"),
            row("docker:local/api", "approve", "awaiting_approval", change_type="minor"),
            row("k8s:kind/default/Deployment/db", "no update", None, target=""),
        ),
    )
    console, out = log_console()
    code = run_watch(cycle, interval=timedelta(minutes=5), once=True, console=console, now=clock)
    text = out.getvalue()
    assert code is ExitCode.OK
    assert (
        f"last run {clock_time(T0)} (20s): 3 assets: 1 awaiting_approval, 1 no update, 1 updated"
        in text
    )
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    web = [c.strip() for c in lines["docker:local/web"].split("│")[1:-1]]
    assert web == [
        "docker:local/web",
        "web",
        "1.0.0",
        "1.0.1",
        "patch",
        "update → updated",
        f"{clock_time(T0 + timedelta(seconds=20))} updated",
    ]
    db = [c.strip() for c in lines["k8s:kind/default/Deployment/db"].split("│")[1:-1]]
    assert db[5:] == ["no update", ""]
    assert "approve → awaiting_approval" in lines["docker:local/api"]


@pytest.mark.parametrize(
    ("outcome", "halted", "code"),
    [
        ("rolled_back", None, ExitCode.ROLLED_BACK),
        ("failed", None, ExitCode.FAILURE),
        ("updated", "canary wave canary: 1 of 1 updates failed", ExitCode.FAILURE),
        ("awaiting_approval", None, ExitCode.OK),
    ],
)
def test_once_exit_code_follows_the_run(outcome: str, halted: str | None, code: ExitCode) -> None:
    clock = Clock()
    cycle = Script(clock, fleet(row("docker:local/web", "update", outcome), halted=halted))
    console, out = log_console()
    assert (
        run_watch(cycle, interval=timedelta(minutes=5), once=True, console=console, now=clock)
        is code
    )
    if halted:
        assert f"halted: {halted}" in out.getvalue()


def test_runs_every_interval_keeps_last_results_and_ctrl_c_while_waiting_stops() -> None:
    clock = Clock()

    def third_wait_interrupted(seconds: float) -> None:
        clock.sleep(seconds)
        if len(cycle.started) == 3 and clock.now >= T0 + timedelta(minutes=10, seconds=30):
            ctrl_c()

    cycle = Script(
        clock,
        fleet(row("docker:local/web", "update", "updated")),
        TransientError("registry 127.0.0.1:5000 answered 503"),
        fleet(row("docker:local/web", "no update", None, current="1.0.1", target="")),
    )
    console, out = log_console()
    code = run_watch(
        cycle,
        interval=timedelta(minutes=5),
        console=console,
        now=clock,
        sleep=third_wait_interrupted,
    )
    text = out.getvalue()
    assert code is ExitCode.OK
    # Every 5 minutes from the first start, whatever a run took.
    assert cycle.started == [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)]
    assert max(clock.sleeps) <= 1.0  # the countdown is redrawn every second
    assert f"next run {clock_time(T0 + timedelta(minutes=5))} (in 4m40s)" in text
    assert "failed: registry 127.0.0.1:5000 answered 503" in text  # run 2, and the loop went on
    # Run 3 planned nothing for web; its last result is still run 1's update.
    last = [line for line in text.splitlines() if "docker:local/web" in line][-1]
    assert "│ no update " in last and f"{clock_time(T0 + timedelta(seconds=20))} updated" in last
    assert (
        text.rstrip()
        .splitlines()[-1]
        .endswith(
            "stopped (Ctrl-C) · last run "
            f"{clock_time(T0 + timedelta(minutes=10))} (20s): 1 assets: 1 no update"
        )
    )


def test_first_ctrl_c_during_a_run_lets_it_finish_then_stops() -> None:
    clock = Clock()

    def interrupted_once() -> dict[str, Any]:
        ctrl_c()  # the run goes on: updates in flight finish
        return fleet(row("docker:local/web", "update", "updated"))

    cycle = Script(clock, interrupted_once, fleet())
    console, out = log_console()
    code = run_watch(
        cycle, interval=timedelta(minutes=5), console=console, now=clock, sleep=clock.sleep
    )
    assert code is ExitCode.OK and len(cycle.started) == 1 and clock.sleeps == []
    text = out.getvalue()
    assert "stopped after the run (Ctrl-C)" in text and "update → updated" in text


def test_second_ctrl_c_aborts_the_run() -> None:
    clock = Clock()
    reached: list[str] = []

    def interrupted_twice() -> dict[str, Any]:
        ctrl_c()
        reached.append("after the first")
        ctrl_c()
        reached.append("after the second")
        return fleet()

    cycle = Script(clock, interrupted_twice)
    console, out = log_console()
    code = run_watch(
        cycle, interval=timedelta(minutes=5), console=console, now=clock, sleep=clock.sleep
    )
    assert code is ExitCode.OK and reached == ["after the first"]
    last = out.getvalue().rstrip().splitlines()[-1]
    assert last.startswith(
        "safe-updater watch (every 5m) · aborted the run (Ctrl-C): an interrupted"
    )
    assert "`safe-updater recover`" in last


def test_a_dry_run_is_aborted_by_the_first_ctrl_c() -> None:
    clock = Clock()
    reached: list[str] = []

    def interrupted() -> dict[str, Any]:
        ctrl_c()
        reached.append("went on")
        return fleet(dry_run=True)

    console, out = log_console()
    code = run_watch(
        Script(clock, interrupted),
        interval=timedelta(minutes=5),
        dry_run=True,
        console=console,
        now=clock,
    )
    assert code is ExitCode.OK and reached == []
    assert out.getvalue().rstrip().endswith("(dry run, every 5m) · aborted the run (Ctrl-C)")


def test_a_broken_config_ends_the_watch() -> None:
    clock = Clock()
    broken = ConfigError("targets.docker[0].url: not a URL", source="safe-updater.yaml", line=3)
    cycle = Script(clock, broken, fleet())
    console, _ = log_console()
    with pytest.raises(ConfigError):
        run_watch(
            cycle, interval=timedelta(minutes=5), console=console, now=clock, sleep=clock.sleep
        )
    assert len(cycle.started) == 1


def test_on_a_terminal_the_board_is_live() -> None:
    clock = Clock()
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, color_system=None)
    cycle = Script(clock, fleet(row("docker:local/web", "update", "updated")))
    assert (
        run_watch(cycle, interval=timedelta(minutes=5), once=True, console=console, now=clock)
        is ExitCode.OK
    )
    text = out.getvalue()
    assert "\x1b[?25l" in text  # Live hides the cursor while it redraws
    assert "update → updated" in text and "1 assets: 1 updated" in text


@pytest.mark.parametrize("interval", ["0s", "abc", "500ms"])
def test_bad_interval_is_one_line_exit_2(interval: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(EXECUTABLE), "watch", "--once", "--interval", interval],
        env={**_clean_env(), "SAFE_UPDATER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "--interval" in line and "Traceback" not in result.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SAFE_UPDATER_"))}


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture
def web_container(docker_client: Any, registry: RegistryInfo) -> Iterator[str]:
    """An opted-in demo/web:1.0.0 on the test-bed engine; its asset id."""
    import docker.errors

    name = f"watch-{uuid.uuid4().hex[:8]}"
    port = free_port()
    run_demo_container(
        docker_client,
        registry.image("1.0.0"),
        port=port,
        name=name,
        labels={
            "safe-updater.io/enabled": "true",
            "safe-updater.io/group": "web",
            "safe-updater.io/health.http": f"http://127.0.0.1:{port}/healthz",
        },
    )
    try:
        yield f"docker:local/{name}"
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(name).remove(force=True)


@pytest.mark.integration
def test_watch_once_dry_run_plans_the_test_bed_in_an_embedded_prefect(
    testbed_env: dict[str, str], web_container: str, tmp_path: Path
) -> None:
    """No PREFECT_API_URL: the flows run on Prefect's embedded server in the process."""
    config = tmp_path / "safe-updater.yaml"
    config.write_text(
        "targets:\n"
        f"  docker: [{{name: local, url: {json.dumps(testbed_env['DOCKER_HOST'])}}}]\n"
        f"state:\n  url: {json.dumps('sqlite:///' + str(tmp_path / 'state.db'))}\n"
        "policy:\n  default: {patch: auto, minor: approve, major: skip}\n"
    )
    env = {
        **_clean_env(),
        "SAFE_UPDATER_CONFIG": str(config),
        "SAFE_UPDATER_HOME": str(tmp_path / "home"),
        "DOCKER_HOST": testbed_env["DOCKER_HOST"],
        "COLUMNS": "250",
    }
    if testbed_env.get("DOCKER_CONFIG"):
        env["DOCKER_CONFIG"] = testbed_env["DOCKER_CONFIG"]
    result = subprocess.run(
        [str(EXECUTABLE), "watch", "--once", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    header = result.stdout.splitlines()[0]
    assert header.startswith("safe-updater watch (dry run, every 5m) · last run ")
    assert "planned " in header and "update" in header
    [line] = [line for line in result.stdout.splitlines() if web_container in line]
    cells = [c.strip() for c in line.split("│")[1:-1]]
    # The newest patch the policy allows without a person; nothing was applied.
    assert cells[:3] == [web_container, "web", "1.0.0"]
    assert cells[3].startswith("1.0.") and cells[3] != "1.0.0" and cells[4] == "patch"
    assert cells[5] == "update" and cells[6] == ""
    # The embedded server kept its database under the state dir, not in ~/.prefect.
    assert (tmp_path / "home" / "prefect").is_dir()
