"""The `safe-updater ...` commands quoted in the user guide, the runbooks, serve.md and the README
exist with the options they are quoted with: a renamed command or flag fails here, not in the
hands of an operator following a runbook."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from safe_updater.cli import app as cli_app

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [
        ROOT / "README.md",
        ROOT / "docs" / "user-guide.md",
        ROOT / "docs" / "serve.md",
        ROOT / "docs" / "troubleshooting.md",
        *(ROOT / "docs" / "runbooks").glob("*.md"),
    ]
)
# At the start of a code line (or after a prompt / env assignments), or of an inline code span.
INVOCATION = re.compile(
    r"(?:^\s*(?:\$\s+)?(?:[A-Z_]+=\S+\s+)*|`(?:[A-Z_]+=\S+\s+)*)(?:\.venv/bin/)?"
    r"safe-updater\s+([^`\n|;&>]*)"
)


def _root_command() -> Any:
    cli_app._register_commands()
    return typer.main.get_command(cli_app.app)


def _quoted_commands(page: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        for rest in INVOCATION.findall(line):
            rest = rest.split(" # ")[0].strip()
            if rest and not rest.startswith(("COMMAND", "<")):
                found.append((number, rest))
    return found


def check(root: Any, words: str) -> str | None:
    """Why ``safe-updater <words>`` is not a valid invocation, or None."""
    try:
        tokens = shlex.split(words)
    except ValueError:
        tokens = words.split()
    command, path = root, ["safe-updater"]
    while tokens and hasattr(command, "commands") and not tokens[0].startswith("-"):
        name = tokens[0]
        if name not in command.commands:
            return f"`{' '.join(path)}` has no command {name!r}"
        command = command.commands[name]
        path.append(tokens.pop(0))
    options = {"--help"}
    for param in command.params:
        options.update(getattr(param, "opts", []))
        options.update(getattr(param, "secondary_opts", []))
    for token in tokens:
        if token.startswith("-") and len(token) > 1 and not token[1:2].isdigit():
            option = token.split("=", 1)[0]
            if option not in options:
                return f"`{' '.join(path)}` has no option {option}"
    return None


def test_the_checker_catches_mistakes() -> None:
    root = _root_command()
    assert check(root, "rollback ASSET --to 1.0.1") is None
    assert check(root, "quarantine clear ASSET --version 1.1.0") is None
    assert check(root, "serve --auth-file /etc/x --port 4300") is None
    assert "has no option --revisions" in str(check(root, "rollback ASSET --revisions 3"))
    assert "has no command 'unquarantine'" in str(check(root, "unquarantine ASSET"))
    assert "has no command 'purge'" in str(check(root, "quarantine purge ASSET"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_commands_exist(page: Path) -> None:
    root = _root_command()
    quoted = _quoted_commands(page)
    problems = [
        f"{page.relative_to(ROOT)}:{number}: safe-updater {words}: {why}"
        for number, words in quoted
        if (why := check(root, words)) is not None
    ]
    assert problems == []


def test_the_runbooks_quote_commands() -> None:
    runbooks = [page for page in PAGES if page.parent.name == "runbooks"]
    assert sum(len(_quoted_commands(page)) for page in runbooks) > 20
