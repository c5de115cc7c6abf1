"""Fixtures for the state store tests: every test runs on SQLite and on PostgreSQL.

PostgreSQL comes from the test bed (``TESTBED_POSTGRES_URL``, set by ``testbed/up postgres`` in
its env file); each test gets a database of its own, created here and dropped afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from safe_updater.adapters.store import StateStore
from support.databases import scratch_database

PG_ENV = "TESTBED_POSTGRES_URL"
SKIP_PG = (
    f"{PG_ENV} is unset: start PostgreSQL with `testbed/up postgres` and source the test bed's "
    "env file (CI always sets it)"
)


class FakeClock:
    """A clock the test moves; every reading is 1 ms later so rows still order by time."""

    def __init__(self, start: datetime | None = None, *, tick: timedelta = timedelta(0)) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        self.tick = tick

    def __call__(self) -> datetime:
        value = self.now
        self.now += self.tick
        return value

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _pg_admin_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(SKIP_PG)
    return url


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped (forcibly) afterwards."""
    with scratch_database(_pg_admin_url(), "su_store") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite":
        # A directory that does not exist yet: open() must create it.
        return f"sqlite:///{tmp_path}/state/state.db"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(tick=timedelta(milliseconds=1))


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[StateStore]:
    opened = StateStore.open(store_url, clock=clock)
    try:
        yield opened
    finally:
        opened.close()
