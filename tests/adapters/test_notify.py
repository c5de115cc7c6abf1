"""The webhook notifier against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from safe_updater.adapters.notify import WebhookNotifier, redact_url, slack_payload
from safe_updater.domain.notices import UpdateNotice, notice_from_event
from support.webhook_receiver import Receiver, closed_port, webhook_receiver

SECRET_PATH = "/services/T000/B000/s3cr3tT0k3n"

NOTICE = UpdateNotice(
    event="rolled-back",
    asset="docker:local/web",
    from_version="1.0.0",
    to_version="1.0.2",
    change_type="patch",
    outcome="rolled_back",
    reasons=["1.0.2 failed verification: 3 of 5 samples failed"],
    flow_run_id="0b7c2f5e-1111-2222-3333-444455556666",
    ui_url="http://127.0.0.1:4200/runs/flow-run/0b7c2f5e-1111-2222-3333-444455556666",
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


def notifier(url: str, **kwargs: object) -> WebhookNotifier:
    made = WebhookNotifier(url, timeout=5.0, retry_delay=0.0, **kwargs)  # type: ignore[arg-type]
    return made


def test_slack_payload_has_text_blocks_and_the_run_link(receiver: Receiver) -> None:
    hook = notifier(receiver.url(SECRET_PATH), format="slack")
    try:
        hook.notify(NOTICE)
    finally:
        hook.close()
    [request] = receiver.requests
    assert request.path == SECRET_PATH
    assert request.headers["Content-Type"] == "application/json"
    body = request.json()
    assert set(body) == {"text", "blocks"}
    assert "docker:local/web: rolled back, 1.0.0 → 1.0.2 (patch)" in body["text"]
    text = str(body["blocks"])
    for part in ("docker:local/web", "1.0.0 → 1.0.2", "patch", "rolled_back", "3 of 5 samples"):
        assert part in text
    assert f"<{NOTICE.ui_url}|Run>" in text


def test_json_payload_carries_every_field(receiver: Receiver) -> None:
    hook = notifier(receiver.url(), format="json", headers={"X-Team": "ops"})
    try:
        hook.notify(NOTICE)
    finally:
        hook.close()
    [request] = receiver.requests
    assert request.headers["X-Team"] == "ops"
    body = request.json()
    assert body == {**NOTICE.model_dump(mode="json"), "summary": NOTICE.summary()}
    assert body["event"] == "rolled-back" and body["from_version"] == "1.0.0"


def test_awaiting_approval_links_to_the_approval_form() -> None:
    notice = notice_from_event(
        "awaiting-approval",
        "helm:prod/api",
        {"from": "1.2.0", "to": "1.3.0", "change_type": "minor"},
        flow_run_id="abc",
        ui_url="http://127.0.0.1:4200/runs/flow-run/abc",
    )
    body = slack_payload(notice)
    assert "waiting for approval" in body["text"]
    assert "<http://127.0.0.1:4200/runs/flow-run/abc|Approve or reject in Prefect>" in body["text"]


def test_server_error_is_retried_once_then_a_warning_without_the_secret(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [500, 503, 500]
    caplog.set_level(logging.DEBUG)
    hook = notifier(receiver.url(SECRET_PATH))
    try:
        hook.notify(NOTICE)  # does not raise
    finally:
        hook.close()
    assert len(receiver.requests) == 2  # the first try and one retry
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"http://127.0.0.1:{receiver.port}" in warnings[0].getMessage()
    assert "HTTP 503" in warnings[0].getMessage()
    assert "s3cr3tT0k3n" not in caplog.text
    assert "/services/" not in caplog.text


def test_a_transient_failure_then_success_delivers(receiver: Receiver) -> None:
    receiver.statuses = [502]
    hook = notifier(receiver.url())
    try:
        hook.notify(NOTICE)
    finally:
        hook.close()
    assert len(receiver.requests) == 2


def test_client_error_is_not_retried(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.statuses = [404]
    hook = notifier(receiver.url(SECRET_PATH))
    try:
        hook.notify(NOTICE)
    finally:
        hook.close()
    assert len(receiver.requests) == 1
    assert "HTTP 404" in caplog.text
    assert "s3cr3tT0k3n" not in caplog.text


def test_connection_refused_does_not_raise_or_leak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    hook = notifier(f"http://127.0.0.1:{port}{SECRET_PATH}")
    try:
        hook.notify(NOTICE)
    finally:
        hook.close()
    assert "ConnectError" in caplog.text
    assert f"http://127.0.0.1:{port}" in caplog.text
    assert "s3cr3tT0k3n" not in caplog.text


def test_a_url_provider_that_fails_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> str:
        raise RuntimeError(f"no block at https://hooks.example.com{SECRET_PATH}")

    hook = WebhookNotifier(broken, retry_delay=0.0)
    try:
        hook.notify(NOTICE)
    finally:
        hook.close()
    assert "could not read the webhook URL: RuntimeError" in caplog.text
    assert "s3cr3tT0k3n" not in caplog.text


def test_redact_url_keeps_scheme_host_and_port_only() -> None:
    assert redact_url(f"https://hooks.slack.com{SECRET_PATH}?x=1") == "https://hooks.slack.com"
    assert redact_url("http://127.0.0.1:8080/a/b") == "http://127.0.0.1:8080"
