"""The update journal's records: attempts, their phases and outcomes, quarantine and audit entries.

An attempt row is written before every side effect, so a crashed run can be found and finished
(verified and committed, or rolled back) by the next run or by ``safe-updater recover``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safe_updater.domain.assets import AssetId


class Phase(StrEnum):
    """Where an attempt is. Written *before* the side effect the phase names starts."""

    OPENED = "opened"  # decided and approved; nothing touched yet
    PREFLIGHT = "preflight"  # pulling the image / rendering the chart
    SNAPSHOTTED = "snapshotted"  # pre-update state recorded in the row
    APPLYING = "applying"  # the change is being made
    VERIFYING = "verifying"  # the change is made; health is being watched
    COMMITTING = "committing"  # verdict healthy; cleaning up the old version
    ROLLING_BACK = "rolling_back"  # verdict unhealthy (or crash); restoring the snapshot
    CLOSED = "closed"  # outcome recorded


# Phases in which the asset may no longer run its snapshot version: recovery must act.
PHASES_WITH_CHANGES = frozenset(
    {Phase.APPLYING, Phase.VERIFYING, Phase.COMMITTING, Phase.ROLLING_BACK}
)


class Outcome(StrEnum):
    UPDATED = "updated"
    ROLLED_BACK = "rolled_back"
    NO_UPDATE = "no_update"
    SKIPPED = "skipped"
    AWAITING_APPROVAL = "awaiting_approval"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"


class AttemptRecord(BaseModel):
    """One update attempt of one asset, as the journal holds it."""

    model_config = ConfigDict(frozen=True)

    id: int
    idempotency_key: str
    asset_id: AssetId
    from_version: str
    to_version: str
    change_type: str
    phase: Phase
    outcome: Outcome | None = None
    reason: str | None = None
    flow_run_id: str | None = None
    snapshot: dict[str, Any] = Field(default_factory=dict)
    applied: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.phase is not Phase.CLOSED


class QuarantineEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    asset_id: AssetId
    version: str
    reason: str
    attempt_id: int | None = None
    created_at: datetime


class PinEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    asset_id: AssetId
    version: str
    reason: str = ""
    created_at: datetime


class AuditRecord(BaseModel):
    """One append-only, hash-chained audit record."""

    model_config = ConfigDict(frozen=True)

    seq: int
    at: datetime
    event: str
    asset_id: str | None
    actor: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerification(BaseModel):
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str | None = None
