"""One Docker asset on the test bed, end to end: a private repository of demo tags, an opted-in
container, a config file and state database of its own, and ways to run the product on it
(in-process flows with a runtime built from the config, or the `safe-updater` CLI as a
subprocess).

Used by tests/integration/test_docker_*.py and test_secrets_never_leak.py. Every container a
scenario makes (including `<name>.safe-updater-prev` / `-next`) is removed by `cleanup()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.testbed import (
    DemoContainer,
    RegistryInfo,
    free_port,
    http_status,
    run_demo_container,
)

PREV = ".safe-updater-prev"
NEXT = ".safe-updater-next"
CLI = str(Path(sys.executable).with_name("safe-updater"))

# Short monitoring windows keep every update at a few seconds; the verdict needs 2 passing
# samples at the end, and 3 failing ones in a row roll back.
HEALTH_WINDOW = "3s"
HEALTH_INTERVAL = "500ms"


def private_repo(prefix: str = "t") -> str:
    """A repository nobody else uses on the shared registry: `t/<hex>/web`."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}/web"


def publish_tags(
    registry: RegistryInfo,
    repo: str,
    tags: Sequence[str],
    *,
    bad: Sequence[str] = ("1.0.2",),
    crash: Sequence[str] = ("1.2.0",),
) -> dict[str, str]:
    """Push demo variants `repo:tag` (404 health for `bad`, exit on start for `crash`)."""
    digests = {}
    for tag in tags:
        behavior = "unhealthy" if tag in bad else "crash" if tag in crash else None
        digests[tag] = registry.publish_demo(repo, tag, behavior=behavior)
    return digests


@dataclass
class DockerScenario:
    """One asset `docker:local/<name>` and everything a test needs around it."""

    docker: Any  # docker.DockerClient
    registry: RegistryInfo
    workdir: Path
    repo: str
    name: str = field(default_factory=lambda: f"su-{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=free_port)
    target: str = "local"
    container: DemoContainer | None = None
    store_url: str | None = None  # another state store than the SQLite file (PostgreSQL)

    # -- identity and files ---------------------------------------------------------------------

    @property
    def asset_id(self) -> str:
        return f"docker:{self.target}/{self.name}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "safe-updater.yaml"

    @property
    def state_path(self) -> Path:
        return self.workdir / "state.db"

    @property
    def state_url(self) -> str:
        return self.store_url or f"sqlite:///{self.state_path}"

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    def image(self, tag: str) -> str:
        return self.registry.image(tag, self.repo)

    def write_config(self, extra: str = "", *, window: str = HEALTH_WINDOW) -> Path:
        """The config file: this state database, the test-bed engine, short health windows;
        `extra` is appended as YAML (top-level keys)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        text = (
            f"state:\n  url: {json.dumps(self.state_url)}\n"
            "targets:\n  docker:\n"
            f"    - name: {self.target}\n      url: {json.dumps(os.environ['DOCKER_HOST'])}\n"
            f"health:\n  window: {window}\n  interval: {HEALTH_INTERVAL}\n"
        )
        self.config_path.write_text(text + extra)
        return self.config_path

    # -- the container --------------------------------------------------------------------------

    def start(
        self,
        tag: str,
        *,
        environment: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        restart_policy: str | None = None,
    ) -> DemoContainer:
        """Run `repo:tag` as `<name>`, opted in, with an HTTP health label on its port
        (`restart_policy`: `unless-stopped`, `always`, ... as `docker run --restart`)."""
        all_labels = {
            "safe-updater.io/enabled": "true",
            "safe-updater.io/health.http": f"http://127.0.0.1:{self.port}/healthz",
            **(labels or {}),
        }
        self.container = run_demo_container(
            self.docker,
            self.image(tag),
            port=self.port,
            name=self.name,
            environment=environment,
            labels=all_labels,
            auth_config=self.registry.auth_config,
            timeout=30.0,
            **({"restart_policy": {"Name": restart_policy}} if restart_policy else {}),
        )
        return self.container

    def version(self) -> str | None:
        """What `/version` of the serving container answers (None when nothing answers)."""
        status, body = http_status(f"http://127.0.0.1:{self.port}/version", timeout=2.0)
        return body.strip() if status == 200 else None

    def containers(self) -> dict[str, dict[str, Any]]:
        """Every container of this asset (`<name>`, `-prev`, `-next`) by name:
        `{"status", "image", "tag", "env", "labels"}`."""
        found: dict[str, dict[str, Any]] = {}
        for container in self.docker.containers.list(all=True):
            if container.name not in (self.name, self.name + PREV, self.name + NEXT):
                continue
            config = container.attrs.get("Config") or {}
            image = str(config.get("Image") or "")
            found[container.name] = {
                "status": container.status,
                "image": image,
                "tag": image.rpartition(":")[2],
                "env": list(config.get("Env") or []),
                "labels": dict(config.get("Labels") or {}),
                "host_config": container.attrs.get("HostConfig") or {},
            }
        return found

    def assert_serving(self, version: str) -> None:
        """Exactly one container for the asset: `<name>`, running `version`, answering it."""
        found = self.containers()
        assert set(found) == {self.name}, f"containers of {self.asset_id}: {found}"
        assert found[self.name]["status"] == "running", found
        assert found[self.name]["tag"] == version, found
        assert self.version() == version

    def cleanup(self) -> None:
        import docker.errors

        for name in (self.name, self.name + PREV, self.name + NEXT):
            with contextlib.suppress(docker.errors.NotFound):
                self.docker.containers.get(name).remove(force=True)

    # -- running the product --------------------------------------------------------------------

    @contextlib.contextmanager
    def runtime(self) -> Iterator[Any]:
        """The runtime the CLI would build from this config, installed for in-process flows."""
        from safe_updater.runtime import use_runtime
        from safe_updater.wiring import build_runtime

        built = build_runtime(self.config_path)
        try:
            with use_runtime(built):
                yield built
        finally:
            built.close()

    @contextlib.contextmanager
    def store(self) -> Iterator[Any]:
        from safe_updater.adapters.store import StateStore

        opened = StateStore.open(self.state_url)
        try:
            yield opened
        finally:
            opened.close()

    def cli_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a CLI subprocess: this config and home, the session's Prefect
        server, and the test bed's Docker settings."""
        from prefect.settings import PREFECT_API_URL

        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SAFE_UPDATER_", "PYTEST_", "PREFECT_"))
        }
        api = PREFECT_API_URL.value()
        assert api, "no Prefect API: the test needs the prefect_server fixture"
        env.update(
            {
                "PREFECT_API_URL": str(api),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "SAFE_UPDATER_CONFIG": str(self.config_path),
                "SAFE_UPDATER_HOME": str(self.home),
                "SAFE_UPDATER_ACTOR": "integration-test",
            }
        )
        env.update(extra or {})
        return env

    def cli(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """`safe-updater ARGS...` as a subprocess (argument list, no shell)."""
        return subprocess.run(
            [CLI, *args],
            env=self.cli_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli_json(self, *args: str, env: Mapping[str, str] | None = None) -> Any:
        done = self.cli(*args, "--json", env=env)
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError:
            raise AssertionError(
                f"safe-updater {' '.join(args)} --json: exit {done.returncode}\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}"
            ) from None


@contextlib.contextmanager
def scenario_factory(
    docker_client: Any, default_registry: RegistryInfo, tmp_path: Path
) -> Iterator[Callable[..., DockerScenario]]:
    """The `scenario` fixture's factory (tests/integration and tests/faults conftests):
    `make(["1.0.0", "1.0.1"], registry=..., repo=..., config=..., state_url=...)` publishes the
    tags into a private repository (unless `repo` is given), writes a config (`config=` extra
    YAML; `state_url=` another state store) and returns a :class:`DockerScenario`. Its
    containers are removed at the end."""
    made: list[DockerScenario] = []

    def make(
        tags: Sequence[str] = (),
        *,
        registry: RegistryInfo | None = None,
        repo: str | None = None,
        config: str = "",
        window: str = HEALTH_WINDOW,
        state_url: str | None = None,
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
                store_url=state_url,
            )
        )
        made[-1].write_config(config, window=window)
        return made[-1]

    try:
        yield make
    finally:
        for item in made:
            item.cleanup()


def describe(done: subprocess.CompletedProcess[str]) -> str:
    """For assertion messages."""
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
