"""Scratch PostgreSQL databases for tests that need an empty one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from safe_updater.adapters.store.database import normalize_url


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_url``; dropped (forcibly) afterwards."""
    admin_url = normalize_url(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    # pre-ping: a test may have restarted the server since the CREATE (tests/faults)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
