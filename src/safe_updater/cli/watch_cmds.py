"""``safe-updater watch``: the foreground loop for one host without a server (Watchtower's habit).

Every ``--interval`` it runs the fleet update (``update_fleet``) in this process and shows the
assets in a live table. Without PREFECT_API_URL the flow runs against Prefect's embedded server,
started once for this process, like every other command's flows. The loop (:func:`run_watch`)
takes the cycle as a function, so tests drive it with a fake; the command only wires it up.

Ctrl-C (or SIGTERM) between cycles stops at once. During a cycle that changes things, the first
one lets the cycle finish (updates in flight verify and commit or roll back) and then stops; a
second one aborts the cycle. A dry-run cycle changes nothing and is aborted at once. Either way
the command exits 0 without a traceback.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from safe_updater.cli.app import ExitCode
from safe_updater.cli.common import (
    ConfigOption,
    console,
    current_user,
    prepare_environment,
    run_quietly,
)
from safe_updater.cli.prefect_auth import refused_error
from safe_updater.domain.durations import format_duration, parse_duration
from safe_updater.domain.errors import InvalidInputError

DEFAULT_INTERVAL = "5m"
REFRESH_SECONDS = 1.0
"""How often the header's countdown is redrawn while waiting for the next cycle."""

FAILED_OUTCOMES = frozenset({"failed", "crashed", "halted"})
ROLLED_BACK = "rolled_back"

Cycle = Callable[[], Mapping[str, Any]]


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)


def watch(
    interval: Annotated[
        str,
        typer.Option(
            "--interval", "-i", help="Time between runs: 90s, 5m, 1h (a run starts every INTERVAL)."
        ),
    ] = DEFAULT_INTERVAL,
    once: Annotated[
        bool, typer.Option("--once", help="Run one cycle, print the table and exit (cron, tests).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Scan and plan only; change nothing.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Update the fleet every INTERVAL in this process and show a live table (Ctrl-C stops).

    For one host without `serve`: no server, no deployments. Updates that need approval wait
    for it (`safe-updater approve`); the next cycle picks them up."""
    period = parse_interval(interval)
    prepare_environment(config)
    from safe_updater.flows.update_fleet import update_fleet

    actor = current_user()

    def cycle() -> Mapping[str, Any]:
        try:
            result: Mapping[str, Any] = run_quietly(
                update_fleet, dry_run=dry_run, approval="defer", dispatch="inline", actor=actor
            )
        except Exception as error:
            # The table shows one line per failed cycle: make a 401 name its fix.
            refused = refused_error(error)
            if refused is None:
                raise
            raise refused from error
        return result

    code = run_watch(cycle, interval=period, once=once, dry_run=dry_run, console=console)
    raise typer.Exit(int(code))


def parse_interval(text: str) -> timedelta:
    period = parse_duration(text, field="--interval")
    if period < timedelta(seconds=1):
        raise InvalidInputError(
            f"--interval {text!r} is shorter than 1 s", hint="use e.g. --interval 5m"
        )
    return period


# -- the board: what the table shows ----------------------------------------------------------


@dataclass
class AssetRow:
    asset: str
    group: str
    current: str
    target: str
    change_type: str
    action: str
    outcome: str | None
    reasons: str
    last_outcome: str | None = None
    last_outcome_at: datetime | None = None


@dataclass
class Board:
    """The state of the watch: assets as of the last cycle, and the header's facts."""

    interval: timedelta
    dry_run: bool
    rows: dict[str, AssetRow] = field(default_factory=dict)
    cycles: int = 0
    running_since: datetime | None = None
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_summary: str | None = None
    last_error: str | None = None
    halted: str | None = None
    next_run: datetime | None = None
    stopping: bool = False
    stopped: str | None = None

    def start(self, at: datetime) -> None:
        self.cycles += 1
        self.running_since = at
        self.next_run = None

    def finish(self, result: Mapping[str, Any], at: datetime) -> None:
        """Take a cycle's result: rows for the assets it reported (others are gone)."""
        rows: dict[str, AssetRow] = {}
        for item in result.get("assets") or []:
            asset = str(item.get("asset"))
            outcome = _text(item.get("outcome")) or None
            previous = self.rows.get(asset)
            row = AssetRow(
                asset=asset,
                group=_text(item.get("group")),
                current=_text(item.get("current")),
                target=_text(item.get("target")),
                change_type=_text(item.get("change_type")),
                action=_text(item.get("action")),
                outcome=outcome,
                reasons=_text(item.get("reasons")),
            )
            if outcome is not None:
                row.last_outcome, row.last_outcome_at = outcome, at
            elif previous is not None:
                row.last_outcome = previous.last_outcome
                row.last_outcome_at = previous.last_outcome_at
            rows[asset] = row
        self.rows = rows
        self.halted = _text(result.get("halted")) or None
        self.last_summary = summarize(rows.values(), dry_run=bool(result.get("dry_run")))
        self.last_error = None
        self._finished(at)

    def fail(self, error: BaseException, at: datetime) -> None:
        """A cycle that raised: keep the last rows, say why, try again next interval."""
        lines = str(error).strip().splitlines()
        self.last_error = lines[0] if lines else type(error).__name__
        self._finished(at)

    def _finished(self, at: datetime) -> None:
        self.last_started, self.last_finished = self.running_since, at
        self.running_since = None

    def schedule(self, at: datetime) -> datetime:
        """Runs start every interval; one that ran longer is followed by the next at once."""
        started = self.last_started or at
        self.next_run = max(started + self.interval, at)
        return self.next_run

    def exit_code(self) -> ExitCode:
        """For --once: 1 when the run failed, halted or an update failed; 3 when one rolled
        back; else 0 (updates waiting for approval are a normal outcome of a cycle)."""
        outcomes = {row.outcome for row in self.rows.values() if row.outcome}
        if self.last_error or self.halted or outcomes & FAILED_OUTCOMES:
            return ExitCode.FAILURE
        if ROLLED_BACK in outcomes:
            return ExitCode.ROLLED_BACK
        return ExitCode.OK

    # -- rendering --------------------------------------------------------------------------

    def header(self, now: datetime) -> Text:
        mode = "dry run, " if self.dry_run else ""
        parts = [f"safe-updater watch ({mode}every {format_duration(self.interval)})"]
        if self.stopped:
            parts.append(self.stopped)
        elif self.running_since is not None:
            what = "stopping after this run (Ctrl-C again to abort it)" if self.stopping else ""
            parts.append(f"run {self.cycles} started {clock_time(self.running_since)}")
            if what:
                parts.append(what)
        elif self.next_run is not None:
            left = max(timedelta(0), self.next_run - now)
            parts.append(f"next run {clock_time(self.next_run)} (in {_countdown(left)})")
        if self.last_finished is not None and self.last_started is not None:
            took = (self.last_finished - self.last_started).total_seconds()
            last = f"last run {clock_time(self.last_started)} ({took:.0f}s): "
            last += f"failed: {self.last_error}" if self.last_error else str(self.last_summary)
            parts.append(last)
        text = Text(" · ".join(parts))
        if self.halted and not self.last_error:
            text.append(f"\nhalted: {self.halted}", style="bold red")
        return text

    def table(self) -> Table:
        table = Table(show_lines=False, expand=False)
        for column in (
            "asset",
            "group",
            "current",
            "target",
            "change",
            "action / outcome",
            "last result",
        ):
            table.add_column(column)
        for row in self.rows.values():
            last = ""
            if row.last_outcome_at is not None:
                last = f"{clock_time(row.last_outcome_at)} {row.last_outcome}"
            table.add_row(
                row.asset,
                row.group,
                row.current,
                row.target,
                row.change_type,
                _action(row),
                last,
            )
        return table

    def render(self, now: datetime) -> RenderableType:
        if not self.rows:
            note = "no assets yet" if self.last_finished is None else "no opted-in assets found"
            return Group(self.header(now), Text(note, style="dim"))
        return Group(self.header(now), self.table())


def summarize(rows: Any, *, dry_run: bool) -> str:
    """``3 assets: 1 updated, 2 no update`` (outcomes, or the planned actions of a dry run)."""
    rows = list(rows)
    counts = Counter((row.outcome or row.action or "?") for row in rows)
    detail = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    prefix = "planned " if dry_run else ""
    return f"{prefix}{len(rows)} assets" + (f": {detail}" if detail else "")


def clock_time(moment: datetime) -> str:
    """Local wall-clock time, as the operator reads it."""
    return moment.astimezone().strftime("%H:%M:%S")


def _action(row: AssetRow) -> str:
    if row.outcome and row.outcome != row.action:
        return f"{row.action} → {row.outcome}" if row.action else row.outcome
    return row.action


def _countdown(left: timedelta) -> str:
    seconds = int(left.total_seconds() + 0.999)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# -- the loop ------------------------------------------------------------------------------------


class _Interrupts:
    """SIGINT/SIGTERM: raise KeyboardInterrupt, except the first one during a cycle that may
    change things, which only asks the loop to stop once the cycle is done."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.in_cycle = False
        self.graceful = not board.dry_run

    def __call__(self, signum: int, frame: object) -> None:
        if self.in_cycle and self.graceful and not self.board.stopping:
            self.board.stopping = True
            return
        raise KeyboardInterrupt


@contextlib.contextmanager
def _signal_handlers(handler: _Interrupts) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread; keep Python's
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Display:
    """A Rich Live table on a terminal; elsewhere (a pipe, cron, a test) the board is printed
    once per finished cycle, so the output reads like a log."""

    def __init__(self, out: Console, board: Board, now: Callable[[], datetime]) -> None:
        self.out = out
        self.board = board
        self.now = now
        self.live: Live | None = None

    def __enter__(self) -> _Display:
        if self.out.is_terminal:
            # Redrawn every second by Live's own thread as well, so the countdown moves and
            # "stopping after this run" shows while a run is still busy.
            self.live = Live(
                console=self.out,
                get_renderable=lambda: self.board.render(self.now()),
                auto_refresh=True,
                refresh_per_second=1,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.refresh()
            self.live.__exit__(None, None, None)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()

    def cycle_done(self) -> None:
        if self.live is None:
            self.out.print(self.board.render(self.now()))
        else:
            self.refresh()

    def stopped(self) -> None:
        """The last word: the live board's header says it; a log gets the header line alone,
        since the table above it is still current."""
        if self.live is None:
            self.out.print(self.board.header(self.now()))
        else:
            self.refresh()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _wait_until(
    moment: datetime,
    now: Callable[[], datetime],
    sleep: Callable[[float], None],
    tick: Callable[[], None],
) -> None:
    """Sleep until ``moment`` in steps of at most REFRESH_SECONDS, redrawing after each."""
    while (left := (moment - now()).total_seconds()) > 0:
        sleep(min(REFRESH_SECONDS, left))
        tick()


def run_watch(
    cycle: Cycle,
    *,
    interval: timedelta,
    once: bool = False,
    dry_run: bool = False,
    console: Console,
    now: Callable[[], datetime] = _utcnow,
    sleep: Callable[[float], None] = time.sleep,
) -> ExitCode:
    """Run ``cycle`` every ``interval`` until Ctrl-C/SIGTERM (or once), showing the board.

    Returns the exit code: with ``once`` the cycle's (see :meth:`Board.exit_code`), else 0.
    A cycle that raises bad input (a broken config) ends the watch with that error, as no
    later cycle can succeed; any other failure is shown and the next cycle tries again.
    """
    board = Board(interval=interval, dry_run=dry_run)
    interrupts = _Interrupts(board)
    with _signal_handlers(interrupts), _Display(console, board, now) as display:
        try:
            while True:
                board.start(now())
                display.refresh()
                interrupts.in_cycle = True
                try:
                    result = cycle()
                except InvalidInputError:
                    raise
                except Exception as error:  # the next cycle may work: a registry was down...
                    if once:
                        raise
                    board.fail(error, now())
                else:
                    board.finish(result, now())
                finally:
                    interrupts.in_cycle = False
                if once:
                    display.cycle_done()
                    return board.exit_code()
                if board.stopping:
                    board.stopped = "stopped after the run (Ctrl-C)"
                    display.cycle_done()
                    return ExitCode.OK
                board.schedule(now())
                display.cycle_done()
                _wait_until(board.next_run or now(), now, sleep, display.refresh)
        except KeyboardInterrupt:
            if board.running_since is not None:
                # The header keeps the last finished run's summary; this one has none.
                board.running_since = None
                board.stopped = "aborted the run (Ctrl-C)"
                if not dry_run:
                    # An update cut short leaves its journal row open; recovery finishes it.
                    board.stopped += (
                        ": an interrupted update is finished by the next run or "
                        "`safe-updater recover`"
                    )
            else:
                board.stopped = "stopped (Ctrl-C)"
            display.stopped()
    return ExitCode.OK
