"""A registry password from a `RegistryCredentials` Block never shows up anywhere a person or a
machine can read it: CLI output, Prefect logs, artifacts, events, flow-run parameters and state
messages, the journal and the audit log (the SQLite file as bytes), and the errors of a run
whose credentials the registry refuses.

The canary is the auth registry's real password (random per test bed). Needs `testbed/up docker
registry`.
"""

from __future__ import annotations

import base64
import json
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventFilter, EventNameFilter

from safe_updater.blocks.registry_credentials import RegistryCredentials
from safe_updater.domain.assets import ImageRef
from safe_updater.domain.errors import SafeUpdaterError
from safe_updater.flows.update_asset import update_asset
from support.docker_scenarios import DockerScenario, describe
from support.testbed import RegistryInfo

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

Scenario = Callable[..., DockerScenario]


def _paged(read: Callable[[int], list[Any]], page: int = 200) -> Iterator[Any]:
    offset = 0
    while True:
        batch = read(offset)
        yield from batch
        if len(batch) < page:
            return
        offset += page


def _dump(value: Any) -> str:
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    return json.dumps(value, default=str)


def _where(canaries: Iterable[str], texts: Iterable[tuple[str, str]]) -> list[str]:
    """The places (labels) whose text contains any canary."""
    found = []
    for label, text in texts:
        if any(c in text for c in canaries):
            found.append(label)
    return found


def test_block_password_never_leaks(
    scenario: Scenario,
    auth_registry: RegistryInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert auth_registry.username and auth_registry.password
    password = auth_registry.password
    assert len(password) >= 8, "the canary must be distinctive"
    canaries = [
        password,
        base64.b64encode(f"{auth_registry.username}:{password}".encode()).decode(),
    ]

    good_block = f"it-good-{uuid.uuid4().hex[:8]}"
    bad_block = f"it-bad-{uuid.uuid4().hex[:8]}"
    RegistryCredentials(
        registry=auth_registry.host, username=auth_registry.username, password=password
    ).save(good_block, overwrite=True)
    # The registry refuses this one: right password, wrong user.
    RegistryCredentials(registry=auth_registry.host, username="nobody", password=password).save(
        bad_block, overwrite=True
    )

    s = scenario(["1.0.0", "1.0.1", "1.0.2"], registry=auth_registry)
    s.start("1.0.0")
    empty = tmp_path / "no-docker-login"
    empty.mkdir()
    # Only the Block can log in: no Docker config file with the login.
    monkeypatch.setenv("DOCKER_CONFIG", str(empty))
    cli_env = {"DOCKER_CONFIG": str(empty)}

    def use_block(name: str) -> None:
        s.write_config(
            f"registries:\n  - host: {auth_registry.host}\n    credentials_block: {name}\n"
        )

    outputs: list[tuple[str, str]] = []

    # 1. A full update through the CLI: 1.0.2 fails and is rolled back, then 1.0.1 goes in.
    use_block(good_block)
    first = s.cli("update", s.asset_id, "--yes", "--json", env=cli_env)
    assert first.returncode == 3, describe(first)
    second = s.cli("update", s.asset_id, "--yes", "--json", env=cli_env)
    assert second.returncode == 0, describe(second)
    s.assert_serving("1.0.1")
    run_ids = [json.loads(first.stdout)["flow_run_id"], json.loads(second.stdout)["flow_run_id"]]
    outputs += [("update 1 stdout", first.stdout), ("update 1 stderr", first.stderr)]
    outputs += [("update 2 stdout", second.stdout), ("update 2 stderr", second.stderr)]
    for args in (["history"], ["audit", "export"], ["quarantine", "list"]):
        done = s.cli(*args, *(["--json"] if args != ["audit", "export"] else []), env=cli_env)
        outputs.append((" ".join(args), done.stdout + done.stderr))

    # 2. A run whose credentials the registry refuses: CLI, then in-process errors.
    use_block(bad_block)
    refused = s.cli("update", s.asset_id, "--yes", "--json", env=cli_env)
    assert refused.returncode != 0, describe(refused)
    outputs.append(("refused update output", refused.stdout + refused.stderr))
    refused_verbose = s.cli(
        "update", s.asset_id, "--yes", env={**cli_env, "SAFE_UPDATER_VERBOSE": "1"}
    )
    assert refused_verbose.returncode != 0, describe(refused_verbose)
    outputs.append(("refused verbose output", refused_verbose.stdout + refused_verbose.stderr))

    errors: list[BaseException] = []
    with s.runtime() as runtime:
        with pytest.raises(SafeUpdaterError) as flow_error:
            update_asset(s.asset_id, approval="defer")
        errors.append(flow_error.value)
        asset = runtime.find_asset(s.asset_id)
        with pytest.raises(SafeUpdaterError) as tags_error:
            runtime.registry.list_tags(ImageRef.parse(s.image("1.0.1")))
        errors.append(tags_error.value)
        # The engine's pull with the refused login (Docker's own error text).
        with pytest.raises(Exception) as pull_error:
            runtime.updater_for(asset).preflight(asset, "1.0.2")
        errors.append(pull_error.value)
    for n, error in enumerate(errors):
        outputs.append(
            (f"error {n} ({type(error).__name__})", "".join(traceback.format_exception(error)))
        )
        outputs.append((f"error {n} repr", repr(error) + repr(getattr(error, "__dict__", {}))))
    assert "refused" in str(errors[1]).lower() or "auth" in str(errors[1]).lower(), errors[1]

    # 3. Everything Prefect holds.
    with get_client(sync_client=True) as client:
        runs = list(_paged(lambda off: client.read_flow_runs(limit=200, offset=off)))
        ours = [r for r in runs if s.asset_id in (r.name or "")]
        assert {str(r.id) for r in ours} >= set(run_ids)
        for run in runs:
            outputs.append((f"flow run {run.name} parameters", _dump(run.parameters)))
            outputs.append((f"flow run {run.name} state", _dump(run.state)))
        logs = list(_paged(lambda off: client.read_logs(limit=200, offset=off)))
        our_logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in ours]))
        )
        assert our_logs, "the runs wrote no logs: the check would prove nothing"
        outputs += [(f"log {log.id}", log.message) for log in logs]
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in ours]))
        )
        outputs += [(f"task run {t.name}", _dump(t.state)) for t in task_runs]
        artifacts = list(_paged(lambda off: client.read_artifacts(limit=200, offset=off)))
        assert any(a.flow_run_id in {r.id for r in ours} for a in artifacts)
        outputs += [(f"artifact {a.key}", _dump(a.data) + (a.description or "")) for a in artifacts]
        events: list[Any] = []
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(prefix=["safe-updater.", "prefect.flow-run."])
            ),
            limit=50,
        )
        while True:
            events += page.events
            if not page.next_page:
                break
            page = client.read_events_page(str(page.next_page))
        assert any(e.event.startswith("safe-updater.update.") for e in events)
        outputs += [(f"event {e.event}", e.model_dump_json()) for e in events]

    # 4. The state store: journal rows and audit records, as raw bytes.
    # The database, its WAL and the per-asset lock files (state.db.locks/), as raw bytes.
    for path in sorted(s.workdir.glob("state.db*")):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            outputs.append((f"file {file.name}", file.read_bytes().decode("latin-1")))

    leaks = _where(canaries, outputs)
    assert leaks == [], f"the registry password leaked into: {leaks}"
