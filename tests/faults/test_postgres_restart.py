"""PostgreSQL, holding the state store, is restarted (`testbed/restart postgres`: fast shutdown by
PID, same port and data directory) while a real Docker update runs, or a journal write's session
is ended under it (`pg_terminate_backend`).

Expected: a journal write that loses its connection fails as "the state store is unavailable"
(transient), its task retries on a new connection, and the update completes; never a
half-written journal row, never a broken audit chain (`safe-updater audit verify` exits 0).

Needs `testbed/up docker registry postgres` and the session's Prefect server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from safe_updater.adapters.store.database import normalize_url
from safe_updater.domain.journal import Outcome, Phase
from safe_updater.flows.update_asset import update_asset
from support.databases import scratch_database
from support.docker_scenarios import DockerScenario, describe
from support.testbed import restart_part, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.usefixtures("prefect_server"),
]

Scenario = Callable[..., DockerScenario]
OLD, GOOD = "1.0.0", "1.0.1"


@pytest.fixture
def admin_url(testbed_env: dict[str, str]) -> str:
    if "TESTBED_POSTGRES_ADMIN_URL" not in testbed_env:
        pytest.skip("TESTBED_POSTGRES_ADMIN_URL is not set: `testbed/up postgres`")
    return testbed_env["TESTBED_POSTGRES_ADMIN_URL"]


def answers(url: str) -> bool:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1
    except Exception:
        return False
    finally:
        engine.dispose()


@pytest.fixture
def state_url(admin_url: str) -> Iterator[str]:
    """A scratch database for the state store; afterwards the server answers again."""
    with scratch_database(admin_url, "faults") as url:
        yield url
        wait_until(lambda: answers(admin_url), timeout=60, what="PostgreSQL answers")


def postmaster_pid(testbed_env: dict[str, str]) -> int:
    return int((Path(testbed_env["TESTBED_DIR"]) / "postgres" / "postgres.pid").read_text())


def task_runs(flow_run_id: str) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {t.name: t for t in runs}


def assert_whole(s: DockerScenario, version: str) -> None:
    s.assert_serving(version)
    with s.store() as store:
        assert store.journal.find_open(s.asset_id) == []
        [attempt] = store.journal.history(s.asset_id)  # one attempt, not a retried copy
        assert (attempt.phase, attempt.outcome) == (Phase.CLOSED, Outcome.UPDATED), attempt
        assert attempt.finished_at is not None and attempt.to_version == version
        events = [r.event for r in store.audit.export()]
    assert events.count("update.started") == 1 and events.count("update.updated") == 1, events
    verify = s.cli("audit", "verify", "--json")
    assert verify.returncode == 0, describe(verify)


def test_restart_between_journal_writes(
    scenario: Scenario, state_url: str, testbed_env: dict[str, str]
) -> None:
    # The restart lands while the new version is verified: the journal's next write (committing)
    # and the close come after it, on pooled connections the restart killed.
    s = scenario([OLD, GOOD], state_url=state_url, window="8s")
    s.start(OLD)
    before = postmaster_pid(testbed_env)
    errors: list[BaseException] = []

    def restart_once_the_new_version_serves() -> None:
        try:
            wait_until(lambda: s.version() == GOOD, timeout=120, what=f"{GOOD} serving")
            restart_part("postgres")
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=restart_once_the_new_version_serves, daemon=True)
    thread.start()
    with s.runtime():
        result = update_asset(s.asset_id, approval="defer")
    thread.join(120)
    assert not errors, errors
    assert postmaster_pid(testbed_env) != before, "PostgreSQL was not restarted"

    assert result["outcome"] == "updated", result
    assert_whole(s, GOOD)


@pytest.mark.parametrize(
    ("fault", "phase"),
    [("restart", Phase.COMMITTING), ("terminate-backend", Phase.CLOSED)],
    ids=["restart-before-committing-write", "terminate-before-close-write"],
)
def test_connection_lost_inside_a_journal_write(
    scenario: Scenario, state_url: str, admin_url: str, fault: str, phase: Phase
) -> None:
    """The journal transaction has read the row; right before its UPDATE is sent, the server
    restarts (or our backend is terminated). The UPDATE fails, the transaction is gone with the
    session, the task retries on a new connection."""
    s = scenario([OLD, GOOD], state_url=state_url)
    s.start(OLD)
    database = make_url(state_url).database
    fired: list[str] = []

    def before_update(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if (
            fired
            or conn.engine.url.database != database
            or not statement.lstrip().upper().startswith("UPDATE ATTEMPTS")
            or not isinstance(parameters, dict)
            or parameters.get("phase") != phase.value
        ):
            return
        fired.append(statement)
        if fault == "restart":
            restart_part("postgres")
        else:
            pid = conn.connection.dbapi_connection.info.backend_pid
            admin = create_engine(normalize_url(admin_url))
            try:
                with admin.connect() as c:
                    assert c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            finally:
                admin.dispose()

    event.listen(Engine, "before_cursor_execute", before_update)
    try:
        with s.runtime():
            result = update_asset(s.asset_id, approval="defer")
    finally:
        event.remove(Engine, "before_cursor_execute", before_update)

    assert fired, "the fault never fired"
    assert result["outcome"] == "updated", result
    runs = task_runs(result["flow_run_id"])
    suffix = Outcome.UPDATED.value if phase is Phase.CLOSED else phase.value
    [write] = [
        run for name, run in runs.items() if name.startswith("journal #") and name.endswith(suffix)
    ]
    # The write failed once (state store unavailable) and its retry succeeded.
    assert write.run_count == 2, write
    assert_whole(s, GOOD)
