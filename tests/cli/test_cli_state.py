"""The read and housekeeping commands over a real SQLite state store, through the real entry point.

`history`, `stats`, `assets`/`list-assets`, `quarantine list|clear`, `pin`, `audit
verify|export`, and the one-line usage errors of `main()`. The store is filled through
`StateStore` (the same code the flows use); the commands run in-process through
`safe_updater.cli.app.main(argv)` and, once, as the installed `safe-updater` executable.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from safe_updater.adapters.store import StateStore
from safe_updater.cli.app import main
from safe_updater.domain.assets import Asset, AssetId, AssetKind, ImageRef
from safe_updater.domain.journal import Outcome, Phase

EXECUTABLE = Path(sys.executable).with_name("safe-updater")

WEB = "docker:local/web"
API = "docker:local/api"
DB = "docker:local/db"
CHART = "helm:prod/shop/api"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@pytest.fixture
def state_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store with four assets, five attempts, one quarantined version and three audit records."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.chdir(tmp_path)  # no ./safe-updater.yaml
    monkeypatch.delenv("SAFE_UPDATER_CONFIG", raising=False)
    monkeypatch.setenv("SAFE_UPDATER_STATE_URL", url)
    monkeypatch.setenv("SAFE_UPDATER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SAFE_UPDATER_ACTOR", "tester")
    monkeypatch.setenv("COLUMNS", "200")
    with StateStore.open(url) as store:
        store.assets.upsert(
            [
                _docker(WEB, "1.0.1"),
                _docker(API, "1.0.1"),
                _docker(DB, "15.2"),
                Asset(
                    id=AssetId(CHART),
                    kind=AssetKind.HELM,
                    target="prod",
                    name="api",
                    namespace="shop",
                    chart="api",
                    current_version="2.3.4",
                ),
            ]
        )
        _attempt(store, WEB, "1.0.0", "1.0.1", "k1", Outcome.UPDATED, "1.0.1 is healthy")
        rolled = _attempt(
            store, WEB, "1.0.1", "1.0.2", "k2", Outcome.ROLLED_BACK, "1.0.2: HTTP 404 on /healthz"
        )
        store.quarantine.add(WEB, "1.0.2", "failed verification: HTTP 404", rolled)
        _attempt(store, API, "1.0.1", "1.1.0", "k3", Outcome.AWAITING_APPROVAL, "minor: approve")
        _attempt(store, CHART, "2.3.3", "2.3.4", "k4", Outcome.UPDATED, "release deployed")
        opened = store.journal.open_attempt(
            asset_id=DB,
            from_version="15.2",
            to_version="15.3",
            change_type="minor",
            idempotency_key="k5",
        )
        store.journal.advance(opened.id, Phase.VERIFYING)
        for event in ("update.applied", "update.rolled-back", "quarantine.added"):
            store.audit.append(event, asset_id=WEB, actor="flow", data={"version": "1.0.2"})
    return url


def _docker(asset_id: str, version: str) -> Asset:
    name = asset_id.rsplit("/", 1)[1]
    return Asset(
        id=AssetId(asset_id),
        kind=AssetKind.DOCKER,
        target="local",
        name=name,
        image=ImageRef(registry="localhost:5000", repository=f"demo/{name}", tag=version),
        current_version=version,
        labels={"safe-updater.io/enabled": "true"},
    )


def _attempt(
    store: StateStore, asset: str, old: str, new: str, key: str, outcome: Outcome, why: str
) -> int:
    row = store.journal.open_attempt(
        asset_id=asset, from_version=old, to_version=new, change_type="patch", idempotency_key=key
    )
    store.journal.close(row.id, outcome, why)
    return row.id


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `safe-updater ARGS...` in-process through `main()`; returns code, stdout, stderr."""

    def run(*args: str) -> Result:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        code = exit_info.value.code
        return Result(code if isinstance(code, int) else 1, out, err)

    return run


def assert_one_line_error(result: Result, code: int = 2) -> str:
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err and "╭" not in result.err
    return lines[0]


# --- history -------------------------------------------------------------------------------------


def test_history_json_is_newest_first_with_every_field(cli, state_url: str) -> None:
    result = cli("history", "--json")
    assert result.code == 0, result.err
    rows = result.json()
    assert isinstance(rows, list)
    assert [r["asset"] for r in rows] == [DB, CHART, API, WEB, WEB]
    assert [r["outcome"] for r in rows] == [
        None,
        "updated",
        "awaiting_approval",
        "rolled_back",
        "updated",
    ]
    assert rows[0]["phase"] == "verifying" and rows[0]["finished_at"] is None
    assert set(rows[0]) == {
        "id",
        "asset",
        "from",
        "to",
        "change_type",
        "phase",
        "outcome",
        "reason",
        "flow_run_id",
        "started_at",
        "finished_at",
    }


def test_history_of_one_asset_and_limit(cli, state_url: str) -> None:
    rows = cli("history", WEB, "--json").json()
    assert [(r["from"], r["to"], r["outcome"]) for r in rows] == [
        ("1.0.1", "1.0.2", "rolled_back"),
        ("1.0.0", "1.0.1", "updated"),
    ]
    assert len(cli("history", "-n", "1", "--json").json()) == 1
    assert cli("history", "docker:local/never-seen", "--json").json() == []


def test_history_table_shows_open_attempts(cli, state_url: str) -> None:
    result = cli("history")
    assert result.code == 0
    assert "open (verifying)" in result.out
    assert "rolled_back" in result.out and "1.0.2" in result.out


# --- stats ---------------------------------------------------------------------------------------


def test_stats_json_counts_and_rates(cli, state_url: str) -> None:
    data = cli("stats", "--json").json()
    assert isinstance(data, dict)
    assert data["period"] == "7d"
    assert data["assets"] == {"docker": 3, "k8s": 0, "helm": 1}
    outcomes = {k: v for k, v in data["outcomes"].items() if v}
    assert outcomes == {"updated": 2, "rolled_back": 1, "awaiting_approval": 1}
    assert data["pending_approvals"] == 1
    assert data["success_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert data["rollback_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert data["quarantined_versions"] == 1
    assert data["open_attempts"] == 1


def test_stats_table(cli, state_url: str) -> None:
    result = cli("stats", "--period", "30d")
    assert result.code == 0
    assert "success rate 66.7%" in result.out and "1 open attempts" in result.out


def test_stats_bad_period_is_one_line(cli, state_url: str) -> None:
    line = assert_one_line_error(cli("stats", "--period", "a week"))
    assert "--period" in line


# --- assets / list-assets ------------------------------------------------------------------------


def test_assets_and_the_list_assets_alias(cli, state_url: str) -> None:
    assets = cli("assets", "--json")
    alias = cli("list-assets", "--json")
    assert assets.code == alias.code == 0
    assert assets.json() == alias.json()
    by_id = {a["id"]: a for a in assets.json()}  # type: ignore[attr-defined]
    assert set(by_id) == {WEB, API, DB, CHART}
    assert by_id[WEB]["version"] == "1.0.1" and by_id[WEB]["quarantined"] == 1
    assert by_id[WEB]["image"] == "localhost:5000/demo/web:1.0.1"
    helm_only = cli("assets", "--kind", "helm", "--json").json()
    assert [a["id"] for a in helm_only] == [CHART]  # type: ignore[union-attr,index]


def test_assets_bad_kind_is_one_line(cli, state_url: str) -> None:
    line = assert_one_line_error(cli("assets", "--kind", "vm"))
    assert "use docker, k8s or helm" in line


# --- quarantine ----------------------------------------------------------------------------------


def test_quarantine_list_and_clear(cli, state_url: str) -> None:
    listed = cli("quarantine", "list", "--json").json()
    assert listed == [
        {
            "asset": WEB,
            "version": "1.0.2",
            "reason": "failed verification: HTTP 404",
            "attempt": 2,
            "since": listed[0]["since"],  # type: ignore[index]
        }
    ]
    assert cli("quarantine", "list", API, "--json").json() == []
    table = cli("quarantine", "list")
    assert "1 quarantined versions" in table.out and "1.0.2" in table.out

    other = cli("quarantine", "clear", WEB, "--version", "9.9.9", "--json").json()
    assert other == {"asset": WEB, "version": "9.9.9", "removed": 0}
    cleared = cli("quarantine", "clear", WEB, "--version", "1.0.2")
    assert cleared.code == 0
    assert cleared.out.strip() == f"cleared 1 quarantined version(s) of {WEB}"
    assert cli("quarantine", "list", "--json").json() == []

    events = [json.loads(line) for line in cli("audit", "export").out.splitlines()]
    last = events[-1]
    assert last["event"] == "quarantine.cleared" and last["actor"] == "tester"
    assert last["data"] == {"version": "1.0.2", "removed": 1}


def test_quarantine_without_subcommand_shows_help(cli, state_url: str) -> None:
    result = cli("quarantine")
    assert result.code == 2
    assert "list" in result.out and "clear" in result.out


# --- pin -----------------------------------------------------------------------------------------


def test_pin_set_show_and_clear(cli, state_url: str) -> None:
    assert cli("pin", API, "1.0.1", "--reason", "freeze", "--json").json() == {
        "asset": API,
        "pinned": "1.0.1",
    }
    by_id = {a["id"]: a for a in cli("assets", "--json").json()}  # type: ignore[attr-defined]
    assert by_id[API]["pinned"] == "1.0.1" and by_id[WEB]["pinned"] is None

    cleared = cli("pin", API, "--clear")
    assert cleared.code == 0 and cleared.out.strip() == f"{API}: pin cleared"
    by_id = {a["id"]: a for a in cli("assets", "--json").json()}  # type: ignore[attr-defined]
    assert by_id[API]["pinned"] is None

    events = [json.loads(line)["event"] for line in cli("audit", "export").out.splitlines()]
    assert events[-2:] == ["pin.set", "pin.cleared"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("pin", API), "give either VERSION or --clear"),
        (("pin", API, "1.0.1", "--clear"), "give either VERSION or --clear"),
        (("pin", "web", "1.0.1"), "is not an asset id"),
    ],
)
def test_pin_bad_input_is_one_line(
    cli, state_url: str, args: tuple[str, ...], fragment: str
) -> None:
    line = assert_one_line_error(cli(*args))
    assert fragment in line and "(fix: " in line


# --- audit ---------------------------------------------------------------------------------------


def test_audit_verify_and_export(cli, state_url: str) -> None:
    ok = cli("audit", "verify")
    assert ok.code == 0 and ok.out.strip() == "audit chain OK: 3 records"
    assert cli("audit", "verify", "--json").json() == {
        "ok": True,
        "records": 3,
        "first_bad_seq": None,
        "problem": None,
    }
    exported = cli("audit", "export", "--format", "jsonl")
    assert exported.code == 0
    records = [json.loads(line) for line in exported.out.splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert [r["event"] for r in records] == [
        "update.applied",
        "update.rolled-back",
        "quarantine.added",
    ]
    assert all(r["prev_hash"] == p["hash"] for p, r in itertools.pairwise(records))


def test_audit_verify_names_an_edited_record(cli, state_url: str) -> None:
    path = state_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    broken = cli("audit", "verify")
    assert broken.code == 1
    assert broken.out.strip() == (
        "audit chain BROKEN at record 2: seq 2 does not match its hash: the record was edited"
    )
    data = cli("audit", "verify", "--json").json()
    assert data["ok"] is False and data["first_bad_seq"] == 2  # type: ignore[index]


def test_audit_export_other_format_is_one_line(cli, state_url: str) -> None:
    line = assert_one_line_error(cli("audit", "export", "--format", "csv"))
    assert "use --format jsonl" in line


# --- usage errors: one line, exit 2, never Click's box ------------------------------------------


@pytest.mark.parametrize(
    ("args", "command", "fragment"),
    [
        (("update",), "safe-updater update", "Missing argument 'ASSET'"),
        (("history", "--limit", "x"), "safe-updater history", "Invalid value for '--limit'"),
        (("history", "--limit", "0"), "safe-updater history", "greater than or equal to 1"),
        (("stats", "--bogus"), "safe-updater stats", "No such option: --bogus"),
        (("evaluate", "--current", "1.0", "--kind", "vm"), "safe-updater evaluate", "'vm'"),
        (("histroy",), "safe-updater", "No such command 'histroy'"),
        (("quarantine", "purge"), "safe-updater quarantine", "No such command 'purge'"),
        # Click raises a missing option value on the top-level context: the fix names the root.
        (("audit", "export", "--format"), "safe-updater", "requires an argument"),
    ],
)
def test_usage_errors_are_one_line_with_the_fix(
    cli, state_url: str, args: tuple[str, ...], command: str, fragment: str
) -> None:
    line = assert_one_line_error(cli(*args))
    assert fragment in line
    assert line.endswith(f"(fix: see `{command} --help`)")


def test_help_still_works(cli, state_url: str) -> None:
    top = cli("--help")
    assert top.code == 0 and "Usage" in top.out and "update" in top.out
    sub = cli("quarantine", "clear", "--help")
    assert sub.code == 0 and "--version" in sub.out and sub.err == ""


def test_no_command_prints_help(cli, state_url: str) -> None:
    result = cli()
    assert result.code == 2
    assert "Usage" in result.out and "history" in result.out


# --- the installed executable --------------------------------------------------------------------


def _run_executable(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXECUTABLE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_installed_executable(state_url: str, tmp_path: Path) -> None:
    assert EXECUTABLE.exists(), f"{EXECUTABLE} is missing: install the package (scripts/setup-venv)"
    env = {**os.environ, "SAFE_UPDATER_STATE_URL": state_url}
    history = _run_executable("history", WEB, "--json", env=env)
    assert history.returncode == 0, history.stderr
    assert [r["to"] for r in json.loads(history.stdout)] == ["1.0.2", "1.0.1"]

    missing = _run_executable("pin", env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "error: Missing argument 'ASSET'. (fix: see `safe-updater pin --help`)"
    )
    assert missing.stdout == ""

    bad_store = _run_executable(
        "stats", env={**env, "SAFE_UPDATER_STATE_URL": "mysql://root@127.0.0.1/x"}
    )
    assert bad_store.returncode == 2, bad_store.stderr
    assert len(bad_store.stderr.strip().splitlines()) == 1
    assert bad_store.stderr.startswith("error: ") and "Traceback" not in bad_store.stderr
