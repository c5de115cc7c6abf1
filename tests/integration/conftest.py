"""Fixtures of the end-to-end Docker tests (tests/support/docker_scenarios.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.docker_scenarios import DockerScenario, scenario_factory
from support.testbed import RegistryInfo


@pytest.fixture
def scenario(
    docker_client: Any, registry: RegistryInfo, tmp_path: Path
) -> Iterator[Callable[..., DockerScenario]]:
    """Factory: `scenario(["1.0.0", "1.0.1"], registry=..., repo=...)` publishes the tags into
    a private repository (unless `repo` is given), writes a config (`config=` extra YAML) and
    returns a :class:`DockerScenario`. Its containers are removed after the test."""
    with scenario_factory(docker_client, registry, tmp_path) as make:
        yield make
