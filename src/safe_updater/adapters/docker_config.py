"""Registry credentials from Docker's own config file (what ``docker login`` wrote).

``$DOCKER_CONFIG/config.json`` (or ``~/.docker/config.json``): ``auths`` entries with a base64
``auth`` or ``username``/``password``; credential helpers named by ``credHelpers`` (per host) or
``credsStore`` (all hosts) are run as ``docker-credential-<name> get`` with the server on stdin,
through an argument list, never a shell.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from safe_updater.adapters.errors import RegistryAuthError
from safe_updater.adapters.registry_auth import (
    DOCKER_HUB,
    RegistryCredential,
    normalize_registry_host,
)
from safe_updater.domain.errors import ConfigError

__all__ = ["DockerConfigCredentials", "HelperRunner", "default_docker_config_path"]

log = logging.getLogger(__name__)

# What Docker itself uses as the key for Docker Hub in config.json and for helpers.
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
MAX_CONFIG_BYTES = 1024 * 1024
_HELPER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NOT_FOUND_MARKERS = ("credentials not found", "not found in native keychain", "no credentials")

HelperRunner = Callable[[list[str], str, float], "subprocess.CompletedProcess[str]"]


def _run_helper(argv: list[str], stdin: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argument list, no shell
        argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def default_docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if env is None else env
    directory = environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path(environ.get("HOME") or Path.home()) / ".docker" / "config.json"


class DockerConfigCredentials:
    """A :class:`~safe_updater.adapters.registry_auth.CredentialsProvider` over Docker's config.

    The file is read on each lookup (it is small, and ``docker login`` may change it while we run).
    A missing file means "no credentials"; an unreadable or invalid one is a :class:`ConfigError`.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        helper_runner: HelperRunner = _run_helper,
        helper_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path) if path is not None else default_docker_config_path(env)
        self._run = helper_runner
        self._helper_timeout = helper_timeout

    def __repr__(self) -> str:
        return f"DockerConfigCredentials(path={str(self.path)!r})"

    def for_registry(self, host: str) -> RegistryCredential | None:
        config = self._load()
        if not config:
            return None
        wanted = normalize_registry_host(host)
        helpers = config.get("credHelpers", {})
        helpers = {} if helpers is None else helpers
        if not isinstance(helpers, dict):
            raise self._invalid("credHelpers must be an object")
        for key, helper in helpers.items():
            if normalize_registry_host(str(key)) == wanted:
                return self._from_helper(str(helper), str(key), wanted, "credHelpers")
        auths = config.get("auths", {})
        auths = {} if auths is None else auths
        if not isinstance(auths, dict):
            raise self._invalid("auths must be an object")
        for key, entry in auths.items():
            if normalize_registry_host(str(key)) != wanted:
                continue
            credential = self._from_entry(str(key), entry)
            if credential is not None:
                return credential
        store = config.get("credsStore")
        if store:
            server = DOCKER_HUB_CONFIG_KEY if wanted == DOCKER_HUB else wanted
            return self._from_helper(str(store), server, wanted, "credsStore")
        return None

    # -- internals ---------------------------------------------------------------------------

    def _invalid(self, what: str) -> ConfigError:
        return ConfigError(
            f"Docker config is invalid: {what}",
            source=str(self.path),
            hint="fix the file or run `docker login HOST` again",
        )

    def _load(self) -> dict[str, Any] | None:
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(
                f"cannot read Docker config: {exc.strerror}",
                source=str(self.path),
                hint="check the file's permissions or set DOCKER_CONFIG",
            ) from exc
        if len(raw) > MAX_CONFIG_BYTES:
            raise self._invalid("larger than 1 MiB")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._invalid(f"not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise self._invalid("the top level must be an object")
        return data

    def _from_entry(self, key: str, entry: object) -> RegistryCredential | None:
        if not isinstance(entry, dict):
            raise self._invalid(f"auths[{key!r}] must be an object")
        auth = entry.get("auth")
        if auth:
            try:
                decoded = base64.b64decode(str(auth), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise self._invalid(f"auths[{key!r}].auth is not base64 of user:password") from exc
            username, sep, password = decoded.partition(":")
            if not sep or not username:
                raise self._invalid(f"auths[{key!r}].auth is not base64 of user:password")
            return RegistryCredential(username=username, password=SecretStr(password))
        user, secret = entry.get("username"), entry.get("password")
        if isinstance(user, str) and isinstance(secret, str) and user:
            return RegistryCredential(username=user, password=SecretStr(secret))
        if entry.get("identitytoken"):
            log.debug("auths[%s] holds an identity token, which is not supported; ignored", key)
        return None

    def _from_helper(
        self, helper: str, server: str, host: str, where: str
    ) -> RegistryCredential | None:
        if not _HELPER_NAME_RE.fullmatch(helper):
            raise self._invalid(f"{where} names an invalid credential helper {helper!r}")
        program = f"docker-credential-{helper}"
        try:
            result = self._run([program, "get"], server, self._helper_timeout)
        except FileNotFoundError as exc:
            raise RegistryAuthError(
                f"credential helper {program} (from {where} in {self.path}) is not installed "
                f"or not on PATH; cannot get credentials for {host}",
                hint=f"install {program}, or remove it from {self.path}, "
                "or store credentials in a RegistryCredentials block",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise RegistryAuthError(
                f"credential helper {program} did not answer within {self._helper_timeout:g} s",
                hint=f"check that {program} works: echo {server} | {program} get",
            ) from exc
        if result.returncode != 0:
            message = (result.stdout or result.stderr or "").strip()
            if any(marker in message.lower() for marker in _NOT_FOUND_MARKERS):
                return None
            raise RegistryAuthError(
                f"credential helper {program} failed for {host} (exit {result.returncode})",
                hint=f"check that {program} works: echo {server} | {program} get",
            )
        try:
            data = json.loads(result.stdout)
            username, secret = data["Username"], data["Secret"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RegistryAuthError(
                f"credential helper {program} answered with something that is not "
                "{Username, Secret} JSON",
                hint=f"check that {program} works: echo {server} | {program} get",
            ) from exc
        if not isinstance(username, str) or not isinstance(secret, str) or not secret:
            return None
        return RegistryCredential(username=username, password=SecretStr(secret))
