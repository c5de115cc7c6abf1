"""What tests/ui needs: node, Chromium and playwright-core (scripts/install-ui-deps)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INSTALL_HINT = "run scripts/install-ui-deps"


@dataclass(frozen=True)
class UiTools:
    """node, Chromium and the playwright-core cache that tests/ui/approve_in_ui.mjs uses."""

    node: str
    chromium: Path
    node_modules: Path
    script: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SAFE_UPDATER_UI_NODE"] = str(self.node_modules.parent)
        env["CHROMIUM"] = str(self.chromium)
        return env


def ui_node_cache() -> Path:
    """Where scripts/install-ui-deps puts playwright-core (outside the repository)."""
    explicit = os.environ.get("SAFE_UPDATER_UI_NODE")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "safe-updater-testbed" / "ui-node"
