"""OciRegistry against httpx.MockTransport: auth flows, pagination, errors, budget, cache.

The same behaviour against the real registry (and through the fault proxy) is in
test_registry_integration.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from safe_updater.adapters.errors import (
    ImageNotFoundError,
    RegistryAuthError,
    RegistryResponseError,
    RegistryUnavailableError,
)
from safe_updater.adapters.registry import (
    MANIFEST_MEDIA_TYPES,
    ChainedCredentials,
    OciRegistry,
    RegistryBudgetExhaustedError,
    RegistryCredential,
    RegistryRateLimitedError,
    SharedBudget,
    StaticCredentials,
    TokenBucketBudget,
    registry_base_url,
)
from safe_updater.adapters.registry_auth import (
    DOCKER_HUB_API_HOST,
    normalize_registry_host,
    parse_retry_after,
    parse_www_authenticate,
)
from safe_updater.adapters.registry_wire import parse_rfc3339
from safe_updater.domain.assets import ImageRef
from safe_updater.domain.errors import PermanentError, TransientError

HOST = "registry.example.test"
PASSWORD = "s3cr3t-Pa55word"
CRED = RegistryCredential(username="bot", password=SecretStr(PASSWORD))
IMAGE = ImageRef.parse(f"{HOST}/team/app:1.0.0")
DIGEST = "sha256:" + "a" * 64

Handler = Callable[[httpx.Request], httpx.Response]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A MockTransport handler that records requests and dispatches to a function."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def count(self, fragment: str = "") -> int:
        return sum(1 for r in self.requests if fragment in str(r.url))


def make(handler: Handler, **kwargs: Any) -> tuple[OciRegistry, Recorder]:
    recorder = Recorder(handler)
    kwargs.setdefault("sleep", lambda _s: None)
    return OciRegistry(transport=httpx.MockTransport(recorder), **kwargs), recorder


def tags_response(tags: Any, link: str | None = None) -> httpx.Response:
    headers = {"Link": link} if link else {}
    return httpx.Response(200, json={"name": "team/app", "tags": tags}, headers=headers)


def assert_no_secret(exc: BaseException) -> None:
    basic = base64.b64encode(f"bot:{PASSWORD}".encode()).decode()
    seen: BaseException | None = exc
    while seen is not None:
        for text in (str(seen), repr(seen), repr(seen.args)):
            assert PASSWORD not in text
            assert basic not in text
        seen = seen.__cause__ or seen.__context__


# --- hosts and schemes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "insecure", "expected"),
    [
        ("localhost:5000", (), "http://localhost:5000/v2/"),
        ("127.0.0.1:5000", (), "http://127.0.0.1:5000/v2/"),
        ("127.1.2.3:80", (), "http://127.1.2.3:80/v2/"),
        ("[::1]:5000", (), "http://[::1]:5000/v2/"),
        ("ghcr.io", (), "https://ghcr.io/v2/"),
        ("10.0.0.5:5000", (), "https://10.0.0.5:5000/v2/"),
        ("reg.lan:5000", ("reg.lan:5000",), "http://reg.lan:5000/v2/"),
        ("reg.lan:5000", ("other.lan",), "https://reg.lan:5000/v2/"),
        ("docker.io", (), f"https://{DOCKER_HUB_API_HOST}/v2/"),
        ("index.docker.io", (), f"https://{DOCKER_HUB_API_HOST}/v2/"),
    ],
)
def test_base_url_scheme_follows_loopback_and_insecure_rules(
    registry: str, insecure: tuple[str, ...], expected: str
) -> None:
    assert registry_base_url(registry, insecure) == expected


def test_requests_go_to_https_for_remote_hosts() -> None:
    reg, rec = make(lambda r: tags_response(["1.0.0"]))
    reg.list_tags(IMAGE)
    assert str(rec.requests[0].url) == f"https://{HOST}/v2/team/app/tags/list?n=1000"


def test_verify_tls_off_is_logged_as_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="safe_updater.adapters.registry"):
        OciRegistry(verify_tls=False, insecure_hosts=["reg.lan"]).close()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "verification is OFF" in messages
    assert "reg.lan is reached over plain HTTP" in messages


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        (DOCKER_HUB_API_HOST, "docker.io"),
        ("HTTP://LocalHost:5000/", "localhost:5000"),
        ("ghcr.io", "ghcr.io"),
    ],
)
def test_normalize_registry_host(text: str, expected: str) -> None:
    assert normalize_registry_host(text) == expected


# --- WWW-Authenticate and Retry-After -----------------------------------------------------------


def test_parse_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.example.test/token",service="registry.example.test",'
        'scope="repository:team/app:pull,push"'
    )
    (challenge,) = parse_www_authenticate(header)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.example.test/token"
    assert challenge.params["scope"] == "repository:team/app:pull,push"


def test_parse_several_challenges_and_escapes() -> None:
    challenges = parse_www_authenticate('Basic realm="a \\"b\\"", Bearer realm=x, service=y')
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].realm == 'a "b"'
    assert challenges[1].params == {"realm": "x", "service": "y"}


def test_parse_empty_challenge_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_www_authenticate("  ")


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("999999") == 3600.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:20:30Z", datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)),
        ("2024-05-01T10:20:30.123456789Z", datetime(2024, 5, 1, 10, 20, 30, 123456, tzinfo=UTC)),
        ("2024-05-01T12:20:30+02:00", datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
    ],
)
def test_parse_rfc3339(text: str, expected: datetime | None) -> None:
    assert parse_rfc3339(text) == expected


# --- bearer and basic auth ----------------------------------------------------------------------


def bearer_registry(
    *, users: dict[str, str] | None = None, expires_in: int | None = 300
) -> tuple[Handler, dict[str, int], list[str]]:
    """A fake registry with a token service; returns (handler, counters, issued tokens)."""
    counters = {"token": 0, "registry": 0}
    issued: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.test":
            counters["token"] += 1
            assert request.url.params["service"] == "registry.example.test"
            assert request.url.params["scope"] == "repository:team/app:pull"
            header = request.headers.get("Authorization")
            if users is not None:
                expected = (
                    "Basic "
                    + base64.b64encode(":".join(next(iter(users.items()))).encode()).decode()
                )
                if header != expected:
                    return httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED"}]})
            else:
                assert header is None
            token = f"tok-{len(issued)}"
            issued.append(token)
            body: dict[str, Any] = {"token": token}
            if expires_in is not None:
                body["expires_in"] = expires_in
            return httpx.Response(200, json=body)
        counters["registry"] += 1
        if request.headers.get("Authorization") != f"Bearer {issued[-1] if issued else '-'}":
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.example.test/token",'
                    'service="registry.example.test",scope="repository:team/app:pull"'
                },
            )
        return tags_response(["1.0.0", "1.1.0"])

    return handler, counters, issued


def test_anonymous_bearer_token_is_fetched_cached_and_reused() -> None:
    handler, counters, _issued = bearer_registry()
    clock = Clock()
    reg, rec = make(handler, clock=clock, cache_ttl=0)
    assert reg.list_tags(IMAGE) == ["1.0.0", "1.1.0"]
    assert counters == {"token": 1, "registry": 2}  # 401, then with the token
    reg.list_tags(IMAGE)
    assert counters == {"token": 1, "registry": 3}  # the cached token goes first
    assert rec.requests[-1].headers["Authorization"] == "Bearer tok-0"


def test_bearer_token_expires_after_expires_in() -> None:
    handler, counters, _ = bearer_registry(expires_in=None)  # default lifetime 60 s
    clock = Clock()
    reg, _ = make(handler, clock=clock, cache_ttl=0)
    reg.list_tags(IMAGE)
    clock.now += 45
    reg.list_tags(IMAGE)
    assert counters["token"] == 1
    clock.now += 30  # past 60 s
    reg.list_tags(IMAGE)
    assert counters["token"] == 2


def test_bearer_token_with_credentials_uses_basic_auth_at_the_realm() -> None:
    handler, counters, _ = bearer_registry(users={"bot": PASSWORD})
    reg, _ = make(handler, credentials=StaticCredentials({HOST: CRED}))
    assert reg.list_tags(IMAGE) == ["1.0.0", "1.1.0"]
    assert counters["token"] == 1


def test_bearer_realm_refusing_credentials_is_auth_error_without_password() -> None:
    handler, _, _ = bearer_registry(users={"bot": "other"})
    reg, _ = make(handler, credentials=StaticCredentials({HOST: CRED}))
    with pytest.raises(RegistryAuthError) as info:
        reg.list_tags(IMAGE)
    assert "refused the credentials of 'bot'" in str(info.value)
    assert f"docker login {HOST}" in str(info.value)
    assert "RegistryCredentials block" in str(info.value)
    assert_no_secret(info.value)


def test_bearer_realm_over_plain_http_is_refused_for_remote_hosts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.example.test/token"'}
        )

    reg, rec = make(handler, credentials=StaticCredentials({HOST: CRED}))
    with pytest.raises(RegistryResponseError, match="not HTTPS"):
        reg.list_tags(IMAGE)
    assert rec.count("auth.example.test") == 0


def test_token_response_without_token_is_response_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.test":
            return httpx.Response(200, json={"expires_in": 60})
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.example.test/t"'}
        )

    reg, _ = make(handler)
    with pytest.raises(RegistryResponseError, match="no token"):
        reg.list_tags(IMAGE)


def basic_registry(password: str = PASSWORD) -> Handler:
    good = "Basic " + base64.b64encode(f"bot:{password}".encode()).decode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != good:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return tags_response(["1.0.0"])

    return handler


def test_basic_auth_retries_with_credential_then_sends_it_up_front() -> None:
    reg, rec = make(basic_registry(), credentials=StaticCredentials({HOST: CRED}), cache_ttl=0)
    assert reg.list_tags(IMAGE) == ["1.0.0"]
    assert len(rec.requests) == 2
    reg.list_tags(IMAGE)
    assert len(rec.requests) == 3


def test_basic_auth_without_credentials_names_registry_and_fix() -> None:
    reg, _ = make(basic_registry())
    with pytest.raises(RegistryAuthError) as info:
        reg.list_tags(IMAGE)
    text = str(info.value)
    assert f"registry {HOST} needs credentials for team/app" in text
    assert f"`docker login {HOST}`" in text
    assert isinstance(info.value, PermanentError)


def test_basic_auth_wrong_password_never_leaks_it(caplog: pytest.LogCaptureFixture) -> None:
    reg, _ = make(basic_registry("right"), credentials=StaticCredentials({HOST: CRED}))
    with caplog.at_level(logging.DEBUG), pytest.raises(RegistryAuthError) as info:
        reg.list_tags(IMAGE)
    assert_no_secret(info.value)
    assert PASSWORD not in caplog.text
    assert "Basic " not in caplog.text


def test_403_is_auth_error() -> None:
    reg, _ = make(lambda r: httpx.Response(403, json={"errors": [{"code": "DENIED"}]}))
    with pytest.raises(RegistryAuthError, match="refused anonymous access"):
        reg.digest(IMAGE)


def test_credential_repr_hides_password() -> None:
    for text in (repr(CRED), str(CRED), CRED.model_dump_json()):
        assert PASSWORD not in text


def test_chained_credentials_first_answer_wins() -> None:
    other = RegistryCredential(username="other", password=SecretStr("x"))
    chain = ChainedCredentials(StaticCredentials({}), StaticCredentials({HOST: CRED}))
    assert chain.for_registry(HOST) == CRED
    chain2 = ChainedCredentials(StaticCredentials({HOST: other}), StaticCredentials({HOST: CRED}))
    assert chain2.for_registry(HOST) == other
    assert chain.for_registry("nowhere.test") is None


# --- status codes, retries, transport errors -----------------------------------------------------


def test_404_is_image_not_found_with_reference() -> None:
    body = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
    reg, _ = make(lambda r: httpx.Response(404, json=body))
    with pytest.raises(ImageNotFoundError) as info:
        reg.digest(IMAGE)  # HEAD: no body
    assert "team/app:1.0.0 not found" in str(info.value)
    with pytest.raises(ImageNotFoundError) as info:
        reg.created_at(IMAGE)  # GET: the error body's code is quoted
    assert "MANIFEST_UNKNOWN: manifest unknown" in str(info.value)


@pytest.mark.parametrize(
    ("header", "expected"), [("3", 3.0), (None, None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)]
)
def test_429_is_transient_with_retry_after(header: str | None, expected: float | None) -> None:
    headers = {"Retry-After": header} if header else {}
    reg, rec = make(lambda r: httpx.Response(429, headers=headers), rate_limit_retries=0)
    with pytest.raises(RegistryRateLimitedError) as info:
        reg.list_tags(IMAGE)
    assert isinstance(info.value, TransientError)
    assert info.value.retry_after == expected
    assert len(rec.requests) == 1


def sequence(*responses: httpx.Response) -> Handler:
    items = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        return items.pop(0) if len(items) > 1 else items[0]

    return handler


def test_short_429_is_retried_once_internally_by_default() -> None:
    slept: list[float] = []
    limited = httpx.Response(429, headers={"Retry-After": "1"})
    reg, _rec = make(sequence(limited, tags_response(["1.0.0"])), sleep=slept.append)
    assert reg.list_tags(IMAGE) == ["1.0.0"]
    assert slept == [1.0]
    # a second 429 in a row is surfaced to the caller (the task retries)
    reg2, _ = make(sequence(limited, limited, tags_response(["1.0.0"])))
    with pytest.raises(RegistryRateLimitedError) as info:
        reg2.list_tags(IMAGE)
    assert info.value.retry_after == 1.0


def test_long_retry_after_is_not_waited_for() -> None:
    slept: list[float] = []
    limited = httpx.Response(429, headers={"Retry-After": "30"})
    reg, _rec = make(sequence(limited, tags_response(["1.0.0"])), sleep=slept.append)
    with pytest.raises(RegistryRateLimitedError):
        reg.list_tags(IMAGE)
    assert slept == []


def test_retries_setting_retries_5xx_with_backoff() -> None:
    slept: list[float] = []
    down = httpx.Response(503)
    reg, rec = make(sequence(down, down, tags_response(["1.0.0"])), retries=2, sleep=slept.append)
    assert reg.list_tags(IMAGE) == ["1.0.0"]
    assert slept == [0.5, 1.0]
    assert len(rec.requests) == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_transient(status: int) -> None:
    reg, _ = make(lambda r: httpx.Response(status))
    with pytest.raises(RegistryUnavailableError) as info:
        reg.list_tags(IMAGE)
    assert str(status) in str(info.value)


@pytest.mark.parametrize(
    "error", [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.ReadError("reset")]
)
def test_transport_errors_are_transient_and_chained(error: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    reg, _ = make(handler)
    with pytest.raises(RegistryUnavailableError) as info:
        reg.list_tags(IMAGE)
    assert info.value.__cause__ is error


def test_unexpected_status_is_response_error() -> None:
    reg, _ = make(lambda r: httpx.Response(400, json={"errors": [{"code": "NAME_INVALID"}]}))
    with pytest.raises(RegistryResponseError, match=r"unexpected 400.*NAME_INVALID"):
        reg.list_tags(IMAGE)


# --- tag lists ----------------------------------------------------------------------------------


def test_pagination_follows_link_dedupes_and_keeps_order() -> None:
    pages = {
        "": tags_response(["b", "a", "c"], '</v2/team/app/tags/list?last=c&n=3>; rel="next"'),
        "c": tags_response(
            ["c", "d", "e"],
            f'<https://{HOST}/v2/team/app/tags/list?last=e&n=3>; rel="next"',
        ),
        "e": tags_response(["f"]),
    }
    reg, rec = make(lambda r: pages[r.url.params.get("last", "")], page_size=3)
    assert reg.list_tags(IMAGE) == ["b", "a", "c", "d", "e", "f"]
    assert len(rec.requests) == 3
    assert rec.requests[0].url.params["n"] == "3"


def test_link_with_other_relations_and_quotes() -> None:
    link = '</v2/team/app/tags/list?last=a>; rel="prev", </v2/team/app/tags/list?last=b>; rel=next'
    pages = {"": tags_response(["a", "b"], link), "b": tags_response(["z"])}
    reg, _ = make(lambda r: pages[r.url.params.get("last", "")])
    assert reg.list_tags(IMAGE) == ["a", "b", "z"]


@pytest.mark.parametrize(
    ("link", "message"),
    [
        ('<https://evil.test/v2/team/app/tags/list?last=a>; rel="next"', "another host"),
        (f'<http://{HOST}/v2/team/app/tags/list?last=a>; rel="next"', "another host"),
        ('</v2/other/repo/tags/list?last=a>; rel="next"', "points to"),
        ("garbage without brackets", "malformed Link"),
        ('</v2/team/app/tags/list?n=1000>; rel="next"', "loops back"),
    ],
)
def test_bad_link_header_is_response_error(link: str, message: str) -> None:
    reg, _ = make(lambda r: tags_response(["a"], link))
    with pytest.raises(RegistryResponseError, match=message):
        reg.list_tags(IMAGE)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"name": "team/app", "tags": ["a", ', "not valid JSON"),
        (b'["a"]', "JSON list, not an object"),
        (b'{"name": "team/app"}', "has no 'tags'"),
        (b'{"tags": "1.0.0"}', "not a list of strings"),
        (b'{"tags": [1, 2]}', "not a list of strings"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_tag_list_is_response_error(body: bytes, message: str) -> None:
    reg, _ = make(lambda r: httpx.Response(200, content=body))
    with pytest.raises(RegistryResponseError, match=message) as info:
        reg.list_tags(IMAGE)
    assert not isinstance(info.value, TransientError)


def test_null_tags_is_empty() -> None:
    reg, _ = make(lambda r: tags_response(None))
    assert reg.list_tags(IMAGE) == []


def test_invalid_tags_are_skipped_with_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    bad = ["-leading-dash", "x" * 129, "has space", "", "ok.1"]
    reg, _ = make(lambda r: tags_response(["1.0.0", *bad]))
    with caplog.at_level(logging.DEBUG, logger="safe_updater.adapters.registry"):
        assert reg.list_tags(IMAGE) == ["1.0.0", "ok.1"]
    assert caplog.text.count("skipping invalid tag") == 4


def test_more_than_max_tags_stops_with_clear_error() -> None:
    pages = {
        "": tags_response(["a", "b"], '</v2/team/app/tags/list?last=b&n=2>; rel="next"'),
        "b": tags_response(["c", "d"], '</v2/team/app/tags/list?last=d&n=2>; rel="next"'),
    }
    reg, rec = make(lambda r: pages[r.url.params.get("last", "")], max_tags=3, page_size=2)
    with pytest.raises(RegistryResponseError, match="more than 3 tags") as info:
        reg.list_tags(IMAGE)
    assert "max_tags" in str(info.value)
    assert len(rec.requests) == 2


def test_oversized_response_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import safe_updater.adapters.registry_wire as wire

    monkeypatch.setattr(wire, "MAX_TAGS_PAGE_BYTES", 100)
    reg, _ = make(lambda r: tags_response([f"tag-{i}" for i in range(50)]))
    with pytest.raises(RegistryResponseError, match="larger than 100 bytes"):
        reg.list_tags(IMAGE)


# --- digests ------------------------------------------------------------------------------------


def test_digest_uses_head_with_all_manifest_accept_types() -> None:
    reg, rec = make(lambda r: httpx.Response(200, headers={"Docker-Content-Digest": DIGEST}))
    assert reg.digest(IMAGE) == DIGEST
    (request,) = rec.requests
    assert request.method == "HEAD"
    assert request.url.path == "/v2/team/app/manifests/1.0.0"
    accept = [a.strip() for a in request.headers["Accept"].split(",")]
    assert set(accept) == set(MANIFEST_MEDIA_TYPES)
    assert len(MANIFEST_MEDIA_TYPES) == 4


def test_digest_falls_back_to_get_then_to_hashing_the_body() -> None:
    body = b'{"schemaVersion":2}'

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200)
        return httpx.Response(200, content=body)

    reg, rec = make(handler)
    assert reg.digest(IMAGE) == "sha256:" + hashlib.sha256(body).hexdigest()
    assert [r.method for r in rec.requests] == ["HEAD", "GET"]
    assert "application/vnd.oci.image.index.v1+json" in rec.requests[1].headers["Accept"]


def test_digest_get_fallback_prefers_header() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Docker-Content-Digest": "bogus"})
        return httpx.Response(200, content=b"{}", headers={"Docker-Content-Digest": DIGEST})

    reg, _ = make(handler)
    assert reg.digest(IMAGE) == DIGEST


def test_digest_of_a_digest_reference() -> None:
    reg, rec = make(lambda r: httpx.Response(200, headers={"Docker-Content-Digest": DIGEST}))
    assert reg.digest(ImageRef.parse(f"{HOST}/team/app@{DIGEST}")) == DIGEST
    assert rec.requests[0].url.path == f"/v2/team/app/manifests/{DIGEST}"


# --- created_at ---------------------------------------------------------------------------------


def image_registry(
    config: dict[str, Any], *, index: list[dict[str, Any]] | None = None, corrupt: bool = False
) -> Handler:
    config_bytes = json.dumps(config).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": config_digest, "size": len(config_bytes)},
        "layers": [],
    }
    manifest_digest = "sha256:" + "b" * 64

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/manifests/1.0.0") and index is not None:
            entries = [{**e, "digest": e.get("digest", manifest_digest)} for e in index]
            return httpx.Response(
                200,
                json={"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries},
            )
        if "/manifests/" in path:
            return httpx.Response(200, json=manifest)
        if path == f"/v2/team/app/blobs/{config_digest}":
            return httpx.Response(200, content=config_bytes + (b" " if corrupt else b""))
        return httpx.Response(404)

    return handler


def test_created_at_reads_the_config_blob() -> None:
    reg, rec = make(image_registry({"created": "2024-03-04T05:06:07.123456789Z"}))
    assert reg.created_at(IMAGE) == datetime(2024, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    assert [r.url.path.split("/")[-2] for r in rec.requests] == ["manifests", "blobs"]


def test_created_at_follows_index_to_linux_amd64() -> None:
    other = "sha256:" + "c" * 64
    index: list[dict[str, Any]] = [
        {"digest": other, "platform": {"os": "linux", "architecture": "arm64"}},
        {"platform": {"os": "linux", "architecture": "amd64"}},
    ]
    reg, rec = make(image_registry({"created": "2024-01-01T00:00:00Z"}, index=index))
    assert reg.created_at(IMAGE) == datetime(2024, 1, 1, tzinfo=UTC)
    assert rec.requests[1].url.path == "/v2/team/app/manifests/sha256:" + "b" * 64


def test_created_at_index_without_amd64_takes_first() -> None:
    index: list[dict[str, Any]] = [
        {"platform": {"os": "linux", "architecture": "s390x"}},
        {"digest": "sha256:" + "c" * 64},
    ]
    reg, rec = make(image_registry({"created": "2024-01-01T00:00:00Z"}, index=index))
    reg.created_at(IMAGE)
    assert rec.requests[1].url.path.endswith("b" * 64)


def test_created_at_missing_is_none() -> None:
    reg, _ = make(image_registry({"architecture": "amd64"}))
    assert reg.created_at(IMAGE) is None


@pytest.mark.parametrize(
    ("config", "corrupt", "message"),
    [
        ({"created": "yesterday"}, False, "not an RFC 3339 time"),
        ({"created": 12}, False, "not a string"),
        ({"created": "2024-01-01T00:00:00Z"}, True, "does not match its digest"),
    ],
)
def test_created_at_bad_config_is_response_error(
    config: dict[str, Any], corrupt: bool, message: str
) -> None:
    reg, _ = make(image_registry(config, corrupt=corrupt))
    with pytest.raises(RegistryResponseError, match=message):
        reg.created_at(IMAGE)


def test_manifest_without_config_is_response_error() -> None:
    manifest = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}
    reg, _ = make(lambda r: httpx.Response(200, json=manifest))
    with pytest.raises(RegistryResponseError, match="no 'config' object"):
        reg.created_at(IMAGE)


def test_schema1_manifest_created_from_history() -> None:
    manifest = {
        "schemaVersion": 1,
        "history": [{"v1Compatibility": json.dumps({"created": "2020-02-02T02:02:02Z"})}],
    }
    headers = {"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"}
    reg, _ = make(lambda r: httpx.Response(200, json=manifest, headers=headers))
    assert reg.created_at(IMAGE) == datetime(2020, 2, 2, 2, 2, 2, tzinfo=UTC)


# --- budget -------------------------------------------------------------------------------------


def test_budget_is_asked_before_every_request_and_stops_without_calling() -> None:
    clock = Clock()
    budget = TokenBucketBudget(capacity=2, refill_per_second=0.5, clock=clock)
    reg, rec = make(lambda r: tags_response(["1.0.0"]), budget=budget, cache_ttl=0)
    reg.list_tags(IMAGE)
    reg.list_tags(IMAGE)
    with pytest.raises(RegistryBudgetExhaustedError) as info:
        reg.list_tags(IMAGE)
    assert str(info.value).startswith(f"request budget for {HOST} exhausted")
    assert isinstance(info.value, RegistryUnavailableError)
    assert len(rec.requests) == 2
    clock.now += 2  # refills one request
    reg.list_tags(IMAGE)
    assert len(rec.requests) == 3


def test_budget_exhaustion_is_not_retried_even_with_retries() -> None:
    slept: list[float] = []
    budget = TokenBucketBudget(capacity=1, refill_per_second=0, clock=Clock())
    reg, rec = make(
        lambda r: httpx.Response(503), budget=budget, retries=3, sleep=slept.append, cache_ttl=0
    )
    with pytest.raises(RegistryBudgetExhaustedError):
        reg.list_tags(IMAGE)
    assert len(rec.requests) == 1
    assert slept == [0.5]


def test_budget_counts_token_requests_too() -> None:
    handler, counters, _ = bearer_registry()
    budget = TokenBucketBudget(capacity=2, refill_per_second=0, clock=Clock())
    reg, _ = make(handler, budget=budget)
    with pytest.raises(RegistryBudgetExhaustedError):
        reg.list_tags(IMAGE)  # 401, token, (no third request)
    assert counters == {"token": 1, "registry": 1}


def test_budget_is_per_host() -> None:
    budget = TokenBucketBudget(capacity=1, refill_per_second=0, clock=Clock())
    assert budget.acquire("a.test")
    assert not budget.acquire("a.test")
    assert budget.acquire("b.test")


def test_shared_budget_passes_key_and_limits_to_the_store() -> None:
    calls: list[tuple[str, float, float, float]] = []

    class Backend:
        def acquire(
            self, key: str, *, capacity: float, refill_per_second: float, cost: float = 1.0
        ) -> bool:
            calls.append((key, capacity, refill_per_second, cost))
            return len(calls) < 2

    budget = SharedBudget(Backend(), capacity=50, refill_per_second=2)
    reg, _ = make(lambda r: tags_response(["1.0.0"]), budget=budget, cache_ttl=0)
    reg.list_tags(IMAGE)
    with pytest.raises(RegistryBudgetExhaustedError):
        reg.list_tags(IMAGE)
    assert calls[0] == (f"registry:{HOST}", 50, 2, 1.0)


# --- cache --------------------------------------------------------------------------------------


def test_cache_answers_repeat_questions_until_ttl() -> None:
    clock = Clock()

    def handler(request: httpx.Request) -> httpx.Response:
        if "/tags/" in request.url.path:
            return tags_response(["1.0.0"])
        return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})

    reg, rec = make(handler, clock=clock, cache_ttl=60)
    for _ in range(3):
        assert reg.list_tags(IMAGE) == ["1.0.0"]
        assert reg.digest(IMAGE) == DIGEST
    assert rec.count("/tags/list") == 1
    assert rec.count("/manifests/") == 1
    assert reg.cache_hits == 4
    reg.digest(IMAGE.with_tag("2.0.0"))  # another tag is another key
    assert rec.count("/manifests/") == 2
    clock.now += 61
    reg.list_tags(IMAGE)
    assert rec.count("/tags/list") == 2


def test_cache_returns_copies() -> None:
    reg, _ = make(lambda r: tags_response(["1.0.0"]))
    reg.list_tags(IMAGE).append("mutated")
    assert reg.list_tags(IMAGE) == ["1.0.0"]


def test_cache_ttl_zero_disables_cache() -> None:
    reg, rec = make(lambda r: tags_response(["1.0.0"]), cache_ttl=0)
    reg.list_tags(IMAGE)
    reg.list_tags(IMAGE)
    assert len(rec.requests) == 2


def test_errors_are_not_cached() -> None:
    reg, _rec = make(sequence(httpx.Response(503), tags_response(["1.0.0"])))
    with pytest.raises(RegistryUnavailableError):
        reg.list_tags(IMAGE)
    assert reg.list_tags(IMAGE) == ["1.0.0"]


def test_context_manager_closes_client() -> None:
    with OciRegistry(transport=httpx.MockTransport(lambda r: tags_response([]))) as reg:
        assert reg.list_tags(IMAGE) == []
    with pytest.raises(RuntimeError):
        reg.list_tags(ImageRef.parse(f"{HOST}/other/app:1"))
