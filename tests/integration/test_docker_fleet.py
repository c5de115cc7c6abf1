"""The fleet flow on real Docker: one canary container and three `web` containers of one private
repository on the test-bed engine, grouped by the label `safe-updater.io/group`, updated by
`update_fleet(dispatch="inline")` against the session's Prefect server (its concurrency limits
are real) with the runtime a config file builds. Nothing is faked: containers are recreated,
probed over HTTP and rolled back for real.

Needs `testbed/up docker registry`. The flow with fakes: tests/flows/test_update_fleet.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from safe_updater.domain.journal import Outcome
from safe_updater.flows.update_fleet import update_fleet
from support.docker_scenarios import DockerScenario

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

GROUP = "safe-updater.io/group"
# Short windows keep the test near a minute: 2 passing samples at the end of the window make a
# verdict, 3 failing ones in a row roll back.
WINDOW = "2s"


@dataclass
class Fleet:
    """The canary and the web containers; `canary` holds the config, state store and runtime
    that all of them share."""

    canary: DockerScenario
    web: list[DockerScenario]
    ids: dict[str, str]  # asset id -> the id of the container it started with

    @property
    def all(self) -> list[DockerScenario]:
        return [self.canary, *self.web]


@pytest.fixture
def fleet(scenario: Callable[..., DockerScenario]) -> Iterator[Callable[..., Fleet]]:
    """Factory: `fleet(tags)` publishes `tags` (1.0.2 answers /healthz 404) to a private
    repository and starts 1.0.0 as one canary and three web containers, each opted in with an
    HTTP health check on its own port. Every container is removed after the test."""
    extra: list[DockerScenario] = []

    def make(tags: Sequence[str]) -> Fleet:
        canary = scenario(tags)
        canary.write_config(window=WINDOW)
        web = [
            DockerScenario(
                docker=canary.docker,
                registry=canary.registry,
                workdir=canary.workdir,
                repo=canary.repo,
            )
            for _ in range(3)
        ]
        extra.extend(web)
        ids = {canary.asset_id: canary.start("1.0.0", labels={GROUP: "canary"}).container.id}
        for s in web:
            ids[s.asset_id] = s.start("1.0.0", labels={GROUP: "web"}).container.id
        return Fleet(canary, web, ids)

    yield make
    for s in extra:
        s.cleanup()


def run_fleet(f: Fleet) -> dict[str, dict[str, Any]]:
    """One fleet run limited to this test's groups (other tests' containers on a shared
    engine belong to none of them); its result by asset, plus the result itself under ``""``."""
    with f.canary.runtime():
        result = update_fleet(dispatch="inline", groups=["canary", "web"])
    rows: dict[str, dict[str, Any]] = {row["asset"]: row for row in result["assets"]}
    rows[""] = result
    return rows


def test_broken_canary_rolls_back_and_halts_the_web_wave(fleet: Callable[..., Fleet]) -> None:
    f = fleet(["1.0.0", "1.0.2"])  # the policy's patch: auto picks 1.0.2, whose /healthz is 404

    rows = run_fleet(f)
    result = rows.pop("")

    assert [w["name"] for w in result["waves"]] == ["canary", "web"], result["waves"]
    assert result["halted"] and "canary wave canary" in result["halted"], result["halted"]
    canary = rows[f.canary.asset_id]
    assert canary["outcome"] == "rolled_back", canary
    assert canary["target"] == "1.0.2"
    # The canary serves the old version again from the old container (Docker inspect: image
    # tag), and nothing of the new one is left.
    f.canary.assert_serving("1.0.0")
    assert f.canary.docker.containers.get(f.canary.name).id == f.ids[f.canary.asset_id]
    with f.canary.store() as store:
        assert set(store.quarantine.versions(f.canary.asset_id)) == {"1.0.2"}
        assert [a.outcome for a in store.journal.history(f.canary.asset_id)] == [
            Outcome.ROLLED_BACK
        ]
        for s in f.web:
            assert store.journal.history(s.asset_id) == [], f"{s.asset_id} was attempted"
        assert store.audit.verify().ok
    for s in f.web:
        assert rows[s.asset_id]["outcome"] == "halted", rows[s.asset_id]
        assert rows[s.asset_id]["slot_acquired"] is None, "a halted asset never ran"
        # Never touched: the very container it started with, on the old image.
        s.assert_serving("1.0.0")
        assert s.docker.containers.get(s.name).id == f.ids[s.asset_id]


def test_good_patch_goes_to_the_canary_first_then_to_web(fleet: Callable[..., Fleet]) -> None:
    f = fleet(["1.0.0", "1.0.1"])

    rows = run_fleet(f)
    result = rows.pop("")

    assert result["halted"] is None, result["halted"]
    assert [w["name"] for w in result["waves"]] == ["canary", "web"], result["waves"]
    assert {rows[asset]["outcome"] for asset in f.ids} == {"updated"}, rows
    for s in f.all:
        s.assert_serving("1.0.1")
        assert s.docker.containers.get(s.name).id != f.ids[s.asset_id], "recreated"
    canary_done = rows[f.canary.asset_id]["slot_released"]
    for s in f.web:
        # ISO times of one clock and zone: their text order is their time order.
        assert canary_done <= rows[s.asset_id]["slot_acquired"], (canary_done, rows[s.asset_id])
    with f.canary.store() as store:
        assert store.audit.verify().ok
        for s in f.all:
            assert [a.outcome for a in store.journal.history(s.asset_id)] == [Outcome.UPDATED]
