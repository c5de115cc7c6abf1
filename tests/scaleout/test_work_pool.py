"""`safe-updater deployments apply` and `safe_updater.deployments.work_pool`.

The first tests need no server: the work-pool deployments equal the served ones except for the
entrypoint (module form, importable from anywhere) and the pool, and the command's errors are
one line. The last one registers a throwaway deployment on the scale-out cluster's server, on a
pool no worker polls, to show `apply` is repeatable and `--no-schedules` removes schedules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from safe_updater.deployments.standard import (
    STANDARD_DEPLOYMENTS,
    WORK_POOL,
    WORK_QUEUE,
    Schedule,
    StandardDeployment,
    load_flow,
    to_runner_deployment,
)
from safe_updater.deployments.work_pool import apply_deployments, to_pool_deployment

CLI = str(Path(sys.executable).with_name("safe-updater"))


@pytest.mark.parametrize("spec", STANDARD_DEPLOYMENTS, ids=lambda spec: spec.name)
def test_pool_deployment_is_the_served_one_with_a_module_entrypoint(
    spec: StandardDeployment,
) -> None:
    from prefect.flows import load_flow_from_entrypoint

    served = to_runner_deployment(spec)
    pooled = to_pool_deployment(spec)

    assert pooled.entrypoint == spec.import_path.replace(":", ".")
    assert ":" not in pooled.entrypoint  # a colon would make Prefect look for a file
    assert load_flow_from_entrypoint(pooled.entrypoint) is load_flow(spec)
    assert (pooled.work_pool_name, pooled.work_queue_name) == (WORK_POOL, WORK_QUEUE)
    same = ("name", "flow_name", "description", "parameters", "tags", "concurrency_limit")
    assert {k: getattr(pooled, k) for k in same} == {k: getattr(served, k) for k in same}
    assert pooled.concurrency_options == served.concurrency_options

    # Each call anchors an interval schedule at "now"; everything else must match.
    def schedules(deployment: Any) -> list[dict[str, Any]]:
        return [s.schedule.model_dump(exclude={"anchor_date"}) for s in deployment.schedules]

    assert schedules(pooled) == schedules(served)
    assert to_pool_deployment(spec, "other", schedules=False).schedules == []


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SAFE_UPDATER_"))}
    env["PREFECT_HOME"] = extra.pop("home")
    env.update(extra)
    return env


def test_apply_without_a_server_url_says_so_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [CLI, "deployments", "apply"],
        env=_cli_env(home=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1, done.stderr
    assert "PREFECT_API_URL is not set" in done.stderr
    assert not (tmp_path / "prefect.db").exists()  # no ephemeral server was started


def test_apply_with_no_server_listening_says_so_in_one_line(tmp_path: Path) -> None:
    from support.testbed import free_port

    url = f"http://127.0.0.1:{free_port()}/api"
    done = subprocess.run(
        [CLI, "deployments", "apply", "--pool", "nowhere"],
        env=_cli_env(home=str(tmp_path), PREFECT_API_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"no Prefect server answers at {url}" in done.stderr


@pytest.mark.integration
@pytest.mark.postgres
def test_apply_is_repeatable_and_no_schedules_removes_them(scaleout: Any) -> None:
    from prefect.client.orchestration import get_client

    # A deployment of its own on a pool no worker polls: its scheduled runs never execute,
    # and the cluster's standard deployments stay as they are.
    spec = StandardDeployment(
        name="apply-test",
        module="scan_inventory",
        flow="scan_inventory",
        description="apply test",
        schedule=Schedule(interval_seconds=3600),
        concurrency_limit=1,
    )
    pool = "so-apply-test"

    first = apply_deployments(pool, specs=[spec])
    again = apply_deployments(pool, specs=[spec])
    [one] = first.deployments
    assert first.work_pool_created and not again.work_pool_created
    assert again.deployments[0].id == one.id  # updated in place, not a second deployment
    assert (one.entrypoint, one.schedules) == (
        "safe_updater.flows.scan_inventory.scan_inventory",
        1,
    )
    assert again.deployments[0].schedules == 1  # not doubled

    unscheduled = apply_deployments(pool, schedules=False, specs=[spec])
    assert unscheduled.deployments[0].schedules == 0
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(one.id)
        pool_read = client.read_work_pool(pool)
    assert deployment.work_pool_name == pool
    assert deployment.global_concurrency_limit is not None
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options is not None
    assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert deployment.pull_steps in (None, [])
    assert pool_read.type == "process"
