"""`config generate|validate|reference` and the aliases `generate-config`, `validate-config`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from safe_updater.cli import config_cmds
from safe_updater.config import AppConfig, parse_config_text
from safe_updater.config_reference import render_markdown

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "safe-updater.yaml"

app = typer.Typer()
config_cmds.register(app)
runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SAFE_UPDATER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("command", [["config", "generate"], ["generate-config"]])
def test_generate_prints_a_commented_default_file(command: list[str]) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 0
    assert result.stdout.startswith("# safe-updater.yaml")
    assert parse_config_text(result.stdout) == AppConfig()


def test_generate_output_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.yaml"
    assert runner.invoke(app, ["config", "generate", "--output", str(target)]).exit_code == 0
    assert parse_config_text(target.read_text()) == AppConfig()
    again = runner.invoke(app, ["config", "generate", "--output", str(target)])
    assert again.exit_code == 2 and "--force" in again.stderr
    forced = runner.invoke(app, ["config", "generate", "--output", str(target), "--force"])
    assert forced.exit_code == 0


@pytest.mark.parametrize("command", [["config", "validate"], ["validate-config"]])
def test_validate_valid_file(command: list[str]) -> None:
    result = runner.invoke(app, [*command, str(EXAMPLE)])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"{EXAMPLE}: valid"


@pytest.mark.parametrize("command", [["config", "validate"], ["validate-config"]])
def test_validate_invalid_file_lists_every_problem(command: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "policy:\n  default:\n    minr: approve\n    major: never\nhealth: {window: x}\n"
    )
    result = runner.invoke(app, [*command, str(bad)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{bad}:3: policy.default.minr: unknown key 'minr'; did you mean 'minor'?",
        f"{bad}:4: policy.default.major: must be one of auto, approve, skip",
        f"{bad}:5: health.window: 'x' is not a duration; write durations like 90s, 5m, 1h30m or 2d",
    ]


def test_validate_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  default:\n    major: never\n")
    result = runner.invoke(app, ["config", "validate", str(bad), "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert data["errors"][0]["line"] == 3 and data["errors"][0]["field"] == "policy.default.major"
    ok = runner.invoke(app, ["config", "validate", str(EXAMPLE), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["valid"] is True


def test_validate_missing_file_and_default_path(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["config", "validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    (tmp_path / "safe-updater.yaml").write_text("policy: {default: {minor: skip}}\n")
    default = runner.invoke(app, ["config", "validate"])
    assert default.exit_code == 0 and "safe-updater.yaml: valid" in default.stdout


def test_reference_prints_the_docs() -> None:
    result = runner.invoke(app, ["config", "reference"])
    assert result.exit_code == 0 and result.stdout == render_markdown()
