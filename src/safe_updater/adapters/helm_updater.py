"""Updating a Helm release: ``helm upgrade`` without helm's own rollback, ``helm rollback`` by us.

The steps of :class:`~safe_updater.adapters.updater.AssetUpdater`:

* ``preflight``: the target renders and validates against the API server:
  ``helm upgrade --dry-run=server`` with the values the real upgrade would use (for an image
  update, the image's tag must also exist in its registry). Nothing changes.
* ``snapshot``: the last *deployed* revision (number, chart, chart version, app version) and its
  user values. A release whose latest revision is ``pending-*`` is refused with
  ``OperationInProgressError`` (transient): someone else's helm is at work.
* ``apply``: ``helm upgrade`` to the target, no ``--wait`` (our verify step watches health), no
  ``--atomic``/``--rollback-on-failure``, a bounded ``--timeout``, ``--description`` naming the
  change. Chart updates use ``--reset-then-reuse-values`` (the new chart's defaults plus the
  release's own values: plain ``--reuse-values`` would keep the *old* chart's defaults);
  image updates keep the chart version and use ``--reuse-values --set-string <path>=<tag>``.
  If an earlier apply already produced the target revision, it is returned as is.
* ``commit``: nothing to clean up: helm keeps the history (``--history-max``).
* ``rollback``: ``helm rollback RELEASE <snapshot revision> --wait``; nothing when the latest
  revision is deployed and already is the snapshot (same revision, or same chart version and
  user values), so it is idempotent.

Crash safety: everything lives in the journal's ``Snapshot``/``AppliedChange`` (revision numbers,
chart versions, values), so another process can finish. If helm itself was killed mid-upgrade
the release stays ``pending-upgrade``; ``helm rollback`` works on such a release in helm 3.19 and
4.3 (verified on the test cluster). ``rollback`` first waits up to ``pending_settle`` seconds
(measured from the pending revision's own timestamp) in case that helm is still running, e.g. an
orphan of a killed updater, and then rolls back over it; the pending revision stays in the
history as ``pending-upgrade``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safe_updater.adapters.chart_sources import ChartSources, ChartSpec, Track, value_at
from safe_updater.adapters.errors import HelmError, OperationInProgressError
from safe_updater.adapters.helm_cli import HelmCli
from safe_updater.adapters.helm_models import (
    HelmStatus,
    ReleaseNotFoundError,
    ReleaseRevision,
    RevisionNotFoundError,
    ValuesMode,
)
from safe_updater.adapters.updater import RevisionEntry
from safe_updater.domain.assets import Asset, AssetKind
from safe_updater.domain.errors import ConflictError, InvalidInputError
from safe_updater.domain.plans import AppliedChange, Snapshot
from safe_updater.failpoints import failpoint_during

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1


class HelmReleaseUpdater:
    """:class:`~safe_updater.adapters.updater.AssetUpdater` for ``helm:`` assets on one cluster."""

    def __init__(
        self,
        helm: HelmCli,
        sources: ChartSources,
        *,
        timeout: float = 300.0,
        rollback_timeout: float = 300.0,
        pending_settle: float = 15.0,
        poll_interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._helm = helm
        self._sources = sources
        self._timeout = timeout
        self._rollback_timeout = rollback_timeout
        self._pending_settle = pending_settle
        self._poll = poll_interval
        self._sleep = sleep
        self._now = now

    # --- the AssetUpdater steps ---------------------------------------------------------------

    def preflight(self, asset: Asset, target: str) -> None:
        release, namespace = _names(asset)
        spec = self._sources.spec(asset)
        if spec.track is Track.IMAGE:
            self._sources.digest(asset, target)  # ImageNotFoundError if the tag does not exist
        deployed = self._deployed(self._helm.history(release, namespace), asset)
        self._upgrade(asset, spec, deployed.chart_name, deployed.chart_version, target, dry=True)

    def snapshot(self, asset: Asset) -> Snapshot:
        release, namespace = _names(asset)
        spec = self._sources.spec(asset)
        history = self._helm.history(release, namespace)
        latest = history[-1]
        if latest.status.is_pending:
            raise OperationInProgressError(
                f"{asset.id}: revision {latest.revision} is {latest.status.value}",
                hint="another helm operation is running on the release; retry later "
                "(or `helm rollback` it if that helm is gone)",
            )
        deployed = self._deployed(history, asset)
        if latest.status is HelmStatus.FAILED and latest.revision > deployed.revision:
            # helm 3 builds the next upgrade or rollback from the last *deployed* manifest, so
            # what a failed upgrade changed in live objects would stay live under ours.
            raise ConflictError(
                f"{asset.id}: revision {latest.revision} failed after revision "
                f"{deployed.revision} was deployed, and its changes may still be live",
                hint=f"restore the release first, e.g. `helm rollback {release} "
                f"{deployed.revision} --namespace {namespace} --force --wait`, then update again",
            )
        values = self._helm.get_values(release, namespace, revision=deployed.revision)
        version = deployed.chart_version
        if spec.track is Track.IMAGE:
            version = self._image_tag(asset, spec, deployed.revision)
        data: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "release": release,
            "namespace": namespace,
            "revision": deployed.revision,
            "latest_revision": latest.revision,
            "chart": deployed.chart_name,
            "chart_version": deployed.chart_version,
            "app_version": deployed.app_version,
            "values": values,
            "track": spec.track.value,
            "values_path": spec.values_path,
        }
        return Snapshot(asset_id=asset.id, version=version, data=data)

    def apply(self, asset: Asset, snapshot: Snapshot, target: str) -> AppliedChange:
        release, namespace = _names(asset)
        data = _snapshot_data(snapshot)
        spec = self._sources.spec(asset)
        history = self._helm.history(release, namespace)
        latest = history[-1]
        newer = latest.revision > data["latest_revision"]
        done = newer and latest.status is HelmStatus.DEPLOYED
        if done and self._version_of(asset, spec, latest) == target:
            log.info("%s: revision %s already runs %s", asset.id, latest.revision, target)
            return self._applied(snapshot, target, latest.revision, latest.chart_version)
        if latest.status.is_pending:
            raise OperationInProgressError(
                f"{asset.id}: revision {latest.revision} is {latest.status.value}"
            )
        result = self._upgrade(asset, spec, data["chart"], data["chart_version"], target, dry=False)
        chart_version = result.chart.metadata.version if result.chart else data["chart_version"]
        return self._applied(snapshot, target, result.revision, chart_version)

    def commit(self, asset: Asset, snapshot: Snapshot, applied: AppliedChange) -> None:
        log.info(
            "%s: %s -> %s verified (revision %s); helm keeps the history",
            asset.id,
            applied.from_version,
            applied.to_version,
            applied.data.get("revision"),
        )

    def rollback(self, asset: Asset, snapshot: Snapshot, applied: AppliedChange | None) -> None:
        release, namespace = _names(asset)
        data = _snapshot_data(snapshot)
        history = self._settled_history(release, namespace, asset)
        latest = history[-1]
        if latest.status is HelmStatus.DEPLOYED and self._is_snapshot(latest, data, asset):
            log.info("%s: revision %s already is the snapshot", asset.id, latest.revision)
            return
        log.warning(
            "%s: rolling back to revision %s (%s); latest is %s (%s)",
            asset.id,
            data["revision"],
            snapshot.version,
            latest.revision,
            latest.status.value,
        )
        # Tests only: die while helm works and the release is pending-rollback, the worst place.
        with failpoint_during("mid-rollback", after=1.0):
            self._helm.rollback(
                release, data["revision"], namespace, wait=True, timeout=self._rollback_timeout
            )

    def running_version(self, asset: Asset) -> str | None:
        release, namespace = _names(asset)
        try:
            history = self._helm.history(release, namespace)
        except ReleaseNotFoundError:
            return None
        deployed = [r for r in history if r.status is HelmStatus.DEPLOYED]
        if not deployed:
            return None
        spec = self._sources.spec(asset)
        return self._version_of(asset, spec, deployed[-1])

    # --- RevisionUpdater: the release history and a rollback to a chosen revision -------------

    def revisions(self, asset: Asset) -> list[RevisionEntry]:
        release, namespace = _names(asset)
        spec = self._sources.spec(asset)
        return [
            RevisionEntry(
                revision=r.revision,
                version=self._version_of(asset, spec, r),
                chart=r.chart_name,
                chart_version=r.chart_version,
                app_version=r.app_version,
                status=r.status.value,
                description=r.description,
                updated=r.updated,
            )
            for r in self._helm.history(release, namespace)
        ]

    def apply_revision(self, asset: Asset, snapshot: Snapshot, revision: int) -> AppliedChange:
        """``helm rollback RELEASE REVISION`` without ``--wait``: the verify step watches health.

        A latest revision newer than the snapshot's that is deployed and says "Rollback to N"
        is this call's own earlier result (a resumed attempt) and is returned as is.
        """
        release, namespace = _names(asset)
        data = _snapshot_data(snapshot)
        spec = self._sources.spec(asset)
        history = self._helm.history(release, namespace)
        chosen = next((r for r in history if r.revision == revision), None)
        if chosen is None:
            raise RevisionNotFoundError(
                f"{asset.id} has no revision {revision} (kept: "
                f"{', '.join(str(r.revision) for r in history)})",
                hint=f"see `safe-updater rollback {asset.id} --list`",
            )
        target = self._version_of(asset, spec, chosen)
        latest = history[-1]
        if (
            latest.revision > data["latest_revision"]
            and latest.status is HelmStatus.DEPLOYED
            and latest.description.strip() == f"Rollback to {revision}"
        ):
            log.info(
                "%s: revision %s already is the rollback to %s", asset.id, latest.revision, revision
            )
            return self._applied(snapshot, target, latest.revision, latest.chart_version, revision)
        if latest.status.is_pending:
            raise OperationInProgressError(
                f"{asset.id}: revision {latest.revision} is {latest.status.value}",
                hint="another helm operation is running on the release; retry later",
            )
        self._helm.rollback(release, revision, namespace, wait=False, timeout=self._timeout)
        latest = self._helm.history(release, namespace)[-1]
        return self._applied(snapshot, target, latest.revision, latest.chart_version, revision)

    # --- helpers ----------------------------------------------------------------------------------

    def _upgrade(
        self, asset: Asset, spec: ChartSpec, chart: str, chart_version: str, target: str, dry: bool
    ) -> Any:
        release, namespace = _names(asset)
        if spec.track is Track.IMAGE:
            version, values, sets = chart_version, ValuesMode.REUSE, {spec.values_path: target}
        else:
            version, values, sets = target, ValuesMode.RESET_THEN_REUSE, {}
        with tempfile.TemporaryDirectory(prefix="safe-updater-chart-") as workdir:
            ref = self._sources.chart_ref(spec, chart, version, workdir=Path(workdir))
            return self._helm.upgrade(
                release,
                ref,
                namespace,
                values=values,
                set_values=sets,
                wait=False,
                atomic=False,
                dry_run=dry,
                timeout=self._timeout,
                description=f"safe-updater: {asset.current_version} -> {target}",
            )

    def _applied(
        self,
        snapshot: Snapshot,
        target: str,
        revision: int,
        chart_version: str,
        rollback_to: int | None = None,
    ) -> AppliedChange:
        data: dict[str, Any] = {
            "revision": revision,
            "chart_version": chart_version,
            "previous_revision": snapshot.data.get("revision"),
        }
        if rollback_to is not None:
            data["rollback_to"] = rollback_to
        return AppliedChange(
            asset_id=snapshot.asset_id, from_version=snapshot.version, to_version=target, data=data
        )

    def _deployed(self, history: list[ReleaseRevision], asset: Asset) -> ReleaseRevision:
        deployed = [r for r in history if r.status is HelmStatus.DEPLOYED]
        if not deployed:
            raise HelmError(
                f"{asset.id} has no deployed revision (latest: {history[-1].status.value})",
                hint="fix or roll back the release by hand first (`helm history`)",
            )
        return deployed[-1]

    def _image_tag(self, asset: Asset, spec: ChartSpec, revision: int) -> str:
        release, namespace = _names(asset)
        values = self._helm.get_values(release, namespace, all_values=True, revision=revision)
        tag = value_at(values, spec.values_path)
        if tag is None or isinstance(tag, dict | list):
            raise InvalidInputError(
                f"{asset.id}: no image tag at {spec.values_path!r} in the release's values",
                hint="set values_path in its charts entry",
            )
        return str(tag)

    def _version_of(self, asset: Asset, spec: ChartSpec, revision: ReleaseRevision) -> str:
        if spec.track is Track.IMAGE:
            return self._image_tag(asset, spec, revision.revision)
        return revision.chart_version

    def _is_snapshot(self, latest: ReleaseRevision, data: Mapping[str, Any], asset: Asset) -> bool:
        if latest.revision == data["revision"]:
            return True
        if latest.chart_version != data["chart_version"]:
            return False
        release, namespace = _names(asset)
        values = self._helm.get_values(release, namespace, revision=latest.revision)
        return bool(values == data["values"])

    def _settled_history(self, release: str, namespace: str, asset: Asset) -> list[ReleaseRevision]:
        """The history, after waiting (bounded) for a pending latest revision to finish."""
        while True:
            history = self._helm.history(release, namespace)
            latest = history[-1]
            if not latest.status.is_pending:
                return history
            age = (self._now() - latest.updated).total_seconds() if latest.updated else 1e9
            if age >= self._pending_settle:
                log.warning(
                    "%s: revision %s has been %s for %.0f s; its helm is gone, rolling back "
                    "over it",
                    asset.id,
                    latest.revision,
                    latest.status.value,
                    age,
                )
                return history
            self._sleep(min(self._poll, self._pending_settle - age))


def _names(asset: Asset) -> tuple[str, str]:
    if asset.kind is not AssetKind.HELM or not asset.namespace:
        raise InvalidInputError(f"{asset.id} is not a Helm release")
    return asset.name, asset.namespace


def _snapshot_data(snapshot: Snapshot) -> dict[str, Any]:
    data = dict(snapshot.data)
    if data.get("format") != SNAPSHOT_FORMAT or not isinstance(data.get("revision"), int):
        raise InvalidInputError(
            f"the snapshot of {snapshot.asset_id} is not a Helm snapshot "
            f"(format {data.get('format')!r})"
        )
    data.setdefault("latest_revision", data["revision"])
    data.setdefault("values", {})
    return data
