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


class UpdateResult(BaseModel):
    """What one ``update_asset`` run did, as the CLI prints it with ``--json``."""

    asset: str
    outcome: str
    from_version: str | None = Field(default=None, serialization_alias="from")
    to_version: str | None = Field(default=None, serialization_alias="to")
    change_type: str | None = None
    flow_run_id: str | None = None
    attempt_id: int | None = None
    reasons: list[str] = Field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
