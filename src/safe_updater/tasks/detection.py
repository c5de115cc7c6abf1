"""Tasks that ask registries which versions exist."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from safe_updater.adapters.versions import VersionSource
from safe_updater.domain.assets import Asset
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.versions import Scheme, parse_tag, rank_candidates
from safe_updater.runtime import current_runtime
from safe_updater.tasks.retry import TRANSIENT_RETRIES

# Asking a registry for a config blob costs a request per tag: only the newest few need an age.
_MAX_AGE_LOOKUPS = 10


class Candidates(BaseModel):
    """What the registry offers for an asset's repository."""

    tags: list[str]
    current_digest: str | None = None
    remote_digest: str | None = None
    release_times: dict[str, datetime] = Field(default_factory=dict)

    @property
    def digest_changed(self) -> bool:
        return bool(
            self.current_digest and self.remote_digest and self.current_digest != self.remote_digest
        )


@task(
    name="fetch-candidates",
    task_run_name="versions of {asset.id}",
    cache_policy=NO_CACHE,
    **TRANSIENT_RETRIES,
)
def fetch_candidates(asset: Asset, with_release_times: bool = False) -> Candidates:
    """List the versions the asset's source offers; for a mutable tag, compare digests."""
    source = current_runtime().versions_for(asset)
    return candidates_for(
        source, asset, source.list_versions(asset), with_release_times=with_release_times
    )


def candidates_for(
    source: VersionSource, asset: Asset, tags: list[str], *, with_release_times: bool
) -> Candidates:
    """The candidates of one asset from a tag list (listed once, maybe shared by many assets):
    for a mutable tag, its remote digest; with ``with_release_times``, the newest tags' ages."""
    result = Candidates(tags=tags, current_digest=asset.current_digest)
    try:
        scheme = parse_tag(asset.current_version).scheme
    except InvalidInputError:
        scheme = Scheme.DIGEST_ONLY
    if scheme is Scheme.DIGEST_ONLY:
        result.remote_digest = source.digest(asset, asset.current_version)
    elif with_release_times:
        ranking = rank_candidates(asset.current_version, tags, allow_prerelease=True)
        for verdict in ranking.accepted[:_MAX_AGE_LOOKUPS]:
            created = source.created_at(asset, verdict.tag)
            if created is not None:
                result.release_times[verdict.tag] = created
    return result
