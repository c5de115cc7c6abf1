"""Registry answers we do not control: tag lists, Link headers, manifests, token responses and
WWW-Authenticate challenges. Each parses to a sane value or raises one of our errors naming the
part of the answer that was wrong; nothing else escapes.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
from fuzzing import FUZZ, FUZZ_SMALL, HOSTILE_JSON, dumps, json_junk, odd_text, outcome, unchanged
from hypothesis import given
from hypothesis import strategies as st

from safe_updater.adapters import registry_wire as wire
from safe_updater.adapters.errors import RegistryResponseError
from safe_updater.adapters.registry import OciRegistry
from safe_updater.adapters.registry_auth import TokenCache
from safe_updater.domain.assets import ImageRef
from safe_updater.domain.errors import SafeUpdaterError

HOST = "registry.example.test"
BASE = httpx.URL(f"https://{HOST}/v2/")
PATH = "/v2/team/app/tags/list"
IMAGE = ImageRef.parse(f"{HOST}/team/app:1.0.0")
DIGEST = "sha256:" + "a" * 64


def reply(body: bytes, headers: dict[str, str] | None = None) -> wire.Reply:
    return wire.Reply("GET", BASE.join(PATH), 200, httpx.Headers(headers or {}), body)


def junk_object() -> st.SearchStrategy[Any]:
    """A JSON object with the keys the parsers look for, holding anything."""
    keys = [
        "tags",
        "mediaType",
        "manifests",
        "config",
        "digest",
        "size",
        "platform",
        "os",
        "architecture",
        "history",
        "v1Compatibility",
        "created",
        "token",
        "access_token",
        "expires_in",
        "errors",
        "code",
        "message",
        "name",
    ]
    return st.dictionaries(st.sampled_from(keys), json_junk, max_size=5)


bodies = st.one_of(
    junk_object().map(dumps),
    json_junk.map(dumps),
    st.sampled_from(HOSTILE_JSON),
    st.text(max_size=60),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    junk_object().map(dumps).flatmap(lambda t: st.integers(0, len(t)).map(lambda n: t[:n])),
)


@FUZZ
@given(bodies)
def test_tag_pages_are_lists_of_strings_or_a_response_error(body: str) -> None:
    result = outcome(
        lambda: wire.tags_page(reply(body.encode("utf-8", "surrogatepass")), HOST, "team/app"),
        names=("tag list", "'tags'"),
        what="tags_page",
    )
    if isinstance(result, SafeUpdaterError):
        assert isinstance(result, RegistryResponseError)
        return
    assert isinstance(result, list) and all(isinstance(tag, str) for tag in result)


@FUZZ
@given(bodies)
def test_error_bodies_never_raise(body: str) -> None:
    detail = outcome(lambda: wire.error_detail(reply(body.encode("utf-8", "surrogatepass"))))
    assert isinstance(detail, str) and len(detail) <= 2 + 200 + 2 + 200


link_params = st.lists(
    st.one_of(
        st.sampled_from(
            [
                'rel="next"',
                "rel=next",
                'rel="prev next"',
                'rel="last"',
                "n=100",
                'title="a,b;c"',
                "REL=NEXT",
                "rel=",
                "=x",
                'rel="',
            ]
        ),
        st.text(alphabet='=;," <>abrelnxt', max_size=12),
    ),
    max_size=5,
)
link_targets = st.one_of(
    st.sampled_from(
        [
            PATH + "?n=2&last=b",
            f"https://{HOST}{PATH}?last=x",
            "https://evil.test" + PATH,
            "/v2/other/tags/list",
            "",
            "http://[::1",
            "https://h:99999/x",
            "\x00",
        ]
    ),
    st.text(max_size=30),
)


@st.composite
def link_headers(draw: st.DrawFn) -> str:
    links = []
    for _ in range(draw(st.integers(1, 3))):
        params = draw(link_params)
        links.append(f"<{draw(link_targets)}>" + "".join(f"; {p}" for p in params))
    header = ", ".join(links)
    if draw(st.booleans()):
        header = header[: draw(st.integers(0, len(header)))]  # cut off
    return header


@FUZZ
@given(st.one_of(link_headers(), odd_text))
def test_link_headers_give_a_same_host_same_path_url_or_name_the_link(header: str) -> None:
    try:
        answer = reply(b"{}", {"Link": header})
    except (UnicodeEncodeError, ValueError):
        return  # httpx refuses such a header value itself; no registry can send it
    result = outcome(
        lambda: wire.next_page_url(answer, BASE, PATH, HOST), names=("link",), what="Link"
    )
    if isinstance(result, httpx.URL):
        assert (result.scheme, result.host, result.port, result.path) == (
            "https",
            HOST,
            None,
            PATH,
        )


@FUZZ
@given(junk_object(), st.one_of(st.none(), odd_text, st.sampled_from(wire.MANIFEST_MEDIA_TYPES)))
def test_manifest_parsers_return_sane_values_or_name_the_field(
    manifest: dict[str, Any], content_type: str | None
) -> None:
    same = unchanged(manifest)
    what = "manifest team/app:1.0.0"
    kind = outcome(
        lambda: wire.manifest_type(manifest, content_type, HOST, what), names=("media type",)
    )
    assert isinstance(kind, SafeUpdaterError) or kind in (
        *wire.MANIFEST_MEDIA_TYPES,
        *wire.SCHEMA1_TYPES,
    )
    digest = outcome(
        lambda: wire.pick_platform(manifest, HOST, what), names=("'manifests'", "digest")
    )
    assert isinstance(digest, SafeUpdaterError) or wire.DIGEST_RE.fullmatch(digest)
    config = outcome(
        lambda: wire.config_descriptor(manifest, HOST, what), names=("'config'", "config.")
    )
    assert isinstance(config, SafeUpdaterError) or wire.DIGEST_RE.fullmatch(config)
    created = outcome(
        lambda: wire.created_field(manifest.get("created"), HOST, what), names=("'created'",)
    )
    assert created is None or isinstance(created, SafeUpdaterError) or created.tzinfo is not None
    outcome(lambda: wire.schema1_created(manifest, HOST, what), names=("history", "created"))
    same()


@FUZZ_SMALL
@given(
    st.one_of(
        st.sampled_from(HOSTILE_JSON),
        json_junk.map(dumps),
        st.sampled_from(
            ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00Z", "2024-02-30T00:00:00Z"]
        ),
    )
)
def test_schema1_history_and_created_values_of_any_shape(text: str) -> None:
    manifest = {"history": [{"v1Compatibility": text}]}
    outcome(lambda: wire.schema1_created(manifest, HOST, "m"), names=("history", "'created'"))
    outcome(lambda: wire.created_field(text, HOST, "m"), names=("'created'",))


# --- through the adapter: a registry that answers junk -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _registry(handler: Any, clock: Clock | None = None) -> OciRegistry:
    return OciRegistry(
        transport=httpx.MockTransport(handler),
        sleep=lambda _s: None,
        clock=clock or Clock(),
        cache_ttl=0,
    )


challenges = st.one_of(
    st.sampled_from(
        [
            'Bearer realm="https://auth.example.test/token",service="r"',
            'Bearer realm="http://auth.example.test/token"',
            "Bearer",
            'Basic realm="x"',
            'Bearer realm="https://auth.example.test/t", Basic realm=x',
            "Negotiate",
            " ",
            ",,,",
            'Bearer realm="\\"',
            "Bearer realm=",
            'Bearer realm="https://[::1/t"',
        ]
    ),
    st.text(alphabet='Bearer realm="https://auth.example.test/" ,=\\', max_size=60),
)


@FUZZ
@given(challenge=challenges, token_body=bodies, tags_body=bodies)
def test_a_registry_answering_junk_gives_tags_or_our_errors(
    challenge: str, token_body: str, tags_body: str
) -> None:
    calls = {"registry": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.test":
            return httpx.Response(200, content=token_body.encode("utf-8", "surrogatepass"))
        calls["registry"] += 1
        if "Authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, content=tags_body.encode("utf-8", "surrogatepass"))

    try:
        httpx.Headers({"WWW-Authenticate": challenge})
    except (UnicodeEncodeError, ValueError):
        return  # not a header value httpx would deliver
    with _registry(handler) as registry:
        result = outcome(
            lambda: registry.list_tags(IMAGE),
            names=("registry", "token", "tag", "authentication", "realm"),
            what="list_tags",
        )
    if isinstance(result, list):
        assert all(wire.TAG_RE.fullmatch(tag) for tag in result)


@FUZZ
@given(st.one_of(json_junk, st.sampled_from([float("nan"), float("inf"), 1e308, -1, True, "60"])))
def test_a_token_never_outlives_a_day_whatever_expires_in_says(expires_in: Any) -> None:
    issued = {"tokens": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.test":
            issued["tokens"] += 1
            body = json.dumps({"token": f"t{issued['tokens']}", "expires_in": expires_in})
            return httpx.Response(200, content=body.encode())
        if request.headers.get("Authorization") != f"Bearer t{issued['tokens']}":
            return httpx.Response(
                401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.example.test/t"'}
            )
        return httpx.Response(200, json={"tags": ["1.0.0"]})

    clock = Clock()
    with _registry(handler, clock) as registry:
        assert registry.list_tags(IMAGE) == ["1.0.0"]
        clock.now += 86_400 + 1
        assert registry.list_tags(IMAGE) == ["1.0.0"]
    assert issued["tokens"] == 2  # the first token had expired


@FUZZ_SMALL
@given(st.one_of(st.floats(), st.integers(-(10**30), 10**30)))
def test_token_cache_lifetimes_are_finite(expires_in: float) -> None:
    clock = Clock()
    cache = TokenCache(clock)
    cache.put("h", "s", "tok", float(expires_in))
    clock.now += 86_400 + 1
    assert cache.get("h", "s") is None
    assert math.isfinite(clock.now)
