"""Fixtures of the end-to-end Docker tests (tests/support/docker_scenarios.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from support.docker_scenarios import DockerScenario, private_repo, publish_tags
from support.testbed import RegistryInfo


@pytest.fixture
def scenario(
    docker_client: Any, registry: RegistryInfo, tmp_path: Path
) -> Iterator[Callable[..., DockerScenario]]:
    """Factory: `scenario(["1.0.0", "1.0.1"], registry=..., repo=...)` publishes the tags into
    a private repository (unless `repo` is given), writes a config (`config=` extra YAML) and
    returns a :class:`DockerScenario`. Its containers are removed after the test."""
    made: list[DockerScenario] = []

    def make(
        tags: Sequence[str] = (),
        *,
        registry: RegistryInfo | None = None,
        repo: str | None = None,
        config: str = "",
    ) -> DockerScenario:
        reg = registry or default_registry
        if repo is None:
            repo = private_repo()
            publish_tags(reg, repo, tags)
        made.append(
            DockerScenario(
                docker=docker_client,
                registry=reg,
                workdir=tmp_path / f"s{len(made)}",
                repo=repo,
            )
        )
        made[-1].write_config(config)
        return made[-1]

    default_registry = registry
    yield make
    for item in made:
        item.cleanup()
