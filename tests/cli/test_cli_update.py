"""`safe-updater` end to end on the real test bed: the installed executable, as a user runs it.

Real Docker engine and registry (`testbed/up docker registry`), the session's Prefect test server
(`PREFECT_API_URL` in the child's environment, so no call starts its own server), a config file
and a SQLite state store per test. Each test starts its own demo container on a free port on the
host network and removes it (and any `*.safe-updater-prev/-next`) afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.testbed import RegistryInfo, free_port, run_demo_container, wait_for_http

pytestmark = pytest.mark.integration

EXECUTABLE = Path(sys.executable).with_name("safe-updater")
UPDATE_KEYS = {"asset", "outcome", "from", "to", "flow_run_id", "reasons"}


@dataclass
class Web:
    """One opted-in demo container."""

    name: str
    port: int
    client: Any

    @property
    def asset(self) -> str:
        return f"docker:local/{self.name}"

    def version(self) -> str:
        """What the container named `name` serves at /version (waits until it answers)."""
        wait_for_http(f"http://127.0.0.1:{self.port}/version", status=200, timeout=15)
        import httpx

        with httpx.Client(trust_env=False, timeout=2) as http:
            return http.get(f"http://127.0.0.1:{self.port}/version").text.strip()

    def container(self) -> Any:
        return self.client.containers.get(self.name)

    def leftovers(self) -> list[str]:
        names = {c.name for c in self.client.containers.list(all=True)}
        parked = (f"{self.name}.safe-updater-prev", f"{self.name}.safe-updater-next")
        return sorted(n for n in parked if n in names)


@dataclass
class Cli:
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(EXECUTABLE), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, code: int | set[int] = 0) -> Any:
        result = self(*args, "--json")
        codes = {code} if isinstance(code, int) else code
        assert result.returncode in codes, (result.returncode, result.stdout, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture
def cli(prefect_server: None, testbed_env: dict[str, str], tmp_path: Path) -> Cli:
    """The executable with a config file on the test-bed engine and a state store in tmp_path."""
    import prefect.settings

    if not testbed_env.get("DOCKER_HOST") or not testbed_env.get("TESTBED_REGISTRY"):
        pytest.skip("needs the test bed: testbed/up docker registry")
    config = tmp_path / "safe-updater.yaml"
    config.write_text(
        "targets:\n"
        f"  docker: [{{name: local, url: {json.dumps(testbed_env['DOCKER_HOST'])}}}]\n"
        f"state:\n  url: {json.dumps('sqlite:///' + str(tmp_path / 'state.db'))}\n"
        "health: {window: 3s, interval: 500ms}\n"
        "policy:\n  default: {patch: auto, minor: approve, major: skip}\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SAFE_UPDATER_", "PREFECT_"))
    }
    env.update(
        {
            "PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value()),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "SAFE_UPDATER_CONFIG": str(config),
            "SAFE_UPDATER_HOME": str(tmp_path / "home"),
            "SAFE_UPDATER_ACTOR": "cli-test",
            "DOCKER_HOST": testbed_env["DOCKER_HOST"],
            "COLUMNS": "200",
        }
    )
    if testbed_env.get("DOCKER_CONFIG"):
        env["DOCKER_CONFIG"] = testbed_env["DOCKER_CONFIG"]
    return Cli(env)


@pytest.fixture
def web(docker_client: Any, registry: RegistryInfo) -> Iterator[Callable[..., Web]]:
    """Factory: `web("1.0.0", deny="1.0.2")` runs an opted-in demo/web with an HTTP health label."""
    started: list[Web] = []

    def start(tag: str = "1.0.0", **labels: str) -> Web:
        port = free_port()
        name = f"cli-{uuid.uuid4().hex[:8]}"
        all_labels = {
            "safe-updater.io/enabled": "true",
            "safe-updater.io/health.http": f"http://127.0.0.1:{port}/healthz",
            **{f"safe-updater.io/{key}": value for key, value in labels.items()},
        }
        item = Web(name=name, port=port, client=docker_client)
        started.append(item)
        run_demo_container(
            docker_client, registry.image(tag), port=port, name=name, labels=all_labels
        )
        return item

    yield start
    import docker.errors

    for item in started:
        for name in (item.name, f"{item.name}.safe-updater-prev", f"{item.name}.safe-updater-next"):
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.containers.get(name).remove(force=True)


def assert_one_line_error(result: subprocess.CompletedProcess[str], codes: set[int]) -> str:
    assert result.returncode in codes, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


def test_bad_version_rolls_back_then_next_good_one_then_manual_rollback(
    cli: Cli, web: Callable[..., Web]
) -> None:
    app = web("1.0.0")
    # The newest patch, 1.0.2, answers 404 on /healthz: rolled back and quarantined, exit 3.
    first = cli.json("update", app.asset, "--yes", code=3)
    assert set(first) >= UPDATE_KEYS
    assert (first["asset"], first["outcome"], first["from"], first["to"]) == (
        app.asset,
        "rolled_back",
        "1.0.0",
        "1.0.2",
    )
    assert first["flow_run_id"] and any("1.0.2" in r for r in first["reasons"])
    assert app.version() == "1.0.0" and app.leftovers() == []
    quarantined = cli.json("quarantine", "list", app.asset)
    assert [q["version"] for q in quarantined] == ["1.0.2"]

    # The next run takes the next good patch.
    second = cli.json("update", app.asset, "--yes")
    assert (second["outcome"], second["from"], second["to"]) == ("updated", "1.0.0", "1.0.1")
    assert app.version() == "1.0.1" and app.leftovers() == []

    # Nothing newer that may be applied without a person: 1.1.0/1.2.0 need approval.
    # A manual rollback goes back to 1.0.0 and quarantines 1.0.1.
    back = cli.json("rollback", app.asset)
    assert back["asset"] == app.asset and back["to"] == "1.0.0", back
    assert app.version() == "1.0.0" and app.leftovers() == []
    assert {q["version"] for q in cli.json("quarantine", "list", app.asset)} == {"1.0.1", "1.0.2"}

    history = cli.json("history", app.asset)
    assert [h["outcome"] for h in history][-2:] == ["updated", "rolled_back"]
    assert cli("audit", "verify").returncode == 0

    # Nothing is open: recover has nothing to do.
    recover = cli("recover")
    assert recover.returncode == 0, recover.stderr
    assert "nothing to recover" in recover.stdout
    assert cli.json("recover") == []


def test_minor_waits_for_approval_then_approve_applies_it(
    cli: Cli, web: Callable[..., Web]
) -> None:
    app = web("1.0.1", deny="1.0.2,1.2.0")
    waiting = cli.json("update", app.asset, "--yes", code=4)
    assert set(waiting) >= UPDATE_KEYS
    assert (waiting["outcome"], waiting["from"], waiting["to"]) == (
        "awaiting_approval",
        "1.0.1",
        "1.1.0",
    )
    assert app.version() == "1.0.1"

    approved = cli.json("approve", app.asset, "--reason", "tested in staging")
    assert (approved["outcome"], approved["to"]) == ("updated", "1.1.0"), approved
    assert app.version() == "1.1.0" and app.leftovers() == []
    events = [json.loads(line) for line in cli("audit", "export").stdout.splitlines()]
    assert any("approv" in e["event"] and e["actor"] == "cli-test" for e in events), events


def test_reject_changes_nothing(cli: Cli, web: Callable[..., Web]) -> None:
    app = web("1.0.1", deny="1.0.2,1.2.0")
    before = app.container().id
    cli.json("update", app.asset, "--yes", code=4)
    rejected = cli.json("reject", app.asset, "--reason", "not before the release")
    assert rejected["outcome"] == "rejected", rejected
    assert app.container().id == before and app.version() == "1.0.1"
    assert cli.json("history", app.asset)[0]["outcome"] == "rejected"
    # Nothing waits any more.
    again = cli("approve", app.asset)
    assert_one_line_error(again, {1, 2})


def test_dry_run_changes_nothing(cli: Cli, web: Callable[..., Web]) -> None:
    app = web("1.0.0")
    before = app.container().id
    result = cli.json("update", app.asset, "--dry-run")
    assert set(result) >= UPDATE_KEYS
    assert result["from"] == "1.0.0" and result["to"] == "1.0.2", result
    assert result["outcome"] not in {"updated", "rolled_back"}
    container = app.container()
    assert container.id == before and container.status == "running"
    assert app.version() == "1.0.0" and app.leftovers() == []
    assert cli.json("quarantine", "list") == []


def test_scan_lists_the_container_and_list_assets_is_an_alias(
    cli: Cli, web: Callable[..., Web]
) -> None:
    app = web("1.0.0")
    plan = cli.json("scan")
    mine = [row for row in plan if row["asset"] == app.asset]
    assert len(mine) == 1, plan
    assert mine[0]["current"] == "1.0.0" and mine[0]["target"] == "1.0.2"
    assert mine[0]["change_type"] == "patch" and mine[0]["action"] == "auto"

    listed = cli.json("list-assets")
    assert listed == cli.json("assets")
    entry = next(a for a in listed if a["id"] == app.asset)
    assert entry["version"] == "1.0.0" and entry["kind"] == "docker"


def test_bad_input_is_one_line_without_a_traceback(cli: Cli, web: Callable[..., Web]) -> None:
    bad_id = cli("update", "not-an-asset-id", "--yes", "--json")
    line = assert_one_line_error(bad_id, {2})
    assert "is not an asset id" in line and "(fix: " in line
    assert bad_id.stdout == ""

    unknown = cli("update", f"docker:local/no-such-{uuid.uuid4().hex[:8]}", "--yes")
    assert_one_line_error(unknown, {1, 2})

    usage = cli("update", "--to")
    assert assert_one_line_error(usage, {2}).endswith("--help`)")

    nothing_waits = cli("approve", f"docker:local/no-such-{uuid.uuid4().hex[:8]}")
    assert_one_line_error(nothing_waits, {1, 2})
