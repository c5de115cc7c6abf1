"""Loading the config: where from, defaults, the full schema, the helpers consumers use."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from safe_updater.config import (
    AppConfig,
    HealthConfig,
    load_config,
    parse_config_text,
)
from safe_updater.config_reference import DEFAULT_CONFIG
from safe_updater.domain.assets import AssetKind
from safe_updater.domain.errors import ConfigError
from safe_updater.domain.policy import Action, AssetContext, resolve_policy
from safe_updater.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "safe-updater.yaml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SAFE_UPDATER_CONFIG", "SAFE_UPDATER_STATE_URL", "SAFE_UPDATER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_missing_default_file_means_defaults() -> None:
    assert load_config() == AppConfig()


def test_default_file_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "safe-updater.yaml").write_text("policy: {default: {minor: skip}}\n")
    assert load_config().policy.default.minor is Action.SKIP


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.source == str(tmp_path / "nope.yaml")


def test_environment_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    named = tmp_path / "other.yaml"
    named.write_text("health: {window: 1m}\n")
    monkeypatch.setenv("SAFE_UPDATER_CONFIG", str(named))
    assert load_config().health.window == timedelta(minutes=1)
    monkeypatch.setenv("SAFE_UPDATER_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config()


def test_flag_wins_over_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAFE_UPDATER_CONFIG", str(tmp_path / "missing.yaml"))
    flag = tmp_path / "flag.yaml"
    flag.write_text("rollback: {max_rollbacks: 5}\n")
    assert load_config(flag).rollback.max_rollbacks == 5


def test_generated_default_file_equals_built_in_defaults() -> None:
    assert parse_config_text(DEFAULT_CONFIG) == AppConfig()


def test_empty_file_is_defaults() -> None:
    assert parse_config_text("") == AppConfig()
    assert parse_config_text("# only a comment\n") == AppConfig()


def test_defaults() -> None:
    config = AppConfig()
    assert config.health == HealthConfig(
        window=timedelta(seconds=30),
        interval=timedelta(seconds=2),
        failure_threshold=3,
        success_threshold=2,
        timeout=timedelta(seconds=5),
    )
    assert config.rollback.max_rollbacks == 3 and config.rollback.within == timedelta(hours=24)
    assert config.approvals.poll_interval == timedelta(seconds=10)
    policy = config.policy.default
    assert (policy.patch, policy.minor, policy.major, policy.prerelease, policy.digest) == (
        Action.AUTO,
        Action.APPROVE,
        Action.SKIP,
        Action.SKIP,
        Action.AUTO,
    )
    assert policy.approval.quorum == 1 and policy.approval.deadline == timedelta(hours=24)
    assert policy.approval.timeout_action == "reject" and policy.approval.approvers == []


def test_worked_example_loads_and_drives_the_policy() -> None:
    config = load_config(EXAMPLE)
    assert [t.name for t in config.targets.docker] == ["local"]
    assert config.targets.kubernetes[0].exclude_namespaces == ["kube-system"]
    assert config.registry("ghcr.io") is not None
    assert config.registry("ghcr.io").credentials_block == "ghcr-credentials"  # type: ignore[union-attr]
    assert config.charts[0].source.startswith("oci://")
    prod = AssetContext(
        asset_id="helm:prod/prod/api", kind=AssetKind.HELM, namespace="prod", name="api"
    )
    policy = resolve_policy(config.policy, prod)
    assert policy.patch is Action.APPROVE and policy.approval.quorum == 2
    assert len(policy.windows) == 2 and policy.min_release_age == timedelta(days=3)
    postgres = AssetContext(
        asset_id="helm:prod/prod/postgres", kind=AssetKind.HELM, namespace="prod", name="postgres"
    )
    assert resolve_policy(config.policy, postgres).pin == "15.x"


def test_asset_settings_and_health_merge() -> None:
    config = load_config(EXAMPLE)
    assert config.group_for("docker:local/web") == "canary"
    assert config.group_for("docker:local/other") is None
    health = config.health_for("docker:local/web")
    assert health.window == timedelta(seconds=20)
    assert health.interval == timedelta(seconds=2)  # from the global section
    assert config.health_for("docker:local/other") == config.health
    web = config.asset_settings("docker:local/web")
    assert web is not None and web.health is not None and web.health.http is not None
    assert web.health.http.expect_status == "200"


def test_scalars_keep_their_text() -> None:
    # YAML would read 1.20 as the float 1.2; the loader keeps the text.
    config = parse_config_text("policy:\n  default:\n    pin: 1.20\n")
    assert config.policy.default.pin == "1.20"


def test_yaml_anchors_and_merge_keys() -> None:
    text = """\
policy:
  default: &base
    minor: skip
    major: approve
  overrides:
    - match: {namespace: dev}
      <<: *base
      minor: auto
"""
    override = parse_config_text(text).policy.overrides[0]
    assert override.minor is Action.AUTO and override.major is Action.APPROVE


def test_windows_in_config_accept_both_forms() -> None:
    text = """\
policy:
  default:
    windows:
      - "mon-fri 22:00-02:00 Europe/Berlin"
      - {cron: "0 3 * * sat", duration: 4h, timezone: UTC}
"""
    windows = parse_config_text(text).policy.default.windows
    assert [str(w) for w in windows] == [
        "mon-fri 22:00-02:00 Europe/Berlin",
        "0 3 * * sat for 4h UTC",
    ]


def test_state_url_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAFE_UPDATER_HOME", str(tmp_path / "home"))
    settings = Settings()
    assert settings.resolve_state_url() == f"sqlite:///{tmp_path / 'home' / 'state.db'}"
    config = parse_config_text("state: {url: 'postgresql+psycopg://db/x'}")
    assert settings.resolve_state_url(config) == "postgresql+psycopg://db/x"
    monkeypatch.setenv("SAFE_UPDATER_STATE_URL", "sqlite:////tmp/env.db")
    assert Settings().resolve_state_url(config) == "sqlite:////tmp/env.db"


def test_home_default_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings().home == tmp_path / ".safe-updater"


def test_a_prometheus_check_in_the_config_becomes_a_domain_check() -> None:
    from safe_updater.config import AppConfig
    from safe_updater.domain.health import PrometheusCheck as Spec
    from safe_updater.health_planning import asset_settings, configured_checks

    config = AppConfig.model_validate(
        {
            "assets": {
                "docker:*/web": {
                    "health": {
                        "prometheus": {
                            "url": "http://127.0.0.1:9090",
                            "query": "sum(rate(errors_total[1m]))",
                            "threshold": 0.05,
                            "op": "<=",
                        }
                    }
                }
            }
        }
    )
    settings = asset_settings(config, "docker:local/web")
    assert settings is not None
    (check,) = configured_checks(settings.health, config)
    assert isinstance(check, Spec)
    assert (check.comparison, check.threshold, check.timeout) == ("<=", 0.05, config.health.timeout)
