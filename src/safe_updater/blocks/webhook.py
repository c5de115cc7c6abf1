"""The ``NotificationWebhook`` block: a webhook URL (often a secret, e.g. a Slack incoming
webhook) stored encrypted in Prefect, and the factory for its :class:`WebhookNotifier`.

The config names the block (``notifications[].url_block``), never the URL. A name of the form
``<block-type-slug>/<name>`` loads another block type instead: Prefect's own ``secret/<name>``
(a ``Secret`` holding the URL) or ``webhook/<name>`` (Prefect's ``Webhook`` block, its ``url``).
"""

from __future__ import annotations

from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from safe_updater.adapters.notify import WebhookNotifier

__all__ = ["NotificationWebhook", "webhook_url_from_block"]


class NotificationWebhook(Block):
    """Where the Safe Auto-Updater posts update notifications."""

    _block_type_name = "Safe Updater Notification Webhook"
    _block_type_slug = "safe-updater-notification-webhook"
    _description = (
        "A webhook URL (Slack-compatible or generic JSON) that receives the Safe Auto-Updater's "
        "update notifications: awaiting approval, updated, rolled back, failed."
    )

    url: SecretStr = Field(description="The webhook URL; kept secret (it usually holds a token).")
    format: Literal["slack", "json"] = Field(
        default="slack", description="slack: {text, blocks}; json: every field of the notice."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    def get_notifier(self, *, timeout: float = 10.0, **kwargs: Any) -> WebhookNotifier:
        return WebhookNotifier(
            self.url.get_secret_value(), format=self.format, timeout=timeout, **kwargs
        )


def webhook_url_from_block(name: str) -> str:
    """The URL held by the named block: a ``NotificationWebhook`` by default, or
    ``secret/<name>`` / ``webhook/<name>`` / any ``<slug>/<name>`` whose block has a ``url``
    field or is a ``Secret``."""
    if "/" not in name:
        # _sync=True: a plain call even when a caller runs this inside an event loop.
        block: Any = NotificationWebhook.load(name, _sync=True)  # type: ignore[call-arg]
    else:
        block = Block.load(name, _sync=True)  # type: ignore[call-arg]
    url = getattr(block, "url", None)
    if url is None and hasattr(block, "get"):
        url = block.get()
    if isinstance(url, SecretStr):
        url = url.get_secret_value()
    if not isinstance(url, str) or not url:
        raise ValueError(f"block {name!r} holds no webhook URL")
    return url
