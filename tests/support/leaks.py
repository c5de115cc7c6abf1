"""Collectors for secret-leak tests: every place a person or a machine can read after a run.

Each collector returns ``(label, text)`` pairs; :func:`leaks` names the labels whose text holds
any form of a secret (:func:`forms`: raw, base64, URL-encoded). The Prefect collector also
returns counts, so a test can assert it really read logs, artifacts and events of its runs: a
leak check over nothing would pass and prove nothing.
"""

from __future__ import annotations

import base64
import json
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus
from uuid import UUID

Texts = list[tuple[str, str]]


def forms(secret: str, *, user: str | None = None) -> list[str]:
    """The ways a secret shows up when something serializes it: as is, base64 (also of
    ``user:secret``, HTTP basic auth), URL-encoded (path-safe and form forms)."""
    found = {secret, quote(secret, safe=""), quote_plus(secret)}
    found.add(base64.b64encode(secret.encode()).decode().rstrip("="))
    found.add(base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="))
    if user is not None:
        found.add(base64.b64encode(f"{user}:{secret}".encode()).decode().rstrip("="))
    return sorted(found)


def leaks(canaries: Iterable[str], texts: Iterable[tuple[str, str]]) -> list[str]:
    """The labels whose text contains any canary."""
    wanted = [c for c in canaries if c]
    return [label for label, text in texts if any(c in text for c in wanted)]


def paged(read: Callable[[int], list[Any]], page: int = 200) -> Iterator[Any]:
    offset = 0
    while True:
        batch = read(offset)
        yield from batch
        if len(batch) < page:
            return
        offset += page


def dump(value: Any) -> str:
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    return json.dumps(value, default=str)


def error_texts(label: str, error: BaseException) -> Texts:
    """The traceback (with chained causes), the repr and the attributes of an exception."""
    return [
        (f"{label} ({type(error).__name__}) traceback", "".join(traceback.format_exception(error))),
        (f"{label} repr", repr(error) + repr(getattr(error, "__dict__", {}))),
    ]


def file_texts(paths: Iterable[Path]) -> Texts:
    """Files (directories: every file below) as raw bytes, decoded byte for byte."""
    texts: Texts = []
    for path in sorted(paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            texts.append((f"file {file}", file.read_bytes().decode("latin-1")))
    return texts


@dataclass
class PrefectRecords:
    """Everything the Prefect API holds, and how much of it came from the runs of interest."""

    texts: Texts = field(default_factory=list)
    runs: int = 0
    our_logs: int = 0
    our_artifacts: int = 0
    our_task_runs: int = 0
    update_events: int = 0
    our_run_names: list[str] = field(default_factory=list)


def prefect_records(
    run_ids: Sequence[UUID | str] = (), *, name_contains: Sequence[str] = ()
) -> PrefectRecords:
    """Every flow run's parameters and state, every log line, artifact and
    ``safe-updater.*``/``prefect.flow-run.*`` event on the current Prefect API, and the task runs
    (parameters and states) of the runs of interest: those in ``run_ids`` or whose name holds
    one of ``name_contains``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.events.filters import EventFilter, EventNameFilter

    out = PrefectRecords()
    wanted = {str(r) for r in run_ids}
    with get_client(sync_client=True) as client:
        runs = list(paged(lambda off: client.read_flow_runs(limit=200, offset=off)))
        out.runs = len(runs)
        ours = [
            r
            for r in runs
            if str(r.id) in wanted or any(n in (r.name or "") for n in name_contains)
        ]
        # Subflows (update_asset under a CLI wrapper) count as ours too.
        parents = {r.id for r in ours}
        task_runs_all = list(paged(lambda off: client.read_task_runs(limit=200, offset=off)))
        by_task = {t.id: t for t in task_runs_all}
        for run in runs:
            parent = by_task.get(run.parent_task_run_id) if run.parent_task_run_id else None
            if parent is not None and parent.flow_run_id in parents and run.id not in parents:
                ours.append(run)
                parents.add(run.id)
        out.our_run_names = sorted(r.name or "" for r in ours)
        missing = wanted - {str(r.id) for r in ours}
        assert not missing, f"flow runs not on the Prefect API: {sorted(missing)}"
        for run in runs:
            out.texts.append((f"flow run {run.name} parameters", dump(run.parameters)))
            # The whole run: state and its message, tags, labels, job variables.
            out.texts.append((f"flow run {run.name}", dump(run)))
        ids = [r.id for r in ours]
        # The whole task run: state, message, result reference, inputs, tags.
        out.texts += [(f"task run {task.name}", dump(task)) for task in task_runs_all]
        out.our_task_runs = sum(1 for t in task_runs_all if t.flow_run_id in parents)
        logs = list(paged(lambda off: client.read_logs(limit=200, offset=off)))
        out.texts += [(f"log {log.id} ({log.name})", log.message) for log in logs]
        if ids:
            our_logs = list(
                paged(
                    lambda off: client.read_logs(
                        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)),
                        limit=200,
                        offset=off,
                    )
                )
            )
            out.our_logs = len(our_logs)
        artifacts = list(paged(lambda off: client.read_artifacts(limit=200, offset=off)))
        out.our_artifacts = sum(1 for a in artifacts if a.flow_run_id in parents)
        out.texts += [
            (f"artifact {a.key or a.id}", dump(a.data) + (a.description or "")) for a in artifacts
        ]
        events: list[Any] = []
        page = client.read_events(
            filter=EventFilter(event=EventNameFilter(prefix=["safe-updater.", "prefect."])),
            limit=50,
        )
        while True:
            events += page.events
            if not page.next_page:
                break
            page = client.read_events_page(str(page.next_page))
        out.update_events = sum(1 for e in events if e.event.startswith("safe-updater.update."))
        out.texts += [(f"event {e.event} {e.id}", e.model_dump_json()) for e in events]
    return out
