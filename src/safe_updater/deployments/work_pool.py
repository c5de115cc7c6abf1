"""The standard deployments on a ``process`` work pool, for workers on other hosts (scale-out).

``safe-updater deployments apply`` calls :func:`apply_deployments`: it creates the work pool if
it is missing, then registers every deployment of :data:`~.standard.STANDARD_DEPLOYMENTS` on it,
with the schedule, parameters, tags and concurrency limit that ``safe-updater serve`` uses.

The entrypoints are *module paths* (``safe_updater.flows.update_asset.update_asset``), not file
paths: a worker imports the flow from the installed package, so it needs no checkout of this
repository, no pull step and no particular working directory (a process worker runs every flow
run in a fresh temporary directory). The root ``prefect.yaml`` keeps file-path entrypoints for
``prefect deploy``, which needs a checkout; both register the same deployments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from safe_updater.deployments.standard import (
    STANDARD_DEPLOYMENTS,
    WORK_POOL,
    WORK_QUEUE,
    StandardDeployment,
    load_flow,
    to_runner_deployment,
)
from safe_updater.domain.errors import InvalidInputError, SafeUpdaterError, TransientError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.deployments.runner import RunnerDeployment

WORK_POOL_TYPE = "process"


@dataclass(frozen=True)
class AppliedDeployment:
    """One deployment as registered: ``flow/name``, its id, entrypoint and schedules."""

    full_name: str
    id: str
    entrypoint: str
    schedules: int


@dataclass(frozen=True)
class ApplyResult:
    api_url: str
    work_pool: str
    work_pool_created: bool
    deployments: list[AppliedDeployment]


def module_entrypoint(spec: StandardDeployment) -> str:
    """``package.module.flow``: the form Prefect imports from ``sys.path``. A colon would make
    Prefect treat it as a file path relative to the run's working directory."""
    return spec.import_path.replace(":", ".")


def to_pool_deployment(
    spec: StandardDeployment,
    work_pool: str = WORK_POOL,
    *,
    schedules: bool = True,
) -> RunnerDeployment:
    """``spec`` for ``work_pool``: the served deployment's settings, a module entrypoint."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import RunnerDeployment
    from prefect.types.entrypoint import EntrypointType

    # The served deployment is the one reading of the spec (schedules, limit, tags); we copy
    # its settings rather than interpret the spec a second time.
    served = to_runner_deployment(spec)
    limit: ConcurrencyLimitConfig | None = None
    if served.concurrency_limit is not None:
        options = served.concurrency_options
        limit = ConcurrencyLimitConfig(
            limit=served.concurrency_limit,
            **({"collision_strategy": options.collision_strategy} if options else {}),
        )
    deployment = load_flow(spec).to_deployment(
        name=served.name,
        description=served.description,
        schedules=[
            schedule
            for schedule in served.schedules or []
            # A new deployment's schedules are all "create"s; "update"s only come from a
            # deployment read back from a server.
            if schedules and isinstance(schedule, DeploymentScheduleCreate)
        ],
        parameters=dict(served.parameters),
        tags=list(served.tags),
        concurrency_limit=limit,
        work_pool_name=work_pool,
        work_queue_name=WORK_QUEUE,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    if not isinstance(deployment, RunnerDeployment):
        raise TypeError(f"{spec.import_path}: to_deployment must be called outside an event loop")
    if deployment.entrypoint != module_entrypoint(spec):
        # Prefect derives it from the flow function's module and name; a decorator that
        # renamed the function would make workers import something else.
        raise TypeError(
            f"{spec.import_path}: Prefect derived the entrypoint {deployment.entrypoint!r}"
        )
    return deployment


def require_api_url() -> str:
    """The configured Prefect API (``PREFECT_API_URL`` or the active profile), answering.

    Without one, Prefect would start a throwaway *ephemeral* server and register the
    deployments there, where no worker ever sees them.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise InvalidInputError(
            "PREFECT_API_URL is not set: there is no Prefect server to register the deployments on",
            hint="start one (`prefect server start`, see docs/scale-out.md) and export "
            "PREFECT_API_URL=http://HOST:4200/api",
        )
    with get_client(sync_client=True) as client:
        # Connection errors are not retried before a first successful request, so a dead
        # server is reported at once.
        error = client.api_healthcheck()
    if error is not None:
        raise TransientError(
            f"no Prefect server answers at {url}: {_describe(error)}",
            hint="start the server, or fix PREFECT_API_URL",
        )
    return str(url)


def ensure_work_pool(client: SyncPrefectClient, name: str = WORK_POOL) -> bool:
    """Create the ``process`` work pool ``name`` unless it exists; ``True`` when created.

    An existing pool of another type is an error: its workers could not run our flows as
    subprocesses with the installed package.
    """
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        pass
    else:
        if pool.type != WORK_POOL_TYPE:
            raise InvalidInputError(
                f"work pool {name!r} exists with type {pool.type!r}, not {WORK_POOL_TYPE!r}",
                hint="choose another --pool, or delete that pool",
            )
        return False
    try:
        client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type=WORK_POOL_TYPE,
                # What `prefect work-pool create --type process` stores; read locally, so no
                # request to Prefect's collection registry on the internet.
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )
    except ObjectAlreadyExists:  # another `apply` created it between our read and create
        return False
    return True


def apply_deployments(
    work_pool: str = WORK_POOL,
    *,
    schedules: bool = True,
    specs: Sequence[StandardDeployment] = STANDARD_DEPLOYMENTS,
) -> ApplyResult:
    """Create ``work_pool`` if needed and register ``specs`` on it (create or update).

    With ``schedules=False`` the deployments get no schedules, and schedules an earlier
    ``apply`` registered are removed: runs start only by hand, an automation or another flow.
    """
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.deployments.runner import DeploymentApplyError
    from prefect.exceptions import ObjectNotFound, PrefectException

    url = require_api_url()
    applied: list[AppliedDeployment] = []
    try:
        with get_client(sync_client=True) as client:
            created = ensure_work_pool(client, work_pool)
            for spec in specs:
                deployment = to_pool_deployment(spec, work_pool, schedules=schedules)
                deployment_id = deployment.apply()
                if not isinstance(deployment_id, UUID):  # sync callers get the id itself
                    raise TypeError("apply_deployments must be called outside an event loop")
                if not schedules:
                    # Prefect's `apply` may keep an existing deployment's schedules when
                    # given none ("an empty list preserves schedules by default"): delete them.
                    for schedule in client.read_deployment(deployment_id).schedules:
                        with contextlib.suppress(ObjectNotFound):
                            client.delete_deployment_schedule(deployment_id, schedule.id)
                registered = client.read_deployment(deployment_id)
                applied.append(
                    AppliedDeployment(
                        full_name=deployment.full_name,
                        id=str(deployment_id),
                        entrypoint=registered.entrypoint or "",
                        schedules=len(registered.schedules),
                    )
                )
    except (PrefectException, DeploymentApplyError, httpx.HTTPError, OSError) as error:
        raise SafeUpdaterError(
            f"registering the deployments on {url} failed: {_describe(error)}",
            hint="check the server's log, then run `safe-updater deployments apply` again",
        ) from error
    return ApplyResult(url, work_pool, created, applied)


def _describe(error: BaseException) -> str:
    """One line: the exception's message, or its type when it has none."""
    text = " ".join(str(error).split())
    return text or type(error).__name__
