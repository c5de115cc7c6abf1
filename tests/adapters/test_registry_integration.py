"""OciRegistry against the real test-bed registry (Debian docker-registry), directly, through
the fault-injecting proxy, and behind a bearer-token proxy with a loopback token server.

Needs `testbed/up registry` (fixtures `registry` and `auth_registry` skip otherwise).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from safe_updater.adapters.docker_config import DockerConfigCredentials
from safe_updater.adapters.errors import (
    ImageNotFoundError,
    RegistryAuthError,
    RegistryResponseError,
    RegistryUnavailableError,
)
from safe_updater.adapters.registry import (
    MANIFEST_ACCEPT,
    OciRegistry,
    RegistryBudgetExhaustedError,
    RegistryCredential,
    RegistryRateLimitedError,
    StaticCredentials,
    TokenBucketBudget,
)
from safe_updater.domain.assets import ImageRef
from support.fault_proxy import FaultProxy
from support.testbed import RegistryInfo
from support.token_server import TokenServer

pytestmark = pytest.mark.integration

WEB_TAGS = {"1.0.0", "1.0.1", "1.0.2", "1.1.0", "1.2.0", "2.0.0", "latest"}


def ref(host: str, text: str) -> ImageRef:
    return ImageRef.parse(f"{host}/{text}")


@pytest.fixture
def proxy(registry: RegistryInfo) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as running:
        yield running


@pytest.fixture
def sleeps() -> list[float]:
    return []


def client(sleeps: list[float] | None = None, **kwargs: object) -> OciRegistry:
    recorded = sleeps if sleeps is not None else []
    return OciRegistry(sleep=recorded.append, **kwargs)  # type: ignore[arg-type]


# --- the real registry ---------------------------------------------------------------------------


def test_tags_from_the_real_registry(registry: RegistryInfo) -> None:
    with OciRegistry() as reg:
        web = reg.list_tags(ref(registry.host, "demo/web"))
        api = reg.list_tags(ref(registry.host, "demo/api"))
    assert set(web) >= WEB_TAGS
    assert len(web) == len(set(web))
    assert sorted(api) == ["1.0.0", "1.0.1"]


def test_unknown_repository_is_not_found(registry: RegistryInfo) -> None:
    with OciRegistry() as reg, pytest.raises(ImageNotFoundError):
        reg.list_tags(ref(registry.host, f"nothing/{uuid.uuid4().hex}"))


def test_digest_matches_get_with_accept_and_not_schema1(registry: RegistryInfo) -> None:
    with OciRegistry() as reg:
        digest = reg.digest(ref(registry.host, "demo/web:1.1.0"))
        with pytest.raises(ImageNotFoundError):
            reg.digest(ref(registry.host, "demo/web:9.9.9"))
    with httpx.Client(base_url=registry.url) as http:
        with_accept = http.get("/v2/demo/web/manifests/1.1.0", headers={"Accept": MANIFEST_ACCEPT})
        without = http.get("/v2/demo/web/manifests/1.1.0")
    assert digest == with_accept.headers["Docker-Content-Digest"]
    assert digest == "sha256:" + hashlib.sha256(with_accept.content).hexdigest()
    assert "prettyjws" in without.headers["Content-Type"]  # the schema-1 gotcha
    assert without.headers["Docker-Content-Digest"] != digest


def test_created_at_from_the_config_blob(registry: RegistryInfo) -> None:
    with OciRegistry() as reg:
        created = reg.created_at(ref(registry.host, "demo/web:1.0.0"))
    _, raw = registry.manifest("1.0.0")
    config_digest = json.loads(raw)["config"]["digest"]
    with httpx.Client(base_url=registry.url) as http:
        config = http.get(f"/v2/demo/web/blobs/{config_digest}").json()
    assert created is not None and created.tzinfo is not None
    expected = datetime.fromisoformat(config["created"][:26].rstrip("Z") + "+00:00")
    assert abs((created - expected).total_seconds()) < 1e-3


def test_created_at_of_published_image_and_oci_index(registry: RegistryInfo) -> None:
    repo = f"t/{uuid.uuid4().hex[:12]}/web"
    digest = registry.publish_demo(repo, "3.0.0", created="2021-06-07T08:09:10.123456789Z")
    _, raw = registry.manifest(digest, repo)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": json.loads(raw)["mediaType"],
                "digest": digest,
                "size": len(raw),
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }
    with httpx.Client(base_url=registry.url) as http:
        put = http.put(
            f"/v2/{repo}/manifests/multi",
            content=json.dumps(index).encode(),
            headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        )
        put.raise_for_status()
    expected = datetime(2021, 6, 7, 8, 9, 10, 123456, tzinfo=UTC)
    with OciRegistry() as reg:
        assert reg.created_at(ref(registry.host, f"{repo}:3.0.0")) == expected
        assert reg.created_at(ref(registry.host, f"{repo}:multi")) == expected
        index_digest = reg.digest(ref(registry.host, f"{repo}:multi"))
    assert index_digest == put.headers["Docker-Content-Digest"]
    assert index_digest != digest


# --- basic auth ----------------------------------------------------------------------------------


def test_basic_auth_with_credentials_from_a_provider(auth_registry: RegistryInfo) -> None:
    assert auth_registry.username and auth_registry.password
    cred = RegistryCredential(
        username=auth_registry.username, password=SecretStr(auth_registry.password)
    )
    with OciRegistry(credentials=StaticCredentials({auth_registry.host: cred})) as reg:
        image = ref(auth_registry.host, "demo/web:1.0.0")
        assert set(reg.list_tags(image)) >= WEB_TAGS
        assert reg.digest(image) == auth_registry.digest("1.0.0")
        assert reg.created_at(image) is not None


def test_basic_auth_with_docker_config_file(auth_registry: RegistryInfo, tmp_path: Path) -> None:
    raw = f"{auth_registry.username}:{auth_registry.password}".encode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": base64.b64encode(raw).decode()}}})
    )
    provider = DockerConfigCredentials(env={"DOCKER_CONFIG": str(tmp_path)})
    with OciRegistry(credentials=provider) as reg:
        assert set(reg.list_tags(ref(auth_registry.host, "demo/web"))) >= WEB_TAGS


def test_basic_auth_without_or_with_wrong_credentials(auth_registry: RegistryInfo) -> None:
    assert auth_registry.password
    image = ref(auth_registry.host, "demo/web")
    with OciRegistry() as reg, pytest.raises(RegistryAuthError) as missing:
        reg.list_tags(image)
    assert f"docker login {auth_registry.host}" in str(missing.value)
    wrong = RegistryCredential(
        username=str(auth_registry.username), password=SecretStr(auth_registry.password + "x")
    )
    reg = OciRegistry(credentials=StaticCredentials({auth_registry.host: wrong}))
    with reg, pytest.raises(RegistryAuthError) as refused:
        reg.list_tags(image)
    for error in (missing.value, refused.value):
        assert auth_registry.password not in str(error)
        assert auth_registry.password not in repr(error.args)
    assert "refused the credentials" in str(refused.value)


# --- bearer tokens (token server + proxy that demands them, in front of the real registry) -------


def test_anonymous_bearer_token_flow(proxy: FaultProxy) -> None:
    with TokenServer() as tokens:
        proxy.require_bearer(tokens)
        with OciRegistry(cache_ttl=0) as reg:
            image = ref(proxy.host, "demo/web:1.0.0")
            assert set(reg.list_tags(image)) >= WEB_TAGS
            reg.list_tags(image)
            reg.digest(image)
            assert reg.created_at(image) is not None
        assert len(tokens.requests) == 1  # one token per scope, cached
        assert tokens.requests[0].scope == "repository:demo/web:pull"
        assert tokens.requests[0].username is None
        assert proxy.count(r"/tags/list", injected=False) == 3  # 401 + 2 with the token


def test_bearer_token_with_credentials(proxy: FaultProxy) -> None:
    with TokenServer(users={"robot": "t0ken-pass"}) as tokens:
        proxy.require_bearer(tokens)
        image = ref(proxy.host, "demo/api")
        with OciRegistry() as reg, pytest.raises(RegistryAuthError) as info:
            reg.list_tags(image)
        assert "needs credentials for repository:demo/api:pull" in str(info.value) or (
            "refused anonymous access" in str(info.value)
        )
        cred = RegistryCredential(username="robot", password=SecretStr("t0ken-pass"))
        with OciRegistry(credentials=StaticCredentials({proxy.host: cred})) as reg:
            assert sorted(reg.list_tags(image)) == ["1.0.0", "1.0.1"]
        assert tokens.requests[-1].username == "robot"
        bad = RegistryCredential(username="robot", password=SecretStr("nope-wrong"))
        reg = OciRegistry(credentials=StaticCredentials({proxy.host: bad}))
        with reg, pytest.raises(RegistryAuthError) as refused:
            reg.list_tags(image)
        assert "nope-wrong" not in str(refused.value)


def test_expired_or_revoked_token_is_renewed_once(proxy: FaultProxy) -> None:
    with TokenServer() as tokens:
        proxy.require_bearer(tokens)
        with OciRegistry(cache_ttl=0) as reg:
            image = ref(proxy.host, "demo/web")
            reg.list_tags(image)
            tokens.revoke_all()
            assert set(reg.list_tags(image)) >= WEB_TAGS
        assert len(tokens.requests) == 2


# --- faults through the proxy --------------------------------------------------------------------


def test_two_429s_then_success_with_retries(proxy: FaultProxy, sleeps: list[float]) -> None:
    proxy.rate_limit(r"/tags/list$", times=2, retry_after="1")
    with client(sleeps, retries=2) as reg:
        assert set(reg.list_tags(ref(proxy.host, "demo/web"))) >= WEB_TAGS
    assert sleeps == [1.0, 1.0]
    assert proxy.count(r"/tags/list$", injected=True) == 2
    assert proxy.count(r"/tags/list$", injected=False) == 1


def test_429_surfaces_with_retry_after_when_retries_are_off(
    proxy: FaultProxy, sleeps: list[float]
) -> None:
    proxy.rate_limit(r"/tags/list$", times=2, retry_after="1")
    reg = client(sleeps, retries=0, rate_limit_retries=0)
    with reg, pytest.raises(RegistryRateLimitedError) as info:
        reg.list_tags(ref(proxy.host, "demo/web"))
    assert isinstance(info.value, RegistryUnavailableError)
    assert info.value.retry_after == 1.0
    assert sleeps == []
    # default: one short internal wait, then the second 429 is surfaced to the task
    proxy.clear()
    proxy.rate_limit(r"/tags/list$", times=2, retry_after="1")
    with client(sleeps) as reg, pytest.raises(RegistryRateLimitedError) as again:
        reg.list_tags(ref(proxy.host, "demo/web"))
    assert again.value.retry_after == 1.0
    assert sleeps == [1.0]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_transient_and_retried(proxy: FaultProxy, sleeps: list[float], status: int) -> None:
    proxy.fail(r"/manifests/", status=status, times=1)
    image = ref(proxy.host, "demo/web:1.0.0")
    with client(sleeps) as reg, pytest.raises(RegistryUnavailableError) as info:
        reg.digest(image)
    assert str(status) in str(info.value)
    proxy.fail(r"/manifests/", status=status, times=1)
    with client(sleeps, retries=1) as reg:
        assert reg.digest(image).startswith("sha256:")


def test_truncated_json_is_response_error(proxy: FaultProxy) -> None:
    proxy.truncate(r"/tags/list$")
    with client() as reg, pytest.raises(RegistryResponseError, match="not valid JSON"):
        reg.list_tags(ref(proxy.host, "demo/web"))
    proxy.truncate(r"/blobs/")
    with client() as reg, pytest.raises(RegistryResponseError, match="does not match its digest"):
        reg.created_at(ref(proxy.host, "demo/web:1.0.0"))


def test_wrong_shape_is_response_error(proxy: FaultProxy) -> None:
    proxy.respond(r"/tags/list$", body=b'{"name": "demo/web", "tags": "1.0.0"}')
    with client() as reg, pytest.raises(RegistryResponseError, match="not a list of strings"):
        reg.list_tags(ref(proxy.host, "demo/web"))


def test_link_to_another_host_is_refused(proxy: FaultProxy) -> None:
    proxy.respond(
        r"/tags/list$",
        body=b'{"name": "demo/web", "tags": ["1.0.0"]}',
        headers={"Link": '<http://127.0.0.2:1/v2/demo/web/tags/list?last=1.0.0>; rel="next"'},
    )
    with client() as reg, pytest.raises(RegistryResponseError, match="another host"):
        reg.list_tags(ref(proxy.host, "demo/web"))


def test_connection_reset_and_timeout_are_transient(proxy: FaultProxy) -> None:
    proxy.reset(r"/tags/list$")
    with client() as reg, pytest.raises(RegistryUnavailableError) as reset:
        reg.list_tags(ref(proxy.host, "demo/web"))
    assert reset.value.__cause__ is not None
    proxy.delay(r"/tags/list$", 1.0)
    reg = client(timeout=0.2)
    with reg, pytest.raises(RegistryUnavailableError, match=r"within 0\.2 s"):
        reg.list_tags(ref(proxy.host, "demo/web"))


def test_100000_tags_are_listed_with_pagination(proxy: FaultProxy) -> None:
    proxy.synthesize_tags("big/repo", 100_000)
    with client() as reg:
        tags = reg.list_tags(ref(proxy.host, "big/repo"))
    assert len(tags) == 100_000
    assert len(set(tags)) == 100_000
    assert tags[0] == "0.0.0" and tags[-1] == "9.9999.0"
    assert proxy.count(r"^/v2/big/repo/tags/list$") == 100  # page_size 1000


def test_more_tags_than_max_tags_stops(proxy: FaultProxy) -> None:
    proxy.synthesize_tags("big/repo", 5000)
    with client(max_tags=2500) as reg, pytest.raises(RegistryResponseError, match="more than 2500"):
        reg.list_tags(ref(proxy.host, "big/repo"))
    assert proxy.count(r"/tags/list$") == 3


def test_budget_exhaustion_sends_nothing(proxy: FaultProxy) -> None:
    budget = TokenBucketBudget(capacity=3, refill_per_second=0)
    with client(budget=budget, cache_ttl=0) as reg:
        image = ref(proxy.host, "demo/web:1.0.0")
        reg.list_tags(image)
        reg.digest(image)
        reg.list_tags(ref(proxy.host, "demo/api"))
        with pytest.raises(RegistryBudgetExhaustedError, match=r"request budget for 127\.0\.0\.1"):
            reg.digest(image)
    assert len(proxy.requests) == 3


def test_cache_asks_each_repository_once_per_scan(proxy: FaultProxy) -> None:
    with client(cache_ttl=60) as reg:
        for _ in range(3):  # three "scans" of two containers each
            for text in ("demo/web:1.0.0", "demo/api:1.0.1"):
                image = ref(proxy.host, text)
                reg.list_tags(image)
                reg.digest(image)
        assert reg.cache_hits == 8
    assert proxy.count(r"^/v2/demo/web/tags/list$") == 1
    assert proxy.count(r"^/v2/demo/api/tags/list$") == 1
    assert proxy.count(r"/manifests/", method="HEAD") == 2
