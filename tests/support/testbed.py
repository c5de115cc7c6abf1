"""Helpers for tests that use the test bed started by `testbed/up` (see docs/test-bed.md).

Everything here talks to loopback only. The values come from `$TESTBED_DIR/env` (default
`.testbed/env` in the repository), overlaid by the process environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Accept header for manifest requests. Without it the registry answers with a converted
#: schema-1 manifest whose digest differs from the one Docker records.
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)

#: Label on every container the helpers start, so leftovers are easy to find.
DEMO_LABEL = "testbed.demo"

#: Which part of the test bed provides an env var (for skip messages).
PART_OF = {
    "DOCKER_HOST": "docker",
    "DOCKER_CONFIG": "docker",
    "TESTBED_REGISTRY": "registry",
    "TESTBED_REGISTRY_URL": "registry",
    "TESTBED_IMAGE_REPO": "registry",
    "TESTBED_REGISTRY_AUTH": "registry",
    "TESTBED_REGISTRY_AUTH_URL": "registry",
    "TESTBED_REGISTRY_USER": "registry",
    "TESTBED_REGISTRY_PASSWORD": "registry",
    "TESTBED_POSTGRES_URL": "postgres",
    "TESTBED_PROMETHEUS_URL": "prometheus",
    "TESTBED_PROMETHEUS_SD_DIR": "prometheus",
}


# --- environment -------------------------------------------------------------------------------


def env_file(environ: Mapping[str, str] | None = None) -> Path:
    """`$TESTBED_DIR/env`, or `.testbed/env` in the repository."""
    environ = os.environ if environ is None else environ
    base = environ.get("TESTBED_DIR") or str(REPO_ROOT / ".testbed")
    return Path(base) / "env"


def read_env_file(path: Path) -> dict[str, str]:
    """Parse the `export K=V` lines that `testbed/up` writes. A missing file gives `{}`."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return values
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            words = words[1:]
        for word in words:
            key, sep, value = word.partition("=")
            if sep and key.isidentifier():
                values[key] = value
    return values


def load_testbed_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test bed's values: the env file, overlaid by the process environment (which wins)."""
    environ = os.environ if environ is None else environ
    values = read_env_file(env_file(environ))
    for key, value in environ.items():
        if key.startswith("TESTBED_") or key in ("DOCKER_HOST", "DOCKER_CONFIG"):
            values[key] = value
    return values


def missing_reason(key: str) -> str:
    part = PART_OF.get(key, "...")
    return (
        f"{key} is not set: start the test bed part with `testbed/up {part}` "
        f"(then set TESTBED_DIR or source $TESTBED_DIR/env)"
    )


# --- network -------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def restart_part(part: str, component: str | None = None, timeout: float = 120.0) -> None:
    """Restart a running test-bed part in place (`testbed/restart`), same address and data."""
    argv = [str(REPO_ROOT / "testbed" / "restart"), part, *([component] if component else [])]
    env = dict(os.environ)
    env.setdefault("TESTBED_DIR", str(env_file().parent))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"testbed/restart {part} failed: {done.stderr.strip() or done.stdout}")


def http_client(**kwargs: Any) -> httpx.Client:
    """An httpx client for loopback calls: never through a proxy from the environment."""
    kwargs.setdefault("timeout", 5.0)
    return httpx.Client(trust_env=False, **kwargs)


def http_status(url: str, timeout: float = 1.0) -> tuple[int | None, str]:
    """(status, body) of a GET, or (None, error text) when nothing answers."""
    try:
        with http_client(timeout=timeout) as client:
            response = client.get(url)
        return response.status_code, response.text
    except httpx.HTTPError as exc:
        return None, str(exc)


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy (returned) or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not true after {timeout:.1f} s: {what or predicate!r}")
        time.sleep(interval)


def wait_for_http(url: str, status: int | Iterable[int] | None = 200, timeout: float = 10.0) -> int:
    """Wait until GET `url` answers with `status` (any status when None); return the status."""
    wanted = {status} if isinstance(status, int) else None if status is None else set(status)
    last: list[tuple[int | None, str]] = [(None, "")]

    def answered() -> int | None:
        last[0] = http_status(url)
        code = last[0][0]
        if code is not None and (wanted is None or code in wanted):
            return code
        return None

    try:
        return int(wait_until(answered, timeout, what=f"GET {url} -> {status}"))
    except TimeoutError:
        raise TimeoutError(
            f"GET {url}: wanted {status} within {timeout:.1f} s, last answer {last[0]}"
        ) from None


# --- registry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryInfo:
    """One test-bed registry. `host` is what image references use (`localhost:PORT`)."""

    host: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    @property
    def auth_config(self) -> dict[str, str] | None:
        """For the docker SDK: `images.pull(..., auth_config=registry.auth_config)`."""
        if self.auth is None:
            return None
        return {"username": self.auth[0], "password": self.auth[1]}

    def image(self, tag: str, repo: str = "demo/web") -> str:
        return f"{self.host}/{repo}:{tag}"

    def client(self) -> httpx.Client:
        return http_client(base_url=self.url, auth=self.auth)

    def catalog(self) -> list[str]:
        with self.client() as c:
            response = c.get("/v2/_catalog")
            response.raise_for_status()
            return list(response.json().get("repositories") or [])

    def tags(self, repo: str = "demo/web") -> list[str]:
        with self.client() as c:
            response = c.get(f"/v2/{repo}/tags/list")
            if response.status_code == 404:
                return []
            response.raise_for_status()
            return sorted(response.json().get("tags") or [])

    def digest(self, tag: str, repo: str = "demo/web") -> str:
        """The manifest digest of `repo:tag` (the one `RepoDigests` shows)."""
        with self.client() as c:
            response = c.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
            response.raise_for_status()
            return response.headers["Docker-Content-Digest"]

    def manifest(self, ref: str, repo: str = "demo/web") -> tuple[str, bytes]:
        """(media type, raw bytes) of a manifest by tag or digest."""
        with self.client() as c:
            response = c.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
            response.raise_for_status()
            return response.headers["Content-Type"], response.content

    def delete_tag(self, tag: str, repo: str = "demo/web") -> str:
        """Delete the manifest `repo:tag` points to and return its digest.

        The registry deletes by digest, so every tag on that manifest goes too (`1.0.0` takes
        `latest` with it). On a shared test bed, delete only tags you made with `publish_demo`.
        """
        digest = self.digest(tag, repo)
        with self.client() as c:
            response = c.delete(f"/v2/{repo}/manifests/{digest}")
            response.raise_for_status()
        return digest

    def publish_demo(
        self,
        repo: str,
        tag: str,
        *,
        version: str | None = None,
        behavior: str | None = None,
        created: str | None = None,
        labels: Mapping[str, str] | None = None,
        source: str = "demo/web:1.0.0",
    ) -> str:
        """Push a variant of a demo image as `repo:tag` without Docker and return its digest.

        The variant has its own config (so its own digest): `APP_VERSION`/version label set to
        `version` (default: `tag`), `DEFAULT_BEHAVIOR` to `behavior` (ok | unhealthy | crash),
        `created` (RFC 3339) for release-age tests, extra `labels`. Use a unique `repo`
        (e.g. `f"t/{uuid}/web"`) to get a repository of your own on a shared test bed.
        """
        src_repo, _, src_tag = source.rpartition(":")
        _, raw = self.manifest(src_tag, src_repo)
        manifest = json.loads(raw)
        with self.client() as c:
            response = c.get(f"/v2/{src_repo}/blobs/{manifest['config']['digest']}")
            response.raise_for_status()
            config = response.json()
            cfg = config.setdefault("config", {})
            version = version or tag
            env = [e for e in cfg.get("Env") or [] if not e.startswith("APP_VERSION=")]
            env.append(f"APP_VERSION={version}")
            if behavior is not None:
                env = [e for e in env if not e.startswith("DEFAULT_BEHAVIOR=")]
                env.append(f"DEFAULT_BEHAVIOR={behavior}")
            cfg["Env"] = env
            new_labels = dict(cfg.get("Labels") or {})
            new_labels["org.opencontainers.image.version"] = version
            if behavior is not None:
                new_labels["demo.behavior"] = behavior
            new_labels.update(labels or {})
            cfg["Labels"] = new_labels
            if created is not None:
                config["created"] = created
            config_bytes = json.dumps(config, separators=(",", ":")).encode()
            config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
            for layer in manifest["layers"]:
                self._mount_blob(c, layer["digest"], src_repo, repo)
            self._upload_blob(c, repo, config_bytes, config_digest)
            manifest["config"] = {**manifest["config"], "digest": config_digest}
            manifest["config"]["size"] = len(config_bytes)
            body = json.dumps(manifest, indent=3).encode()
            response = c.put(
                f"/v2/{repo}/manifests/{tag}",
                content=body,
                headers={"Content-Type": manifest["mediaType"]},
            )
            response.raise_for_status()
            return response.headers["Docker-Content-Digest"]

    @staticmethod
    def _mount_blob(c: httpx.Client, digest: str, src_repo: str, repo: str) -> None:
        if src_repo == repo:
            return
        response = c.post(f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": src_repo})
        if response.status_code == 201:
            return
        response.raise_for_status()
        # 202: the registry opened an upload instead; copy the blob through it.
        blob = c.get(f"/v2/{src_repo}/blobs/{digest}")
        blob.raise_for_status()
        RegistryInfo._finish_upload(c, response.headers["Location"], blob.content, digest)

    @staticmethod
    def _upload_blob(c: httpx.Client, repo: str, data: bytes, digest: str) -> None:
        response = c.post(f"/v2/{repo}/blobs/uploads/")
        response.raise_for_status()
        RegistryInfo._finish_upload(c, response.headers["Location"], data, digest)

    @staticmethod
    def _finish_upload(c: httpx.Client, location: str, data: bytes, digest: str) -> None:
        # The Location carries the upload's state in its query: add to it, do not replace it.
        response = c.put(
            httpx.URL(location).copy_merge_params({"digest": digest}),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        response.raise_for_status()


def registry_from_env(env: Mapping[str, str], authenticated: bool = False) -> RegistryInfo:
    if authenticated:
        return RegistryInfo(
            host=env["TESTBED_REGISTRY_AUTH"],
            url=env.get("TESTBED_REGISTRY_AUTH_URL")
            or "http://" + env["TESTBED_REGISTRY_AUTH"].replace("localhost", "127.0.0.1"),
            username=env["TESTBED_REGISTRY_USER"],
            password=env["TESTBED_REGISTRY_PASSWORD"],
        )
    return RegistryInfo(
        host=env["TESTBED_REGISTRY"],
        url=env.get("TESTBED_REGISTRY_URL")
        or "http://" + env["TESTBED_REGISTRY"].replace("localhost", "127.0.0.1"),
    )


# --- demo containers -----------------------------------------------------------------------------


@dataclass
class DemoContainer:
    """A demo-web container on the host network, serving on 127.0.0.1:`port`."""

    container: Any  # docker.models.containers.Container
    image: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return str(self.container.name)

    def get(self, path: str, timeout: float = 1.0) -> tuple[int | None, str]:
        return http_status(self.url + path, timeout)

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait until the container has stopped and return its exit code."""
        result = self.container.wait(timeout=timeout)
        self.container.reload()
        return int(result["StatusCode"])

    def health(self) -> str | None:
        """Docker's HEALTHCHECK state: starting | healthy | unhealthy (None without one)."""
        self.container.reload()
        state = self.container.attrs["State"].get("Health")
        return state["Status"] if state else None


def run_demo_container(
    client: Any,
    image: str,
    *,
    port: int | None = None,
    name: str | None = None,
    environment: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    auth_config: Mapping[str, str] | None = None,
    pull: bool = True,
    wait: bool = True,
    timeout: float = 15.0,
    **run_kwargs: Any,
) -> DemoContainer:
    """Run a demo image detached with `network_mode="host"` and `PORT=port` (a free port).

    `pull` pulls the image first (the engine starts with none). `wait` waits until the app
    answers HTTP at all (200 or 404); pass `wait=False` for the image that exits on start.
    Extra keyword arguments go to `client.containers.run` (restart_policy, command, ...).
    """
    import docker.errors

    port = port or free_port()
    if pull:
        repo, _, tag = image.rpartition(":")
        if "/" in tag or not repo:
            repo, tag = image, "latest"
        client.images.pull(repo, tag=tag, auth_config=dict(auth_config) if auth_config else None)
    env = {"PORT": str(port), **(environment or {})}
    container = client.containers.run(
        image,
        name=name or f"demo-{uuid.uuid4().hex[:10]}",
        detach=True,
        network_mode="host",
        environment=env,
        labels={DEMO_LABEL: "1", **(labels or {})},
        **run_kwargs,
    )
    demo = DemoContainer(container=container, image=image, port=port)
    if wait:
        try:
            wait_for_http(demo.url + "/version", status=None, timeout=timeout)
        except TimeoutError:
            logs = container.logs(tail=20).decode(errors="replace")
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            raise TimeoutError(f"{image} on port {port} did not answer; logs:\n{logs}") from None
    return demo


# --- prometheus ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrometheusInfo:
    """The test-bed Prometheus: `url` and the file_sd directory it re-reads every second."""

    url: str
    sd_dir: Path

    def set_targets(
        self, name: str, targets: Iterable[str], labels: Mapping[str, str] | None = None
    ) -> Path:
        """Write `<sd_dir>/<name>.json` (atomically) with `targets` (`127.0.0.1:PORT`)."""
        path = self.sd_dir / f"{name}.json"
        tmp = self.sd_dir / f".{name}.tmp"
        tmp.write_text(json.dumps([{"targets": list(targets), "labels": dict(labels or {})}]))
        tmp.replace(path)
        return path

    def remove_targets(self, name: str) -> None:
        (self.sd_dir / f"{name}.json").unlink(missing_ok=True)

    def query(self, promql: str) -> list[dict[str, Any]]:
        with http_client() as c:
            response = c.get(self.url + "/api/v1/query", params={"query": promql})
            response.raise_for_status()
            return list(response.json()["data"]["result"])

    def active_targets(self) -> list[dict[str, Any]]:
        with http_client() as c:
            response = c.get(self.url + "/api/v1/targets", params={"state": "active"})
            response.raise_for_status()
            return list(response.json()["data"]["activeTargets"])
