"""Security tests: a state store on SQLite and on the test bed's PostgreSQL, and the CLI.

PostgreSQL comes from the test bed (`testbed/up postgres`); each test gets a database of its
own, dropped afterwards, so raw-SQL tampering in one test cannot leak into another.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safe_updater.cli.app import main
from support.databases import scratch_database


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test; dropped (forcibly) afterwards."""
    with scratch_database(postgres_url, "su_sec") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    url: str = request.getfixturevalue("pg_database")
    return url


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, object]:
        data = json.loads(self.out)
        assert isinstance(data, dict), self.out
        return data


@pytest.fixture
def cli(
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., CliResult]:
    """`safe-updater ARGS...` in-process through the real entry point, on ``store_url``."""
    monkeypatch.chdir(tmp_path)  # no ./safe-updater.yaml
    monkeypatch.delenv("SAFE_UPDATER_CONFIG", raising=False)
    monkeypatch.setenv("SAFE_UPDATER_STATE_URL", store_url)
    monkeypatch.setenv("SAFE_UPDATER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "400")  # one line per message, as a log collector sees it

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        code = exit_info.value.code
        return CliResult(code if isinstance(code, int) else 1, out, err)

    return run
