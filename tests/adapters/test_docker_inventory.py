"""Docker inventory against the real engine: opt-in labels, asset ids, tag and digest."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from safe_updater.adapters.docker_engine import DockerSdkEngine
from safe_updater.adapters.docker_inventory import DockerInventory, is_opted_in
from safe_updater.domain.assets import ENABLE_LABEL, WATCHTOWER_ENABLE_LABEL, AssetKind
from support.testbed import DemoContainer, RegistryInfo


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({ENABLE_LABEL: "true"}, True),
        ({ENABLE_LABEL: " TRUE "}, True),
        ({WATCHTOWER_ENABLE_LABEL: "true"}, True),
        ({ENABLE_LABEL: "false", WATCHTOWER_ENABLE_LABEL: "true"}, True),
        ({ENABLE_LABEL: "false"}, False),
        ({ENABLE_LABEL: "yes"}, False),
        ({}, False),
    ],
)
def test_is_opted_in(labels: dict[str, str], expected: bool) -> None:
    assert is_opted_in(labels) is expected


@pytest.fixture
def engine(testbed_env: dict[str, str], docker_client: Any) -> Iterator[DockerSdkEngine]:
    eng = DockerSdkEngine.connect(testbed_env["DOCKER_HOST"])
    yield eng
    eng.close()


@pytest.mark.integration
def test_inventory_lists_opted_in_containers_only(
    engine: DockerSdkEngine,
    demo_container: Callable[..., DemoContainer],
    registry: RegistryInfo,
) -> None:
    ours = demo_container("1.0.0", labels={ENABLE_LABEL: "true", "team": "web"})
    watchtower = demo_container("1.0.1", labels={WATCHTOWER_ENABLE_LABEL: "true"})
    disabled = demo_container("1.0.0", labels={ENABLE_LABEL: "false"})
    plain = demo_container("1.0.0")
    parked = demo_container(
        "1.0.0",
        name=f"web-{uuid.uuid4().hex[:6]}.safe-updater-prev",
        labels={ENABLE_LABEL: "true"},
    )
    stopped = demo_container("1.0.0", labels={ENABLE_LABEL: "true"})
    stopped.container.stop(timeout=5)

    inventory = DockerInventory(engine, "local")
    assets = {a.name: a for a in inventory.list_assets()}
    assert ours.name in assets and watchtower.name in assets
    for name in (disabled.name, plain.name, parked.name, stopped.name):
        assert name not in assets
    assert stopped.name in {a.name for a in inventory.list_assets(include_stopped=True)}

    asset = assets[ours.name]
    assert asset.id == f"docker:local/{ours.name}"
    assert asset.kind is AssetKind.DOCKER
    assert asset.target == "local"
    assert asset.image is not None
    assert (asset.image.registry, asset.image.repository) == (registry.host, "demo/web")
    assert asset.current_version == "1.0.0"
    assert asset.current_digest == registry.digest("1.0.0")
    assert asset.labels["team"] == "web"
    assert asset.opted_in
    assert assets[watchtower.name].current_version == "1.0.1"
    assert assets[watchtower.name].current_digest == registry.digest("1.0.1")
