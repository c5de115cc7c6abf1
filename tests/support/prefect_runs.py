"""Finding runs on the session's Prefect server, which holds every earlier test's runs too."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort


def paused_runs(client: Any, name: str | None = None) -> list[FlowRun]:
    """Paused runs, newest first (asked for by state: an unfiltered first page of a busy
    server does not hold the newest run)."""
    runs: list[FlowRun] = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
        ),
        sort=FlowRunSort.START_TIME_DESC,
        limit=50,
    )
    return [run for run in runs if name is None or run.name == name]


def start_in_thread(
    func: Callable[..., Any], **kwargs: Any
) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``func(**kwargs)`` (a flow that will pause) in a daemon thread; the box gets its
    ``result`` or the ``error`` it raised."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = func(**kwargs)
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box
