"""Small reads of the loaded config that flows branch on."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from safe_updater.runtime import current_runtime

if TYPE_CHECKING:
    from safe_updater.config import FleetConfig


def approval_poll_interval() -> timedelta:
    return current_runtime().config.approvals.poll_interval


def fleet_settings() -> FleetConfig:
    return current_runtime().config.fleet


def now() -> datetime:
    """The runtime's clock (tests inject one)."""
    return current_runtime().clock()


def pause(seconds: float) -> None:
    """Sleep on the runtime's clock (a test's clock advances instead)."""
    if seconds > 0:
        current_runtime().sleep(seconds)
