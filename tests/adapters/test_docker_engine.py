"""The docker SDK wrapper: error translation, pulls with and without credentials, state, exec."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from safe_updater.adapters.docker_engine import (
    ContainerNotFoundError,
    DockerSdkEngine,
    ImageInfo,
    TlsSettings,
)
from safe_updater.adapters.errors import (
    ContainerError,
    EngineUnavailableError,
    ImageNotFoundError,
    RegistryAuthError,
)
from support.testbed import DemoContainer, RegistryInfo


def test_unreachable_engine_is_transient(tmp_path: Any) -> None:
    with pytest.raises(EngineUnavailableError) as info:
        DockerSdkEngine.connect(f"unix://{tmp_path}/missing.sock")
    assert info.value.__cause__ is not None


def test_digest_for_matches_the_repository() -> None:
    image = ImageInfo(
        id="sha256:1",
        tags=[],
        repo_digests=[
            "localhost:5000/other@sha256:" + "a" * 64,
            "localhost:5000/demo/web@sha256:" + "b" * 64,
            "nginx@sha256:" + "c" * 64,
        ],
        config={},
    )
    assert image.digest_for("localhost:5000/demo/web:1.0.0") == "sha256:" + "b" * 64
    assert image.digest_for("docker.io/library/nginx:1") == "sha256:" + "c" * 64
    assert image.digest_for("localhost:5000/none:1") is None
    assert image.digest_for("sha256:" + "d" * 64) is None


@pytest.fixture
def engine(testbed_env: dict[str, str], docker_client: Any) -> Iterator[DockerSdkEngine]:
    # No fallback to the test bed's Docker config file, which holds a login for the auth registry.
    eng = DockerSdkEngine.connect(testbed_env["DOCKER_HOST"], use_config_credentials=False)
    yield eng
    eng.close()


@pytest.mark.integration
def test_find_and_inspect(
    engine: DockerSdkEngine, demo_container: Callable[..., DemoContainer]
) -> None:
    demo = demo_container("1.0.0")
    info = engine.inspect_container(demo.name)
    assert info.name == demo.name
    assert info.running
    assert info.image_ref.endswith("/demo/web:1.0.0")
    assert engine.find_container(info.id) == info
    assert engine.find_container(info.id[:12]) is None  # id prefixes are not names
    assert engine.find_container("no-such-container-x") is None
    with pytest.raises(ContainerNotFoundError):
        engine.inspect_container("no-such-container-x")
    state = engine.state(demo.name)
    assert state.running and state.status == "running" and state.restart_count == 0


@pytest.mark.integration
def test_errors_are_translated(
    engine: DockerSdkEngine, demo_container: Callable[..., DemoContainer]
) -> None:
    demo = demo_container("1.0.0")
    with pytest.raises(ContainerError) as info:
        engine.rename(demo.name, demo.name)  # conflict: the name is taken
    assert info.value.__cause__ is not None
    with pytest.raises(ContainerNotFoundError):
        engine.start("no-such-container-x")
    with pytest.raises(ImageNotFoundError):
        engine.inspect_image("localhost:1/no/such:image")
    assert engine.find_image("localhost:1/no/such:image") is None
    engine.remove("no-such-container-x")  # already gone: fine


@pytest.mark.integration
def test_pull_missing_tag_is_image_not_found(
    engine: DockerSdkEngine, registry: RegistryInfo
) -> None:
    with pytest.raises(ImageNotFoundError) as info:
        engine.pull(registry.image("9.9.9-missing"))
    assert "9.9.9-missing" in str(info.value)


@pytest.mark.integration
def test_pull_with_and_without_credentials(
    engine: DockerSdkEngine, auth_registry: RegistryInfo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    ref = auth_registry.image("1.0.1")
    with pytest.raises(RegistryAuthError) as info:
        engine.pull(ref)
    assert auth_registry.password is not None
    assert auth_registry.password not in str(info.value)
    image = engine.pull(ref, auth=auth_registry.auth_config)
    assert ref in image.tags
    assert image.digest_for(ref) == auth_registry.digest("1.0.1")
    wrong = {"username": "testbed", "password": "wrong-password"}
    with pytest.raises(RegistryAuthError):
        engine.pull(auth_registry.image("1.1.0"), auth=wrong)
    assert auth_registry.password not in caplog.text
    assert "wrong-password" not in caplog.text


@pytest.mark.integration
def test_exec_and_state_of_a_stopped_container(
    engine: DockerSdkEngine, demo_container: Callable[..., DemoContainer]
) -> None:
    demo = demo_container("1.0.0")
    result = engine.exec(demo.name, ["cat", "/www/version"], timeout=5)
    assert (result.exit_code, result.output) == (0, "1.0.0")
    engine.stop(demo.name, timeout=5)
    state = engine.state(demo.name)
    assert not state.running and state.status == "exited"
    with pytest.raises(ContainerError):
        engine.exec(demo.name, ["true"], timeout=5)


def test_docker_host_block_tls_settings() -> None:
    from safe_updater.blocks.docker_host import DockerHost

    assert DockerHost(url="unix:///run/docker.sock").tls_settings() is None
    host = DockerHost(
        name="prod",
        url="tcp://127.0.0.1:2376",
        tls=True,
        tls_ca_cert="/etc/ca.pem",
        tls_client_cert="/etc/cert.pem",
        tls_client_key="/etc/key.pem",
    )
    assert host.tls_settings() == TlsSettings(
        verify=True, ca_cert="/etc/ca.pem", client_cert="/etc/cert.pem", client_key="/etc/key.pem"
    )
    with pytest.raises(ValueError):
        DockerHost(name="bad name/with slash")


@pytest.mark.integration
def test_docker_host_block_connects(testbed_env: dict[str, str], docker_client: Any) -> None:
    from safe_updater.blocks.docker_host import DockerHost

    engine = DockerHost(name="local", url=testbed_env["DOCKER_HOST"]).get_engine()
    try:
        engine.ping()
    finally:
        engine.close()
