"""The `notifications` section: where URLs may come from, and which events are known."""

from __future__ import annotations

import pytest

from safe_updater.config import parse_config_text
from safe_updater.domain.errors import ConfigError
from safe_updater.wiring import build_notifiers


def test_defaults_and_the_updated_alias() -> None:
    config = parse_config_text(
        "notifications:\n"
        "  - {name: ops, url_env: OPS_HOOK}\n"
        "  - {name: audit, url_block: audit-hook, format: json, events: [updated, failed]}\n"
    )
    ops, audit = config.notifications
    assert ops.format == "slack"
    assert ops.events == ["awaiting-approval", "verified", "rolled-back", "failed", "rejected"]
    assert audit.events == ["verified", "failed"]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hook", "http://localhost/hook", "https://[::1]:8443/x"],
)
def test_a_literal_url_is_allowed_for_loopback(url: str) -> None:
    [item] = parse_config_text(f"notifications: [{{name: a, url: '{url}'}}]").notifications
    assert item.url == url


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T0/B0/token",
        "http://127.evil.example/hook",
        "http://localhost.evil.example/",
        "http://user:pw@127.0.0.1/",
        "ftp://127.0.0.1/",
    ],
)
def test_a_literal_url_elsewhere_is_refused_with_the_line(url: str) -> None:
    text = f"state: {{}}\nnotifications:\n  - {{name: a, url: '{url}'}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, source="s.yaml")
    assert "s.yaml:3: notifications[0].url" in str(caught.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: a}", "exactly one of url_block, url_env or url"),
        ("{name: a, url_env: X, url_block: b}", "exactly one of"),
        ("{name: a, url_env: X, events: [deployed]}", "unknown update event 'deployed'"),
        ("{name: a, url_env: X, events: []}", "notifications[0].events"),
        ("{name: a, url_env: X, format: xml}", "notifications[0].format"),
        ("{name: a, url_env: X, token: abc}", "inline secrets"),
    ],
)
def test_bad_entries(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        parse_config_text(f"notifications: [{entry}]")
    assert message in str(caught.value)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate notification names: a"):
        parse_config_text("notifications: [{name: a, url_env: X}, {name: a, url_env: Y}]")


def test_url_env_is_read_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config_text("notifications: [{name: a, url_env: SU_TEST_HOOK, format: json}]")
    monkeypatch.delenv("SU_TEST_HOOK", raising=False)
    with pytest.raises(ConfigError, match="SU_TEST_HOOK is not set"):
        build_notifiers(config)
    monkeypatch.setenv("SU_TEST_HOOK", "http://127.0.0.1:9/hook")
    [route] = build_notifiers(config)
    assert route.name == "a" and route.wants("updated") and not route.wants("applied")
    route.notifier.close()  # type: ignore[attr-defined]
