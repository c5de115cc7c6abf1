"""Typed models of helm's JSON output, helm's errors, and the argument grammar checks.

Used by :mod:`safe_updater.adapters.helm_cli` (the CLI runner); no process is started here.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from safe_updater.adapters.errors import HelmError, OperationInProgressError
from safe_updater.domain.errors import (
    AuthError,
    InvalidInputError,
    NotFoundError,
    SafeUpdaterError,
    TransientError,
)

M = TypeVar("M", bound=BaseModel)

# --- errors ------------------------------------------------------------------------------------


class ReleaseNotFoundError(NotFoundError):
    """The release does not exist in that namespace (or has no deployed revision)."""


class RevisionNotFoundError(NotFoundError):
    """The release exists but not the revision asked for (pruned by ``--history-max``?)."""


class ChartNotFoundError(NotFoundError):
    """The chart, or that version of it, is not in the repository."""


class HelmAuthError(AuthError):
    """The chart repository or the cluster refused the credentials, or needs some."""


class HelmTimeoutError(HelmError):
    """helm timed out (its ``--timeout``, or our process deadline)."""


class HelmUnavailableError(TransientError):
    """The cluster or the chart repository could not be reached this time."""


_MAX_MESSAGE_LINES = 3
_MAX_MESSAGE_CHARS = 600
_REDACTIONS = (
    # \b: without it a long run of word characters with no "://" was retried from every
    # position, each time scanning to its end (quadratic: 4 s for 16 kB of stderr).
    (re.compile(r"(?i)\b(\w+://)[^/\s:@]+:[^/\s@]+@"), r"\1***@"),
    (re.compile(r"(?i)\b(password|passwd|token|secret|authorization)([=:]\s*)\S+"), r"\1\2***"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
)


def redact(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def helm_message(stderr: str) -> str:
    """helm's error lines (from the first ``Error:``), without progress lines or secrets."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    first_error = next((i for i, line in enumerate(lines) if line.startswith("Error:")), None)
    if first_error is not None:
        lines = lines[first_error:]
    else:
        lines = [line for line in lines if not line.startswith(("Pulled:", "Digest:", "WARNING:"))]
    text = " | ".join(line.removeprefix("Error: ") for line in lines[:_MAX_MESSAGE_LINES])
    text = redact(text) or "no message"
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"


_IN_PROGRESS = "another operation (install/upgrade/rollback) is in progress"
_RELEASE_NOT_FOUND = re.compile(r"release: not found|has no deployed releases")
_REVISION_NOT_FOUND = re.compile(r"release has no \d+ version")
_CHART_NOT_FOUND = re.compile(
    r"chart \"[^\"]*\"( version \"[^\"]*\")? not found"
    r"|no chart (name|version) found|failed to download|name unknown|manifest unknown",
)
# "A.*B" on one line, checked with str.find: as regexes, a line repeating A was rescanned to
# its end from every A (quadratic: 3 s for 16 kB of "FetchReference").
_CHART_NOT_FOUND_IN_ORDER = (
    ("FetchReference", ": not found"),
    ("repository name (", ") not found"),
    ("not a valid chart repository or cannot be reached: failed to fetch ", " 404"),
)
_AUTH = re.compile(
    r"\b401\b|\b403\b|unauthori[sz]ed|forbidden|basic credential not found|denied"
    r"|provide credentials",
    re.IGNORECASE,
)
_TIMEOUT = re.compile(r"timed out waiting|context deadline exceeded|timeout waiting", re.IGNORECASE)
_UNREACHABLE = re.compile(
    r"connection refused|connection reset|no such host|i/o timeout|TLS handshake timeout"
    r"|Kubernetes cluster unreachable|EOF$|server is currently unable|\b50[234]\b",
    re.IGNORECASE,
)


def _in_order(text: str, first: str, then: str) -> bool:
    """Whether a line of ``text`` has ``first`` and, after it, ``then`` (the regex
    ``first.*then``), in time linear in ``text``."""
    start = text.find(first)
    while start >= 0:
        line_end = text.find("\n", start)
        line_end = len(text) if line_end < 0 else line_end
        if text.find(then, start + len(first), line_end) >= 0:
            return True
        start = text.find(first, line_end)
    return False


def translate_error(stderr: str, what: str) -> SafeUpdaterError:
    """Map helm's stderr (non-zero exit) to one typed error; ``what`` names the operation."""
    message = f"{what}: {helm_message(stderr)}"
    if _IN_PROGRESS in stderr:
        return OperationInProgressError(
            message, hint="another helm operation holds the release; retry when it has finished"
        )
    if "name is invalid" in stderr or "invalid release name" in stderr:
        return InvalidInputError(message, hint="release names are lowercase DNS names")
    if _REVISION_NOT_FOUND.search(stderr):
        return RevisionNotFoundError(message, hint="see `helm history` for the revisions kept")
    if _RELEASE_NOT_FOUND.search(stderr):
        return ReleaseNotFoundError(message, hint="check the release name and namespace")
    if _AUTH.search(stderr):
        return HelmAuthError(
            message, hint="log in to the chart repository (credentials block) or fix RBAC"
        )
    if _CHART_NOT_FOUND.search(stderr) or any(
        _in_order(stderr, first, then) for first, then in _CHART_NOT_FOUND_IN_ORDER
    ):
        return ChartNotFoundError(message, hint="check the chart source and version in `charts:`")
    if _TIMEOUT.search(stderr):
        return HelmTimeoutError(message + " (timed out)" if "timed out" not in message else message)
    if _UNREACHABLE.search(stderr):
        return HelmUnavailableError(message)
    return HelmError(message)


# --- input validation ---------------------------------------------------------------------------

# Helm release names: DNS-1123 subdomain-ish, at most 53 characters (helm's own limit).
_RELEASE_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,51}[a-z0-9])?")
# Namespaces: DNS-1123 label.
_NAMESPACE_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_CHART_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?")
_VERSION_RE = re.compile(r"v?[0-9A-Za-z][0-9A-Za-z.+_-]{0,127}")
_VALUES_PATH_RE = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62}){0,15}"
)
_VALUE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
CONTEXT_RE = re.compile(r"[A-Za-z0-9_@:./][A-Za-z0-9_@:./+-]{0,252}")
_OCI_RE = re.compile(
    r"oci://(?:[a-z0-9.-]+|\[[0-9a-f:]+\])(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+"
)
_HTTP_RE = re.compile(
    r"https?://[A-Za-z0-9.\[\]:-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?"
)


def check_pattern(pattern: re.Pattern[str], value: object, what: str, hint: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
        raise InvalidInputError(f"invalid {what} {shown}", hint=hint)
    return value


def validate_release_name(name: object) -> str:
    return check_pattern(
        _RELEASE_RE, name, "release name", "release names are lowercase DNS names, <= 53 chars"
    )


def validate_namespace(namespace: object) -> str:
    return check_pattern(
        _NAMESPACE_RE, namespace, "namespace", "namespaces are lowercase DNS labels, <= 63 chars"
    )


def validate_version(version: object) -> str:
    return check_pattern(_VERSION_RE, version, "chart version", "use a version like 1.2.3")


def validate_values_path(path: object) -> str:
    return check_pattern(
        _VALUES_PATH_RE, path, "values path", "use a dotted path of plain keys, e.g. image.tag"
    )


def validate_value(value: object) -> str:
    return check_pattern(
        _VALUE_RE, value, "value", "values set by the updater are tags/versions: [A-Za-z0-9_.+-]"
    )


class ChartRef(BaseModel):
    """Where helm finds a chart: an OCI reference, a chart name in an HTTP repo, or a local file.

    ``plain_http`` is for OCI registries on loopback (``--plain-http``).
    """

    model_config = ConfigDict(frozen=True)

    ref: str
    version: str
    repo: str | None = None
    plain_http: bool = False

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return validate_version(value)

    def model_post_init(self, __context: Any) -> None:
        if self.ref.startswith("oci://"):
            check_pattern(
                _OCI_RE, self.ref, "OCI chart reference", "use oci://host[:port]/path/chart"
            )
            if self.repo is not None:
                raise InvalidInputError("an OCI chart reference takes no repo URL")
        elif self.repo is not None:
            check_pattern(_CHART_NAME_RE, self.ref, "chart name", "chart names are [A-Za-z0-9_.-]")
            check_pattern(_HTTP_RE, self.repo, "chart repository URL", "use http(s)://host/path")
        else:
            path = Path(self.ref)
            if not path.is_absolute() or "\n" in self.ref or "\x00" in self.ref:
                raise InvalidInputError(
                    f"invalid chart reference {self.ref[:80]!r}",
                    hint="use oci://…, a chart name with a repo URL, or an absolute .tgz path",
                )

    def args(self) -> list[str]:
        """Flags for the chart (go before ``--``)."""
        flags = [f"--version={self.version}"]
        if self.repo is not None:
            flags.append(f"--repo={self.repo}")
        if self.plain_http:
            flags.append("--plain-http")
        return flags


# --- models ------------------------------------------------------------------------------------


class HelmStatus(StrEnum):
    UNKNOWN = "unknown"
    DEPLOYED = "deployed"
    UNINSTALLED = "uninstalled"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    UNINSTALLING = "uninstalling"
    PENDING_INSTALL = "pending-install"
    PENDING_UPGRADE = "pending-upgrade"
    PENDING_ROLLBACK = "pending-rollback"

    @property
    def is_pending(self) -> bool:
        return self in (
            HelmStatus.PENDING_INSTALL,
            HelmStatus.PENDING_UPGRADE,
            HelmStatus.PENDING_ROLLBACK,
            HelmStatus.UNINSTALLING,
        )

    @classmethod
    def _missing_(cls, value: object) -> HelmStatus:
        return cls.UNKNOWN


_CHART_SPLIT_RE = re.compile(r"(.+?)-(v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?)")


def split_chart(text: str) -> tuple[str, str]:
    """``demo-1.0.0-rc.1`` → ``("demo", "1.0.0-rc.1")`` (helm list/history write them joined)."""
    match = _CHART_SPLIT_RE.fullmatch(text)
    if match is None:
        name, _, version = text.rpartition("-")
        return (name, version) if name else (text, "")
    return match.group(1), match.group(2)


def _parse_time(value: Any) -> Any:
    """helm writes nanoseconds (``…:32.635215973Z``); keep microseconds."""
    if isinstance(value, str) and value:
        text = value.strip().replace(" +0000 UTC", "Z")
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)
        return text.replace(" ", "T", 1) if "T" not in text else text
    return value or None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class ReleaseSummary(_Model):
    """One line of ``helm list -o json``."""

    name: str
    namespace: str
    revision: int
    updated: datetime | None = None
    status: HelmStatus
    chart: str
    app_version: str = ""

    _time = field_validator("updated", mode="before")(lambda v: _parse_time(v))

    @property
    def chart_name(self) -> str:
        return split_chart(self.chart)[0]

    @property
    def chart_version(self) -> str:
        return split_chart(self.chart)[1]


class ReleaseRevision(_Model):
    """One entry of ``helm history -o json``."""

    revision: int
    updated: datetime | None = None
    status: HelmStatus
    chart: str
    app_version: str = ""
    description: str = ""

    _time = field_validator("updated", mode="before")(lambda v: _parse_time(v))

    @property
    def chart_name(self) -> str:
        return split_chart(self.chart)[0]

    @property
    def chart_version(self) -> str:
        return split_chart(self.chart)[1]


class ReleaseMetadata(_Model):
    """``helm get metadata -o json``: the latest revision's chart, version and status."""

    name: str
    chart: str
    version: str
    app_version: str = Field(default="", alias="appVersion")
    namespace: str
    revision: int
    status: HelmStatus
    deployed_at: datetime | None = Field(default=None, alias="deployedAt")

    _time = field_validator("deployed_at", mode="before")(lambda v: _parse_time(v))


class ReleaseInfo(_Model):
    status: HelmStatus
    description: str = ""
    first_deployed: datetime | None = None
    last_deployed: datetime | None = None

    _time = field_validator("first_deployed", "last_deployed", mode="before")(
        lambda v: _parse_time(v)
    )


class ChartMetadata(_Model):
    name: str
    version: str
    app_version: str = Field(default="", alias="appVersion")


class ChartInfo(_Model):
    metadata: ChartMetadata


class Release(_Model):
    """A release as ``helm status/upgrade -o json`` print it (``version`` is the revision)."""

    name: str
    namespace: str
    version: int
    info: ReleaseInfo
    chart: ChartInfo | None = None
    config: dict[str, Any] | None = None
    manifest: str = ""

    @property
    def revision(self) -> int:
        return self.version

    @property
    def status(self) -> HelmStatus:
        return self.info.status


class HelmVersion(_Model):
    major: int
    minor: int
    patch: int
    text: str

    @classmethod
    def parse(cls, text: str) -> HelmVersion:
        # At most 9 digits each: int() of a 5000-digit run raised a bare ValueError.
        match = re.search(r"v(\d{1,9})\.(\d{1,9})\.(\d{1,9})(?!\d)", text)
        if match is None:
            raise HelmError(f"cannot read the helm version from {text.strip()[:80]!r}")
        major, minor, patch = (int(g) for g in match.groups())
        return cls(major=major, minor=minor, patch=patch, text=text.strip())

    def at_least(self, major: int, minor: int) -> bool:
        return (self.major, self.minor) >= (major, minor)


class ValuesMode(StrEnum):
    """How ``upgrade`` treats the values of the release."""

    REUSE = "reuse"  # --reuse-values: last release's values *and* its chart defaults (helm 3!)
    RESET_THEN_REUSE = "reset-then-reuse"  # new chart's defaults + last release's user values
    RESET = "reset"  # new chart's defaults only


def parse_json_output(out: str, what: str) -> Any:
    """helm's JSON; helm 4 may print ``Pulled:``/``Digest:`` lines on stdout before it."""
    text = out.strip()
    if not text:
        return None
    if text[0] not in "[{n":
        starts = [m.start() for m in re.finditer(r"(?m)^[\[{]", text)]
        if not starts:
            raise HelmError(f"{what}: helm printed no JSON ({redact(text.splitlines()[0])[:120]})")
        text = text[starts[0] :]
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HelmError(f"{what}: helm printed invalid JSON ({exc.msg})") from exc
    except (ValueError, RecursionError) as exc:
        # An integer of more than 4300 digits, or brackets nested deeper than the stack: both
        # escaped as bare Python errors before.
        raise HelmError(f"{what}: helm printed JSON we cannot read ({type(exc).__name__})") from exc


def parse_one(data: Any, model: type[M], what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Name the fields: "3 problems" alone did not say what helm printed wrong.
        fields = ", ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors(include_url=False)[:3]
        )
        raise HelmError(
            f"{what}: unexpected JSON from helm ({exc.error_count()} problems: {fields[:300]})"
        ) from exc


def parse_list(data: Any, model: type[M], what: str) -> list[M]:
    if not isinstance(data, list):
        raise HelmError(f"{what}: expected a JSON list from helm")
    return [parse_one(item, model, what) for item in data]
