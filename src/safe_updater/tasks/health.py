"""The health-monitoring task: probes over the monitoring window, verdict from the domain."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from safe_updater.adapters.k8s_health import api_outage_error
from safe_updater.adapters.probes import monitor
from safe_updater.domain.assets import Asset
from safe_updater.domain.health import Sample, Verdict
from safe_updater.domain.plans import AppliedChange
from safe_updater.failpoints import failpoint
from safe_updater.runtime import current_runtime


class HealthReport(BaseModel):
    verdict: Verdict
    samples: list[Sample]

    @property
    def healthy(self) -> bool:
        return self.verdict.state == "healthy"


@task(name="monitor-health", task_run_name="verify {asset.id}", cache_policy=NO_CACHE)
def monitor_health(asset: Asset, applied: AppliedChange | None) -> HealthReport:
    """Watch the asset for its monitoring window; stop early on a failure."""
    runtime = current_runtime()
    logger = get_run_logger()
    probes, policy = runtime.health.plan(asset, applied)

    def log_sample(sample: Sample) -> None:
        failpoint("mid-verify")
        logger.info("health %s: %s %s", sample.check, "ok" if sample.ok else "FAIL", sample.detail)

    try:
        verdict, samples = monitor(
            probes,
            policy,
            clock=runtime.clock,
            sleep=runtime.sleep,
            on_sample=log_sample,
        )
    finally:
        for probe in probes:
            close = getattr(probe, "close", None)
            if callable(close):
                close()  # stop watch threads now, not at their idle timeout
    logger.info("verdict for %s: %s (%s)", asset.id, verdict.state, verdict.reason)
    # A window left undecided by a Kubernetes API outage judged nothing: leave the attempt open
    # in phase verifying (recover re-verifies) instead of rolling back a version nobody saw fail.
    outage = api_outage_error(asset.id, probes, verdict, samples, policy)
    if outage is not None:
        logger.error("%s", outage)
        raise outage
    return HealthReport(verdict=verdict, samples=samples)
