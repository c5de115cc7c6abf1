"""Process settings from the environment (``SAFE_UPDATER_*``).

Only this module and Blocks read the environment. The config *file* holds what an operator
versions in git; these settings say where that file and the state live on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from safe_updater.config import AppConfig

DEFAULT_CONFIG_PATH = Path("safe-updater.yaml")
STATE_DB_NAME = "state.db"


class Settings(BaseSettings):
    """``SAFE_UPDATER_CONFIG``, ``SAFE_UPDATER_STATE_URL`` and ``SAFE_UPDATER_HOME``."""

    model_config = SettingsConfigDict(
        env_prefix="SAFE_UPDATER_", extra="ignore", env_ignore_empty=True
    )

    config: Path | None = Field(
        default=None,
        description="Config file to load instead of ./safe-updater.yaml; it must exist.",
    )
    state_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the state database; wins over state.url in the config.",
    )
    home: Path = Field(
        default=Path("~/.safe-updater"),
        validate_default=True,
        description="State directory; the default SQLite database is <home>/state.db.",
    )

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def default_state_url(self) -> str:
        return f"sqlite:///{self.home / STATE_DB_NAME}"

    def resolve_state_url(self, config: AppConfig | None = None) -> str:
        """The environment, then ``state.url`` in the config, then SQLite in the home directory."""
        if self.state_url:
            return self.state_url
        if config is not None and config.state.url:
            return config.state.url
        return self.default_state_url
