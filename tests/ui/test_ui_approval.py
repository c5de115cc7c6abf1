"""A person approves a paused update in the real Prefect UI (headless Chromium), end to end.

``update_asset`` runs in a thread of this process against a Prefect server with its UI (see
conftest.py), with the stateful fakes of tests/support/fakes.py in place of Docker, and pauses
for approval of a minor update. tests/ui/approve_in_ui.mjs then opens the run's page, opens the
resume form, switches "Approve" on, types the approver and a reason, submits, and takes a
screenshot before and after. Both UIs Prefect 3.9 ships are driven: the classic one (``/``, where
``<PREFECT_UI_URL>/runs/flow-run/<id>`` links land) and the new one (``/v2``, where the home page
redirects).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import resume_flow_run
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings
from ui_support import UiTools

from safe_updater.adapters.store import StateStore
from safe_updater.cli.serve_cmds import LocalServer
from safe_updater.config import parse_config_text
from safe_updater.domain.assets import AssetKind
from safe_updater.domain.journal import Outcome, Phase
from safe_updater.flows.update_asset import update_asset
from safe_updater.runtime import Runtime, use_runtime
from support.fakes import (
    FakeClock,
    FakeHealthPlanner,
    FakeInventory,
    FakeRegistry,
    FakeUpdater,
    FakeWorld,
)

pytestmark = pytest.mark.ui

WEB = "docker:local/web"
ALLOWED_APPROVER = "alice"  # the only name CONFIG accepts
APPROVER = ALLOWED_APPROVER  # the name typed in the UI
REASON = "LGTM, tested in staging"
# Only alice may approve: a name typed into the wrong field, or none, would be refused and the
# run would stay paused, so the test would fail instead of passing by accident.
CONFIG = """
approvals:
  poll_interval: 1s
policy:
  default:
    approval:
      approvers: [alice]
"""
NODE_TIMEOUT = 120.0  # seconds the browser script may take; ~15 on an idle 2-core machine
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class FakeHost:
    """One Docker asset on 1.0.1 whose registry offers 1.1.0 (a minor update: needs approval)."""

    def __init__(self, tmp_path: Path) -> None:
        self.world = FakeWorld(running={WEB: "1.0.1"})
        self.clock = FakeClock()
        self.store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
        self.runtime = Runtime(
            config=parse_config_text(CONFIG),
            store=self.store,
            registry=FakeRegistry(["1.0.0", "1.0.1", "1.1.0"]),
            inventories=[FakeInventory(self.world)],
            updaters={(AssetKind.DOCKER, "local"): FakeUpdater(self.world)},
            health=FakeHealthPlanner(self.world),
            clock=self.clock,
            sleep=self.clock.sleep,
            closers=[self.store.close],
        )


def _start_update(box: dict[str, Any]) -> threading.Thread:
    """``update_asset`` in a thread that sees this thread's Prefect settings (the API URL)."""
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["result"] = context.run(update_asset, asset_id=WEB, approval="pause")
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, name="update-asset", daemon=True)
    thread.start()
    return thread


def _paused_run_id(box: dict[str, Any], deadline: float = 60) -> UUID:
    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    end = time.monotonic() + deadline
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            if "error" in box or "result" in box:
                raise AssertionError(f"update_asset ended before it paused: {box}")
            runs = client.read_flow_runs(
                flow_run_filter=paused, sort=FlowRunSort.START_TIME_DESC, limit=1
            )
            if runs:
                return runs[0].id
            time.sleep(0.3)
    raise AssertionError(f"no run paused for approval within {deadline:.0f} s")


def _approve_in_browser(tools: UiTools, ui_url: str, run_id: UUID, prefix: Path) -> dict[str, Any]:
    """Run the Node script; stop it by PID (SIGTERM lets Playwright close Chromium) on timeout."""
    command = [
        tools.node,
        str(tools.script),
        ui_url,
        str(run_id),
        APPROVER,
        str(prefix),
        "--reason",
        REASON,
        "--expect",
        f"Approve {WEB}: 1.0.1 -> 1.1.0 (minor)?",
        "--timeout",
        str(int(NODE_TIMEOUT)),
    ]
    process = subprocess.Popen(
        command,
        env=tools.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=NODE_TIMEOUT + 30)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        raise AssertionError(f"approve_in_ui.mjs did not finish in time:\n{err}\n{out}") from None
    if process.returncode != 0:
        raise AssertionError(f"approve_in_ui.mjs exited with {process.returncode}:\n{err}{out}")
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return summary


def _reject_quietly(run_id: UUID) -> None:
    with contextlib.suppress(Exception):
        resume_flow_run(
            run_id,
            run_input={"approve": False, "approver": ALLOWED_APPROVER, "reason": "test failed"},
        )


def _assert_png(path: Path) -> None:
    assert path.is_file(), f"no screenshot at {path}"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes: a blank page?"


@pytest.mark.parametrize("ui", ["v1", "v2"])
def test_approve_a_paused_update_in_the_prefect_ui(
    ui: str,
    ui_tools: UiTools,
    prefect_ui_server: LocalServer,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    host = FakeHost(tmp_path)
    ui_url = prefect_ui_server.ui_url.rstrip("/") + ("/v2" if ui == "v2" else "")
    box: dict[str, Any] = {}
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_ui_server.api_url}):
            with use_runtime(host.runtime):
                began = time.monotonic()
                thread = _start_update(box)
                run_id: UUID | None = None
                try:
                    run_id = _paused_run_id(box)
                    paused = time.monotonic()
                    assert host.world.running[WEB] == "1.0.1", "applied before approval"
                    summary = _approve_in_browser(
                        ui_tools, ui_url, run_id, artifacts_dir / f"ui-approval-{ui}"
                    )
                    approved = time.monotonic()
                except BaseException:
                    if run_id is not None:  # don't leave the flow waiting for 24 h
                        _reject_quietly(run_id)
                    raise
                finally:
                    thread.join(60)
                    if thread.is_alive() and run_id is not None:
                        _reject_quietly(run_id)  # e.g. paused again after refused input
                        thread.join(30)
                assert not thread.is_alive(), "update_asset still waits after the UI approved"
                print(
                    f"{ui}: paused after {paused - began:.1f} s, browser {approved - paused:.1f} s"
                    f" (script {summary.get('seconds')} s), flow done "
                    f"{time.monotonic() - approved:.1f} s later; blocked {summary.get('blocked')}; "
                    f"steps {summary.get('timings')}"
                )
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(run_id)

        # The browser did what a person does, on the page we meant.
        assert summary["ok"] is True and summary["ui"] == ui
        assert summary["url"].endswith(f"/runs/flow-run/{run_id}")
        assert summary["state"] == "Completed", summary
        form, resumed = (Path(shot) for shot in summary["screenshots"])
        assert form.name == f"ui-approval-{ui}-1-form.png"
        assert resumed.name == f"ui-approval-{ui}-2-resumed.png"
        _assert_png(form)
        _assert_png(resumed)

        # The flow went on with alice's input: updated, verified, committed.
        assert "error" not in box, box.get("error")
        result = box["result"]
        assert result["outcome"] == Outcome.UPDATED.value, result
        assert (result["from"], result["to"], result["change_type"]) == ("1.0.1", "1.1.0", "minor")
        assert host.world.running[WEB] == "1.1.0"
        assert ("commit", WEB, "1.1.0") in host.world.calls
        assert run.state is not None and run.state.type is StateType.COMPLETED

        # The journal and the audit chain name the approver and the reason typed in the UI.
        [attempt] = host.store.journal.history(WEB)
        assert attempt.outcome is Outcome.UPDATED and attempt.phase is Phase.CLOSED
        assert attempt.flow_run_id == str(run_id)
        records = list(host.store.audit.export())
        approvals = [r for r in records if r.event.startswith("approval.")]
        assert [(r.event, r.actor, r.data.get("reason")) for r in approvals] == [
            ("approval.approved", APPROVER, REASON)
        ]
        [started] = [r for r in records if r.event == "update.started"]
        assert started.data["approvers"] == [APPROVER]
        assert started.data["flow_run_id"] == str(run_id)
        assert host.store.audit.verify().ok
    finally:
        host.runtime.close()


def test_the_browser_script_fails_loudly_on_a_run_that_is_not_paused(
    ui_tools: UiTools, prefect_ui_server: LocalServer, tmp_path: Path
) -> None:
    """No paused run behind the id: exit 1 with the failing step, never a false success."""
    missing = "00000000-0000-4000-8000-000000000000"
    process = subprocess.run(
        [
            ui_tools.node,
            str(ui_tools.script),
            prefect_ui_server.ui_url,
            missing,
            APPROVER,
            str(tmp_path / "missing"),
            "--timeout",
            "10",
        ],
        env=ui_tools.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 1, process
    assert "approve_in_ui: FAILED: wait for the run to show Paused" in process.stderr
    assert "last state seen: none" in process.stderr
    assert process.stdout == ""
    assert (tmp_path / "missing-error.png").is_file()
    assert not os.path.exists(tmp_path / "missing-1-form.png")
