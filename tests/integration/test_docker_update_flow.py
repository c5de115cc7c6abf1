"""The Docker path end to end with real parts: the test-bed Docker engine and registries, the
session's Prefect server, the runtime the CLI builds from a config file (`wiring.build_runtime`),
and a SQLite state store. Nothing is faked: containers are recreated, probed over HTTP and rolled
back for real.

Needs `testbed/up docker registry`.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import resume_flow_run
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName
from prefect.client.schemas.objects import StateType

from safe_updater.adapters.errors import RegistryAuthError
from safe_updater.adapters.registry import OciRegistry
from safe_updater.domain.assets import ImageRef
from safe_updater.domain.journal import Outcome, Phase
from safe_updater.flows.approve_asset import decide_waiting_update
from safe_updater.flows.update_asset import update_asset
from safe_updater.runtime import use_runtime
from support.docker_scenarios import DockerScenario, describe
from support.fault_proxy import FaultProxy
from support.testbed import RegistryInfo

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

Scenario = Callable[..., DockerScenario]
GOOD_TAGS = ["1.0.0", "1.0.1", "1.1.0", "2.0.0"]


def last_attempt(s: DockerScenario) -> Any:
    with s.store() as store:
        return store.journal.history(s.asset_id, limit=1)[0]


def audit_ok(s: DockerScenario) -> bool:
    with s.store() as store:
        return bool(store.audit.verify().ok)


def quarantined(s: DockerScenario) -> set[str]:
    with s.store() as store:
        return set(store.quarantine.versions(s.asset_id))


# --- 1. a good patch update ----------------------------------------------------------------------


def test_good_patch_update_keeps_user_settings_and_removes_old_container(
    scenario: Scenario,
) -> None:
    s = scenario(GOOD_TAGS)
    old = s.start(
        "1.0.0",
        environment={"GREETING": "hello"},
        labels={"team": "blue"},
    )
    old_id = old.container.id

    with s.runtime():
        result = update_asset(s.asset_id, approval="defer")

    assert result["outcome"] == "updated", result
    assert (result["from"], result["to"], result["change_type"]) == ("1.0.0", "1.0.1", "patch")
    assert result["flow_run_id"]
    s.assert_serving("1.0.1")
    new = s.containers()[s.name]
    # What the user set survives; the old image's own values do not freeze into the new one.
    assert "GREETING=hello" in new["env"] and f"PORT={s.port}" in new["env"]
    assert "APP_VERSION=1.0.1" in new["env"] and "APP_VERSION=1.0.0" not in new["env"]
    assert new["labels"]["team"] == "blue"
    assert new["labels"]["safe-updater.io/enabled"] == "true"
    assert new["labels"]["org.opencontainers.image.version"] == "1.0.1"
    assert new["host_config"]["NetworkMode"] == "host"
    # The old container is gone after the commit.
    assert old_id not in {c.id for c in s.docker.containers.list(all=True)}

    attempt = last_attempt(s)
    assert attempt.outcome is Outcome.UPDATED and attempt.phase is Phase.CLOSED
    assert attempt.snapshot["snapshot"]["version"] == "1.0.0"
    assert quarantined(s) == set()
    assert audit_ok(s)


# --- 2. bad health -> rollback -> quarantine -> next good version --------------------------------


def test_bad_health_rolls_back_quarantines_and_next_run_takes_next_version(
    scenario: Scenario,
) -> None:
    s = scenario(["1.0.0", "1.0.1", "1.0.2"])
    s.start("1.0.0")

    with s.runtime():
        first = update_asset(s.asset_id, approval="defer")
        assert first["outcome"] == "rolled_back", first
        assert first["to"] == "1.0.2"
        s.assert_serving("1.0.0")
        assert quarantined(s) == {"1.0.2"}
        assert last_attempt(s).outcome is Outcome.ROLLED_BACK

        second = update_asset(s.asset_id, approval="defer")

    assert second["outcome"] == "updated", second
    assert second["to"] == "1.0.1"
    s.assert_serving("1.0.1")
    with s.store() as store:
        outcomes = [a.outcome for a in store.journal.history(s.asset_id)]
        assert outcomes == [Outcome.UPDATED, Outcome.ROLLED_BACK]
        assert [e.version for e in store.quarantine.list(s.asset_id)] == ["1.0.2"]
        events = [r.event for r in store.audit.export()]
        assert "quarantine.added" in events and "update.rolled_back" in events
        assert store.audit.verify().ok


# --- 3. an image that exits on start -------------------------------------------------------------


def test_image_that_exits_on_start_is_rolled_back_and_quarantined(scenario: Scenario) -> None:
    s = scenario(["1.0.0", "1.2.0"], config="policy:\n  default:\n    minor: auto\n")
    s.start("1.0.0")

    with s.runtime():
        result = update_asset(s.asset_id, approval="defer")

    assert result["outcome"] == "rolled_back", result
    assert (result["to"], result["change_type"]) == ("1.2.0", "minor")
    assert "failed verification" in " ".join(result["reasons"])
    s.assert_serving("1.0.0")
    assert quarantined(s) == {"1.2.0"}
    assert last_attempt(s).outcome is Outcome.ROLLED_BACK
    assert audit_ok(s)


# --- 4. the tag disappears between detection and pull --------------------------------------------


def test_pull_failure_changes_nothing(scenario: Scenario) -> None:
    s = scenario(["1.0.0", "1.0.1"])
    old = s.start("1.0.0")

    with s.runtime() as runtime:
        # Detection sees 1.0.1 (and caches the tag list), then the tag is deleted.
        assert "1.0.1" in runtime.registry.list_tags(ImageRef.parse(s.image("1.0.0")))
        s.registry.delete_tag("1.0.1", s.repo)
        result = update_asset(s.asset_id, approval="defer")

    assert result["outcome"] == "failed", result
    assert result["to"] == "1.0.1"
    assert "nothing was changed" in " ".join(result["reasons"])
    s.assert_serving("1.0.0")
    assert s.containers()[s.name]["status"] == "running"
    assert s.docker.containers.get(s.name).id == old.container.id
    attempt = last_attempt(s)
    assert attempt.outcome is Outcome.FAILED and attempt.phase is Phase.CLOSED
    assert quarantined(s) == set()
    assert audit_ok(s)


# --- 5. registry authentication ------------------------------------------------------------------


def test_auth_registry_with_docker_config_credentials(
    scenario: Scenario, auth_registry: RegistryInfo
) -> None:
    s = scenario(["1.0.0", "1.0.1"], registry=auth_registry)
    s.start("1.0.0")

    with s.runtime():
        result = update_asset(s.asset_id, approval="defer")

    assert result["outcome"] == "updated", result
    s.assert_serving("1.0.1")
    assert audit_ok(s)


def test_auth_registry_with_credentials_block(
    scenario: Scenario,
    auth_registry: RegistryInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from safe_updater.blocks.registry_credentials import RegistryCredentials

    s = scenario(["1.0.0", "1.0.1"], registry=auth_registry)
    s.start("1.0.0")
    empty = tmp_path / "empty-docker-config"
    empty.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(empty))

    # Without credentials the registry refuses, and nothing changes.
    with s.runtime(), pytest.raises(RegistryAuthError):
        update_asset(s.asset_id, approval="defer")
    s.assert_serving("1.0.0")

    block_name = f"it-{uuid.uuid4().hex[:10]}"
    assert auth_registry.username and auth_registry.password
    RegistryCredentials(
        registry=auth_registry.host,
        username=auth_registry.username,
        password=auth_registry.password,
    ).save(block_name, overwrite=True)
    s.write_config(
        f"registries:\n  - host: {auth_registry.host}\n    credentials_block: {block_name}\n"
    )
    with s.runtime():
        result = update_asset(s.asset_id, approval="defer")

    assert result["outcome"] == "updated", result
    s.assert_serving("1.0.1")
    assert audit_ok(s)


# --- 6. 429 and 5xx from the registry ------------------------------------------------------------


class _ToProxy(httpx.HTTPTransport):
    """Sends every registry request to the fault proxy (which relays to the real registry)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._port = port

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(host="127.0.0.1", port=self._port)
        return super().handle_request(request)


@pytest.fixture
def fault_proxy(registry: RegistryInfo) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as proxy:
        yield proxy


def test_registry_429_and_503_are_retried_and_the_update_succeeds(
    scenario: Scenario, fault_proxy: FaultProxy
) -> None:
    s = scenario(["1.0.0", "1.0.1"])
    s.start("1.0.0")
    # Two 429s: the adapter waits out the first Retry-After itself, the second fails the task;
    # then a 503 fails the task's first retry; the second retry gets the real answer.
    fault_proxy.rate_limit(r"/tags/list", times=2, retry_after="1")
    fault_proxy.fail(r"/tags/list", status=503, times=1)

    with s.runtime() as built:
        proxied = OciRegistry(transport=_ToProxy(fault_proxy.port))
        try:
            with use_runtime(dataclasses.replace(built, registry=proxied)):
                result = update_asset(s.asset_id, approval="defer")
        finally:
            proxied.close()

    assert result["outcome"] == "updated", result
    s.assert_serving("1.0.1")
    assert fault_proxy.count(r"/tags/list", injected=True) == 3
    assert fault_proxy.count(r"/tags/list", injected=False) >= 1
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[result["flow_run_id"]]))
        )
    [fetch] = [t for t in task_runs if "fetch_candidates" in t.task_key]
    assert fetch.run_count == 3, fetch
    assert fetch.state is not None and fetch.state.type is StateType.COMPLETED


# --- 7. approvals on the real path ---------------------------------------------------------------


def test_deferred_minor_update_approved_then_applied(scenario: Scenario) -> None:
    s = scenario(["1.0.1", "1.1.0"])
    s.start("1.0.1")

    with s.runtime():
        waiting = update_asset(s.asset_id, approval="defer")
        assert waiting["outcome"] == "awaiting_approval", waiting
        assert waiting["to"] == "1.1.0"
        s.assert_serving("1.0.1")
        result = decide_waiting_update(s.asset_id, approve=True, approver="alice", reason="ok")

    assert result["outcome"] == "updated", result
    s.assert_serving("1.1.0")
    with s.store() as store:
        events = [r.event for r in store.audit.export()]
        assert "approval.requested" in events and "approval.approved" in events
        assert store.audit.verify().ok


def test_deferred_minor_update_rejected_changes_nothing(scenario: Scenario) -> None:
    s = scenario(["1.0.1", "1.1.0"])
    s.start("1.0.1")

    with s.runtime():
        update_asset(s.asset_id, approval="defer")
        result = decide_waiting_update(s.asset_id, approve=False, approver="bob", reason="no")

    assert result["outcome"] == "rejected", result
    s.assert_serving("1.0.1")
    assert last_attempt(s).outcome is Outcome.REJECTED
    assert audit_ok(s)


def _run_in_thread(**kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = update_asset(**kwargs)
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _paused_run_id(asset_id: str, timeout: float = 120) -> Any:
    end = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"update {asset_id}"]))
            )
            for run in runs:
                if run.state and run.state.type is StateType.PAUSED:
                    return run.id
            time.sleep(0.3)
    raise AssertionError(f"no run of {asset_id} paused for approval")


def test_paused_run_approved_from_outside_applies_the_update(scenario: Scenario) -> None:
    s = scenario(["1.0.1", "1.1.0"], config="approvals:\n  poll_interval: 1s\n")
    s.start("1.0.1")

    with s.runtime():
        thread, box = _run_in_thread(asset_id=s.asset_id, approval="pause")
        run_id = _paused_run_id(s.asset_id)
        s.assert_serving("1.0.1")  # nothing happens while it waits
        resume_flow_run(run_id, run_input={"approve": True, "approver": "carol", "reason": "go"})
        thread.join(180)

    assert not thread.is_alive()
    assert "error" not in box, box.get("error")
    assert box["result"]["outcome"] == "updated", box["result"]
    s.assert_serving("1.1.0")
    assert audit_ok(s)


def test_paused_approval_expires_and_changes_nothing(scenario: Scenario) -> None:
    s = scenario(
        ["1.0.1", "1.1.0"],
        config="approvals:\n  poll_interval: 1s\npolicy:\n  default:\n    approval:\n"
        "      deadline: 2s\n",
    )
    s.start("1.0.1")

    with s.runtime():
        thread, _ = _run_in_thread(asset_id=s.asset_id, approval="pause")
        thread.join(180)

    assert not thread.is_alive()
    s.assert_serving("1.0.1")
    assert last_attempt(s).outcome is Outcome.EXPIRED
    assert audit_ok(s)


# --- 8. audit verify detects an edited record ----------------------------------------------------


def test_audit_verify_cli_detects_an_edited_record(scenario: Scenario) -> None:
    s = scenario(["1.0.0", "1.0.1"])
    s.start("1.0.0")
    with s.runtime():
        assert update_asset(s.asset_id, approval="defer")["outcome"] == "updated"

    clean = s.cli("audit", "verify", "--json")
    assert clean.returncode == 0, describe(clean)
    assert json.loads(clean.stdout)["ok"] is True

    with sqlite3.connect(s.state_path) as db:
        seq, data = db.execute(
            "SELECT seq, data FROM audit_log WHERE event = 'update.started'"
        ).fetchone()
        edited = json.loads(data)
        edited["to"] = "6.6.6"
        db.execute("UPDATE audit_log SET data = ? WHERE seq = ?", (json.dumps(edited), seq))

    broken = s.cli("audit", "verify", "--json")
    assert broken.returncode == 1, describe(broken)
    report = json.loads(broken.stdout)
    assert report["ok"] is False
    assert report["first_bad_seq"] == seq
