"""A tiny loopback token service for registry bearer auth (Docker's token protocol).

``GET /token?service=…&scope=…`` answers ``{"token", "access_token", "expires_in"}``. With
``users`` set, a valid basic-auth header is required (401 otherwise); without, tokens are
anonymous. :class:`support.fault_proxy.FaultProxy` with ``require_bearer(server)`` plays
the registry that demands the tokens. Runs in a thread on 127.0.0.1:<free port>.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class TokenRequest:
    service: str
    scope: str
    username: str | None  # None: anonymous
    granted: bool


class TokenServer:
    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        service: str = "fault-proxy-registry",
        expires_in: int | None = 300,
    ) -> None:
        self.users = users
        self.service = service
        self.expires_in = expires_in
        self.requests: list[TokenRequest] = []
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (scope, expires at)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> TokenServer:
        owner = self

        class Handler(_TokenHandler):
            server_owner = owner

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

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def realm(self) -> str:
        assert self._server is not None, "token server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def issue(self, scope: str, username: str | None) -> tuple[str, int | None]:
        token = secrets.token_urlsafe(24)
        lifetime = self.expires_in if self.expires_in is not None else 60
        with self._lock:
            self._tokens[token] = (scope, time.monotonic() + lifetime)
        return token, self.expires_in

    def valid(self, token: str, scope: str) -> bool:
        with self._lock:
            entry = self._tokens.get(token)
        return entry is not None and entry[0] == scope and time.monotonic() < entry[1]

    def revoke_all(self) -> None:
        with self._lock:
            self._tokens.clear()

    def record(self, entry: TokenRequest) -> None:
        with self._lock:
            self.requests.append(entry)


class _TokenHandler(BaseHTTPRequestHandler):
    server_owner: TokenServer
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server_owner
        split = urlsplit(self.path)
        params = parse_qs(split.query)
        service = params.get("service", [""])[0]
        scope = params.get("scope", [""])[0]
        username: str | None = None
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:]).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            user, _, password = decoded.partition(":")
            if owner.users is not None and owner.users.get(user) == password:
                username = user
            elif owner.users is not None:
                owner.record(TokenRequest(service, scope, user, False))
                self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad login"}]})
                return
        if split.path != "/token" or (owner.users is not None and username is None):
            owner.record(TokenRequest(service, scope, username, False))
            self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "login needed"}]})
            return
        token, expires_in = owner.issue(scope, username)
        owner.record(TokenRequest(service, scope, username, True))
        body: dict[str, Any] = {"token": token, "access_token": token}
        if expires_in is not None:
            body["expires_in"] = expires_in
        self._answer(200, body)

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
