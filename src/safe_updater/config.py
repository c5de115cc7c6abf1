"""The config file (``safe-updater.yaml``): its schema, and loading it with line numbers.

Where the file comes from: ``--config FILE``, else ``SAFE_UPDATER_CONFIG``, else
``./safe-updater.yaml``. A missing default file means the built-in defaults; a missing file
that was named explicitly is an error, since the operator asked for *that* file.

Every problem becomes a :class:`ConfigError` with the file, the 1-based line and the dotted
field, e.g. ``safe-updater.yaml:7: policy.default.minor: must be one of auto, approve, skip``.
The YAML is read as a node tree (ruamel's composer) rather than as Python values so that every
key keeps its line and every scalar its original text: ``pin: 1.20`` stays ``"1.20"`` instead of
becoming the float ``1.2``. Pydantic's lax mode turns the text into numbers and booleans.

Secrets never live in this file: credentials come from Prefect Blocks named here
(``credentials_block``), so a ``password`` key is refused with that hint.
"""

from __future__ import annotations

import difflib
import ipaddress
import types
import typing
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from safe_updater.domain.errors import ConfigError
from safe_updater.domain.fields import Duration
from safe_updater.domain.notices import DEFAULT_NOTIFY_EVENTS, canonical_event
from safe_updater.domain.policy import PolicyConfig, PositiveDuration
from safe_updater.settings import DEFAULT_CONFIG_PATH, Settings

SECRET_KEYS = frozenset({"password", "passwd", "token", "secret", "api_key", "apikey"})
_SECRET_HINT = (
    "keep credentials in a Prefect Block (e.g. a RegistryCredentials block) and name it here "
    "with credentials_block: <block-name>"
)
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_MAX_DEPTH = 32


def _model(description: str) -> ConfigDict:
    return ConfigDict(extra="forbid", frozen=True, title=description)


class StateConfig(BaseModel):
    model_config = _model("Where the updater keeps its journal, quarantine, pins and audit log.")

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (sqlite:///... or postgresql+psycopg://...). "
        "Default: SQLite in SAFE_UPDATER_HOME; SAFE_UPDATER_STATE_URL wins over this key.",
    )


class HealthConfig(BaseModel):
    model_config = _model("How an update is verified: samples over a monitoring window.")

    window: PositiveDuration = Field(
        default=timedelta(seconds=30), description="How long health is watched after an update."
    )
    interval: PositiveDuration = Field(
        default=timedelta(seconds=2), description="Time between two health samples."
    )
    failure_threshold: int = Field(
        default=3, ge=1, description="Failed samples that make the update fail (and roll back)."
    )
    success_threshold: int = Field(
        default=2, ge=1, description="Consecutive passing samples needed at the end of the window."
    )
    timeout: PositiveDuration = Field(
        default=timedelta(seconds=5), description="Timeout of one probe."
    )

    @model_validator(mode="after")
    def _interval_fits(self) -> HealthConfig:
        if self.interval > self.window:
            raise ValueError("interval must not be longer than window")
        return self


class HttpCheck(BaseModel):
    model_config = _model("An HTTP health check.")

    url: str = Field(description="URL to request, e.g. http://127.0.0.1:8080/healthz.")
    method: Literal["GET", "HEAD", "POST"] = Field(default="GET", description="HTTP method.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers (no secrets: use a Block)."
    )
    expect_status: str = Field(
        default="200-399", description="Status code or range that counts as healthy."
    )
    body_match: str | None = Field(default=None, description="Text the response body must contain.")
    verify_tls: bool = Field(default=True, description="Verify the server's TLS certificate.")
    timeout: Duration | None = Field(default=None, description="Overrides health.timeout.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("expect_status")
    @classmethod
    def _status(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.isdigit() and (not high or high.isdigit())):
            raise ValueError("must be a status code like 200 or a range like 200-399")
        return value


class TcpCheck(BaseModel):
    model_config = _model("A TCP connect health check.")

    address: str = Field(description="host:port to connect to, e.g. 127.0.0.1:5432.")
    timeout: Duration | None = Field(default=None, description="Overrides health.timeout.")

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:5432")
        return value


class ExecCheck(BaseModel):
    model_config = _model("A command run inside the container; exit code 0 is healthy.")

    command: list[str] = Field(min_length=1, description="Argument list, e.g. [pg_isready].")
    timeout: Duration | None = Field(default=None, description="Overrides health.timeout.")


class PrometheusCheck(BaseModel):
    model_config = _model(
        "A PromQL query against a threshold; healthy while `value op threshold` holds."
    )

    url: str = Field(description="Prometheus base URL, e.g. http://127.0.0.1:9090.")
    query: str = Field(
        min_length=1,
        description="PromQL returning one number, e.g. sum(rate(http_errors_total[1m])).",
    )
    threshold: float = Field(description="The value the query's result is compared with.")
    op: Literal["<", "<=", ">", ">="] = Field(
        default="<", description="Healthy while `value op threshold`; crossing it fails."
    )
    timeout: Duration | None = Field(default=None, description="Overrides health.timeout.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return value


class AssetHealth(BaseModel):
    model_config = _model("Health settings for matching assets; unset keys come from health.")

    window: PositiveDuration | None = Field(default=None, description="Overrides health.window.")
    interval: PositiveDuration | None = Field(
        default=None, description="Overrides health.interval."
    )
    failure_threshold: int | None = Field(
        default=None, ge=1, description="Overrides health.failure_threshold."
    )
    success_threshold: int | None = Field(
        default=None, ge=1, description="Overrides health.success_threshold."
    )
    timeout: PositiveDuration | None = Field(default=None, description="Overrides health.timeout.")
    http: HttpCheck | None = Field(default=None, description="HTTP check.")
    tcp: TcpCheck | None = Field(default=None, description="TCP check.")
    exec: ExecCheck | None = Field(default=None, description="Command check.")
    prometheus: PrometheusCheck | None = Field(default=None, description="Prometheus query check.")


class AssetSettings(BaseModel):
    model_config = _model("Settings for the assets whose id matches the key (a glob).")

    group: str | None = Field(
        default=None, description="Group for policy overrides and fleet waves."
    )
    health: AssetHealth | None = Field(default=None, description="Health check settings.")


class TlsConfig(BaseModel):
    model_config = _model("TLS for a Docker engine reached over TCP.")

    verify: bool = Field(default=True, description="Verify the engine's certificate.")
    ca_cert: Path | None = Field(default=None, description="CA certificate file.")
    client_cert: Path | None = Field(default=None, description="Client certificate file.")
    client_key: Path | None = Field(default=None, description="Client key file.")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self


class DockerTarget(BaseModel):
    model_config = _model("A Docker engine.")

    name: str = Field(
        pattern=_NAME_PATTERN, description="Short name; part of asset ids (docker:<name>/...)."
    )
    url: str | None = Field(
        default=None,
        description="Engine URL: unix:///var/run/docker.sock, tcp://127.0.0.1:2376, ssh://...; "
        "default: DOCKER_HOST or the default socket.",
    )
    tls: TlsConfig | None = Field(default=None, description="TLS settings for tcp:// URLs.")

    @field_validator("url")
    @classmethod
    def _engine_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("unix://", "tcp://", "ssh://", "http://", "https://", "npipe://")
        ):
            raise ValueError("must start with unix://, tcp://, ssh://, http(s):// or npipe://")
        return value


class KubernetesTarget(BaseModel):
    model_config = _model("A Kubernetes cluster.")

    name: str = Field(
        pattern=_NAME_PATTERN, description="Short name; part of asset ids (k8s:<name>/...)."
    )
    kubeconfig: Path | None = Field(
        default=None, description="Kubeconfig file; default: KUBECONFIG or ~/.kube/config."
    )
    context: str | None = Field(default=None, description="Context in the kubeconfig.")
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty means all."
    )
    exclude_namespaces: list[str] = Field(
        default_factory=list, description="Namespaces never touched (globs)."
    )
    helm: str = Field(
        default="helm",
        description="The helm binary (3.14+ or 4.x) used for this cluster's releases: a path or "
        "a name on PATH.",
    )
    cluster_block: str | None = Field(
        default=None,
        description="Name of a Prefect KubernetesCluster Block to connect with (its kubeconfig, "
        "token included, stays encrypted in Prefect); instead of kubeconfig.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> KubernetesTarget:
        if self.cluster_block is not None and self.kubeconfig is not None:
            raise ValueError(
                "set either kubeconfig or cluster_block, not both (the block holds its own "
                "kubeconfig)"
            )
        return self


class TargetsConfig(BaseModel):
    model_config = _model("Where assets live. No Docker targets: the local engine (DOCKER_HOST).")

    docker: list[DockerTarget] = Field(default_factory=list, description="Docker engines.")
    kubernetes: list[KubernetesTarget] = Field(
        default_factory=list, description="Kubernetes clusters."
    )

    @field_validator("docker", "kubernetes")
    @classmethod
    def _unique_names(cls, items: list[Any]) -> list[Any]:
        # Names are part of asset ids; two targets with one name would mix their assets.
        names = [item.name for item in items]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"target names must be unique: {', '.join(duplicates)}")
        return items


class RegistryConfig(BaseModel):
    model_config = _model("How to reach one container registry.")

    host: str = Field(description="Registry host[:port], e.g. ghcr.io or localhost:5000.")
    insecure: bool = Field(
        default=False,
        description="Plain HTTP for a non-loopback registry (loopback always uses HTTP).",
    )
    credentials_block: str | None = Field(
        default=None, description="Name of the Prefect RegistryCredentials Block to log in with."
    )

    @field_validator("host")
    @classmethod
    def _bare_host(cls, value: str) -> str:
        if "://" in value or "/" in value or not value:
            raise ValueError("must be a host[:port] without scheme or path, e.g. ghcr.io")
        return value


class ChartSource(BaseModel):
    model_config = _model("Where to look for newer versions of a Helm release's chart.")

    release: str = Field(description="Release as <namespace>/<name> (globs allowed).")
    source: str = Field(
        description="Chart repository URL (https://...) or OCI registry (oci://...)."
    )
    chart: str | None = Field(default=None, description="Chart name; default: the release's chart.")
    track: Literal["chart", "image"] | None = Field(
        default=None,
        description="What to update: the chart version, or the app image tag inside the "
        "release's values. Default: image when values_path is set, else chart.",
    )
    image: str | None = Field(
        default=None,
        description="Image repository to look up tags in when tracking the image; default: the "
        "`repository` value next to values_path in the release's values.",
    )
    values_path: str | None = Field(
        default=None,
        description="Dotted path of an image tag in the values (e.g. image.tag) to track the "
        "app image instead of the chart version.",
    )

    @field_validator("source")
    @classmethod
    def _source_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://", "oci://")):
            raise ValueError("must start with https://, http:// or oci://")
        return value


class RollbackConfig(BaseModel):
    model_config = _model("Loop prevention: how often an asset may roll back before it halts.")

    max_rollbacks: int = Field(
        default=3, ge=1, description="Rollbacks allowed per asset within 'within'."
    )
    within: PositiveDuration = Field(
        default=timedelta(hours=24), description="The time span max_rollbacks counts over."
    )


class ApprovalsConfig(BaseModel):
    model_config = _model("How approvals are waited for.")

    poll_interval: PositiveDuration = Field(
        default=timedelta(seconds=10), description="How often a paused run checks for answers."
    )


class FleetConfig(BaseModel):
    model_config = _model("Fleet updates: waves, soak, failure budget, concurrency.")

    canary: list[str] = Field(
        default_factory=lambda: ["canary"],
        description="Groups updated first, one wave each; the rest waits for them to pass.",
    )
    order: list[str] = Field(
        default_factory=list,
        description="Groups in the order their waves run after the canaries; groups not "
        "named follow alphabetically, assets without a group last.",
    )
    soak: Duration = Field(
        default=timedelta(0),
        description="Time to wait after a wave before the next one starts (0s: none).",
    )
    failure_budget: int = Field(
        default=0,
        ge=0,
        description="Failed or rolled-back updates a wave may have; one more halts the "
        "remaining waves (canary waves always allow 0).",
    )
    max_parallel: int = Field(default=4, ge=1, description="Updates running at once, in all.")
    max_parallel_per_target: int | None = Field(
        default=None,
        ge=1,
        description="Updates running at once per Docker host or cluster (default: no "
        "limit below max_parallel).",
    )
    approval: Literal["plan", "defer"] = Field(
        default="plan",
        description="plan: one approval in the fleet run covers every update that needs "
        "one; defer: each such update waits for its own approval (safe-updater approve).",
    )
    dispatch: Literal["auto", "inline", "deployment"] = Field(
        default="auto",
        description="inline: per-asset runs in the fleet's process; deployment: runs of "
        "the update-asset deployment, spread over workers; auto: deployment when the fleet "
        "itself runs from a deployment.",
    )
    window_wait: Duration = Field(
        default=timedelta(0),
        description="An asset outside its maintenance window is waited for if the window "
        "opens within this time; otherwise it is deferred to the next run.",
    )


def _is_loopback_host(netloc: str) -> bool:
    """``127.0.0.1:8080``, ``localhost``, ``[::1]:80``; no credentials in the URL either."""
    if "@" in netloc:
        return False
    host = netloc[1:].split("]", 1)[0] if netloc.startswith("[") else netloc.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NotificationConfig(BaseModel):
    model_config = _model(
        "A webhook that hears update events. Its URL comes from a Prefect Block (url_block) or "
        "an environment variable (url_env); a literal url only for a loopback receiver."
    )

    name: str = Field(pattern=_NAME_PATTERN, description="Name of this notifier, e.g. ops-slack.")
    url_block: str | None = Field(
        default=None,
        description="Prefect block holding the URL: a NotificationWebhook block's name, or "
        "secret/<name> (a Secret block) or webhook/<name> (a Webhook block).",
    )
    url_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the URL (read when the runtime is built).",
    )
    url: str | None = Field(
        default=None,
        description="A literal URL, allowed only for http(s)://127.0.0.1, localhost or [::1] "
        "(a local relay); real webhook URLs carry secrets, so use url_block or url_env.",
    )
    format: Literal["slack", "json"] = Field(
        default="slack", description="slack: {text, blocks}; json: every field of the notice."
    )
    events: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NOTIFY_EVENTS),
        min_length=1,
        description="Events to send: awaiting-approval, updated (= verified), applied, "
        "rolled-back, failed, rejected.",
    )
    timeout: PositiveDuration = Field(
        default=timedelta(seconds=10), description="Timeout of one webhook request."
    )

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(canonical_event(name) for name in value))

    @field_validator("url")
    @classmethod
    def _loopback_only(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        if not _is_loopback_host(rest.split("/", 1)[0].split("?", 1)[0]):
            raise ValueError(
                "a literal url is allowed only for a loopback receiver (127.0.0.1, localhost); "
                "keep a real webhook URL in a Prefect Block (url_block) or a variable (url_env)"
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> NotificationConfig:
        given = [k for k in ("url_block", "url_env", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of url_block, url_env or url")
        return self


class AppConfig(BaseModel):
    """The whole config file; every section is optional."""

    model_config = _model("safe-updater.yaml")

    state: StateConfig = Field(default_factory=StateConfig, description="State database.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="The update policy.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Health checks.")
    targets: TargetsConfig = Field(default_factory=TargetsConfig, description="Docker and k8s.")
    registries: list[RegistryConfig] = Field(
        default_factory=list, description="Registry access (auth, plain HTTP)."
    )
    charts: list[ChartSource] = Field(
        default_factory=list, description="Chart sources for Helm releases."
    )
    rollback: RollbackConfig = Field(default_factory=RollbackConfig, description="Loop prevention.")
    assets: dict[str, AssetSettings] = Field(
        default_factory=dict,
        description="Per-asset settings keyed by asset-id glob, e.g. 'docker:*/web'; "
        "the first matching key in file order applies.",
    )
    approvals: ApprovalsConfig = Field(
        default_factory=ApprovalsConfig, description="Approval waiting."
    )
    notifications: list[NotificationConfig] = Field(
        default_factory=list,
        description="Webhooks told about update events (docs/notifications.md).",
    )
    fleet: FleetConfig = Field(
        default_factory=FleetConfig, description="Fleet updates (docs/fleet.md)."
    )

    @field_validator("notifications")
    @classmethod
    def _unique_notifier_names(cls, items: list[NotificationConfig]) -> list[NotificationConfig]:
        names = [item.name for item in items]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate notification names: {', '.join(duplicates)}")
        return items

    def asset_settings(self, asset_id: str) -> AssetSettings | None:
        """The first ``assets`` entry whose glob matches ``asset_id``."""
        for pattern, settings in self.assets.items():
            if fnmatchcase(asset_id, pattern):
                return settings
        return None

    def health_for(self, asset_id: str) -> HealthConfig:
        """``health`` with the matching asset's overrides applied."""
        settings = self.asset_settings(asset_id)
        if settings is None or settings.health is None:
            return self.health
        changes = {
            name: getattr(settings.health, name)
            for name in HealthConfig.model_fields
            if getattr(settings.health, name) is not None
        }
        return HealthConfig.model_validate({**self.health.model_dump(), **changes})

    def group_for(self, asset_id: str) -> str | None:
        settings = self.asset_settings(asset_id)
        return settings.group if settings else None

    def registry(self, host: str) -> RegistryConfig | None:
        return next((r for r in self.registries if r.host == host), None)


class ConfigProblems(ConfigError):
    """Several problems in one file; ``problems`` lists each with its line. Prints the first."""

    def __init__(self, problems: list[ConfigError]) -> None:
        first = problems[0]
        message = first.message
        if len(problems) > 1:
            message += f" (1 of {len(problems)} problems; `safe-updater config validate` lists all)"
        super().__init__(
            message, hint=first.hint, source=first.source, line=first.line, field=first.field
        )
        self.problems = problems


# ---------------------------------------------------------------------------------------------
# Loading


def config_path(
    explicit: Path | None = None, settings: Settings | None = None
) -> tuple[Path, bool]:
    """The file to read and whether it was named explicitly (``--config`` or the environment)."""
    if explicit is not None:
        return explicit, True
    named = (settings or Settings()).config
    if named is not None:
        return named, True
    return DEFAULT_CONFIG_PATH, False


def load_config(path: Path | None = None, *, settings: Settings | None = None) -> AppConfig:
    """Load the config: ``path``, else ``SAFE_UPDATER_CONFIG``, else ``./safe-updater.yaml``.

    Raises :class:`ConfigError` (a :class:`ConfigProblems` when the file has several problems).
    """
    chosen, explicit = config_path(path, settings)
    if not chosen.exists():
        if not explicit:
            return AppConfig()
        raise ConfigError(
            "config file does not exist",
            hint="check the path given to --config or SAFE_UPDATER_CONFIG, "
            "or create one with `safe-updater config generate --output FILE`",
            source=str(chosen),
        )
    return load_config_file(chosen)


def load_config_file(path: Path) -> AppConfig:
    """Read and validate one file; raise :class:`ConfigError` on any problem."""
    config, problems = check_config_text(_read(path), source=str(path))
    if problems or config is None:
        raise ConfigProblems(problems)
    return config


def check_config_file(path: Path) -> tuple[AppConfig | None, list[ConfigError]]:
    """Validate one file and return every problem rather than raising on the first."""
    try:
        text = _read(path)
    except ConfigError as error:
        return None, [error]
    return check_config_text(text, source=str(path))


def parse_config_text(text: str, *, source: str = "<config>") -> AppConfig:
    config, problems = check_config_text(text, source=source)
    if problems or config is None:
        raise ConfigProblems(problems)
    return config


def check_config_text(text: str, *, source: str) -> tuple[AppConfig | None, list[ConfigError]]:
    """Parse and validate; return the config, or ``None`` and the problems sorted by line."""
    try:
        root = YAML(typ="safe", pure=True).compose(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = error.problem or error.context or "invalid YAML"
        return None, [ConfigError(f"not valid YAML: {problem}", source=source, line=line)]
    except YAMLError as error:
        return None, [ConfigError(f"not valid YAML: {error}", source=source)]
    except RecursionError:
        # ruamel's composer recurses per nesting level
        return None, [
            ConfigError(
                "not valid YAML: nested too deeply",
                hint="a config is a few levels deep; check for runaway brackets",
                source=source,
            )
        ]
    reader = _Reader(source)
    try:
        data = reader.value(root, (), 0) if root is not None else {}
    except _TooLarge:
        return None, [
            ConfigError(
                f"the file expands to more than {_MAX_VALUES:,} values (YAML aliases)",
                hint="write the values out; aliases that refer to aliases multiply",
                source=source,
            )
        ]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        reader.problem((), "the file must be a mapping of sections (state, policy, health, ...)")
        return None, reader.problems
    # Keep validating after the reader's problems (secrets, duplicates) so one run lists all.
    try:
        config = AppConfig.model_validate(data)
    except ValidationError as error:
        return None, _sorted(reader.problems + _translate(error, data, reader.lines, source))
    if reader.problems:
        return None, _sorted(reader.problems)
    return config, []


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file does not exist", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file: {error}", source=str(path)) from None


def _sorted(problems: list[ConfigError]) -> list[ConfigError]:
    unique: dict[tuple[int, str, str], ConfigError] = {}
    for problem in problems:
        unique.setdefault((problem.line or 0, problem.field or "", problem.message), problem)
    return [unique[key] for key in sorted(unique)]


Path_ = tuple[str | int, ...]


# A real config has hundreds of values; aliases of aliases ("billion laughs") expand a
# few hundred bytes into billions, so the reader stops counting well before that.
_MAX_VALUES = 100_000


class _TooLarge(Exception):
    pass


class _Reader:
    """Node tree -> plain data, recording the line of every key and list item."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.problems: list[ConfigError] = []
        self.count = 0

    def problem(
        self, path: Path_, message: str, hint: str | None = None, line: int | None = None
    ) -> None:
        self.problems.append(
            ConfigError(
                message,
                hint=hint,
                source=self.source,
                line=line if line is not None else self.lines.get(path),
                field=_dotted(path) or None,
            )
        )

    def value(self, node: Node, path: Path_, depth: int) -> Any:
        self.count += 1
        if self.count > _MAX_VALUES:
            raise _TooLarge
        if depth > _MAX_DEPTH:
            self.problem(path, "nested too deeply")
            return None
        if isinstance(node, MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.value(item, (*path, index), depth + 1))
            return items
        assert isinstance(node, ScalarNode)
        if node.tag == "tag:yaml.org,2002:null" and node.style is None:
            return None
        # The original text: pydantic converts it to the field's type (``"3"`` -> 3).
        return str(node.value)

    def mapping(self, node: MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: list[MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # `<<: *defaults`: keys written here win over the merged ones.
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                merged.extend(n for n in sources if isinstance(n, MappingNode))
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self.problem(path, "keys must be plain words", line=line)
                continue
            key = str(key_node.value)
            key_path = (*path, key)
            if key in out:
                self.problem(key_path, f"duplicate key {key!r}", line=line)
                continue
            self.lines[key_path] = line
            if key.lower() in SECRET_KEYS:
                self.problem(key_path, "inline secrets are not allowed in the config", _SECRET_HINT)
                continue
            out[key] = self.value(value_node, key_path, depth + 1)
        for extra in merged:
            for key, value in self.mapping(extra, path, depth + 1).items():
                out.setdefault(key, value)
        return out


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _translate(
    error: ValidationError, data: dict[str, Any], lines: dict[Path_, int], source: str
) -> list[ConfigError]:
    problems = []
    for item in error.errors(include_url=False):
        path = _data_path(data, item["loc"], item["type"])
        line = next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), None)
        message, hint = _message(item, path)
        problems.append(
            ConfigError(message, hint=hint, source=source, line=line, field=_dotted(path) or None)
        )
    return problems


def _data_path(data: Any, loc: tuple[str | int, ...], kind: str) -> Path_:
    """The part of pydantic's ``loc`` that names places in the file (drops union/validator tags)."""
    path: list[str | int] = []
    current = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            current = current[part]
            path.append(part)
        elif last and kind == "missing" and isinstance(part, str):
            path.append(part)
    return tuple(path)


def _message(item: Any, path: Path_) -> tuple[str, str | None]:
    kind, ctx, msg = item["type"], item.get("ctx") or {}, str(item["msg"])
    if kind in ("enum", "literal_error"):
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {expected}", None
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        allowed = _allowed_keys(path[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            return f"unknown key {key!r}; did you mean {close[0]!r}?", None
        return f"unknown key {key!r}", f"allowed here: {', '.join(allowed)}" if allowed else None
    if kind == "missing":
        return "is required", None
    if kind in ("value_error", "assertion_error"):
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, "), None
    simple = {
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "bool_parsing": "must be true or false",
        "string_type": "must be text",
        "list_type": "must be a list",
        "dict_type": "must be a mapping of keys",
        "model_type": "must be a mapping of keys",
        "model_attributes_type": "must be a mapping of keys",
        "string_pattern_mismatch": "must be a short name of letters, digits, '.', '_' or '-'",
    }
    if kind in simple:
        return simple[kind], None
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {
            "greater_than_equal": "at least",
            "greater_than": "more than",
            "less_than_equal": "at most",
            "less_than": "less than",
        }[kind]
        limit = next(iter(ctx.values()), "")
        return f"must be {words} {limit}", None
    if kind == "too_short":
        return "must not be empty", None
    return msg[:1].lower() + msg[1:], None


def _allowed_keys(path: Path_) -> list[str]:
    model = _model_at(AppConfig, path)
    return list(model.model_fields) if model is not None else []


def _model_at(annotation: Any, path: Path_) -> type[BaseModel] | None:
    current: Any = annotation
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` down to the structural type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation
