"""Per-asset locks die with their holder: a killed process frees the asset at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from safe_updater.adapters.store import StateStore
from safe_updater.domain.errors import ConflictError

ASSET = "docker:local/web"


def _holder(url: str, ready: Path) -> subprocess.Popen[bytes]:
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from safe_updater.adapters.store import StateStore
        store = StateStore.open({url!r})
        with store.locks.hold({ASSET!r}):
            Path({str(ready)!r}).touch()
            time.sleep(600)
        """
    )
    return subprocess.Popen([sys.executable, "-c", code])


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if path.exists():
            return
        assert proc.poll() is None, "the lock holder died early"
        time.sleep(0.1)
    raise AssertionError("the lock holder never took the lock")


def test_a_killed_holder_frees_the_lock(store_url: str, tmp_path: Path) -> None:
    store = StateStore.open(store_url)
    ready = tmp_path / "ready"
    proc = _holder(store_url, ready)
    try:
        _wait_for(ready, proc)
        assert store.locks.is_held(ASSET)
        with (
            pytest.raises(ConflictError, match="being changed by another run"),
            store.locks.hold(ASSET, timeout=0.5),
        ):
            pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        with store.locks.hold(ASSET, timeout=10):
            assert not store.locks.is_held("docker:local/other")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        store.close()


def test_threads_of_one_process_exclude_each_other(store_url: str) -> None:
    store = StateStore.open(store_url)
    try:
        with store.locks.hold(ASSET):
            assert store.locks.is_held(ASSET)
        assert not store.locks.is_held(ASSET)
    finally:
        store.close()
