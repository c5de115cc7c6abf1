"""The layer rule of docs/architecture.md, enforced on the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "safe_updater"
LAYERS = ["domain", "adapters", "blocks", "tasks", "flows", "deployments", "cli"]
RANK = {"domain": 0, "adapters": 1, "blocks": 2, "tasks": 3, "flows": 4, "deployments": 5, "cli": 6}
# Modules in domain/ must stay pure: no I/O libraries.
IO_MODULES = {
    "os",
    "subprocess",
    "socket",
    "httpx",
    "docker",
    "kubernetes",
    "sqlalchemy",
    "requests",
    "urllib",
    "shutil",
    "pathlib",
    "time",
    "prefect",
}
PURE_EXCEPTIONS = {"urllib.parse"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_downward(layer: str) -> None:
    offenders = []
    for path in _modules(layer):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "safe_updater" or len(parts) < 2 or parts[1] not in RANK:
                continue
            if RANK[parts[1]] > RANK[layer]:
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offenders == []


@pytest.mark.parametrize("layer", ["domain", "adapters"])
def test_no_prefect_below_blocks(layer: str) -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules(layer)
        for name in _imports(path)
        if name.split(".")[0] == "prefect"
    ]
    assert offenders == []


def test_domain_does_no_io() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules("domain")
        for name in _imports(path)
        if name.split(".")[0] in IO_MODULES and name not in PURE_EXCEPTIONS
    ]
    assert offenders == []


def test_no_module_named_after_a_library_it_imports() -> None:
    # `adapters/docker.py` importing `docker` reads as the library to humans and to tools.
    bad = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.stem in {name.split(".")[0] for name in _imports(p)} | {"prefect", "tasks", "flows"}
    ]
    assert bad == []


def test_the_rule_detects_a_violation(tmp_path: Path) -> None:
    # A test that cannot fail is a defect: show the parser sees an upward import.
    bad = tmp_path / "bad.py"
    bad.write_text("from safe_updater.flows.update_asset import update_asset\n")
    assert "safe_updater.flows.update_asset" in _imports(bad)
