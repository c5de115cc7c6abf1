"""A loopback HTTP relay that sits between a client and a real registry and injects faults.

Usage (the proxy runs in a thread on 127.0.0.1:<free port>; stop it in the fixture)::

    with FaultProxy("127.0.0.1:5000") as proxy:
        proxy.rate_limit(r"/tags/list", times=2, retry_after="1")   # 2x 429, then relay
        proxy.fail(r"/manifests/", status=503)                      # 1x 503
        proxy.truncate(r"/tags/list")                               # half the JSON body
        proxy.reset(r"/blobs/")                                     # TCP reset, no answer
        proxy.delay(r"/tags/list", seconds=0.5)                     # slow answer
        proxy.respond(r"/tags/list", status=200, body=b'{"tags": 1}')  # any canned answer
        proxy.synthesize_tags("big/repo", 100_000)                  # paginated, Link headers
        proxy.require_bearer(token_server)                          # a bearer-token registry
        ... client against f"{proxy.host}/demo/web" ...
        proxy.count(r"/tags/list")                                  # requests seen

Rules match a regex against the request path (``re.search``), optionally a method, and fire
``times`` times (``None``: forever), first rule added first. Requests no rule answers are
relayed to the upstream unchanged (``Authorization`` is dropped when the proxy checks bearer
tokens itself). Every request is recorded in :attr:`FaultProxy.requests`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from support.token_server import TokenServer

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)


@dataclass
class Rule:
    pattern: re.Pattern[str]
    method: str | None
    times: int | None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    truncate: bool = False
    reset: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.pattern.search(path) is not None


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # without the query
    query: str
    status: int  # 0 when the connection was reset
    injected: bool
    authorization: bool  # whether the request carried an Authorization header (never its value)


@dataclass
class _SyntheticTags:
    tags: list[str]
    index: dict[str, int]


class FaultProxy:
    def __init__(self, upstream: str | None = None, *, upstream_timeout: float = 30.0) -> None:
        """``upstream``: ``host:port`` or ``http://host:port`` of the real registry (loopback)."""
        if upstream is not None:
            upstream = upstream.removeprefix("http://").rstrip("/")
        self.upstream = upstream
        self.upstream_timeout = upstream_timeout
        self.requests: list[Recorded] = []
        self._rules: list[Rule] = []
        self._synthetic: dict[str, _SyntheticTags] = {}
        self._bearer: TokenServer | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: use it as the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    # -- configuration (safe to call while requests flow) -------------------------------------

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def respond(
        self,
        path: str,
        *,
        status: int = 200,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        times: int | None = 1,
        method: str | None = None,
    ) -> Rule:
        """Answer matching requests with a canned response instead of relaying them."""
        all_headers = {"Content-Type": "application/json"}
        all_headers.update(headers or {})
        return self.add(
            Rule(re.compile(path), method, times, status=status, headers=all_headers, body=body)
        )

    def fail(
        self,
        path: str,
        *,
        status: int = 503,
        times: int | None = 1,
        headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> Rule:
        body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected by fault proxy"}]}'
        return self.respond(
            path, status=status, body=body, headers=headers, times=times, method=method
        )

    def rate_limit(
        self, path: str, *, times: int | None = 1, retry_after: str | None = "1"
    ) -> Rule:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"injected rate limit"}]}'
        return self.respond(path, status=429, body=body, headers=headers, times=times)

    def delay(self, path: str, seconds: float, *, times: int | None = 1) -> Rule:
        """Relay after ``seconds`` (to make the client time out)."""
        return self.add(Rule(re.compile(path), None, times, delay=seconds))

    def truncate(self, path: str, *, times: int | None = 1) -> Rule:
        """Relay, but send only the first half of the body (with a matching Content-Length)."""
        return self.add(Rule(re.compile(path), None, times, truncate=True))

    def reset(self, path: str, *, times: int | None = 1) -> Rule:
        """Reset the TCP connection (RST) instead of answering."""
        return self.add(Rule(re.compile(path), None, times, reset=True))

    def synthesize_tags(
        self, repository: str, count: int, *, tags: list[str] | None = None
    ) -> None:
        """Serve ``/v2/<repository>/tags/list`` from memory, paginated by ``n`` and ``last``
        with ``Link: <…>; rel="next"`` headers, as the distribution spec describes."""
        names = (
            tags if tags is not None else [f"{i // 10_000}.{i % 10_000}.0" for i in range(count)]
        )
        with self._lock:
            self._synthetic[repository] = _SyntheticTags(names, {t: i for i, t in enumerate(names)})

    def require_bearer(self, token_server: TokenServer | None) -> None:
        """Demand a bearer token from ``token_server`` for each repository (None: stop)."""
        with self._lock:
            self._bearer = token_server

    def clear(self) -> None:
        """Remove all rules, synthetic repositories and the bearer requirement; keep records."""
        with self._lock:
            self._rules.clear()
            self._synthetic.clear()
            self._bearer = None

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()

    def count(
        self, path: str | None = None, *, method: str | None = None, injected: bool | None = None
    ) -> int:
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (pattern is None or pattern.search(r.path))
                and (method is None or r.method == method)
                and (injected is None or r.injected == injected)
            )

    # -- used by the handler -------------------------------------------------------------------

    def _take_rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    def _record(self, entry: Recorded) -> None:
        with self._lock:
            self.requests.append(entry)


_REPO_TAGS_RE = re.compile(r"^/v2/(.+)/tags/list$")
_REPO_ANY_RE = re.compile(r"^/v2/(.+)/(?:tags|manifests|blobs)/")


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        owner = self.owner
        split = urlsplit(self.path)
        path, query = split.path, split.query
        length = int(self.headers.get("Content-Length") or 0)
        request_body = self.rfile.read(length) if length else b""
        has_auth = "Authorization" in self.headers

        def record(status: int, injected: bool) -> None:
            owner._record(Recorded(self.command, path, query, status, injected, has_auth))

        rule = owner._take_rule(self.command, path)
        if rule is not None and rule.reset:
            record(0, True)
            self._reset()
            return
        if rule is not None and rule.delay:
            time.sleep(rule.delay)
        if rule is not None and rule.status is not None:
            record(rule.status, True)
            self._send(rule.status, rule.headers, rule.body)
            return

        bearer = owner._bearer
        if bearer is not None and path != "/v2/" and path.startswith("/v2/"):
            repo_match = _REPO_ANY_RE.match(path)
            scope = f"repository:{repo_match.group(1)}:pull" if repo_match else ""
            auth = self.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else ""
            if not bearer.valid(token, scope):
                record(401, False)
                challenge = (
                    f'Bearer realm="{bearer.realm}",service="{bearer.service}",scope="{scope}"'
                )
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                self._send(
                    401,
                    {"WWW-Authenticate": challenge, "Content-Type": "application/json"},
                    body,
                )
                return

        tags_match = _REPO_TAGS_RE.match(path)
        synthetic = owner._synthetic.get(tags_match.group(1)) if tags_match else None
        if synthetic is not None and tags_match is not None:
            status, headers, body = self._synthetic_page(tags_match.group(1), synthetic, query)
        else:
            status, headers, body = self._relay(request_body, drop_auth=bearer is not None)
        if rule is not None and rule.truncate:
            body = body[: len(body) // 2]
        record(status, rule is not None)
        self._send(status, headers, body)

    def _synthetic_page(
        self, repo: str, synthetic: _SyntheticTags, query: str
    ) -> tuple[int, dict[str, str], bytes]:
        params = parse_qs(query)
        n = int(params.get("n", [str(len(synthetic.tags))])[0] or len(synthetic.tags))
        last = params.get("last", [None])[0]
        start = synthetic.index[last] + 1 if last in synthetic.index else 0
        page = synthetic.tags[start : start + n]
        body = json.dumps({"name": repo, "tags": page}).encode()
        headers = {"Content-Type": "application/json"}
        if start + n < len(synthetic.tags) and page:
            headers["Link"] = f'</v2/{repo}/tags/list?last={page[-1]}&n={n}>; rel="next"'
        return 200, headers, body

    def _relay(self, body: bytes, *, drop_auth: bool) -> tuple[int, dict[str, str], bytes]:
        upstream = self.owner.upstream
        if upstream is None:
            return 502, {"Content-Type": "text/plain"}, b"fault proxy has no upstream"
        connection = http.client.HTTPConnection(upstream, timeout=self.owner.upstream_timeout)
        try:
            headers: dict[str, str] = {}
            for k, v in self.headers.items():
                if k.lower() not in _HOP_BY_HOP and k.lower() != "host":
                    # Docker sends one Accept line per media type: keep them all, or the
                    # registry falls back to a schema-1 manifest.
                    headers[k] = f"{headers[k]}, {v}" if k in headers else v
            if drop_auth:
                headers.pop("Authorization", None)
            headers["Host"] = upstream
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            out = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            if self.command == "HEAD":
                declared = response.getheader("Content-Length")
                if declared is not None:
                    out["Content-Length"] = declared
            return response.status, out, data
        finally:
            connection.close()

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
