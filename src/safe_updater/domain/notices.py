"""What a notification says about one update event: pure data, built from the event's payload.

The update flows emit ``safe-updater.update.<event>`` (see ``tasks/recording.py``); a notice is
the same fact in the shape a person reads: the asset, from → to, the change type, the outcome,
the reasons, and a link to the flow run in the Prefect UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

UPDATE_EVENTS = ("applied", "verified", "rolled-back", "failed", "awaiting-approval", "rejected")
"""The ``safe-updater.update.*`` event names, in the order an update meets them."""

EVENT_ALIASES = {"updated": "verified"}
"""Friendlier names a config may use: an update that verified is an update that happened."""

DEFAULT_NOTIFY_EVENTS = ("awaiting-approval", "verified", "rolled-back", "failed", "rejected")
"""What a notifier hears unless its config says otherwise (``applied`` is too chatty)."""

OUTCOMES = {
    "applied": "applied",
    "verified": "updated",
    "rolled-back": "rolled_back",
    "failed": "failed",
    "awaiting-approval": "awaiting_approval",
    "rejected": "rejected",
}

TITLES = {
    "applied": "applied, verifying",
    "verified": "updated",
    "rolled-back": "rolled back",
    "failed": "update failed",
    "awaiting-approval": "waiting for approval",
    "rejected": "update rejected",
}


def canonical_event(name: str) -> str:
    """``updated`` → ``verified``; raises ``ValueError`` for a name no update emits."""
    name = EVENT_ALIASES.get(name, name)
    if name not in UPDATE_EVENTS:
        known = ", ".join([*UPDATE_EVENTS, *EVENT_ALIASES])
        raise ValueError(f"unknown update event {name!r}; one of {known}")
    return name


class UpdateNotice(BaseModel):
    """One update event, ready to be sent to a person."""

    model_config = ConfigDict(frozen=True)

    event: str = Field(description="The update event: verified, rolled-back, failed, ...")
    asset: str = Field(description="The asset id, e.g. docker:local/web.")
    from_version: str | None = Field(default=None, description="The version before the update.")
    to_version: str | None = Field(default=None, description="The version the update aimed at.")
    change_type: str | None = Field(default=None, description="patch, minor, major, ...")
    outcome: str = Field(description="updated, rolled_back, failed, awaiting_approval, ...")
    reasons: list[str] = Field(default_factory=list, description="Why, in plain words.")
    flow_run_id: str | None = Field(default=None, description="The Prefect flow run.")
    ui_url: str | None = Field(default=None, description="The flow run in the Prefect UI.")

    @property
    def title(self) -> str:
        return TITLES.get(self.event, self.event)

    @property
    def change(self) -> str:
        """``1.0.0 → 1.0.2 (patch)`` as far as it is known."""
        versions = " → ".join(v for v in (self.from_version, self.to_version) if v)
        if self.change_type:
            return f"{versions} ({self.change_type})" if versions else self.change_type
        return versions

    def summary(self) -> str:
        """One line: ``docker:local/web: rolled back, 1.0.0 → 1.0.2 (patch)``."""
        change = self.change
        return f"{self.asset}: {self.title}" + (f", {change}" if change else "")


def notice_from_event(
    event: str,
    asset_id: str,
    payload: Mapping[str, Any],
    *,
    flow_run_id: str | None = None,
    ui_url: str | None = None,
    attempt: Mapping[str, Any] | None = None,
) -> UpdateNotice:
    """Build a notice from an event's payload, preferring the journal's ``attempt`` row
    (``from_version``, ``to_version``, ``change_type``) where one is given.

    A ``rolled-back`` payload names the failed version ``from`` and the restored one ``to``;
    the notice always says what the update attempted: ``from_version`` → ``to_version``.
    """
    event = canonical_event(event)
    attempt = attempt or {}
    if event == "rolled-back":
        from_version = attempt.get("from_version") or payload.get("to")
        to_version = attempt.get("to_version") or payload.get("from")
    else:
        from_version = attempt.get("from_version") or payload.get("from")
        to_version = attempt.get("to_version") or payload.get("to")
    reasons = [
        str(payload[key]) for key in ("reason", "error") if payload.get(key) not in (None, "")
    ]
    if payload.get("state"):
        reasons.append(f"approval {payload['state']}")
    return UpdateNotice(
        event=event,
        asset=asset_id,
        from_version=_text(from_version),
        to_version=_text(to_version),
        change_type=_text(attempt.get("change_type") or payload.get("change_type")),
        outcome=OUTCOMES[event],
        reasons=reasons,
        flow_run_id=flow_run_id,
        ui_url=ui_url,
    )


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
