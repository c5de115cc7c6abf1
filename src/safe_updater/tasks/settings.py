"""Small reads of the loaded config that flows branch on."""

from __future__ import annotations

from datetime import timedelta

from safe_updater.runtime import current_runtime


def approval_poll_interval() -> timedelta:
    return current_runtime().config.approvals.poll_interval
