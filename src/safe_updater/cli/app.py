"""The Typer application, its exit codes and its one-line error reporting.

Command groups live in sibling modules (``versions_cmds``, ``config_cmds``, ...); each exposes
``register(app)``, called below. Exit codes scripts can trust:
0 success / nothing to do, 1 operational failure, 2 bad input, 3 rolled back, 4 awaiting approval.
"""

from __future__ import annotations

import importlib
import sys
from enum import IntEnum
from typing import Any

import typer
from rich.console import Console

from safe_updater.domain.errors import InvalidInputError, SafeUpdaterError


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    BAD_INPUT = 2
    ROLLED_BACK = 3
    AWAITING_APPROVAL = 4


# Click's exception classes, wherever this Typer takes Click from (its own copy since 0.2x).
_click_errors: Any = importlib.import_module(typer.BadParameter.__module__)
UsageError: Any = _click_errors.UsageError
ClickException: Any = _click_errors.ClickException
NoArgsIsHelpError: Any = getattr(_click_errors, "NoArgsIsHelpError", type(None))

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


_registered = False


def _register_commands() -> None:
    """Add every command module's commands to ``app``, once (``main`` may run many times in
    one process, e.g. in tests)."""
    global _registered
    if _registered:
        return
    from safe_updater.cli import registry

    for register in registry.all_registrations():
        register(app)
    _registered = True


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line and exit code, never a traceback.

    Click's own usage errors (missing argument, bad option value, unknown command) are printed
    as ``error: <message> (fix: see `safe-updater COMMAND --help`)`` with exit code 2, like
    every other bad input, instead of Click's multi-line box.
    """
    _register_commands()
    try:
        result = app(args=argv, prog_name="safe-updater", standalone_mode=False)
    except NoArgsIsHelpError as error:
        # `safe-updater` or a command group without a subcommand: the help is the answer.
        text = error.format_message()
        if text.strip():
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        raise SystemExit(int(ExitCode.BAD_INPUT)) from None
    except UsageError as error:
        command = error.ctx.command_path if error.ctx is not None else "safe-updater"
        err_console.print(
            f"error: {_one_line(error.format_message())} (fix: see `{command} --help`)",
            markup=False,
        )
        raise SystemExit(int(ExitCode.BAD_INPUT)) from None
    except typer.Abort:
        err_console.print("aborted")
        raise SystemExit(int(ExitCode.FAILURE)) from None
    except ClickException as error:
        err_console.print(f"error: {_one_line(error.format_message())}", markup=False)
        raise SystemExit(error.exit_code) from None
    except SafeUpdaterError as error:
        raise SystemExit(fail(_api_refusal(error) or error).exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as error:
        # A Prefect server with basic auth answers 401 to any command that talks to it without
        # PREFECT_API_AUTH_STRING; that gets the one line with the fix, anything else stays loud.
        refused = _api_refusal(error)
        if refused is None:
            raise
        raise SystemExit(fail(refused).exit_code) from None
    # Without standalone mode Click returns the code of a `typer.Exit` (or the command's value).
    sys.exit(result if isinstance(result, int) else 0)


def _api_refusal(error: BaseException) -> SafeUpdaterError | None:
    from safe_updater.cli.prefect_auth import refused_error

    return refused_error(error)


def _one_line(text: str) -> str:
    text = text.replace("Value error, ", "")  # pydantic's prefix on Typer's coercion errors
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
