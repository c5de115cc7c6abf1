"""The real ``helm`` binary (3.x or 4.x), run with argument lists, its JSON parsed into models.

:class:`HelmCli` is the only code that starts helm. Every call is ``subprocess`` with an argument
list (never a shell); flags come first in ``--flag=value`` form, so a value can never turn into
another flag, then ``--`` and the positional arguments (release, chart, revision). Release
names, namespaces, chart references, versions, values paths and values are checked against the
Kubernetes/Helm grammar before helm starts (:class:`~safe_updater.domain.errors.InvalidInputError`).

stderr is translated once, in :func:`~safe_updater.adapters.helm_models.translate_error`:

- ``another operation (install/upgrade/rollback) is in progress`` → ``OperationInProgressError``
  (transient);
- ``release: not found`` / ``has no deployed releases`` → ``ReleaseNotFoundError``;
  ``release has no N version`` → ``RevisionNotFoundError`` (both ``NotFoundError``);
- chart or chart version not found (HTTP index or OCI) → ``ChartNotFoundError`` (NotFoundError);
- the API server's RBAC refusal (``User "…" cannot VERB resource "R" in API group "G" in the
  namespace "N"``) → ``HelmAuthError`` naming the missing verb and resource and the role to
  grant it in (:func:`forbidden_error`, checked first: its stderr also says "forbidden");
- 401/403, ``basic credential not found``, ``unauthorized`` → ``HelmAuthError`` (AuthError);
- ``timed out waiting``, ``context deadline exceeded``, our own process deadline →
  ``HelmTimeoutError`` (a ``HelmError`` whose message says "timed out"); when helm 4's
  ``--wait=watcher`` gave up on an object whose status stayed ``Unknown``, the hint says that
  helm could not read it (helm 4 reports a refused list of a StatefulSet's pods or a
  Deployment's ReplicaSets only this way);
- cluster or repository unreachable (connection refused/reset) → ``HelmUnavailableError``
  (transient);
- anything else → ``HelmError`` with helm's first lines.

Messages keep helm's first lines only, with credentials in URLs and ``password=…`` redacted.

helm 3 and helm 4 differ in flags; :meth:`HelmCli.version` (``helm version --short``, cached)
decides: ``--atomic`` (3) vs ``--rollback-on-failure`` (4), ``--wait`` (3) vs ``--wait=watcher``
(4; helm 4's default without the flag is ``hookOnly``). Both support ``--dry-run=server``
(helm >= 3.13) and ``--reset-then-reuse-values`` (helm >= 3.14). helm 4 prints ``Pulled:`` lines on
stdout before the JSON; the parser skips them.

This module does not import prefect.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from safe_updater.adapters.errors import HelmError, OperationInProgressError
from safe_updater.adapters.helm_models import (
    CONTEXT_RE,
    ChartNotFoundError,
    ChartRef,
    HelmAuthError,
    HelmStatus,
    HelmTimeoutError,
    HelmUnavailableError,
    HelmVersion,
    Release,
    ReleaseMetadata,
    ReleaseNotFoundError,
    ReleaseRevision,
    ReleaseSummary,
    RevisionNotFoundError,
    ValuesMode,
    check_pattern,
    helm_message,
    parse_json_output,
    parse_list,
    parse_one,
    split_chart,
    translate_error,
    validate_namespace,
    validate_release_name,
    validate_value,
    validate_values_path,
)
from safe_updater.domain.errors import InvalidInputError

log = logging.getLogger(__name__)

__all__ = [
    "ChartNotFoundError",
    "ChartRef",
    "HelmAuthError",
    "HelmCli",
    "HelmError",
    "HelmStatus",
    "HelmTimeoutError",
    "HelmUnavailableError",
    "HelmVersion",
    "OperationInProgressError",
    "Release",
    "ReleaseMetadata",
    "ReleaseNotFoundError",
    "ReleaseRevision",
    "ReleaseSummary",
    "RevisionNotFoundError",
    "ValuesMode",
    "forbidden_error",
    "split_chart",
    "translate_error",
    "validate_namespace",
    "validate_release_name",
]

# --- RBAC refusals ----------------------------------------------------------------------------

HELM_RBAC_HINT = (
    "grant it in the ClusterRole safe-updater-helm (deployments/kubernetes/rbac.yaml, or the "
    "chart's rbac.helm.*) and bind that role with a RoleBinding in the release's namespace; "
    "see docs/kubernetes.md, section RBAC"
)
# The API server's authorizer message, as client-go puts it into helm's error. Bounded pieces
# after a literal start: a long stderr cannot make the search quadratic.
_FORBIDDEN = re.compile(
    r'cannot ([a-z]{1,32}) resource "([^"\n]{1,253})" in API group "([^"\n]{0,253})"'
    r'(?: in the namespace "([^"\n]{1,63})")?'
)


UNKNOWN_STATUS_HINT = (
    "helm could not read the status of that object, most often because the role lacks "
    "`list` on pods or apps/replicasets (ClusterRole safe-updater-helm; see docs/kubernetes.md, "
    "section RBAC); otherwise give the rollout more time (--timeout)"
)


def _translate(stderr: str, stdout: str, what: str) -> Exception:
    error = forbidden_error(stderr, what) or translate_error(stderr or stdout, what)
    if isinstance(error, HelmTimeoutError) and "status: Unknown" in stderr:
        error.hint = UNKNOWN_STATUS_HINT
    return error


def forbidden_error(stderr: str, what: str) -> HelmAuthError | None:
    """helm's stderr when the cluster's RBAC refused one of its requests, as an error naming the
    verb and resource the updater's role lacks; ``None`` for any other failure."""
    match = _FORBIDDEN.search(stderr)
    if match is None:
        return None
    verb, resource, group, namespace = match.groups()
    rbac_resource = f"{group}/{resource}" if group else resource
    where = f" in namespace {namespace}" if namespace else " at the cluster scope"
    return HelmAuthError(
        f"{what}: forbidden: the updater may not {verb} {rbac_resource}{where} (missing RBAC "
        f"verb {verb!r} on {rbac_resource}): {helm_message(stderr)}",
        hint=HELM_RBAC_HINT,
    )


# --- the CLI -----------------------------------------------------------------------------------

_KILL_GRACE = 10.0
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


class HelmCli:
    """One helm binary bound to one cluster (kubeconfig + context).

    ``timeout`` bounds every helm process we start (upgrade/rollback add their own ``--timeout``
    plus a margin). ``env`` adds environment variables (e.g. ``HELM_REGISTRY_CONFIG``,
    ``HELM_CACHE_HOME``); proxies are dropped for loopback-only use unless given here.
    """

    def __init__(
        self,
        binary: str = "helm",
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        insecure_hosts: Sequence[str] = (),
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if context is not None:
            check_pattern(
                CONTEXT_RE, context, "kube context", "use the context's name from kubeconfig"
            )
        if kubeconfig is not None and ("\n" in kubeconfig or "\x00" in kubeconfig):
            raise InvalidInputError("invalid kubeconfig path")
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.context = context
        self.timeout = timeout
        self._env_extra = dict(env or {})
        self._insecure_hosts = frozenset(insecure_hosts)
        self._version: HelmVersion | None = None
        self.calls: list[list[str]] = []  # argv of every call (no secrets ever go into argv)

    # -- plumbing ---------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
        env.setdefault("HELM_DEBUG", "false")
        env.update(self._env_extra)
        return env

    def _global_flags(self) -> list[str]:
        flags: list[str] = []
        if self.kubeconfig is not None:
            flags.append(f"--kubeconfig={self.kubeconfig}")
        if self.context is not None:
            flags.append(f"--kube-context={self.context}")
        return flags

    def run(
        self,
        command: Sequence[str],
        flags: Sequence[str] = (),
        positionals: Sequence[str] = (),
        *,
        what: str,
        timeout: float | None = None,
        cluster: bool = True,
        stdin: str | None = None,
    ) -> str:
        """Run ``helm COMMAND FLAGS -- POSITIONALS``; stdout, or a typed error from stderr."""
        argv = [self.binary, *command, *(self._global_flags() if cluster else []), *flags]
        if positionals:
            argv += ["--", *positionals]
        self.calls.append(argv)
        limit = timeout if timeout is not None else self.timeout
        log.debug("helm: %s", " ".join(argv[1:]))
        # helm's output goes to files, not pipes: if this process dies (kill -9, OOM), a helm
        # upgrade or rollback in flight still finishes instead of dying of SIGPIPE at its next
        # progress line and leaving the release pending-* for good.
        with (
            tempfile.TemporaryFile("w+") as stdin_file,
            tempfile.TemporaryFile("w+") as out_file,
            tempfile.TemporaryFile("w+") as err_file,
        ):
            if stdin is not None:
                stdin_file.write(stdin)
                stdin_file.flush()
                stdin_file.seek(0)
            try:
                proc = subprocess.Popen(  # noqa: S603 - an argument list, never a shell
                    argv,
                    stdin=stdin_file if stdin is not None else subprocess.DEVNULL,
                    stdout=out_file,
                    stderr=err_file,
                    text=True,
                    env=self._env(),
                )
            except OSError as exc:
                raise HelmError(
                    f"{what}: cannot run {self.binary!r} ({exc.strerror})",
                    hint="install helm 3.14+ or 4.x, or set the helm binary's path",
                ) from exc
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired as exc:
                _stop(proc)
                raise HelmTimeoutError(
                    f"{what}: helm did not finish within {limit:.0f} s (timed out); it was stopped"
                ) from exc
            except BaseException:
                _stop(proc)  # KeyboardInterrupt, cancellation: never leave helm running behind us
                raise
            out_file.seek(0)
            err_file.seek(0)
            stdout, stderr = out_file.read(), err_file.read()
        if proc.returncode != 0:
            raise _translate(stderr, stdout, what)
        return stdout

    def _json(self, *args: Any, **kwargs: Any) -> Any:
        out = self.run(*args, **kwargs)
        return parse_json_output(out, kwargs.get("what", "helm"))

    # -- read --

    def version(self) -> HelmVersion:
        """``helm version --short`` (cached): decides the helm 3 / helm 4 flags."""
        if self._version is None:
            out = self.run(["version"], ["--short"], what="helm version", cluster=False)
            self._version = HelmVersion.parse(out)
        return self._version

    def list_releases(self, namespace: str | None = None) -> list[ReleaseSummary]:
        """Deployed, failed and pending releases (latest revision each); default: all namespaces."""
        flags = ["--deployed", "--failed", "--pending", "--max=0", "--output=json"]
        if namespace is None:
            flags.insert(0, "--all-namespaces")
        else:
            flags.insert(0, f"--namespace={validate_namespace(namespace)}")
        data = self._json(["list"], flags, what="helm list")
        return parse_list(data or [], ReleaseSummary, "helm list")

    def status(self, release: str, namespace: str) -> Release:
        flags = [f"--namespace={validate_namespace(namespace)}", "--output=json"]
        data = self._json(
            ["status"], flags, [validate_release_name(release)], what=f"helm status {release}"
        )
        return parse_one(data, Release, "helm status")

    def metadata(
        self, release: str, namespace: str, revision: int | None = None
    ) -> ReleaseMetadata:
        """``helm get metadata``: chart name/version, revision and status of the latest revision."""
        flags = [f"--namespace={validate_namespace(namespace)}", "--output=json"]
        if revision is not None:
            flags.append(f"--revision={_revision(revision)}")
        data = self._json(
            ["get", "metadata"],
            flags,
            [validate_release_name(release)],
            what=f"helm get metadata {release}",
        )
        return parse_one(data, ReleaseMetadata, "helm get metadata")

    def history(
        self, release: str, namespace: str, *, max_revisions: int = 256
    ) -> list[ReleaseRevision]:
        """Revisions oldest first (helm keeps ``--history-max``, default 10)."""
        flags = [
            f"--namespace={validate_namespace(namespace)}",
            f"--max={int(max_revisions)}",
            "--output=json",
        ]
        data = self._json(
            ["history"], flags, [validate_release_name(release)], what=f"helm history {release}"
        )
        revisions = parse_list(data or [], ReleaseRevision, "helm history")
        return sorted(revisions, key=lambda r: r.revision)

    def get_values(
        self, release: str, namespace: str, *, all_values: bool = False, revision: int | None = None
    ) -> dict[str, Any]:
        """User-supplied values (``{}`` when none), or every value with ``all_values``."""
        flags = [f"--namespace={validate_namespace(namespace)}", "--output=json"]
        if all_values:
            flags.append("--all")
        if revision is not None:
            flags.append(f"--revision={_revision(revision)}")
        data = self._json(
            ["get", "values"],
            flags,
            [validate_release_name(release)],
            what=f"helm get values {release}",
        )
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise HelmError(f"helm get values {release}: expected a JSON object")
        return data

    # -- render / change --

    def template(
        self,
        release: str,
        chart: ChartRef,
        namespace: str,
        *,
        set_values: Mapping[str, str] | None = None,
    ) -> str:
        """``helm template`` (client-side render, no cluster access); the manifest text."""
        flags = [f"--namespace={validate_namespace(namespace)}", *self._chart_flags(chart)]
        flags += _set_flags(set_values)
        return self.run(
            ["template"],
            flags,
            [validate_release_name(release), chart.ref],
            what=f"helm template {release} {chart.ref}@{chart.version}",
            cluster=False,
        )

    def upgrade(
        self,
        release: str,
        chart: ChartRef,
        namespace: str,
        *,
        values: ValuesMode = ValuesMode.RESET_THEN_REUSE,
        set_values: Mapping[str, str] | None = None,
        wait: bool = False,
        timeout: float = 300.0,
        atomic: bool = False,
        dry_run: bool = False,
        description: str | None = None,
    ) -> Release:
        """``helm upgrade`` (never ``--install``); ``dry_run`` is server-side (nothing changes).

        ``atomic`` maps to helm 3's ``--atomic`` / helm 4's ``--rollback-on-failure``; the updater
        leaves it off and rolls back itself after its own health verdict.
        """
        flags = [f"--namespace={validate_namespace(namespace)}", *self._chart_flags(chart)]
        positionals = [validate_release_name(release), chart.ref]
        sets = _set_flags(set_values)
        version = self.version()
        if values is ValuesMode.RESET_THEN_REUSE:
            if not version.at_least(3, 14):
                raise HelmError(
                    f"helm {version.text} has no --reset-then-reuse-values",
                    hint="use helm 3.14 or newer",
                )
            flags.append("--reset-then-reuse-values")
        elif values is ValuesMode.REUSE:
            flags.append("--reuse-values")
        else:
            flags.append("--reset-values")
        flags += sets
        if wait:
            flags.append("--wait=watcher" if version.major >= 4 else "--wait")
        if atomic:
            flags.append("--rollback-on-failure" if version.major >= 4 else "--atomic")
        if dry_run:
            flags.append("--dry-run=server")
        if description is not None:
            flags.append(f"--description={_description(description)}")
        flags += [f"--timeout={_duration(timeout)}", "--output=json"]
        what = f"helm upgrade {release} {chart.ref}@{chart.version}" + (
            " (dry-run)" if dry_run else ""
        )
        data = self._json(
            ["upgrade"],
            flags,
            positionals,
            what=what,
            timeout=timeout + max(30.0, self.timeout),
        )
        return parse_one(data, Release, "helm upgrade")

    def rollback(
        self,
        release: str,
        revision: int,
        namespace: str,
        *,
        wait: bool = True,
        timeout: float = 300.0,
    ) -> None:
        """``helm rollback RELEASE REVISION`` (a new revision with the old one's chart+values)."""
        flags = [f"--namespace={validate_namespace(namespace)}", f"--timeout={_duration(timeout)}"]
        positionals = [validate_release_name(release), str(_revision(revision))]
        version = self.version()
        if wait:
            flags.append("--wait=watcher" if version.major >= 4 else "--wait")
        self.run(
            ["rollback"],
            flags,
            positionals,
            what=f"helm rollback {release} {revision}",
            timeout=timeout + max(30.0, self.timeout),
        )

    def _chart_flags(self, chart: ChartRef) -> list[str]:
        flags = chart.args()
        if not chart.plain_http and chart.ref.startswith("oci://"):
            host = chart.ref.removeprefix("oci://").split("/", 1)[0]
            if _is_loopback(host) or host in self._insecure_hosts:
                flags.append("--plain-http")
        return flags


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    return name in ("localhost", "::1") or name.startswith("127.")


def _revision(revision: object) -> int:
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        raise InvalidInputError(f"invalid revision {revision!r}", hint="revisions are 1, 2, 3, …")
    return revision


def _description(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9 _.:+>/@-]", "", text)[:200]


def _set_flags(set_values: Mapping[str, str] | None) -> list[str]:
    return [
        f"--set-string={validate_values_path(path)}={validate_value(value)}"
        for path, value in (set_values or {}).items()
    ]


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM first (helm marks the release failed on it), SIGKILL if it does not exit."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=_KILL_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    finally:
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                stream.close()
