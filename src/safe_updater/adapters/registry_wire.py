"""What the distribution API sends, and how its answers are checked: pure, no I/O.

Media types, the tag/digest/repository grammar, size caps, and parsers for tag pages, ``Link``
headers, manifests, indexes, config blobs and error bodies. Every parser raises
:class:`~safe_updater.adapters.errors.RegistryResponseError` saying what was wrong.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx

from safe_updater.adapters.errors import RegistryResponseError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2, OCI_MANIFEST)
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
SCHEMA1_TYPES = frozenset({DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED})

MAX_TAGS_PAGE_BYTES = 16 * 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 8 * 1024 * 1024
MAX_TOKEN_BYTES = 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_CACHE_ENTRIES = 50_000

TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
REPO_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_LINK_RE = re.compile(r'\s*<([^>]*)>\s*((?:;\s*[A-Za-z0-9_-]+\s*=\s*(?:"[^"]*"|[^;,\s]*)\s*)*)')
_LINK_REL_RE = re.compile(r';\s*rel\s*=\s*(?:"([^"]*)"|([^;,\s]*))', re.IGNORECASE)
_RFC3339_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,12}))?([Zz]|[+-]\d{2}:\d{2})?"
)


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, read (capped) and closed."""

    method: str
    url: httpx.URL
    status: int
    headers: httpx.Headers
    body: bytes


V = TypeVar("V")


class TtlCache(Generic[V]):
    """A small thread-safe cache with one time-to-live; ``ttl <= 0`` disables it."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl, self._clock = ttl, clock
        self._items: dict[tuple[str, ...], tuple[float, V]] = {}
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: tuple[str, ...]) -> tuple[bool, V | None]:
        if self._ttl <= 0:
            return False, None
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return False, None
            if self._clock() >= entry[0]:
                del self._items[key]
                return False, None
            self.hits += 1
            return True, entry[1]

    def put(self, key: tuple[str, ...], value: V) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            if len(self._items) >= MAX_CACHE_ENTRIES:
                self._items.pop(next(iter(self._items)))
            self._items[key] = (self._clock() + self._ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_rfc3339(text: str) -> datetime | None:
    """RFC 3339 with up to nanoseconds (as Go writes it) → aware UTC; Go's zero time → None."""
    match = _RFC3339_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text[:64]!r} is not an RFC 3339 time")
    day, clock, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    offset = "+00:00" if zone in (None, "Z", "z") else zone
    value = datetime.fromisoformat(f"{day}T{clock}.{micro}{offset}")
    if value.year <= 1:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-01:00 is past datetime.max in UTC
        raise ValueError(f"{text[:64]!r} is out of range") from None


def json_object(reply: Reply, host: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(reply.body)
    # ValueError covers JSONDecodeError, bad UTF-8 and integers of more than 4300 digits (Python's
    # int/str limit); RecursionError a body of deeply nested brackets. Both escaped before.
    except (ValueError, RecursionError) as exc:
        raise RegistryResponseError(
            f"registry {host}: the {what} is not valid JSON ({exc.__class__.__name__}: {exc}; "
            f"{len(reply.body)} bytes from {reply.url.path})"
        ) from exc
    if not isinstance(data, dict):
        raise RegistryResponseError(
            f"registry {host}: the {what} is a JSON {type(data).__name__}, not an object"
        )
    return data


def tags_page(reply: Reply, host: str, repo: str) -> list[str]:
    """The ``tags`` of one page of ``/v2/<repo>/tags/list`` (``null`` is an empty page)."""
    data = json_object(reply, host, f"tag list of {repo}")
    if "tags" not in data:
        raise RegistryResponseError(f"registry {host}: the tag list of {repo} has no 'tags'")
    tags = data["tags"]
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise RegistryResponseError(f"registry {host}: 'tags' of {repo} is not a list of strings")
    return tags


def next_page_url(reply: Reply, base: httpx.URL, path: str, host: str) -> httpx.URL | None:
    """The ``rel="next"`` target of the reply's ``Link`` header, checked to stay on ``path``
    of the same scheme, host and port; None on the last page."""
    header = reply.headers.get("Link")
    if header is None or not header.strip():
        return None
    target: str | None = None
    pos = 0
    while pos < len(header):
        match = _LINK_RE.match(header, pos)
        if match is None or match.end() == pos:
            raise RegistryResponseError(f"registry {host}: malformed Link header {header[:200]!r}")
        for rel in _LINK_REL_RE.finditer(match.group(2)):
            if "next" in (rel.group(1) or rel.group(2) or "").lower().split():
                target = match.group(1)
        pos = match.end()
        while pos < len(header) and header[pos] in " ,":
            pos += 1
    if target is None:
        return None
    try:
        url = reply.url.join(target)
    except (httpx.InvalidURL, ValueError) as exc:
        raise RegistryResponseError(
            f"registry {host}: Link header has an invalid URL {target[:200]!r}"
        ) from exc
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
        port = "" if url.port is None else f":{url.port}"
        raise RegistryResponseError(
            f"registry {host}: Link header points to another host "
            f"({url.scheme}://{url.host}{port}); refusing to follow it"
        )
    if url.path != path:
        raise RegistryResponseError(
            f"registry {host}: Link header points to {url.path!r}, not {path!r}"
        )
    return url


def manifest_type(data: dict[str, Any], content_type: str | None, host: str, what: str) -> str:
    """The manifest's media type: its ``mediaType``, else Content-Type, else its shape."""
    kind = data.get("mediaType")
    if not isinstance(kind, str) or not kind:
        kind = media_type(content_type)
    if kind in MANIFEST_MEDIA_TYPES or kind in SCHEMA1_TYPES:
        return kind
    if "manifests" in data:
        return OCI_INDEX
    if "config" in data:
        return OCI_MANIFEST
    raise RegistryResponseError(f"registry {host}: {what} has unknown media type {kind!r}")


def pick_platform(index: dict[str, Any], host: str, what: str) -> str:
    """The digest of the linux/amd64 manifest of an index, else of its first manifest."""
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise RegistryResponseError(f"registry {host}: {what} has no 'manifests' list")
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in entries:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
            raise RegistryResponseError(
                f"registry {host}: {what} has an entry without a valid digest"
            )
        platform = entry.get("platform")
        found.append((digest, platform if isinstance(platform, dict) else {}))
    for digest, platform in found:
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return digest
    return found[0][0]


def config_descriptor(manifest: dict[str, Any], host: str, what: str) -> str:
    """The config blob digest of an image manifest (checked against the size cap)."""
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise RegistryResponseError(f"registry {host}: {what} has no 'config' object")
    digest = config.get("digest")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise RegistryResponseError(f"registry {host}: {what} has no valid config.digest")
    size = config.get("size")
    if isinstance(size, int) and size > MAX_CONFIG_BYTES:
        raise RegistryResponseError(
            f"registry {host}: the config blob of {what} is {size} bytes; "
            f"the limit is {MAX_CONFIG_BYTES}"
        )
    return digest


def created_field(value: object, host: str, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RegistryResponseError(f"registry {host}: 'created' in the {what} is not a string")
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        # Name the field: "month must be in 1..12" alone did not say which value was wrong.
        raise RegistryResponseError(f"registry {host}: 'created' in the {what}: {exc}") from exc


def schema1_created(manifest: dict[str, Any], host: str, what: str) -> datetime | None:
    """``created`` of a schema-1 manifest, from the first ``history[].v1Compatibility``."""
    try:
        first = json.loads(manifest["history"][0]["v1Compatibility"])
    except (TypeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        # RecursionError: a v1Compatibility string of deeply nested brackets.
        raise RegistryResponseError(
            f"registry {host}: the schema-1 {what} has no readable 'history[0].v1Compatibility'"
        ) from exc
    created = first.get("created") if isinstance(first, dict) else None
    return created_field(created, host, f"schema-1 {what}")


def error_detail(reply: Reply) -> str:
    """``"; MANIFEST_UNKNOWN: manifest unknown"`` from a distribution error body, if any."""
    try:
        data = json.loads(reply.body) if reply.body else None
        first = data["errors"][0] if isinstance(data, dict) else None
        if not isinstance(first, dict):
            return ""
        code, message = first.get("code"), first.get("message")
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):  # nested-bracket bodies
        return ""
    parts = [str(p)[:200] for p in (code, message) if p]
    return "; " + ": ".join(parts) if parts else ""


class BodyTooLargeError(Exception):
    """An answer exceeded its cap (internal; the adapter turns it into RegistryResponseError)."""


def read_capped(response: httpx.Response, cap: int, *, strict: bool) -> bytes:
    """The body, at most ``cap`` bytes: beyond that raise (strict) or truncate (error bodies)."""
    if response.request.method == "HEAD":
        return b""
    declared = response.headers.get("Content-Length", "")
    if strict and declared.isdigit() and int(declared) > cap:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > cap:
            if strict:
                raise BodyTooLargeError
            chunks.append(chunk[: cap - (size - len(chunk))])
            break
        chunks.append(chunk)
    return b"".join(chunks)
