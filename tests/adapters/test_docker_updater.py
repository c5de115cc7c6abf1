"""The Docker updater against the real engine: recreate, commit, rollback, every crash point.

Invariant checked after every rollback or finished apply: among `<name>`, `<name>.safe-updater-prev`
and `<name>.safe-updater-next` exactly one container runs, it is named `<name>`, and it serves the
expected version.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from safe_updater.adapters.docker_engine import DockerSdkEngine
from safe_updater.adapters.docker_inventory import DockerInventory
from safe_updater.adapters.docker_updater import (
    NEXT_SUFFIX,
    PREV_SUFFIX,
    ApplyStep,
    DockerContainerUpdater,
    user_config,
)
from safe_updater.adapters.errors import ImageNotFoundError, RegistryAuthError
from safe_updater.adapters.probes import HttpProbe, monitor
from safe_updater.domain.assets import ENABLE_LABEL, Asset
from safe_updater.domain.errors import ConflictError
from safe_updater.domain.health import HealthPolicy, HttpCheck, VerdictState
from support.testbed import DemoContainer, RegistryInfo, wait_for_http, wait_until

# --- pure ----------------------------------------------------------------------------------------


def test_user_config_subtracts_what_the_image_contributed() -> None:
    image: dict[str, Any] = {
        "Env": ["PATH=/bin", "APP_VERSION=1.0.0", "PORT=8080"],
        "Labels": {"org.opencontainers.image.version": "1.0.0", "demo": "x"},
        "Cmd": None,
        "Entrypoint": ["/start.sh"],
        "Healthcheck": {"Test": ["CMD", "true"]},
        "WorkingDir": "/",
        "ExposedPorts": {"8080/tcp": {}},
        "Volumes": {"/data": {}},
    }
    container: dict[str, Any] = {
        "Hostname": "abcdef012345",
        "Env": ["PORT=18080", "FOO=bar", "PATH=/bin", "APP_VERSION=1.0.0"],
        "Labels": {"org.opencontainers.image.version": "1.0.0", "demo": "override", "own": "1"},
        "Cmd": ["serve"],
        "Entrypoint": ["/start.sh"],
        "Healthcheck": {"Test": ["CMD", "true"]},
        "WorkingDir": "/srv",
        "User": "",
        "ExposedPorts": {"8080/tcp": {}, "9090/tcp": {}},
        "Volumes": {"/data": {}},
        "Tty": True,
        "Image": "r/web:1.0.0",
    }
    host_config = {"NetworkMode": "host", "RestartPolicy": {"Name": "always"}}
    body = user_config(container, image, host_config, "abcdef0123456789")
    assert body == {
        "Env": ["PORT=18080", "FOO=bar"],
        "Labels": {"demo": "override", "own": "1"},
        "Cmd": ["serve"],
        "WorkingDir": "/srv",
        "User": "",
        "ExposedPorts": {"9090/tcp": {}},
        "Tty": True,
        "HostConfig": host_config,
    }
    assert body["HostConfig"] is not host_config  # a copy


def test_user_config_keeps_a_hostname_the_user_chose() -> None:
    body = user_config({"Hostname": "db1"}, {}, {"NetworkMode": "default"}, "abcdef0123456789")
    assert body["Hostname"] == "db1"
    body = user_config({"Hostname": "db1"}, {}, {"NetworkMode": "host"}, "abcdef0123456789")
    assert "Hostname" not in body


# --- the real engine -----------------------------------------------------------------------------


@pytest.fixture
def engine(testbed_env: dict[str, str], docker_client: Any) -> Iterator[DockerSdkEngine]:
    eng = DockerSdkEngine.connect(testbed_env["DOCKER_HOST"], use_config_credentials=False)
    yield eng
    eng.close()


@pytest.fixture
def cleanup(docker_client: Any) -> Iterator[Callable[[str], None]]:
    """Register a container name; afterwards `<name>`, its `-prev` and `-next` are removed."""
    import docker.errors

    names: list[str] = []
    yield names.append
    for name in names:
        for candidate in (name, name + PREV_SUFFIX, name + NEXT_SUFFIX):
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.containers.get(candidate).remove(force=True)


class Web:
    """One demo container under update, and the helpers the tests check it with."""

    def __init__(self, demo: DemoContainer, engine: DockerSdkEngine, client: Any) -> None:
        self.demo = demo
        self.name = demo.name
        self.engine = engine
        self.client = client

    def asset(self) -> Asset:
        asset = DockerInventory(self.engine, "local").to_asset(
            self.engine.inspect_container(self.name)
        )
        assert asset is not None
        return asset

    def family(self) -> dict[str, Any]:
        """`<name>`, `-prev`, `-next` → container attrs, for those that exist."""
        found = {}
        for candidate in (self.name, self.name + PREV_SUFFIX, self.name + NEXT_SUFFIX):
            info = self.engine.find_container(candidate)
            if info is not None:
                found[candidate] = info
        return found

    def assert_only(self, version: str, *, leftovers: bool = False) -> None:
        """Exactly one running container, named `<name>`, on `version`, serving `version`."""
        family = self.family()
        running = [name for name, info in family.items() if info.running]
        assert running == [self.name], f"running: {running}, all: {list(family)}"
        current = family[self.name]
        assert current.image_ref.endswith(f":{version}")
        if not leftovers:
            assert list(family) == [self.name]
        wait_until(
            lambda: (
                self.demo.get("/version") == (200, version + "\n")
                or self.demo.get("/version") == (200, version)
            ),
            timeout=10,
            what=f"/version {version}",
        )


@pytest.fixture
def web(
    engine: DockerSdkEngine,
    docker_client: Any,
    demo_container: Callable[..., DemoContainer],
    cleanup: Callable[[str], None],
) -> Callable[..., Web]:
    def start(tag: str = "1.0.0", **kwargs: Any) -> Web:
        kwargs.setdefault("labels", {ENABLE_LABEL: "true", "owner": "it-tests"})
        kwargs.setdefault("environment", {"FOO": "bar"})
        kwargs.setdefault("command", ["serve", "--flag"])
        kwargs.setdefault("restart_policy", {"Name": "unless-stopped"})
        name = f"web-{uuid.uuid4().hex[:8]}"
        cleanup(name)
        demo = demo_container(tag, name=name, **kwargs)
        return Web(demo, engine, docker_client)

    return start


@pytest.mark.integration
def test_recreate_keeps_user_config_and_commit_removes_the_old_container(
    engine: DockerSdkEngine, web: Callable[..., Web], docker_client: Any
) -> None:
    w = web()
    asset = w.asset()
    updater = DockerContainerUpdater(engine)
    old_id = w.engine.inspect_container(w.name).id

    updater.preflight(asset, "1.0.1")
    snapshot = updater.snapshot(asset)
    assert snapshot.version == "1.0.0"
    assert snapshot.digest == asset.current_digest
    assert json.loads(json.dumps(snapshot.data)) == snapshot.data
    applied = updater.apply(asset, snapshot, "1.0.1")

    assert applied.data["old_container_id"] == old_id
    assert applied.data["new_container_id"] != old_id
    assert updater.running_version(asset) == "1.0.1"
    w.assert_only("1.0.1", leftovers=True)
    assert not w.family()[w.name + PREV_SUFFIX].running

    new = docker_client.containers.get(w.name).attrs
    env = dict(e.split("=", 1) for e in new["Config"]["Env"])
    assert env["PORT"] == str(w.demo.port) and env["FOO"] == "bar"
    assert env["APP_VERSION"] == "1.0.1"  # the new image's ENV, not the old one's
    labels = new["Config"]["Labels"]
    assert labels["owner"] == "it-tests" and labels[ENABLE_LABEL] == "true"
    assert labels["org.opencontainers.image.version"] == "1.0.1"
    assert new["Config"]["Cmd"] == ["serve", "--flag"]
    assert new["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert new["HostConfig"]["NetworkMode"] == "host"
    assert new["Name"] == "/" + w.name

    updater.commit(asset, snapshot, applied)
    w.assert_only("1.0.1")
    assert engine.find_container(old_id) is None
    updater.commit(asset, snapshot, applied)  # idempotent


def _fast_policy() -> HealthPolicy:
    return HealthPolicy(
        window=timedelta(seconds=10),
        interval=timedelta(milliseconds=200),
        failure_threshold=3,
        success_threshold=2,
    )


@pytest.mark.integration
def test_rollback_after_bad_health(engine: DockerSdkEngine, web: Callable[..., Web]) -> None:
    w = web()
    asset = w.asset()
    updater = DockerContainerUpdater(engine)
    updater.preflight(asset, "1.0.2")
    snapshot = updater.snapshot(asset)
    applied = updater.apply(asset, snapshot, "1.0.2")
    wait_for_http(w.demo.url + "/healthz", status=404)
    verdict, _ = monitor(
        [HttpProbe(HttpCheck(url=w.demo.url + "/healthz"))],
        _fast_policy(),
        clock=lambda: datetime.now(UTC),
        sleep=time.sleep,
    )
    assert verdict.state is VerdictState.UNHEALTHY
    updater.rollback(asset, snapshot, applied)
    w.assert_only("1.0.0")
    assert w.demo.get("/healthz")[0] == 200
    assert engine.inspect_container(w.name).id == snapshot.data["container_id"]
    updater.rollback(asset, snapshot, applied)  # idempotent
    w.assert_only("1.0.0")


@pytest.mark.integration
def test_rollback_when_the_new_version_exits(
    engine: DockerSdkEngine, web: Callable[..., Web]
) -> None:
    w = web(restart_policy={"Name": "no"})
    asset = w.asset()
    updater = DockerContainerUpdater(engine)
    updater.preflight(asset, "1.2.0")
    snapshot = updater.snapshot(asset)
    applied = updater.apply(asset, snapshot, "1.2.0")
    wait_until(lambda: engine.state(w.name).status == "exited", timeout=10, what="1.2.0 exits")
    assert updater.running_version(asset) is None
    updater.rollback(asset, snapshot, applied)
    w.assert_only("1.0.0")


@pytest.mark.integration
@pytest.mark.parametrize("crash_after", list(ApplyStep))
def test_rollback_from_every_crash_point(
    engine: DockerSdkEngine, web: Callable[..., Web], crash_after: ApplyStep
) -> None:
    w = web()
    asset = w.asset()
    updater = DockerContainerUpdater(engine)
    updater.preflight(asset, "1.0.1")
    snapshot = updater.snapshot(asset)
    for step in updater.iter_apply(asset, snapshot, "1.0.1"):
        if step is crash_after:
            break  # the process dies here
    # A different updater, as in another process, with only the snapshot from the journal.
    recovering = DockerContainerUpdater(engine)
    recovering.rollback(asset, snapshot, None)
    w.assert_only("1.0.0")
    assert engine.inspect_container(w.name).id == snapshot.data["container_id"]
    recovering.rollback(asset, snapshot, None)
    w.assert_only("1.0.0")


@pytest.mark.integration
@pytest.mark.parametrize("crash_after", list(ApplyStep))
def test_apply_resumes_from_every_crash_point(
    engine: DockerSdkEngine, web: Callable[..., Web], crash_after: ApplyStep
) -> None:
    w = web()
    asset = w.asset()
    updater = DockerContainerUpdater(engine)
    updater.preflight(asset, "1.0.1")
    snapshot = updater.snapshot(asset)
    for step in updater.iter_apply(asset, snapshot, "1.0.1"):
        if step is crash_after:
            break
    applied = DockerContainerUpdater(engine).apply(asset, snapshot, "1.0.1")
    w.assert_only("1.0.1", leftovers=True)
    assert applied.data["old_container_id"] == snapshot.data["container_id"]
    updater.commit(asset, snapshot, applied)
    w.assert_only("1.0.1")


@pytest.mark.integration
def test_rollback_recreates_from_the_snapshot_when_the_old_container_is_gone(
    engine: DockerSdkEngine, web: Callable[..., Web], docker_client: Any
) -> None:
    w = web()
    asset = w.asset()
    updater = DockerContainerUpdater(engine)
    updater.preflight(asset, "1.0.1")
    snapshot = updater.snapshot(asset)
    applied = updater.apply(asset, snapshot, "1.0.1")
    docker_client.containers.get(w.name + PREV_SUFFIX).remove(force=True)  # removed by hand

    with pytest.raises(ConflictError):  # apply cannot resume without the old container ...
        updater.apply(asset, snapshot, "1.2.0")
    updater.rollback(asset, snapshot, applied)  # ... but rollback can restore it
    w.assert_only("1.0.0")
    restored = docker_client.containers.get(w.name).attrs
    env = dict(e.split("=", 1) for e in restored["Config"]["Env"])
    assert (env["FOO"], env["APP_VERSION"]) == ("bar", "1.0.0")
    assert restored["Config"]["Labels"]["owner"] == "it-tests"
    assert restored["Config"]["Cmd"] == ["serve", "--flag"]
    assert restored["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert restored["Image"] == snapshot.data["image_id"]
    updater.rollback(asset, snapshot, applied)  # idempotent: the re-created one is kept
    w.assert_only("1.0.0")
    assert docker_client.containers.get(w.name).id == restored["Id"]


@pytest.mark.integration
def test_preflight_of_a_missing_or_deleted_tag_touches_nothing(
    engine: DockerSdkEngine, web: Callable[..., Web], registry: RegistryInfo
) -> None:
    repo = f"t/{uuid.uuid4().hex[:10]}/web"
    registry.publish_demo(repo, "1.0.0")
    registry.publish_demo(repo, "1.0.1")
    w = web(image=registry.image("1.0.0", repo))
    asset = w.asset()
    before = engine.inspect_container(w.name)
    registry.delete_tag("1.0.1", repo)  # yanked after detection
    updater = DockerContainerUpdater(engine)
    for tag in ("1.0.1", "9.9.9-missing"):
        with pytest.raises(ImageNotFoundError):
            updater.preflight(asset, tag)
    after = engine.inspect_container(w.name)
    assert after.id == before.id and after.running
    w.assert_only("1.0.0")


@pytest.mark.integration
def test_preflight_uses_the_credentials_lookup(
    engine: DockerSdkEngine, web: Callable[..., Web], auth_registry: RegistryInfo
) -> None:
    w = web(image=auth_registry.image("1.0.0"), auth_config=auth_registry.auth_config)
    asset = w.asset()
    assert asset.image is not None and asset.image.registry == auth_registry.host
    asked: list[str] = []

    def credentials(host: str) -> dict[str, str] | None:
        asked.append(host)
        return auth_registry.auth_config if host == auth_registry.host else None

    with pytest.raises(RegistryAuthError):
        DockerContainerUpdater(engine).preflight(asset, "1.1.0")
    DockerContainerUpdater(engine, credentials).preflight(asset, "1.1.0")
    assert asked == [auth_registry.host]
    assert engine.find_image(auth_registry.image("1.1.0")) is not None


@pytest.mark.integration
def test_snapshot_refuses_while_an_update_is_unfinished(
    engine: DockerSdkEngine, web: Callable[..., Web]
) -> None:
    w = web()
    asset = w.asset()
    updater = DockerContainerUpdater(engine)
    snapshot = updater.snapshot(asset)
    steps = updater.iter_apply(asset, snapshot, "1.0.1")
    assert next(steps) is ApplyStep.CREATED_NEXT
    steps.close()
    with pytest.raises(ConflictError, match="did not finish"):
        updater.snapshot(asset)
    with pytest.raises(ConflictError, match="nothing to commit"):
        updater.commit(asset, snapshot, updater._applied_change(asset, snapshot, "1.0.1"))
    updater.rollback(asset, snapshot, None)
    w.assert_only("1.0.0")


@pytest.mark.integration
def test_commit_removes_the_old_image_when_unused(
    engine: DockerSdkEngine, web: Callable[..., Web], registry: RegistryInfo
) -> None:
    run = uuid.uuid4().hex[:10]
    repo = f"t/{run}/web"
    # A label of its own, so no other repository shares this image id.
    registry.publish_demo(repo, "1.0.0", labels={"test.run": run})
    registry.publish_demo(repo, "1.0.1")
    old_ref = registry.image("1.0.0", repo)
    w = web(image=old_ref)
    asset = w.asset()
    old_image = engine.inspect_image(old_ref)
    updater = DockerContainerUpdater(engine, remove_old_image=True)
    updater.preflight(asset, "1.0.1")
    snapshot = updater.snapshot(asset)
    applied = updater.apply(asset, snapshot, "1.0.1")
    updater.commit(asset, snapshot, applied)
    w.assert_only("1.0.1")
    assert engine.find_image(old_ref) is None
    assert engine.find_image(old_image.id) is None
    # Rolling back needs the image again: it is pulled by digest and tagged back.
    updater.rollback(asset, snapshot, None)
    w.assert_only("1.0.0")
    assert engine.inspect_container(w.name).image_id == old_image.id
