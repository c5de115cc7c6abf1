"""The test-bed Docker daemon is restarted (`testbed/restart docker`: stop by PID, start again
with the same socket and data-root, live-restore off) in the middle of a real update.

A real user sees what Docker does on such a restart: every container is stopped; those with a
restart policy (`unless-stopped` here, what a self-hoster sets) are started again, the others
stay stopped. Each case must end in a defined outcome with a clear message, leave exactly one
container of the asset running, no open journal row, and an audit chain that verifies.

Needs `testbed/up docker registry` and the session's Prefect server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from safe_updater.adapters.docker_engine import DockerSdkEngine
from safe_updater.flows.update_asset import update_asset
from support.docker_scenarios import DockerScenario, private_repo
from support.fault_proxy import FaultProxy
from support.testbed import RegistryInfo, restart_part, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server", "docker_back")]

Scenario = Callable[..., DockerScenario]
OLD, GOOD = "1.0.0", "1.0.1"


def dockerd_pid(testbed_env: Mapping[str, str]) -> int:
    return int((Path(testbed_env["TESTBED_DIR"]) / "docker" / "dockerd.pid").read_text())


def engine_answers(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


class Background:
    """Runs `action` in a thread; `join()` re-raises what it raised."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            try:
                action()
            except BaseException as exc:  # re-raised in join()
                self._error = exc

        self._thread = threading.Thread(target=run, name="fault", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 180.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the fault thread did not finish"
        if self._error is not None:
            raise self._error


@pytest.fixture
def restarted(testbed_env: dict[str, str]) -> Iterator[Callable[[], None]]:
    """`check()` asserts that dockerd really was restarted during the test."""
    before = dockerd_pid(testbed_env)

    def check() -> None:
        assert dockerd_pid(testbed_env) != before, "dockerd was not restarted"

    yield check


def task_runs(flow_run_id: str) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {t.name: t for t in runs}


def assert_whole(s: DockerScenario, version: str) -> None:
    """One container of the asset, serving `version`; journal closed; audit chain intact."""
    s.assert_serving(version)
    with s.store() as store:
        assert store.journal.find_open(s.asset_id) == []
        assert store.audit.verify().ok


def test_restart_while_the_new_image_is_pulled_is_retried_and_the_update_completes(
    scenario: Scenario,
    registry: RegistryInfo,
    restarted: Callable[[], None],
) -> None:
    with FaultProxy(registry.url) as proxy:
        # The daemon pulls through the proxy (127.0.0.1 registries are insecure by default), so
        # the pull can be held in flight: the new image's config blob is answered after 5 s.
        via_proxy = RegistryInfo(host=proxy.host, url=proxy_url(proxy))
        # Images of their own (a nonce label): a config blob the daemon already has from
        # another test would not be fetched, and the pull could not be held.
        repo, nonce = private_repo(), uuid.uuid4().hex
        for tag in (OLD, GOOD):
            via_proxy.publish_demo(repo, tag, labels={"test.nonce": nonce})
        s = scenario(registry=via_proxy, repo=repo)
        s.start(OLD, restart_policy="unless-stopped")
        held = proxy.delay(r"/blobs/sha256:", seconds=5)

        def restart_mid_pull() -> None:
            wait_until(lambda: held.times == 0, timeout=120, what="the pull reached the blob")
            restart_part("docker")

        fault = Background(restart_mid_pull)
        with s.runtime():
            result = update_asset(s.asset_id, approval="defer")
        fault.join()

    restarted()
    assert result["outcome"] == "updated", result
    preflight = task_runs(result["flow_run_id"])[f"preflight {s.asset_id} -> {GOOD}"]
    # The cut-off pull failed as "engine unavailable" (transient) and the retry pulled it.
    assert preflight.run_count >= 2, preflight
    assert_whole(s, GOOD)


def test_restart_right_after_the_new_container_is_created_rolls_back_cleanly(
    scenario: Scenario,
    docker_client: Any,
    restarted: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = scenario([OLD, GOOD])
    s.start(OLD, restart_policy="unless-stopped")
    real_create = DockerSdkEngine.create_container
    faults: list[Background] = []

    def create_then_lose_the_daemon(
        self: DockerSdkEngine, name: str, image: str, config: Mapping[str, Any]
    ) -> str:
        created = real_create(self, name, image, config)
        if not faults:
            faults.append(Background(lambda: restart_part("docker")))
            # Return only once the daemon is gone: the next engine call of apply meets it down.
            wait_until(lambda: not engine_answers(docker_client), timeout=60, what="dockerd down")
        return created

    monkeypatch.setattr(DockerSdkEngine, "create_container", create_then_lose_the_daemon)
    with s.runtime():
        result = update_asset(s.asset_id, approval="defer")
        faults[0].join()
        restarted()
        monkeypatch.setattr(DockerSdkEngine, "create_container", real_create)

        assert result["outcome"] == "rolled_back", result
        why = " ".join(result["reasons"])
        assert "apply failed: Docker engine unavailable" in why, why
        assert f"{OLD} is serving" in why, why
        assert_whole(s, OLD)
        with s.store() as store:
            # Not the version's fault: nothing is quarantined, the next run may take it.
            assert store.quarantine.versions(s.asset_id) == set()

        again = update_asset(s.asset_id, approval="defer")

    assert again["outcome"] == "updated", again
    assert_whole(s, GOOD)


@pytest.mark.parametrize("policy", ["unless-stopped", None], ids=["restart-policy", "no-policy"])
def test_restart_mid_verify(
    scenario: Scenario, restarted: Callable[[], None], policy: str | None
) -> None:
    # A window long enough that the restart (about 2 s) falls inside it.
    s = scenario([OLD, GOOD], window="12s")
    s.start(OLD, restart_policy=policy)

    def restart_once_the_new_version_serves() -> None:
        wait_until(lambda: s.version() == GOOD, timeout=120, what=f"{GOOD} serving")
        restart_part("docker")

    fault = Background(restart_once_the_new_version_serves)
    with s.runtime():
        result = update_asset(s.asset_id, approval="defer")
    fault.join()
    restarted()

    why = " ".join(result["reasons"])
    # When a health round met the engine away, the version was judged over a new window (a
    # restart that falls between two rounds is not seen at all: then nothing is noted).
    if "unavailable" in why:
        assert "judged over a new window after the container engine was unavailable" in why, why
    if policy is not None:
        # Docker started the new container again: a full window of passes, so it is kept.
        assert result["outcome"] == "updated", result
        assert_whole(s, GOOD)
    else:
        # Without a restart policy Docker leaves the new container stopped, as it would any
        # of the user's containers: that fails verification, and the old version comes back.
        assert result["outcome"] == "rolled_back", result
        assert "exited" in why, why
        assert_whole(s, OLD)
        with s.store() as store:
            quarantined = store.quarantine.versions(s.asset_id)
        if "unavailable" in why:
            # The restart, not the version, stopped it: rolled back but not barred.
            assert "not quarantined" in why, why
            assert quarantined == set(), quarantined
        else:
            assert quarantined == {GOOD}, quarantined


def proxy_url(proxy: FaultProxy) -> str:
    return f"http://{proxy.host}"
