"""Fixtures of the dependency-fault tests: a dependency of a running update (the Docker daemon,
PostgreSQL, the registry) fails or restarts for real, and the run must end in a defined outcome.

The `scenario` factory is the one tests/integration uses (support.docker_scenarios). Restarts
go through `testbed/restart`, which keeps each part's address, so the rest of the session can go
on using it; the fixtures below make sure it answers again before the next test starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.docker_scenarios import DockerScenario, scenario_factory
from support.testbed import RegistryInfo, restart_part, wait_until


@pytest.fixture
def scenario(
    docker_client: Any, registry: RegistryInfo, tmp_path: Path
) -> Iterator[Callable[..., DockerScenario]]:
    """Factory, see :func:`support.docker_scenarios.scenario_factory`."""
    with scenario_factory(docker_client, registry, tmp_path) as make:
        yield make


def engine_answers(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture
def docker_back(docker_client: Any) -> Iterator[None]:
    """After the test, the test-bed daemon answers again (restarted if a test left it down)."""
    yield
    if not engine_answers(docker_client):
        try:
            wait_until(lambda: engine_answers(docker_client), timeout=30, what="dockerd answers")
        except TimeoutError:
            restart_part("docker")
    assert engine_answers(docker_client), "the test-bed Docker daemon did not come back"
