"""The Typer application, its exit codes and its one-line error reporting.

Command groups live in sibling modules (``versions_cmds``, ``config_cmds``, ...); each exposes
``register(app)``, called below. Exit codes scripts can trust:
0 success / nothing to do, 1 operational failure, 2 bad input, 3 rolled back, 4 awaiting approval.
"""

from __future__ import annotations

import sys
from enum import IntEnum

import typer
from rich.console import Console

from safe_updater.domain.errors import InvalidInputError, SafeUpdaterError


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    BAD_INPUT = 2
    ROLLED_BACK = 3
    AWAITING_APPROVAL = 4


err_console = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="safe-updater",
    help="Keeps Docker containers, Kubernetes workloads and Helm releases up to date safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(error: SafeUpdaterError) -> typer.Exit:
    """Print one line for ``error`` and return the exit to raise."""
    code = ExitCode.BAD_INPUT if isinstance(error, InvalidInputError) else ExitCode.FAILURE
    err_console.print(f"error: {error}", markup=False)
    return typer.Exit(int(code))


def _register_commands() -> None:
    from safe_updater.cli import registry

    for register in registry.all_registrations():
        register(app)


def main() -> None:
    """Console-script entry point: user errors become one line and exit code, never a traceback."""
    _register_commands()
    try:
        app()
    except SafeUpdaterError as error:
        raise SystemExit(fail(error).exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
