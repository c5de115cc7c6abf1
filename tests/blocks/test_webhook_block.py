"""NotificationWebhook block and url_block wiring: save/load through a real Prefect server, then
a notice posted to a loopback receiver; the URL stays hidden."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from prefect.blocks.system import Secret
from pydantic import SecretStr, ValidationError

from safe_updater.blocks.webhook import NotificationWebhook, webhook_url_from_block
from safe_updater.config import parse_config_text
from safe_updater.domain.notices import notice_from_event
from safe_updater.wiring import build_notifiers
from support.webhook_receiver import webhook_receiver

NOTICE = notice_from_event("failed", "docker:local/web", {"to": "1.0.2", "error": "pull failed"})


def test_block_round_trip_and_repr_hides_the_url() -> None:
    name = f"hook-{uuid.uuid4().hex[:10]}"
    url = "http://127.0.0.1:9/services/T/B/tok3n"
    NotificationWebhook(url=SecretStr(url), format="json").save(name)
    assert webhook_url_from_block(name) == url
    loaded = NotificationWebhook.load(name)
    assert "tok3n" not in repr(loaded)
    with pytest.raises(ValidationError):
        NotificationWebhook(url=SecretStr("ftp://x"))


def test_url_block_config_posts_through_the_block() -> None:
    block = f"hook-{uuid.uuid4().hex[:10]}"
    secret = f"secret-{uuid.uuid4().hex[:10]}"
    with webhook_receiver() as receiver:
        NotificationWebhook(url=SecretStr(receiver.url("/services/abc"))).save(block)
        Secret(value=receiver.url("/secret")).save(secret)
        config = parse_config_text(
            "notifications:\n"
            f"  - {{name: a, url_block: {block}, format: json}}\n"
            f"  - {{name: b, url_block: secret/{secret}, format: slack}}\n"
        )
        closers: list[Callable[[], None]] = []
        routes = build_notifiers(config, closers)
        try:
            for route in routes:
                assert route.wants("failed")
                route.notifier.notify(NOTICE)
        finally:
            for close in closers:
                close()
        paths = [r.path for r in receiver.requests]
    assert paths == ["/services/abc", "/secret"]
    assert receiver.requests[0].json()["reasons"] == ["pull failed"]


def test_missing_block_is_a_warning_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config_text("notifications: [{name: a, url_block: no-such-block}]")
    [route] = build_notifiers(config)
    route.notifier._retry_delay = 0.0  # type: ignore[attr-defined]
    route.notifier.notify(NOTICE)
    assert "could not read the webhook URL" in caplog.text
