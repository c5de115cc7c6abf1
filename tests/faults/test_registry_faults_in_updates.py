"""Registry faults during a whole update, through the loopback fault proxy
(tests/support/fault_proxy.py): a registry slower than the client's timeout, a 5xx on the
manifest fetch of the pull at apply time, and a 100,000-tag repository scanned by the update
flow. Each ends in a defined outcome with a clear message, changes nothing it should not, and
the next run succeeds once the fault is gone.

The client-side faults use the product's registry client with a transport that sends every
request to the proxy; the pull-side fault has the Docker daemon itself pull through the proxy
(a 127.0.0.1 registry, which Docker treats as insecure by default).

Needs `testbed/up docker registry` and the session's Prefect server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from safe_updater.adapters.errors import RegistryUnavailableError
from safe_updater.adapters.registry import OciRegistry
from safe_updater.flows.update_asset import update_asset
from safe_updater.runtime import use_runtime
from support.docker_scenarios import DockerScenario
from support.fault_proxy import FaultProxy
from support.testbed import RegistryInfo, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

Scenario = Callable[..., DockerScenario]
OLD, GOOD = "1.0.0", "1.0.1"


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


def run_through_proxy(s: DockerScenario, proxy: FaultProxy, **registry: Any) -> dict[str, Any]:
    """`update_asset` with the runtime's registry client talking to the proxy."""
    with s.runtime() as built:
        proxied = OciRegistry(transport=_ToProxy(proxy.port), **registry)
        try:
            with use_runtime(dataclasses.replace(built, registry=proxied)):
                return dict(update_asset(s.asset_id, approval="defer"))
        finally:
            proxied.close()


def assert_untouched(s: DockerScenario, container_id: str) -> None:
    s.assert_serving(OLD)
    assert s.docker.containers.get(s.name).id == container_id
    with s.store() as store:
        assert store.journal.find_open(s.asset_id) == []
        assert store.audit.verify().ok


def test_registry_slower_than_the_timeout_fails_clearly_and_changes_nothing(
    scenario: Scenario, fault_proxy: FaultProxy
) -> None:
    s = scenario([OLD, GOOD])
    old = s.start(OLD)
    fault_proxy.delay(r"/tags/list", seconds=3, times=None)

    with pytest.raises(RegistryUnavailableError) as failed:
        run_through_proxy(s, fault_proxy, timeout=1.0)

    assert "did not answer GET" in failed.value.message, failed.value
    assert "within 1 s" in failed.value.message, failed.value
    # The task tried 4 times (3 retries), each one timed out (the proxy records a request when
    # its delay is over, after the client gave up).
    wait_until(
        lambda: fault_proxy.count(r"/tags/list", injected=True) == 4, timeout=15, what="4 tries"
    )
    assert_untouched(s, old.container.id)
    with s.store() as store:
        assert store.journal.history(s.asset_id) == []  # nothing was decided, nothing opened

    fault_proxy.clear()
    result = run_through_proxy(s, fault_proxy, timeout=1.0)
    assert result["outcome"] == "updated", result
    s.assert_serving(GOOD)


def test_5xx_on_the_manifest_fetch_of_the_pull_fails_the_attempt_then_the_next_run_applies(
    scenario: Scenario, registry: RegistryInfo, fault_proxy: FaultProxy
) -> None:
    # Image references name the proxy, so the daemon's pull at apply time goes through it.
    s = scenario([OLD, GOOD], registry=RegistryInfo(host=fault_proxy.host, url=_url(fault_proxy)))
    old = s.start(OLD)
    fault_proxy.fail(rf"/manifests/{GOOD}$", status=503, times=None)

    with s.runtime():
        failed = update_asset(s.asset_id, approval="defer")

    assert failed["outcome"] == "failed", failed
    why = " ".join(failed["reasons"])
    assert "preflight failed, nothing was changed" in why, why
    assert "registry unavailable" in why, why
    # Transient: the preflight pull was retried before giving up.
    assert fault_proxy.count(rf"/manifests/{GOOD}$", injected=True) >= 4
    assert_untouched(s, old.container.id)
    with s.store() as store:
        [attempt] = store.journal.history(s.asset_id)
        assert attempt.outcome is not None and attempt.outcome.value == "failed"
        assert store.quarantine.versions(s.asset_id) == set()  # the registry's fault, not 1.0.1's

    fault_proxy.clear()
    with s.runtime():
        again = update_asset(s.asset_id, approval="defer")
    assert again["outcome"] == "updated", again
    s.assert_serving(GOOD)


def test_a_100000_tag_repository_is_scanned_by_the_update_and_the_right_candidate_applied(
    scenario: Scenario, fault_proxy: FaultProxy
) -> None:
    # The image names the proxy: its tag list is synthesized there (paginated, with Link
    # headers), everything else is relayed to the real registry.
    s = scenario([OLD, GOOD], registry=RegistryInfo(host=fault_proxy.host, url=_url(fault_proxy)))
    s.start(OLD)
    # 99,993 older tags and a few newer ones the default policy does not apply on its own
    # (minor needs approval, major is skipped, a pre-release is not taken); only 1.0.1 is a
    # patch: the candidate.
    newer = ["1.0.1", "1.1.0", "2.0.0", "1.0.2-rc.1", "1.0.1+build.7", "latest"]
    older = [f"0.{i // 1000}.{i % 1000}" for i in range(100_000 - len(newer) - 1)]
    tags = [*older, OLD, *newer]
    assert len(tags) == 100_000
    fault_proxy.synthesize_tags(s.repo, len(tags), tags=tags)

    with s.runtime():
        result = update_asset(s.asset_id, approval="defer")

    assert result["outcome"] == "updated", result
    assert (result["from"], result["to"], result["change_type"]) == (OLD, GOOD, "patch"), result
    # Every page was read: 100,000 tags at the client's page size of 1,000.
    assert fault_proxy.count(rf"/v2/{s.repo}/tags/list") == 100
    s.assert_serving(GOOD)


def _url(proxy: FaultProxy) -> str:
    return f"http://{proxy.host}"
