"""The project's own database: inventory, update journal, quarantine, pins, audit chain, budgets.

SQLAlchemy 2 Core over SQLite (a file, default) or PostgreSQL (by URL); the schema is managed
by the Alembic migrations shipped in ``migrations/`` and applied by :meth:`StateStore.open`.
docs/state-store.md describes the schema, the audit chain and backups.
"""

from __future__ import annotations

from safe_updater.adapters.store.assets import AssetRepository
from safe_updater.adapters.store.audit import AuditLog, record_hash
from safe_updater.adapters.store.budgets import RequestBudgets
from safe_updater.adapters.store.journal import Journal
from safe_updater.adapters.store.locks import AssetLocks
from safe_updater.adapters.store.quarantine import Pins, Quarantine
from safe_updater.adapters.store.state import StateStore

__all__ = [
    "AssetLocks",
    "AssetRepository",
    "AuditLog",
    "Journal",
    "Pins",
    "Quarantine",
    "RequestBudgets",
    "StateStore",
    "record_hash",
]
