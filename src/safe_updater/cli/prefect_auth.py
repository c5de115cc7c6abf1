"""Basic auth for the Prefect API: the ``serve --auth-file`` secret, and a clear answer when a
server refuses us.

Prefect's server checks ``Authorization: Basic base64(user:password)`` on every ``/api`` route
except ``GET /api/health`` and ``/api/ready`` when ``PREFECT_SERVER_API_AUTH_STRING`` is set;
its clients send ``PREFECT_API_AUTH_STRING``. The secret never appears in an error here: the
messages name the file or the variable, never the value.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from safe_updater.domain.errors import AuthError, InvalidInputError

SERVER_AUTH_VARIABLE = "PREFECT_SERVER_API_AUTH_STRING"
CLIENT_AUTH_VARIABLE = "PREFECT_API_AUTH_STRING"


class AuthFileError(InvalidInputError):
    """The ``--auth-file`` cannot be used: missing, open to others, or not ``user:password``."""


class AuthStringError(InvalidInputError):
    """``PREFECT_SERVER_API_AUTH_STRING`` is not ``user:password``."""


class ApiRefusedError(AuthError):
    """The Prefect API answered 401/403: no or wrong credentials."""


def read_auth_file(path: Path) -> str:
    """The one ``user:password`` line of ``path``; refuses a file others can read."""
    try:
        info = path.stat()
    except OSError as error:
        raise AuthFileError(
            f"cannot read --auth-file {path}: {error.strerror or error}",
            hint="pass a file that holds one line `user:password`, mode 0600",
        ) from error
    if not stat.S_ISREG(info.st_mode):
        raise AuthFileError(
            f"--auth-file {path} is not a regular file",
            hint="pass a file that holds one line `user:password`, mode 0600",
        )
    # Checked before reading: a password others can read is already leaked, so refuse it
    # loudly instead of using it.
    if info.st_mode & 0o077:
        raise AuthFileError(
            f"--auth-file {path} is open to group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o})",
            hint=f"chmod 600 {path}",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise AuthFileError(
            f"cannot read --auth-file {path}: {reason}",
            hint="pass a file that holds one line `user:password`, mode 0600",
        ) from error
    lines = [line for line in text.splitlines() if line != ""]
    if not lines:
        raise AuthFileError(
            f"--auth-file {path} is empty",
            hint=f"write one line `user:password` into it (chmod 600 {path})",
        )
    if len(lines) > 1:
        raise AuthFileError(
            f"--auth-file {path} holds {len(lines)} lines, not one",
            hint="keep the single line `user:password`",
        )
    return check_auth_string(lines[0], source=f"--auth-file {path}", error=AuthFileError)


def check_auth_string(
    value: str, *, source: str, error: type[InvalidInputError] = AuthStringError
) -> str:
    """``value`` when it is ``user:password`` with both parts present; ``source`` names where
    it came from in the error (the value itself never does)."""
    user, colon, password = value.partition(":")
    if not colon:
        raise error(
            f"{source} holds no `user:password` (no colon)",
            hint="write it as `user:password`; the Prefect UI's login asks for that whole string",
        )
    if not user.strip() or not password:
        part = "user" if not user.strip() else "password"
        raise error(
            f"{source}: the {part} part of `user:password` is empty",
            hint="write it as `user:password` with both parts",
        )
    return value


def basic_header(auth: str) -> str:
    return "Basic " + base64.b64encode(auth.encode("utf-8")).decode("ascii")


def refused_error(error: BaseException) -> ApiRefusedError | None:
    """The one-line error for a Prefect client's 401/403 anywhere in ``error``'s chain (the
    commands that talk to the API get it from ``main``), else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # Only Prefect's client errors: a registry's 401 is a different fix.
        from_prefect = type(current).__module__.split(".")[0] == "prefect"
        code = getattr(getattr(current, "response", None), "status_code", None)
        if from_prefect and code in (401, 403):
            try:
                url = str(current.request.url)  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError):  # httpx raises RuntimeError when unset
                url = os.environ.get("PREFECT_API_URL", "")
            # The path only: a URL with user:password@ in it must not reach the terminal.
            where = _without_credentials(url)
            has_auth = bool(os.environ.get(CLIENT_AUTH_VARIABLE))
            return ApiRefusedError(
                f"the Prefect API refused the request to {where} (HTTP {code}): "
                + ("wrong credentials" if has_auth else "it needs credentials"),
                hint=f"set {CLIENT_AUTH_VARIABLE} to the server's `user:password` "
                '(e.g. `export PREFECT_API_AUTH_STRING="$(cat AUTH_FILE)"`), see docs/serve.md',
            )
        current = current.__cause__ or current.__context__
    return None


def _without_credentials(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "the Prefect API"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", "")) or "the Prefect API"
