"""OCI distribution API client: tags, digests and creation times of images, over httpx.

The port is :class:`Registry`; :class:`OciRegistry` implements it for any registry that speaks
the distribution API (Docker Hub, GHCR, Quay, Harbor, ``docker-registry``).

* Scheme: ``localhost:PORT``, ``127.x.x.x:PORT`` and ``[::1]:PORT`` over plain HTTP, as Docker
  does; any other host over HTTPS unless listed in ``insecure_hosts`` (then plain HTTP).
* Auth: on 401 the ``WWW-Authenticate`` challenge decides: ``Bearer`` fetches a token from the
  realm (anonymous, or with the host's credential as basic auth) and caches it per scope until
  it expires; ``Basic`` sends the credential. A second 401, or a 403, is
  :class:`~safe_updater.adapters.errors.RegistryAuthError`.
* Errors: 404 → ``ImageNotFoundError``; 429 → :class:`RegistryRateLimitedError` (transient, with
  ``retry_after``); 5xx, timeouts, resets → ``RegistryUnavailableError``; anything malformed →
  ``RegistryResponseError``. All chained with ``from``.
* Budget: ``budget.acquire(host)`` before every request; no → :class:`RegistryBudgetExhaustedError`.
* Cache: tags, digests and creation times per repository (and tag) for ``cache_ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Collection
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

import httpx

from safe_updater.adapters import registry_wire as wire
from safe_updater.adapters.docker_config import DockerConfigCredentials
from safe_updater.adapters.errors import (
    ImageNotFoundError,
    RegistryAuthError,
    RegistryResponseError,
    RegistryUnavailableError,
)
from safe_updater.adapters.registry_auth import (
    DOCKER_HUB,
    DOCKER_HUB_API_HOST,
    ChainedCredentials,
    CredentialsProvider,
    RegistryCredential,
    StaticCredentials,
    TokenCache,
    basic_auth_header,
    is_loopback_host,
    normalize_registry_host,
    parse_retry_after,
    parse_www_authenticate,
)
from safe_updater.adapters.registry_budget import (
    BudgetLimit,
    RequestBudget,
    SharedBudget,
    TokenBucketBudget,
)
from safe_updater.domain.assets import ImageRef
from safe_updater.domain.errors import InvalidInputError

MANIFEST_MEDIA_TYPES = wire.MANIFEST_MEDIA_TYPES
MANIFEST_ACCEPT = wire.MANIFEST_ACCEPT

__all__ = [
    "MANIFEST_ACCEPT",
    "MANIFEST_MEDIA_TYPES",
    "BudgetLimit",
    "ChainedCredentials",
    "CredentialsProvider",
    "DockerConfigCredentials",
    "OciRegistry",
    "Registry",
    "RegistryBudgetExhaustedError",
    "RegistryCredential",
    "RegistryRateLimitedError",
    "RequestBudget",
    "SharedBudget",
    "StaticCredentials",
    "TokenBucketBudget",
    "registry_base_url",
]

log = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME = 60.0
_HINT_AUTH = "store credentials in a RegistryCredentials block or `docker login {host}`"


class RegistryRateLimitedError(RegistryUnavailableError):
    """429 Too Many Requests; ``retry_after`` holds the registry's ``Retry-After``, if sent."""


class RegistryBudgetExhaustedError(RegistryUnavailableError):
    """Our own request budget for the registry is used up; nothing was sent."""


class Registry(Protocol):
    def list_tags(self, image: ImageRef) -> list[str]:
        """Every tag of the image's repository, all pages, de-duplicated, in served order."""

    def digest(self, image: ImageRef) -> str:
        """The manifest digest of ``image.tag`` (what ``docker pull`` would record)."""

    def created_at(self, image: ImageRef) -> datetime | None:
        """The ``created`` time of the image's config (linux/amd64 or the first of an index)."""


def registry_base_url(registry: str, insecure_hosts: Collection[str] = ()) -> str:
    """``https://registry-1.docker.io/v2/`` for ``docker.io``; ``http://localhost:5000/v2/`` …"""
    host = normalize_registry_host(registry)
    insecure = {normalize_registry_host(h) for h in insecure_hosts}
    api_host = DOCKER_HUB_API_HOST if host == DOCKER_HUB else host
    scheme = "http" if is_loopback_host(host) or host in insecure else "https"
    return f"{scheme}://{api_host}/v2/"


class OciRegistry:
    """The distribution API over one ``httpx.Client`` (pass ``transport=`` to fake or relay it).

    Retries: ``retries`` (default 0) retries any transient error with back-off, honouring
    ``Retry-After`` up to ``max_retry_wait`` seconds. Independently, ``rate_limit_retries``
    (default 1) retries a 429 whose ``Retry-After`` is at most ``max_rate_limit_wait`` (5 s):
    a short, explicit pause is cheaper here than a whole Prefect task retry. Everything else is
    left to the task's retries, which see ``retry_after`` on the error. Budget exhaustion is
    never retried here.
    """

    def __init__(
        self,
        *,
        credentials: CredentialsProvider | None = None,
        budget: RequestBudget | None = None,
        insecure_hosts: Collection[str] = (),
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        cache_ttl: float = 60.0,
        max_tags: int = 100_000,
        page_size: int = 1000,
        verify_tls: bool = True,
        clock: Callable[[], float] = time.monotonic,
        retries: int = 0,
        rate_limit_retries: int = 1,
        max_rate_limit_wait: float = 5.0,
        max_retry_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_tags < 1 or page_size < 1 or timeout <= 0 or retries < 0 or rate_limit_retries < 0:
            raise ValueError("max_tags, page_size, timeout must be > 0; retries must be >= 0")
        self._credentials = credentials
        self._budget = budget
        self._insecure = frozenset(normalize_registry_host(h) for h in insecure_hosts)
        self._timeout = timeout
        self._max_tags = max_tags
        self._page_size = page_size
        self._retries = retries
        self._rate_limit_retries = rate_limit_retries
        self._max_rate_limit_wait = max_rate_limit_wait
        self._max_retry_wait = max_retry_wait
        self._sleep = sleep
        self._tokens = TokenCache(clock)
        self._schemes: dict[str, str] = {}  # host -> "bearer" | "basic", learned from 401s
        self._tags: wire.TtlCache[tuple[str, ...]] = wire.TtlCache(cache_ttl, clock)
        self._digests: wire.TtlCache[str] = wire.TtlCache(cache_ttl, clock)
        self._created: wire.TtlCache[datetime | None] = wire.TtlCache(cache_ttl, clock)
        if not verify_tls:
            log.warning("TLS certificate verification is OFF for every registry (verify_tls=False)")
        for host in sorted(self._insecure):
            if not is_loopback_host(host):
                log.warning("registry %s is reached over plain HTTP (insecure: true)", host)
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            verify=verify_tls,
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": "safe-updater"},
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OciRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def clear_cache(self) -> None:
        self._tags.clear()
        self._digests.clear()
        self._created.clear()

    @property
    def cache_hits(self) -> int:
        """How many lookups the cache answered (for metrics and tests)."""
        return self._tags.hits + self._digests.hits + self._created.hits

    # -- the port ------------------------------------------------------------------------------

    def list_tags(self, image: ImageRef) -> list[str]:
        host, repo = self._target(image)
        key = (host, repo)
        hit, cached = self._tags.get(key)
        if hit and cached is not None:
            return list(cached)
        base = httpx.URL(self._base(host))
        path = f"/v2/{repo}/tags/list"
        url: httpx.URL | None = base.join(f"{repo}/tags/list").copy_with(
            params={"n": str(self._page_size)}
        )
        tags: list[str] = []
        seen: set[str] = set()
        visited: set[str] = set()
        raw_total = 0
        while url is not None:
            visited.add(str(url))
            reply = self._send(
                "GET", url, host, repo, accept="application/json", cap=wire.MAX_TAGS_PAGE_BYTES
            )
            page = wire.tags_page(reply, host, repo)
            raw_total += len(page)
            for tag in page:
                if tag in seen:
                    continue
                if not wire.TAG_RE.fullmatch(tag):
                    log.debug("registry %s: skipping invalid tag %r of %s", host, tag[:140], repo)
                    continue
                seen.add(tag)
                tags.append(tag)
            if len(tags) > self._max_tags or raw_total > 2 * self._max_tags + self._page_size:
                raise RegistryResponseError(
                    f"registry {host}: {repo} has more than {self._max_tags} tags; stopped listing",
                    hint="raise max_tags for this registry, or filter tags by pattern",
                )
            url = wire.next_page_url(reply, base, path, host)
            if url is not None:
                if not page:
                    raise RegistryResponseError(
                        f"registry {host}: an empty tag page of {repo} links to another page"
                    )
                if str(url) in visited:
                    raise RegistryResponseError(
                        f"registry {host}: the Link header of {repo}'s tag list loops back to "
                        f"{url.path}?{url.query.decode()}"
                    )
        self._tags.put(key, tuple(tags))
        log.debug("registry %s: %s has %d tags", host, repo, len(tags))
        return tags

    def digest(self, image: ImageRef) -> str:
        host, repo = self._target(image)
        reference = self._reference(image)
        key = (host, repo, reference)
        hit, cached = self._digests.get(key)
        if hit and cached is not None:
            return cached
        url = httpx.URL(self._base(host)).join(f"{repo}/manifests/{reference}")
        reply = self._send("HEAD", url, host, repo, accept=wire.MANIFEST_ACCEPT, cap=0)
        digest = str(reply.headers.get("Docker-Content-Digest", "")).strip()
        if wire.media_type(reply.headers.get("Content-Type")) in wire.SCHEMA1_TYPES:
            log.warning(
                "registry %s served a schema-1 manifest for %s:%s; its digest is not the one "
                "Docker records",
                host,
                repo,
                reference,
            )
        if not wire.DIGEST_RE.fullmatch(digest):
            reply = self._send(
                "GET", url, host, repo, accept=wire.MANIFEST_ACCEPT, cap=wire.MAX_MANIFEST_BYTES
            )
            digest = reply.headers.get("Docker-Content-Digest", "").strip()
            if not wire.DIGEST_RE.fullmatch(digest):
                digest = "sha256:" + hashlib.sha256(reply.body).hexdigest()
        self._digests.put(key, digest)
        return digest

    def created_at(self, image: ImageRef) -> datetime | None:
        host, repo = self._target(image)
        reference = self._reference(image)
        key = (host, repo, reference)
        hit, cached = self._created.get(key)
        if hit:
            return cached
        what = f"manifest {repo}:{reference}"
        manifest, kind = self._manifest(host, repo, reference)
        if kind in wire.INDEX_TYPES:
            child = wire.pick_platform(manifest, host, f"index {repo}:{reference}")
            what = f"manifest {repo}@{child}"
            manifest, kind = self._manifest(host, repo, child)
            if kind in wire.INDEX_TYPES:
                raise RegistryResponseError(f"registry {host}: {what} is an index inside an index")
        if kind in wire.SCHEMA1_TYPES:
            created = wire.schema1_created(manifest, host, what)
        else:
            created = self._config_created(manifest, host, repo, what)
        self._created.put(key, created)
        return created

    def _manifest(self, host: str, repo: str, reference: str) -> tuple[dict[str, Any], str]:
        url = httpx.URL(self._base(host)).join(f"{repo}/manifests/{reference}")
        reply = self._send(
            "GET", url, host, repo, accept=wire.MANIFEST_ACCEPT, cap=wire.MAX_MANIFEST_BYTES
        )
        what = f"manifest {repo}:{reference}"
        data = wire.json_object(reply, host, what)
        return data, wire.manifest_type(data, reply.headers.get("Content-Type"), host, what)

    def _config_created(
        self, manifest: dict[str, Any], host: str, repo: str, what: str
    ) -> datetime | None:
        digest = wire.config_descriptor(manifest, host, what)
        url = httpx.URL(self._base(host)).join(f"{repo}/blobs/{digest}")
        reply = self._send("GET", url, host, repo, accept=None, cap=wire.MAX_CONFIG_BYTES)
        algorithm, _, expected = digest.partition(":")
        if algorithm == "sha256" and hashlib.sha256(reply.body).hexdigest() != expected:
            raise RegistryResponseError(
                f"registry {host}: the config blob of {what} does not match its digest {digest}"
            )
        data = wire.json_object(reply, host, f"config blob of {what}")
        return wire.created_field(data.get("created"), host, f"config blob of {what}")

    # -- HTTP ----------------------------------------------------------------------------------

    def _target(self, image: ImageRef) -> tuple[str, str]:
        host = normalize_registry_host(image.registry)
        repo = image.repository
        if not repo or not all(wire.REPO_COMPONENT_RE.fullmatch(p) for p in repo.split("/")):
            raise InvalidInputError(
                f"invalid repository name {repo[:200]!r}",
                hint="repository names are lowercase letters, digits and separators",
            )
        return host, repo

    @staticmethod
    def _reference(image: ImageRef) -> str:
        if image.tag is not None:
            if not wire.TAG_RE.fullmatch(image.tag):
                raise InvalidInputError(f"invalid tag {image.tag[:140]!r} in {image}")
            return image.tag
        if image.digest is not None and wire.DIGEST_RE.fullmatch(image.digest):
            return image.digest
        raise InvalidInputError(f"{image} has neither a valid tag nor a valid digest")

    def _base(self, host: str) -> str:
        return registry_base_url(host, self._insecure)

    def _send(
        self,
        method: str,
        url: httpx.URL,
        host: str,
        repo: str,
        *,
        accept: str | None,
        cap: int,
    ) -> wire.Reply:
        """One logical request with auth and the retry policy; a 2xx reply or an error."""
        transient_used = rate_used = 0
        while True:
            try:
                return self._send_authenticated(method, url, host, repo, accept=accept, cap=cap)
            except RegistryBudgetExhaustedError:
                raise
            except RegistryUnavailableError as exc:
                wait = exc.retry_after
                if transient_used < self._retries and (
                    wait is None or wait <= self._max_retry_wait
                ):
                    transient_used += 1
                    delay = wait if wait is not None else min(0.5 * 2 ** (transient_used - 1), 8.0)
                elif (
                    isinstance(exc, RegistryRateLimitedError)
                    and rate_used < self._rate_limit_retries
                    and wait is not None
                    and wait <= self._max_rate_limit_wait
                ):
                    rate_used += 1
                    delay = wait
                else:
                    raise
                log.info("registry %s: %s; retrying in %.1f s", host, exc.message, delay)
                self._sleep(delay)

    def _send_authenticated(
        self, method: str, url: httpx.URL, host: str, repo: str, *, accept: str | None, cap: int
    ) -> wire.Reply:
        headers: dict[str, str] = {}
        if accept:
            headers["Accept"] = accept
        authorization = self._known_authorization(host, repo)
        if authorization:
            headers["Authorization"] = authorization
        reply = self._http(method, url, headers, host, cap)
        if reply.status == 401:
            headers["Authorization"] = self._authenticate(host, repo, reply)
            reply = self._http(method, url, headers, host, cap)
            if reply.status == 401:
                raise self._auth_error(host, repo, refused=True)
        return self._check(reply, host, repo)

    def _known_authorization(self, host: str, repo: str) -> str | None:
        scheme = self._schemes.get(host)
        if scheme == "bearer":
            token = self._tokens.get(host, _pull_scope(repo))
            return f"Bearer {token}" if token else None
        if scheme == "basic":
            credential = self._credential(host)
            return basic_auth_header(credential) if credential else None
        return None

    def _credential(self, host: str) -> RegistryCredential | None:
        return self._credentials.for_registry(host) if self._credentials else None

    def _authenticate(self, host: str, repo: str, reply: wire.Reply) -> str:
        header = reply.headers.get("WWW-Authenticate", "")
        try:
            challenges = parse_www_authenticate(header)
        except ValueError as exc:
            raise RegistryAuthError(
                f"registry {host} asked for authentication with an unreadable challenge ({exc})",
                hint=_HINT_AUTH.format(host=host),
            ) from exc
        by_scheme = {c.scheme: c for c in challenges}
        bearer = by_scheme.get("bearer")
        if bearer is not None:
            self._schemes[host] = "bearer"
            scope = _pull_scope(repo)
            self._tokens.drop(host, scope)
            token = self._fetch_token(host, bearer.params, bearer.params.get("scope") or scope)
            self._tokens.put(host, scope, token[0], token[1])
            return f"Bearer {token[0]}"
        if "basic" in by_scheme:
            self._schemes[host] = "basic"
            credential = self._credential(host)
            if credential is None:
                raise self._auth_error(host, repo, refused=False)
            return basic_auth_header(credential)
        raise RegistryAuthError(
            f"registry {host} asked for an unsupported authentication scheme "
            f"({', '.join(sorted(by_scheme)) or 'none'})",
            hint=_HINT_AUTH.format(host=host),
        )

    def _fetch_token(self, host: str, params: dict[str, str], scope: str) -> tuple[str, float]:
        realm = params.get("realm", "")
        try:
            url = httpx.URL(realm)
        except (httpx.InvalidURL, ValueError) as exc:
            raise RegistryResponseError(f"registry {host}: invalid token realm {realm!r}") from exc
        realm_host = url.netloc.decode("ascii", "replace")
        plain_ok = is_loopback_host(realm_host) or normalize_registry_host(realm_host) in (
            self._insecure
        )
        if url.scheme not in ("https", "http") or (url.scheme == "http" and not plain_ok):
            raise RegistryResponseError(
                f"registry {host}: token realm {realm!r} is not HTTPS; refusing to send "
                "credentials there",
                hint=f"list {realm_host} as an insecure registry if this is intended",
            )
        query = {k: v for k, v in (("service", params.get("service")), ("scope", scope)) if v}
        headers = {"Accept": "application/json"}
        credential = self._credential(host)
        if credential is not None:
            headers["Authorization"] = basic_auth_header(credential)
        reply = self._http("GET", url.copy_merge_params(query), headers, host, wire.MAX_TOKEN_BYTES)
        if reply.status in (401, 403):
            raise self._auth_error(host, scope, refused=credential is not None)
        self._check(reply, host, scope)
        data = wire.json_object(reply, host, "token response")
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryResponseError(f"registry {host}: the token response has no token")
        expires_in = data.get("expires_in", DEFAULT_TOKEN_LIFETIME)
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = DEFAULT_TOKEN_LIFETIME
        return token, float(expires_in)

    def _auth_error(self, host: str, what: str, *, refused: bool) -> RegistryAuthError:
        credential = self._credential(host)
        if refused and credential is not None:
            message = (
                f"registry {host} refused the credentials of {credential.username!r} for {what}"
            )
        elif refused:
            message = f"registry {host} refused anonymous access to {what}"
        else:
            message = f"registry {host} needs credentials for {what}"
        return RegistryAuthError(message, hint=_HINT_AUTH.format(host=host))

    def _check(self, reply: wire.Reply, host: str, what: str) -> wire.Reply:
        status = reply.status
        if 200 <= status < 300:
            return reply
        detail = wire.error_detail(reply)
        where = f"{reply.method} {reply.url.path}"
        if status in (401, 403):
            raise self._auth_error(host, what, refused=True)
        if status == 404:
            if "/manifests/" in reply.url.path:
                ref = reply.url.path.rsplit("/", 1)[1]
                what = f"{what}{'@' if ':' in ref else ':'}{ref}"
            raise ImageNotFoundError(
                f"registry {host}: {what} not found ({where}: 404{detail})",
                hint="check the image name and tag, and that the tag was not deleted",
            )
        retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        if status == 429:
            raise RegistryRateLimitedError(
                f"registry {host} is rate limiting us ({where}: 429{detail})",
                hint="lower the scan frequency or the request budget for this registry",
                retry_after=retry_after,
            )
        if status >= 500:
            raise RegistryUnavailableError(
                f"registry {host} failed ({where}: {status}{detail})", retry_after=retry_after
            )
        raise RegistryResponseError(f"registry {host}: unexpected {status} for {where}{detail}")

    def _http(
        self, method: str, url: httpx.URL, headers: dict[str, str], host: str, cap: int
    ) -> wire.Reply:
        """Exactly one HTTP exchange (after asking the budget); transport errors translated."""
        if self._budget is not None and not self._budget.acquire(host):
            raise RegistryBudgetExhaustedError(
                f"request budget for {host} exhausted; not sending {method} {url.path}",
                hint="wait for the budget to refill, or raise this registry's request budget",
            )
        try:
            with self._client.stream(method, url, headers=headers) as response:
                ok = 200 <= response.status_code < 300
                body = wire.read_capped(
                    response, cap if ok else wire.MAX_ERROR_BODY_BYTES, strict=ok
                )
                reply = wire.Reply(
                    method, response.url, response.status_code, response.headers, body
                )
        except wire.BodyTooLargeError as exc:
            raise RegistryResponseError(
                f"registry {host}: the answer to {method} {url.path} is larger than {cap} bytes"
            ) from exc
        except httpx.TimeoutException as exc:
            raise RegistryUnavailableError(
                f"registry {host} did not answer {method} {url.path} within {self._timeout:g} s"
            ) from exc
        except httpx.TooManyRedirects as exc:
            raise RegistryResponseError(
                f"registry {host}: too many redirects for {url.path}"
            ) from exc
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise RegistryUnavailableError(
                f"registry {host}: {method} {url.path} failed: {exc.__class__.__name__}: {exc}"
            ) from exc
        log.debug("registry %s: %s %s -> %d", host, method, url.path, reply.status)
        return reply


def _pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"
