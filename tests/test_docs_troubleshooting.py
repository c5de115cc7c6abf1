"""docs/troubleshooting.md is built from the messages the tool can print: every error type and
every message a `raise` of one of our error types carries has an entry there, and every exit
code is explained. A new message without an entry fails here, naming its file and line."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import safe_updater
from safe_updater.cli.app import ExitCode
from safe_updater.domain.errors import SafeUpdaterError

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "safe_updater"
PAGE = ROOT / "docs" / "troubleshooting.md"

# Modules that cannot be imported outside their runner (Alembic's env.py needs its context).
NOT_IMPORTABLE = {"safe_updater.adapters.store.migrations.env"}

MIN_OWN_WORDS = 8
"""Characters of a message's own text below which it is reviewed by hand (PASS_THROUGH)."""

# Messages whose own words are too few to look up (the rest is another system's text), with
# the entry that explains them. A new one fails until it is added here and to the page.
PASS_THROUGH = {
    "<action>: <explanation>": "<operation>: <docker's explanation>",
    "<action>: <>": "<operation>: <docker's explanation>",
    "<ENGINE_UNAVAILABLE>: <action>: <explanation>": "Docker engine unavailable: <operation>",
    "invalid <what> <shown>": "invalid <what> <value>",
    # A message built from another system's text: a watch's error, or helm's stderr.
    "<message>": "watch error: <message>",
    "<where>: <name>": "<endpoint>: <error type>",
    "<problems>": "<file>:<line>: <field>: <problem> (several)",
    "<what> <tag> <reason>": "tag <x> contains '/' at position <n>",
    "<what> failed: <name>: <short>": "<verb> <resource> ... failed: <error type>: <reason>",
    "<…>": "helm did not finish within <n> s (timed out)",
    "label <label> on <asset_id> <problem>": "label safe-updater.io/health.<key> on <asset>",
}


def _error_types() -> dict[str, type[SafeUpdaterError]]:
    for module in pkgutil.walk_packages(safe_updater.__path__, "safe_updater."):
        if module.name not in NOT_IMPORTABLE:
            importlib.import_module(module.name)
    found: dict[str, type[SafeUpdaterError]] = {}
    todo: list[type[SafeUpdaterError]] = [SafeUpdaterError]
    while todo:
        cls = todo.pop()
        if not cls.__name__.startswith("_"):  # private ones are caught inside their module
            found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


@dataclass(frozen=True)
class Site:
    where: str
    error: str
    template: str
    fragments: tuple[str, ...]

    @property
    def words(self) -> list[str]:
        """The message's own words, in order, without the placeholders between them."""
        return [part for part in (_normal(f) for f in self.fragments) if part]

    def documented_in(self, lines: list[str]) -> bool:
        """One line of the page holds all of the message's own words in order (the page shows
        the placeholders as ``<name>`` or ``...``)."""
        pattern = re.compile(".*?".join(re.escape(word) for word in self.words))
        return any(pattern.search(line) for line in lines)


def _placeholder(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _placeholder(node.func)
    return ""


def _message(node: ast.expr) -> tuple[str, tuple[str, ...]] | None:
    """The message with ``<name>`` for each placeholder, and its literal fragments in order;
    ``None`` when it is not built from literals (a variable holding another error's text)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value, (node.value,)
    if isinstance(node, ast.JoinedStr):
        template, fragments = "", []
        for value in node.values:
            if isinstance(value, ast.Constant):
                template += str(value.value)
                fragments.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                template += f"<{_placeholder(value.value).strip('_')}>"
        return template, tuple(fragments)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _message(node.left), _message(node.right)
        if left is None or right is None:
            return None
        return left[0] + right[0], left[1] + right[1]
    if isinstance(node, ast.IfExp):  # either branch may be printed: keep the common words
        return "<…>", ()
    return None


def _normal(text: str) -> str:
    """Whitespace collapsed, the punctuation around placeholders and backticks dropped."""
    text = " ".join(text.replace("`", "").split())
    return text.strip(" :;,.()'\"=<>[]{}")


def _error_sites(types: dict[str, type[SafeUpdaterError]]) -> list[Site]:
    sites: list[Site] = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # Every construction, not only `raise X(...)`: helpers build errors and return them.
            if not isinstance(node, ast.Call):
                continue
            name = _placeholder(node.func)
            if name not in types or not node.args:
                continue
            message = _message(node.args[0])
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if message is None:  # built elsewhere: its parts are sites of their own
                sites.append(Site(where, name, f"<{ast.unparse(node.args[0])}>", ()))
                continue
            sites.append(Site(where, name, message[0], message[1]))
    return sites


def _page_lines() -> list[str]:
    text = PAGE.read_text(encoding="utf-8").replace("\\|", "|")
    return [_normal(line) for line in text.splitlines() if line.strip()]


TYPES = _error_types()
SITES = _error_sites(TYPES)


def test_the_source_has_messages_to_check() -> None:
    # Guards the extraction itself: a refactor that hid every raise would pass vacuously.
    assert len(SITES) > 200
    assert {"InvalidInputError", "ConfigError", "RegistryResponseError"} <= {s.error for s in SITES}


def test_every_error_type_is_explained() -> None:
    page = PAGE.read_text(encoding="utf-8")
    missing = sorted(name for name in TYPES if f"| `{name}` |" not in page)
    assert missing == [], f"add these error types to the table in {PAGE.name}: {missing}"


def test_every_exit_code_is_explained() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert [code.value for code in ExitCode if f"\n| {code.value} |" not in page] == []


def test_every_message_has_an_entry() -> None:
    lines = _page_lines()
    missing = [
        f"{site.where} {site.error}: {site.template}"
        for site in SITES
        if len("".join(site.words)) >= MIN_OWN_WORDS and not site.documented_in(lines)
    ]
    assert missing == [], (
        f"{len(missing)} message(s) have no entry in docs/troubleshooting.md (add the message "
        "as printed, its cause and the fix):\n" + "\n".join(missing)
    )


def test_short_messages_are_reviewed() -> None:
    """Messages with few words of their own carry another system's text; each is listed in
    PASS_THROUGH with the words of the page's entry that explains it."""
    short = {site.template for site in SITES if len("".join(site.words)) < MIN_OWN_WORDS}
    assert short == set(PASS_THROUGH), f"review and list these: {sorted(short ^ set(PASS_THROUGH))}"
    text = " ".join(_page_lines())
    assert [entry for entry in PASS_THROUGH.values() if _normal(entry) not in text] == []


@pytest.mark.parametrize("name", ["ApiRefusedError", "AuthFileError", "ServerError"])
def test_serve_errors_are_typed(name: str) -> None:
    assert name in TYPES
