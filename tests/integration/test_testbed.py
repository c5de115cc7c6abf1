"""The test bed itself works: engine, registries, demo images, PostgreSQL, Prometheus."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from support.testbed import (
    DemoContainer,
    PrometheusInfo,
    RegistryInfo,
    http_client,
    wait_until,
)

pytestmark = pytest.mark.integration

WEB_TAGS = ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "1.2.0", "2.0.0", "latest"]


def test_engine_is_private_and_loopback_only(
    docker_client: Any, testbed_env: dict[str, str]
) -> None:
    info = docker_client.info()
    if "TESTBED_DIR" in testbed_env:
        assert info["DockerRootDir"].startswith(testbed_env["TESTBED_DIR"])
    assert info["Driver"] in ("overlay2", "vfs")
    networks = {n.name for n in docker_client.networks.list()}
    assert "bridge" not in networks
    assert networks <= {"host", "none"}


@pytest.mark.parametrize("which", ["registry", "auth_registry"])
def test_registry_lists_the_pushed_tags(which: str, request: pytest.FixtureRequest) -> None:
    reg: RegistryInfo = request.getfixturevalue(which)
    assert {"demo/web", "demo/api"} <= set(reg.catalog())
    assert set(WEB_TAGS) <= set(reg.tags("demo/web"))
    assert {"1.0.0", "1.0.1"} <= set(reg.tags("demo/api"))
    assert reg.digest("latest") == reg.digest("1.0.0")
    assert reg.digest("1.0.1") != reg.digest("1.0.0")


def test_auth_registry_needs_credentials(auth_registry: RegistryInfo) -> None:
    with http_client() as c:
        anonymous = c.get(auth_registry.url + "/v2/")
        wrong = c.get(auth_registry.url + "/v2/", auth=(auth_registry.username or "", "wrong"))
    assert anonymous.status_code == 401
    assert anonymous.headers["Www-Authenticate"].startswith("Basic")
    assert wrong.status_code == 401
    with auth_registry.client() as c:
        assert c.get("/v2/").status_code == 200


def test_good_version_serves_healthz_and_version(
    demo_container: Any, docker_client: Any, registry: RegistryInfo
) -> None:
    demo: DemoContainer = demo_container("1.0.0")
    assert demo.get("/healthz")[0] == 200
    assert demo.get("/version") == (200, "1.0.0\n")
    demo.container.reload()
    assert demo.container.attrs["HostConfig"]["NetworkMode"] == "host"
    assert wait_until(lambda: demo.health() == "healthy", timeout=15, what="docker health")
    # The running image's digest is the registry's digest of the tag.
    repo_digests = docker_client.images.get(demo.image).attrs["RepoDigests"]
    assert f"{registry.host}/demo/web@{registry.digest('1.0.0')}" in repo_digests


def test_bad_version_serves_404_on_healthz(demo_container: Any) -> None:
    demo: DemoContainer = demo_container("1.0.2")
    assert demo.get("/healthz")[0] == 404
    assert demo.get("/version") == (200, "1.0.2\n")


def test_crashing_version_exits_non_zero(demo_container: Any) -> None:
    demo: DemoContainer = demo_container("1.2.0", wait=False)
    assert demo.wait_exit(timeout=15) != 0
    assert demo.container.status == "exited"


def test_pull_from_auth_registry_and_the_api_repo(
    demo_container: Any, auth_registry: RegistryInfo
) -> None:
    demo: DemoContainer = demo_container("1.0.1", repo="demo/api", registry=auth_registry)
    assert demo.get("/version") == (200, "1.0.1\n")


def test_publish_and_delete_a_private_tag(registry: RegistryInfo, demo_container: Any) -> None:
    repo = f"t/{uuid.uuid4().hex[:8]}/web"
    digest = registry.publish_demo(repo, "3.0.0", behavior="unhealthy")
    assert registry.tags(repo) == ["3.0.0"]
    assert registry.digest("3.0.0", repo) == digest
    demo: DemoContainer = demo_container("3.0.0", repo=repo)
    assert demo.get("/version") == (200, "3.0.0\n")
    assert demo.get("/healthz")[0] == 404
    assert registry.delete_tag("3.0.0", repo) == digest
    assert registry.tags(repo) == []


@pytest.mark.postgres
def test_postgres_accepts_a_sqlalchemy_connection(postgres_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar() == "safe_updater"
            assert conn.execute(sa.text("show server_version_num")).scalar().startswith("15")
    finally:
        engine.dispose()


class _Exporter(BaseHTTPRequestHandler):
    token = ""

    def do_GET(self) -> None:
        body = f'testbed_probe{{token="{self.token}"}} 1\n'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[tuple[str, str]]:
    """A tiny metrics endpoint on 127.0.0.1: (host:port, token)."""
    token = uuid.uuid4().hex
    handler = type("Exporter", (_Exporter,), {"token": token})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", token
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.prometheus
def test_prometheus_scrapes_a_target_from_the_sd_file(
    prometheus: PrometheusInfo, exporter: tuple[str, str]
) -> None:
    with http_client() as c:
        assert c.get(prometheus.url + "/-/ready").status_code == 200
    target, token = exporter
    name = f"test-{token[:8]}"
    prometheus.set_targets(name, [target], {"testcase": name})
    try:
        result = wait_until(
            lambda: prometheus.query(f'testbed_probe{{token="{token}"}}'),
            timeout=20,
            interval=0.25,
            what="the exporter's sample in Prometheus",
        )
        assert result[0]["metric"]["testcase"] == name
        assert result[0]["value"][1] == "1"
    finally:
        prometheus.remove_targets(name)
