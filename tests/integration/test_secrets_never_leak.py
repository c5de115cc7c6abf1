"""A registry password from a `RegistryCredentials` Block never shows up anywhere a person or a
machine can read it: CLI output, Prefect logs, artifacts, events, flow-run parameters and state
messages, the journal and the audit log (the SQLite file as bytes), and the errors of a run
whose credentials the registry refuses.

The canary is the auth registry's real password (random per test bed). Needs `testbed/up docker
registry`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from safe_updater.blocks.registry_credentials import RegistryCredentials
from safe_updater.domain.assets import ImageRef
from safe_updater.domain.errors import SafeUpdaterError
from safe_updater.flows.update_asset import update_asset
from support.docker_scenarios import DockerScenario, describe
from support.leaks import error_texts, file_texts, forms, leaks, prefect_records
from support.testbed import RegistryInfo

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

Scenario = Callable[..., DockerScenario]


def test_block_password_never_leaks(
    scenario: Scenario,
    auth_registry: RegistryInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert auth_registry.username and auth_registry.password
    password = auth_registry.password
    assert len(password) >= 8, "the canary must be distinctive"
    canaries = forms(password, user=auth_registry.username)

    good_block = f"it-good-{uuid.uuid4().hex[:8]}"
    bad_block = f"it-bad-{uuid.uuid4().hex[:8]}"
    RegistryCredentials(
        registry=auth_registry.host, username=auth_registry.username, password=password
    ).save(good_block, overwrite=True)
    # The registry refuses this one: right password, wrong user.
    RegistryCredentials(registry=auth_registry.host, username="nobody", password=password).save(
        bad_block, overwrite=True
    )

    s = scenario(["1.0.0", "1.0.1", "1.0.2"], registry=auth_registry)
    s.start("1.0.0")
    empty = tmp_path / "no-docker-login"
    empty.mkdir()
    # Only the Block can log in: no Docker config file with the login.
    monkeypatch.setenv("DOCKER_CONFIG", str(empty))
    cli_env = {"DOCKER_CONFIG": str(empty)}

    def use_block(name: str) -> None:
        s.write_config(
            f"registries:\n  - host: {auth_registry.host}\n    credentials_block: {name}\n"
        )

    outputs: list[tuple[str, str]] = []

    # 1. A full update through the CLI: 1.0.2 fails and is rolled back, then 1.0.1 goes in.
    use_block(good_block)
    first = s.cli("update", s.asset_id, "--yes", "--json", env=cli_env)
    assert first.returncode == 3, describe(first)
    second = s.cli("update", s.asset_id, "--yes", "--json", env=cli_env)
    assert second.returncode == 0, describe(second)
    s.assert_serving("1.0.1")
    run_ids = [json.loads(first.stdout)["flow_run_id"], json.loads(second.stdout)["flow_run_id"]]
    outputs += [("update 1 stdout", first.stdout), ("update 1 stderr", first.stderr)]
    outputs += [("update 2 stdout", second.stdout), ("update 2 stderr", second.stderr)]
    for args in (["history"], ["audit", "export"], ["quarantine", "list"]):
        done = s.cli(*args, *(["--json"] if args != ["audit", "export"] else []), env=cli_env)
        outputs.append((" ".join(args), done.stdout + done.stderr))

    # 2. A run whose credentials the registry refuses: CLI, then in-process errors.
    use_block(bad_block)
    refused = s.cli("update", s.asset_id, "--yes", "--json", env=cli_env)
    assert refused.returncode != 0, describe(refused)
    outputs.append(("refused update output", refused.stdout + refused.stderr))
    refused_verbose = s.cli(
        "update", s.asset_id, "--yes", env={**cli_env, "SAFE_UPDATER_VERBOSE": "1"}
    )
    assert refused_verbose.returncode != 0, describe(refused_verbose)
    outputs.append(("refused verbose output", refused_verbose.stdout + refused_verbose.stderr))

    errors: list[BaseException] = []
    with s.runtime() as runtime:
        with pytest.raises(SafeUpdaterError) as flow_error:
            update_asset(s.asset_id, approval="defer")
        errors.append(flow_error.value)
        asset = runtime.find_asset(s.asset_id)
        with pytest.raises(SafeUpdaterError) as tags_error:
            runtime.registry.list_tags(ImageRef.parse(s.image("1.0.1")))
        errors.append(tags_error.value)
        # The engine's pull with the refused login (Docker's own error text).
        with pytest.raises(Exception) as pull_error:
            runtime.updater_for(asset).preflight(asset, "1.0.2")
        errors.append(pull_error.value)
    for n, error in enumerate(errors):
        outputs += error_texts(f"error {n}", error)
    assert "refused" in str(errors[1]).lower() or "auth" in str(errors[1]).lower(), errors[1]

    # 3. Everything Prefect holds.
    records = prefect_records(run_ids, name_contains=[s.asset_id])
    assert records.our_logs, "the runs wrote no logs: the check would prove nothing"
    assert records.our_artifacts, "the runs made no artifacts: the check would prove nothing"
    assert records.update_events, "no safe-updater.update.* events: the check would prove nothing"
    outputs += records.texts

    # 4. The state store: the database, its WAL and the per-asset lock files (state.db.locks/).
    outputs += file_texts(s.workdir.glob("state.db*"))

    found = leaks(canaries, outputs)
    assert found == [], f"the registry password leaked into: {found}"
