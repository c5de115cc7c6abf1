"""``config generate|validate|reference``; the seed's ``generate-config``, ``validate-config``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from safe_updater.cli.app import ExitCode, err_console, fail
from safe_updater.cli.common import JsonOption, print_json
from safe_updater.config import check_config_file, config_path
from safe_updater.config_reference import DEFAULT_CONFIG, render_markdown
from safe_updater.domain.errors import ConfigError, InvalidInputError

config_app = typer.Typer(
    name="config", help="Generate and check the config file.", no_args_is_help=True
)

OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Overwrite an existing FILE.")]
FileArgument = Annotated[
    Path | None,
    typer.Argument(
        help="Config file (default: --config, $SAFE_UPDATER_CONFIG or ./safe-updater.yaml).",
        show_default=False,
    ),
]


@config_app.command("generate")
def generate(output: OutputOption = None, force: ForceOption = False) -> None:
    """Print a commented config file with every default."""
    _write(DEFAULT_CONFIG, output, force)


@config_app.command("validate")
def validate(file: FileArgument = None, json_output: JsonOption = False) -> None:
    """Check a config file: exit 0 when valid, else exit 2 with 'file:line: field: message'."""
    path, _ = config_path(file)
    if not path.exists():
        problems = [
            ConfigError(
                "config file does not exist",
                hint="create one with `safe-updater config generate --output FILE`",
                source=str(path),
            )
        ]
    else:
        _, problems = check_config_file(path)
    if json_output:
        print_json(
            {
                "file": str(path),
                "valid": not problems,
                "errors": [
                    {"line": p.line, "field": p.field, "message": p.message, "hint": p.hint}
                    for p in problems
                ],
            }
        )
    elif not problems:
        sys.stdout.write(f"{path}: valid\n")
    for problem in problems if not json_output else []:
        err_console.print(str(problem), markup=False)
    if problems:
        raise typer.Exit(int(ExitCode.BAD_INPUT))


@config_app.command("reference")
def reference(output: OutputOption = None, force: ForceOption = False) -> None:
    """Print the configuration reference (Markdown; docs/configuration.md)."""
    _write(render_markdown(), output, force)


def _write(text: str, output: Path | None, force: bool) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    if output.exists() and not force:
        raise fail(
            InvalidInputError(
                f"{output} already exists",
                hint="pass --force to overwrite it, or choose another path",
            )
        )
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise fail(
            InvalidInputError(f"cannot write {output}: {error}", hint="check the path")
        ) from None
    err_console.print(f"wrote {output}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app)
    # The seed's command names keep working for its users.
    app.command("generate-config", help="Alias of `config generate`.")(generate)
    app.command("validate-config", help="Alias of `config validate`.")(validate)
