"""Registry credentials and the pure parts of registry auth (no I/O here).

* :class:`RegistryCredential`: a username and a password that never prints in clear.
* :class:`CredentialsProvider`: the port the registry adapter asks for a host's credential;
  :class:`StaticCredentials` and :class:`ChainedCredentials` implement it here,
  :class:`~safe_updater.adapters.docker_config.DockerConfigCredentials` reads Docker's config.
* ``WWW-Authenticate`` and ``Retry-After`` parsing, and the per-scope bearer token cache.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict, SecretStr

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API_HOST",
    "ChainedCredentials",
    "Challenge",
    "CredentialsProvider",
    "RegistryCredential",
    "StaticCredentials",
    "TokenCache",
    "basic_auth_header",
    "is_loopback_host",
    "normalize_registry_host",
    "parse_retry_after",
    "parse_www_authenticate",
    "split_host_port",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
MAX_RETRY_AFTER = 3600.0
MAX_TOKEN_LIFETIME = 86400.0


class RegistryCredential(BaseModel):
    """A username and password (or token) for one registry. ``password`` never prints in clear."""

    model_config = ConfigDict(frozen=True)

    username: str
    password: SecretStr


class CredentialsProvider(Protocol):
    def for_registry(self, host: str) -> RegistryCredential | None:
        """The credential for ``host`` (``host[:port]`` as in an image reference), or None."""


def split_host_port(host: str) -> tuple[str, str | None]:
    """``"[::1]:5000"`` → ``("::1", "5000")``; ``"localhost"`` → ``("localhost", None)``."""
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return host, None
        name, rest = host[1:end], host[end + 1 :]
        return name, rest[1:] if rest.startswith(":") and rest[1:] else None
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, port or None
    return host, None


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``127.x.x.x``, ``::1`` (with or without a port): plain HTTP, as Docker."""
    name, _ = split_host_port(host.strip().lower())
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def normalize_registry_host(text: str) -> str:
    """The key credentials are stored under: lowercase ``host[:port]`` without scheme or path.

    Every Docker Hub alias (``https://index.docker.io/v1/``, ``registry-1.docker.io``) becomes
    ``docker.io``.
    """
    value = text.strip().lower()
    for prefix in ("https://", "http://"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
            break
    value = value.split("/", 1)[0]
    if value in _DOCKER_HUB_ALIASES:
        return DOCKER_HUB
    return value


class StaticCredentials:
    """Credentials held in memory, keyed by registry host (normalized)."""

    def __init__(self, credentials: Mapping[str, RegistryCredential] | None = None) -> None:
        self._by_host = {normalize_registry_host(h): c for h, c in (credentials or {}).items()}

    def add(self, host: str, credential: RegistryCredential) -> None:
        self._by_host[normalize_registry_host(host)] = credential

    def for_registry(self, host: str) -> RegistryCredential | None:
        return self._by_host.get(normalize_registry_host(host))

    def __repr__(self) -> str:
        return f"StaticCredentials(hosts={sorted(self._by_host)!r})"


class ChainedCredentials:
    """Asks each provider in turn; the first that has a credential for the host answers."""

    def __init__(self, *providers: CredentialsProvider) -> None:
        self._providers: tuple[CredentialsProvider, ...] = providers

    @classmethod
    def of(cls, providers: Iterable[CredentialsProvider]) -> ChainedCredentials:
        return cls(*providers)

    def for_registry(self, host: str) -> RegistryCredential | None:
        for provider in self._providers:
            credential = provider.for_registry(host)
            if credential is not None:
                return credential
        return None


def basic_auth_header(credential: RegistryCredential) -> str:
    raw = f"{credential.username}:{credential.password.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: ``Bearer realm=…,service=…,scope=…``."""

    scheme: str  # lowercase: "bearer", "basic"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


_SCHEME_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9._~+/-]*)(?:\s+|$)")
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(,|$)')
_UNESCAPE_RE = re.compile(r"\\(.)")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges; raise ``ValueError`` if malformed."""
    challenges: list[Challenge] = []
    pos, text = 0, header.strip()
    if not text:
        raise ValueError("empty WWW-Authenticate header")
    while pos < len(text):
        scheme_match = _SCHEME_RE.match(text, pos)
        if scheme_match is None:
            raise ValueError(f"no auth scheme at position {pos}")
        pos = scheme_match.end()
        params: dict[str, str] = {}
        while pos < len(text):
            param = _PARAM_RE.match(text, pos)
            if param is None:
                break
            key, value = param.group(1).lower(), param.group(2)
            if value.startswith('"'):
                value = _UNESCAPE_RE.sub(r"\1", value[1:-1])
            params[key] = value
            pos = param.end()
        challenges.append(Challenge(scheme_match.group(1).lower(), params))
        while pos < len(text) and text[pos] in " ,":
            pos += 1
    return challenges


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or HTTP date), or None.

    Negative waits become 0; absurd ones are capped at an hour.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    return min(max((when - reference).total_seconds(), 0.0), MAX_RETRY_AFTER)


class TokenCache:
    """Bearer tokens per ``(host, scope)`` until shortly before they expire. Thread-safe."""

    def __init__(self, clock: Callable[[], float], *, max_entries: int = 4096) -> None:
        self._clock = clock
        self._max = max_entries
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, host: str, scope: str) -> str | None:
        with self._lock:
            entry = self._tokens.get((host, scope))
            if entry is None:
                return None
            token, expires = entry
            if self._clock() >= expires:
                del self._tokens[(host, scope)]
                return None
            return token

    def put(self, host: str, scope: str, token: str, expires_in: float) -> None:
        # A token response's expires_in is the registry's word: NaN, Infinity (json.loads takes
        # both) or 1e308 made a token that never expired here. Keep it within a day.
        if not math.isfinite(expires_in):
            expires_in = 0.0
        expires_in = min(max(expires_in, 0.0), MAX_TOKEN_LIFETIME)
        # Renew a little early so a token does not expire between the check and the request.
        lifetime = max(expires_in - min(10.0, expires_in / 10), 0.0)
        with self._lock:
            if len(self._tokens) >= self._max:
                self._tokens.pop(next(iter(self._tokens)))
            self._tokens[(host, scope)] = (token, self._clock() + lifetime)

    def drop(self, host: str, scope: str) -> None:
        with self._lock:
            self._tokens.pop((host, scope), None)
