"""Fixtures for driving the Prefect UI in headless Chromium (docs/ui-approval.md).

`prefect_test_harness` (the session's ``prefect_server``) serves the API without the UI, so the
tests here start their own ``prefect server start`` with the UI, on a free loopback port, through
the same :class:`~safe_updater.cli.serve_cmds.LocalServer` that ``safe-updater serve`` uses, and
stop it by its PID. What the browser needs comes from ``scripts/install-ui-deps``; when part of it
is missing the tests skip and say what to run.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_support import HERE, INSTALL_HINT, UiTools, ui_node_cache

from safe_updater.cli.serve_cmds import LocalServer


@pytest.fixture(scope="session")
def ui_tools() -> UiTools:
    node = shutil.which("node")
    if node is None:
        pytest.skip(f"node is not installed ({INSTALL_HINT})")
    chromium = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        pytest.skip(f"no Chromium at {chromium} ({INSTALL_HINT})")
    node_modules = ui_node_cache() / "node_modules"
    if not (node_modules / "playwright-core" / "package.json").exists():
        pytest.skip(f"playwright-core is not in {node_modules} ({INSTALL_HINT})")
    return UiTools(node, chromium, node_modules, HERE / "approve_in_ui.mjs")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def prefect_ui_server(
    ui_tools: UiTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    """``prefect server start --ui`` on 127.0.0.1:<free port>, SQLite and PREFECT_HOME in a temp
    dir, analytics off (see ``server_environment``); SIGTERM then SIGKILL by PID at the end."""
    home = tmp_path_factory.mktemp("prefect-ui")
    server = LocalServer.start(home, "127.0.0.1", free_loopback_port(), ui=True, timeout=180)
    try:
        yield server
    finally:
        server.stop()
        if server.process.returncode not in (0, -15):
            log = server.log_path.read_text(errors="replace")[-2000:]
            print(f"prefect server exited with {server.process.returncode}; log tail:\n{log}")


@pytest.fixture
def artifacts_dir(tmp_path: Path) -> Path:
    """``$SAFE_UPDATER_TEST_ARTIFACTS/ui-approval`` when set (kept for CI), else ``tmp_path``."""
    base = os.environ.get("SAFE_UPDATER_TEST_ARTIFACTS")
    if not base:
        return tmp_path
    path = Path(base) / "ui-approval"
    path.mkdir(parents=True, exist_ok=True)
    return path
