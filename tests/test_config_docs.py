"""docs/configuration.md is generated from the models and must be up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from safe_updater.config import AppConfig
from safe_updater.config_reference import render_markdown
from safe_updater.domain import labels

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"


def test_reference_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/configuration.md is stale: run .venv/bin/python scripts/gen-config-docs"
    )


def test_check_mode_of_the_script() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-config-docs"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_section_and_label_is_documented() -> None:
    text = render_markdown()
    for section in AppConfig.model_fields:
        assert f"| `{section}` |" in text
    for key in (*labels.POLICY_KEYS, *labels.OTHER_KEYS):
        assert f"`{key}`" in text
    assert "`policy.default.approval.deadline` | duration | `24h`" in text
