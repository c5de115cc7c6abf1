"""`compare` and `evaluate`: exit codes, JSON keys, human output, errors on one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from safe_updater.cli import config_cmds, versions_cmds

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / ".venv" / "bin" / "safe-updater"
EXAMPLE = ROOT / "examples" / "safe-updater.yaml"

app = typer.Typer()
versions_cmds.register(app)
config_cmds.register(app)
runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SAFE_UPDATER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./safe-updater.yaml: built-in defaults


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("current", "candidate", "change", "newer"),
    [
        ("1.2.3", "1.3.0", "minor", True),
        ("v1.2.3", "1.2.4", "patch", True),
        ("1.20", "1.20.0", "none", False),
        ("2.0.0", "1.9.9", "downgrade", False),
        ("7.9.1-1-ubi8", "3.0.0", "incomparable", False),
        ("2021.12.16", "2.0.0", "incomparable", False),
    ],
)
def test_compare_json(current: str, candidate: str, change: str, newer: bool) -> None:
    code, out, _ = invoke("compare", current, candidate, "--json")
    assert code == 0
    assert json.loads(out) == {
        "current": current,
        "candidate": candidate,
        "change_type": change,
        "newer": newer,
    }


def test_compare_human() -> None:
    code, out, _ = invoke("compare", "1.2.3", "2.0.0")
    assert code == 0 and out.strip() == "1.2.3 -> 2.0.0: major (newer)"


def test_compare_bad_tag_is_exit_2_with_one_line() -> None:
    code, out, err = invoke("compare", "1.2.3", "bad tag!")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "fix:" in err


def test_evaluate_json_keys() -> None:
    code, out, _ = invoke(
        "evaluate", "--current", "1.2.3", "--tags", "1.2.4,1.3.0,2.0.0,1.2.2,latest", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert list(data) == ["auto_target", "approval_target", "candidates", "reasons"]
    assert data["auto_target"] == "1.2.4" and data["approval_target"] == "1.3.0"
    for candidate in data["candidates"]:
        assert list(candidate) == ["tag", "change_type", "accepted", "action", "reason"]
    assert {c["tag"] for c in data["candidates"]} == {"1.2.4", "1.3.0", "2.0.0", "1.2.2", "latest"}
    assert all(isinstance(r, str) for r in data["reasons"])


def test_evaluate_tags_file(tmp_path: Path) -> None:
    tags = tmp_path / "tags.txt"
    tags.write_text("# from the registry\n1.2.4\n\n1.3.0\n")
    code, out, _ = invoke("evaluate", "--current", "1.2.3", "--tags-file", str(tags), "--json")
    assert code == 0 and json.loads(out)["auto_target"] == "1.2.4"


def test_evaluate_with_config_kind_and_namespace() -> None:
    args = ["evaluate", "--config", str(EXAMPLE), "--current", "1.2.3", "--tags", "1.2.4,1.3.0"]
    code, out, _ = invoke(*args, "--kind", "kubernetes", "--namespace", "prod", "--json")
    assert code == 0 and json.loads(out)["auto_target"] == "1.2.4"  # helm override not matched
    prod = [*args, "--kind", "helm", "--namespace", "prod", "--at", "2025-03-05T22:30:00+01:00"]
    prod += ["--released", "1.2.4=2025-01-01T00:00Z", "--released", "1.3.0=2025-01-01T00:00Z"]
    code, out, _ = invoke(*prod, "--json")
    data = json.loads(out)
    assert code == 0
    assert data["auto_target"] is None and data["approval_target"] == "1.3.0"  # quorum 2 in prod
    assert any("inside maintenance window" in r for r in data["reasons"])


def test_evaluate_labels_override_the_file() -> None:
    code, out, _ = invoke(
        "evaluate", "--current", "1.2.3", "--tags", "1.3.0", "--json",
        "--label", "safe-updater.io/policy.minor=auto",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["auto_target"] == "1.3.0"


def test_evaluate_human_output_is_a_table() -> None:
    code, out, _ = invoke("evaluate", "--current", "1.2.3", "--tags", "1.2.4,1.3.0")
    assert code == 0
    assert "auto target:     1.2.4" in out and "approval target: 1.3.0" in out
    assert "reason" in out and "┃" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--current", "1.2.3"], "exactly one of --tags or --tags-file"),
        (["--current", "1.2.3", "--tags", "1", "--tags-file", "x"], "exactly one of"),
        (["--current", "1.2.3", "--tags-file", "/nonexistent/tags"], "cannot read the tags file"),
        (["--current", "bad tag!", "--tags", "1.2.4"], "contains ' '"),
        (["--current", "1.2.3", "--tags", "1", "--config", "/nonexistent.yaml"], "does not exist"),
        (["--current", "1.2.3", "--tags", "1", "--label", "novalue"], "is not KEY=VALUE"),
        (
            ["--current", "1.2.3", "--tags", "1", "--label", "safe-updater.io/policy.minor=x"],
            "safe-updater.io/policy.minor: must be one of auto, approve, skip",
        ),
        (["--current", "1.2.3", "--tags", "1", "--at", "yesterday"], "not a time with a zone"),
    ],
)
def test_evaluate_bad_input_is_exit_2(args: list[str], message: str) -> None:
    code, out, err = invoke("evaluate", *args)
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and out == ""


def test_evaluate_bad_config_file_reports_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  default:\n    minor: sometimes\n")
    code, _, err = invoke("evaluate", "--config", str(bad), "--current", "1.2.3", "--tags", "1")
    assert code == 2
    assert f"{bad}:3: policy.default.minor: must be one of auto, approve, skip" in err


def test_installed_binary_end_to_end(tmp_path: Path) -> None:
    ok = subprocess.run(
        [str(BINARY), "evaluate", "--current", "1.2.3", "--tags", "1.2.4,1.3.0", "--json"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["approval_target"] == "1.3.0"
    bad = subprocess.run(
        [str(BINARY), "compare", "1.2.3", "bad!tag"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
