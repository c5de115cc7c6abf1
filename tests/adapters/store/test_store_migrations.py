"""Schema migrations: from an empty database to head, idempotent re-opens, no drift."""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from safe_updater.adapters.store import StateStore
from safe_updater.adapters.store.migrate import (
    VERSION_TABLE,
    downgrade_to,
    head_revision,
    upgrade_to_head,
)
from safe_updater.adapters.store.schema import metadata
from safe_updater.domain.errors import InvalidInputError, TransientError

TABLES = {
    "assets",
    "attempts",
    "quarantine",
    "pins",
    "audit_log",
    "audit_head",
    "request_budgets",
    "registry_requests",
    VERSION_TABLE,
}


def test_open_migrates_an_empty_database_to_head(store: StateStore) -> None:
    assert store.schema_revision() == head_revision()
    assert set(inspect(store.engine).get_table_names()) >= TABLES


def test_reopen_is_idempotent_and_keeps_data(store_url: str) -> None:
    with StateStore.open(store_url) as first:
        first.pins.set("docker:h/a", "1.0", "hold")
        first.audit.append("pin", asset_id="docker:h/a", actor="test", data={})
    for _ in range(2):
        with StateStore.open(store_url) as again:
            assert again.schema_revision() == head_revision()
            pin = again.pins.get("docker:h/a")
            assert pin is not None and pin.version == "1.0"
            assert again.audit.verify().ok


def test_migrated_schema_matches_the_metadata(store: StateStore) -> None:
    # The migrations are hand-written; this is what keeps them equal to schema.py.
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_downgrade_to_base_and_upgrade_again(store: StateStore) -> None:
    downgrade_to(store.engine, "base")
    assert not (TABLES - {VERSION_TABLE}) & set(inspect(store.engine).get_table_names())
    upgrade_to_head(store.engine)
    assert store.schema_revision() == head_revision()
    assert store.audit.verify().ok


def test_concurrent_first_opens_do_not_collide(store_url: str) -> None:
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            StateStore.open(store_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with StateStore.open(store_url) as s:
        assert s.schema_revision() == head_revision()


def test_threads_opening_different_databases_do_not_collide(tmp_path: Path) -> None:
    """Alembic keeps the running migration in module globals; no database lock covers two
    databases, so threads migrating each their own at once tore each other's state down
    (KeyError 'script', closed connections) before the in-process lock."""
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def opener(i: int) -> None:
        try:
            start.wait(timeout=30)
            for round_ in range(3):
                StateStore.open(f"sqlite:///{tmp_path / f'state-{i}-{round_}.db'}").close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []


def test_sqlite_uses_wal_and_creates_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    with StateStore.open(f"sqlite:///{path}") as s:
        assert s.dialect == "sqlite"
    assert path.exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_in_memory_sqlite_works(tmp_path: Path) -> None:
    with StateStore.open("sqlite://") as s:
        s.pins.set("docker:h/a", "1")
        assert s.pins.get("docker:h/a") is not None


@pytest.mark.parametrize("url", ["not a url", "mysql://u@127.0.0.1/db", "oracle://u@127.0.0.1/db"])
def test_unsupported_urls_are_bad_input(url: str) -> None:
    with pytest.raises(InvalidInputError):
        StateStore.open(url)


def test_unreachable_postgres_is_transient_and_hides_the_password() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransientError) as caught:
        StateStore.open(f"postgresql://u:hunter2@127.0.0.1:{port}/db?connect_timeout=2")
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is not None
