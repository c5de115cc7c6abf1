"""What an update changes and how to undo it: snapshots and applied changes.

Both are plain data, stored in the journal row, so a different process can finish or undo the
attempt after a crash. ``data`` is specific to the asset kind (a container's config, a Helm
revision and its values, a workload's previous image).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safe_updater.domain.assets import AssetId


class Snapshot(BaseModel):
    """The state before the update; enough to restore it."""

    model_config = ConfigDict(frozen=True)

    asset_id: AssetId
    version: str
    digest: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class AppliedChange(BaseModel):
    """What ``apply`` did; enough to verify, commit or undo it."""

    model_config = ConfigDict(frozen=True)

    asset_id: AssetId
    from_version: str
    to_version: str
    data: dict[str, Any] = Field(default_factory=dict)
