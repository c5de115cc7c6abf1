"""Helpers shared by the command modules: options, output, the store, running flows."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

console = Console(highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default ./safe-updater.yaml, or $SAFE_UPDATER_CONFIG).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

T = TypeVar("T")


def prepare_environment(config_path: Path | None) -> None:
    """Point Prefect at the state dir (unless the user set it) before prefect is imported, and
    remember the config path for the runtime the flows build."""
    from safe_updater.wiring import configure_prefect_environment

    if config_path is not None:
        os.environ["SAFE_UPDATER_CONFIG"] = str(config_path)
    configure_prefect_environment()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def current_user() -> str:
    return os.environ.get("SAFE_UPDATER_ACTOR") or os.environ.get("USER") or "cli"


def run_quietly(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a flow from the CLI with Prefect's console logging muted (``-v`` keeps it).

    The run's logs still reach the Prefect API, so the UI shows everything; the terminal gets
    the one-line answer (or one-line error) that scripts parse.
    """
    if not os.environ.get("SAFE_UPDATER_VERBOSE"):
        mute_prefect_console()
    return func(*args, **kwargs)


def mute_prefect_console() -> None:
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.CRITICAL + 1)
