"""Webhook notifications: a :class:`Notifier` port and its HTTP implementation.

:class:`WebhookNotifier` posts an :class:`~safe_updater.domain.notices.UpdateNotice` as
Slack-compatible JSON (``{"text", "blocks"}``, which Slack, Mattermost and Rocket.Chat incoming
webhooks accept) or as generic JSON (every field of the notice).

A notification never fails an update: a transient failure (timeout, connection refused, 5xx,
429) is retried once, then the notifier logs one warning and returns. Webhook URLs often carry a
secret (Slack's ``/services/T…/B…/token``), so nothing this module logs or raises contains more
than the URL's ``scheme://host[:port]``, and httpx's own request log lines are redacted too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from safe_updater.domain.errors import PermanentError, SafeUpdaterError, TransientError
from safe_updater.domain.notices import UpdateNotice, canonical_event

log = logging.getLogger(__name__)

WebhookFormat = Literal["slack", "json"]
USER_AGENT = "safe-updater-notify/1"

_EMOJI = {
    "verified": ":white_check_mark:",
    "applied": ":arrows_counterclockwise:",
    "rolled-back": ":rewind:",
    "failed": ":x:",
    "awaiting-approval": ":raised_hand:",
    "rejected": ":no_entry_sign:",
}


class Notifier(Protocol):
    """Tells people about an update event. Must not raise for delivery problems."""

    def notify(self, event: UpdateNotice) -> None: ...


@dataclass(frozen=True)
class NotificationRoute:
    """A configured notifier and the update events it hears."""

    name: str
    events: frozenset[str]
    notifier: Notifier

    def wants(self, event: str) -> bool:
        return canonical_event(event) in self.events


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` only: the path and query of a webhook URL are its secret."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid url>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def slack_payload(notice: UpdateNotice) -> dict[str, Any]:
    """Slack-compatible JSON: a one-line ``text`` fallback and Block Kit ``blocks``."""
    emoji = _EMOJI.get(notice.event, ":information_source:")
    text = f"{emoji} {notice.summary()}"
    fields = [f"*Asset*\n`{notice.asset}`", f"*Outcome*\n{notice.outcome}"]
    versions = " → ".join(v for v in (notice.from_version, notice.to_version) if v)
    if versions:
        fields.append(f"*Change*\n{versions}")
    if notice.change_type:
        fields.append(f"*Change type*\n{notice.change_type}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *{notice.summary()}*"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if notice.reasons:
        reasons = "\n".join(f"• {reason}" for reason in notice.reasons[-5:])
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": reasons[:2900]}})
    if notice.ui_url:
        label = "Approve or reject in Prefect" if notice.event == "awaiting-approval" else "Run"
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{notice.ui_url}|{label}>"}],
            }
        )
        text += f" <{notice.ui_url}|{label}>"
    return {"text": text, "blocks": blocks}


def json_payload(notice: UpdateNotice) -> dict[str, Any]:
    """Every field of the notice, plus the one-line ``summary``."""
    return {**notice.model_dump(mode="json"), "summary": notice.summary()}


class WebhookNotifier:
    """Posts notices to one webhook URL.

    ``url`` may be a callable that returns the URL, so a Prefect Block is loaded only when the
    first notice is sent (and a Prefect API that is down then costs a warning, not the update).
    """

    def __init__(
        self,
        url: str | Callable[[], str],
        *,
        format: WebhookFormat = "slack",
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        retry_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if format not in ("slack", "json"):
            raise ValueError(f"unknown webhook format {format!r}; one of slack, json")
        self._url_source = url
        self._url: str | None = None
        if isinstance(url, str):
            self._set_url(url)
        self.format: WebhookFormat = format
        self._retry_delay = retry_delay
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=timeout,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            transport=transport,
            follow_redirects=False,
        )

    @property
    def endpoint(self) -> str:
        """The URL without its secret part, for logs and messages."""
        return redact_url(self._url) if self._url else "<webhook not resolved yet>"

    def payload(self, notice: UpdateNotice) -> dict[str, Any]:
        return slack_payload(notice) if self.format == "slack" else json_payload(notice)

    def notify(self, event: UpdateNotice) -> None:
        """Post ``event``; retry a transient failure once, then log a warning. Never raises."""
        try:
            body = json.dumps(self.payload(event)).encode()
            try:
                self._post(body)
            except TransientError as first:
                log.info("notification to %s failed (%s); retrying once", self.endpoint, first)
                self._sleep(self._retry_delay)
                self._post(body)
        except SafeUpdaterError as error:
            log.warning(
                "notification %s for %s to %s was not delivered: %s",
                event.event,
                event.asset,
                self.endpoint,
                error,
            )
        except Exception as error:  # a notification must never fail an update
            log.warning(
                "notification %s for %s to %s was not delivered: %s",
                event.event,
                event.asset,
                self.endpoint,
                type(error).__name__,
            )

    def close(self) -> None:
        self._client.close()

    def _resolve(self) -> str:
        if self._url is None:
            source = self._url_source
            assert callable(source)
            try:
                self._set_url(source())
            except SafeUpdaterError:
                raise
            except Exception as exc:
                raise TransientError(
                    f"could not read the webhook URL: {type(exc).__name__}",
                    hint="check the notification's url_block and that the Prefect API answers",
                ) from None
        assert self._url is not None
        return self._url

    def _set_url(self, url: str) -> None:
        if not url.startswith(("http://", "https://")):
            raise PermanentError(
                f"webhook URL must start with http:// or https://, got {redact_url(url)}"
            )
        self._url = url
        _REDACTOR.add(url)

    def _post(self, body: bytes) -> None:
        url = self._resolve()
        where = self.endpoint
        try:
            response = self._client.post(
                url, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.TimeoutException:
            raise TransientError(f"{where} timed out") from None
        except httpx.TransportError as exc:
            # The exception text may repeat the URL; say only what kind of failure it was.
            raise TransientError(f"{where}: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientError(f"{where} answered HTTP {status}")
        if status >= 400:
            raise PermanentError(
                f"{where} refused the notification with HTTP {status}",
                hint="check the webhook URL and format (slack or json)",
            )


class _UrlRedactor(logging.Filter):
    """Replaces known webhook URLs in httpx's ``HTTP Request: POST <url>`` log lines."""

    def __init__(self) -> None:
        super().__init__()
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, url: str) -> None:
        with self._lock:
            self._urls[url] = redact_url(url)

    def secrets(self) -> Iterable[tuple[str, str]]:
        with self._lock:
            return list(self._urls.items())

    def filter(self, record: logging.LogRecord) -> bool:
        urls = self.secrets()
        if not urls:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = message
        for url, safe in urls:
            redacted = redacted.replace(url, safe + "/<redacted>")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR = _UrlRedactor()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_REDACTOR)
