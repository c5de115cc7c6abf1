"""Which command modules make up the CLI. Each module has ``register(app: typer.Typer)``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator

import typer

# One line per command module; order is the order of `--help`.
COMMAND_MODULES: tuple[str, ...] = (
    "versions_cmds",
    "config_cmds",
    "scan_cmds",
    "ops_cmds",
    "fleet_cmds",
    "state_cmds",
    "serve_cmds",
    "watch_cmds",
    "automation_cmds",
)


def all_registrations() -> Iterator[Callable[[typer.Typer], None]]:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"safe_updater.cli.{name}")
        yield module.register
