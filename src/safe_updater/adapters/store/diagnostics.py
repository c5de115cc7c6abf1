"""Query plans for the store's own queries: used by the index tests and the benchmark."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ClauseElement, Executable
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from safe_updater.adapters.store.state import StateStore


class _Explain(Executable, ClauseElement):
    """``EXPLAIN <stmt>`` compiled with the statement's own bind parameters and types."""

    inherit_cache = False

    def __init__(self, stmt: ClauseElement) -> None:
        self.stmt = stmt


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if compiler.dialect.name == "sqlite" else "EXPLAIN "
    return prefix + compiler.process(element.stmt, **kw)


def explain(store: StateStore, stmt: ClauseElement) -> str:
    """The backend's plan for ``stmt`` as text, one step per line."""
    with store.engine.connect() as conn, conn.begin():
        rows = conn.execute(_Explain(stmt)).all()
    if store.dialect == "sqlite":
        return "\n".join(str(row[-1]) for row in rows)  # (id, parent, notused, detail)
    return "\n".join(str(row[0]) for row in rows)
