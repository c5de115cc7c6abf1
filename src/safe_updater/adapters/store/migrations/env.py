"""Alembic environment for the state store.

Run only programmatically, by :func:`safe_updater.adapters.store.migrate.upgrade_to_head`, which
passes an open connection (already inside the transaction that holds the migration lock) in
``config.attributes["connection"]``. There is no alembic.ini and no logging set-up here.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from safe_updater.adapters.store.migrate import VERSION_TABLE
from safe_updater.adapters.store.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "safe-updater migrations run through StateStore.open(url) or "
        "safe_updater.adapters.store.migrate.upgrade_to_head(engine), not the alembic CLI"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
