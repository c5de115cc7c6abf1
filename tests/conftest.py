"""Root fixtures: the test bed started by `testbed/up` (docs/test-bed.md).

The values come from `$TESTBED_DIR/env` (default `.testbed/env`), overlaid by the process
environment; keys the environment lacks are copied into `os.environ` at start-up so that code
under test finds `DOCKER_HOST` and `DOCKER_CONFIG` as it would in production. A fixture whose
part is not up skips its test and says which part to start. The Prefect test harness lives in
tests/flows/conftest.py, not here.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from support.testbed import (
    DemoContainer,
    PrometheusInfo,
    RegistryInfo,
    load_testbed_env,
    missing_reason,
    registry_from_env,
    run_demo_container,
)


def pytest_configure(config: pytest.Config) -> None:
    for key, value in load_testbed_env().items():
        os.environ.setdefault(key, value)


def _require(env: Mapping[str, str], *keys: str) -> None:
    for key in keys:
        if not env.get(key):
            pytest.skip(missing_reason(key))


@pytest.fixture(scope="session")
def testbed_env() -> dict[str, str]:
    """All test-bed values (DOCKER_HOST, TESTBED_*), possibly empty when nothing is up."""
    return load_testbed_env()


@pytest.fixture(scope="session")
def docker_client(testbed_env: dict[str, str]) -> Iterator[Any]:
    """A docker SDK client of the test-bed engine (skips when DOCKER_HOST is not set)."""
    _require(testbed_env, "DOCKER_HOST")
    import docker

    client = docker.DockerClient(base_url=testbed_env["DOCKER_HOST"])
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def registry(testbed_env: dict[str, str]) -> RegistryInfo:
    """The anonymous registry: host `localhost:PORT`, url, tags(), digest(), delete_tag()..."""
    _require(testbed_env, "TESTBED_REGISTRY")
    return registry_from_env(testbed_env)


@pytest.fixture(scope="session")
def auth_registry(testbed_env: dict[str, str]) -> RegistryInfo:
    """The basic-auth registry, with `username`, `password`, `auth` and `auth_config`."""
    _require(
        testbed_env, "TESTBED_REGISTRY_AUTH", "TESTBED_REGISTRY_USER", "TESTBED_REGISTRY_PASSWORD"
    )
    return registry_from_env(testbed_env, authenticated=True)


@pytest.fixture(scope="session")
def postgres_url(testbed_env: dict[str, str]) -> str:
    """SQLAlchemy URL `postgresql+psycopg://...@127.0.0.1:PORT/safe_updater`."""
    _require(testbed_env, "TESTBED_POSTGRES_URL")
    return testbed_env["TESTBED_POSTGRES_URL"]


@pytest.fixture(scope="session")
def prometheus_url(testbed_env: dict[str, str]) -> str:
    """`http://127.0.0.1:PORT` of the test-bed Prometheus."""
    _require(testbed_env, "TESTBED_PROMETHEUS_URL")
    return testbed_env["TESTBED_PROMETHEUS_URL"]


@pytest.fixture(scope="session")
def prometheus(testbed_env: dict[str, str], prometheus_url: str) -> PrometheusInfo:
    """The test-bed Prometheus with its file_sd directory (set_targets, query...)."""
    from pathlib import Path

    _require(testbed_env, "TESTBED_PROMETHEUS_SD_DIR")
    return PrometheusInfo(url=prometheus_url, sd_dir=Path(testbed_env["TESTBED_PROMETHEUS_SD_DIR"]))


@pytest.fixture
def demo_container(
    docker_client: Any, registry: RegistryInfo
) -> Iterator[Callable[..., DemoContainer]]:
    """Factory: `demo_container("1.0.0")` runs `<registry>/demo/web:1.0.0` on a free port.

    Signature: `(tag="1.0.0", *, repo="demo/web", registry=None, image=None, port=None,
    wait=True, **kwargs) -> DemoContainer` (kwargs: see `support.testbed.run_demo_container`).
    `registry` picks another RegistryInfo (e.g. `auth_registry`); `image` a full reference.
    Every container it started is removed after the test.
    """
    import docker.errors

    started: list[DemoContainer] = []

    def start(
        tag: str = "1.0.0",
        *,
        repo: str = "demo/web",
        registry: RegistryInfo | None = None,
        image: str | None = None,
        **kwargs: Any,
    ) -> DemoContainer:
        reg = registry or default_registry
        if image is None:
            image = reg.image(tag, repo)
            if reg.auth_config is not None:
                kwargs.setdefault("auth_config", reg.auth_config)
        kwargs.setdefault("name", f"demo-{uuid.uuid4().hex[:10]}")
        demo = run_demo_container(docker_client, image, **kwargs)
        started.append(demo)
        return demo

    default_registry = registry
    yield start
    for demo in started:
        with contextlib.suppress(docker.errors.NotFound):
            demo.container.remove(force=True)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server for the whole session, started by the first test needing it.

    Test folders that run flows or save Blocks depend on it from their own conftest.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
