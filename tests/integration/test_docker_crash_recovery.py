"""The kill matrix: `safe-updater update` is killed with SIGKILL at every step boundary of a
real Docker update (failpoints, see src/safe_updater/failpoints.py and docs/testing.md), then
`safe-updater recover` (or simply the next `safe-updater update`) must leave the asset whole:

* exactly one container for the asset runs, named `<name>` (no `-prev`/`-next` left);
* it serves the old version, or the new one only if that was verified;
* no journal row is left open, and the audit chain verifies;
* no quarantine entry is duplicated, and a bad version that failed on its merits ends
  quarantined.

Every process is a real subprocess against the session's Prefect server. Needs `testbed/up
docker registry`.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from safe_updater.domain.journal import Outcome
from support.docker_scenarios import DockerScenario, describe, private_repo, publish_tags
from support.testbed import RegistryInfo

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

Scenario = Callable[..., DockerScenario]
OLD, GOOD, BAD = "1.0.0", "1.0.1", "1.0.2"


@dataclass(frozen=True)
class Case:
    point: str
    target: str  # the version the killed update goes to: GOOD or BAD
    recovered: str  # the outcome `recover` records for the attempt

    @property
    def id(self) -> str:
        return f"{self.point}-{'good' if self.target == GOOD else 'bad'}"


CASES = [
    # commit side: a healthy new version
    Case("after-open", GOOD, "failed"),
    Case("after-pull", GOOD, "failed"),
    Case("after-phase:snapshotted", GOOD, "failed"),
    Case("after-phase:applying", GOOD, "rolled_back"),
    Case("after-apply", GOOD, "rolled_back"),
    Case("mid-verify", GOOD, "updated"),
    Case("after-phase:committing", GOOD, "updated"),
    # rollback side: a version whose /healthz answers 404
    Case("mid-verify", BAD, "rolled_back"),
    Case("after-phase:rolling_back", BAD, "rolled_back"),
    Case("mid-rollback", BAD, "rolled_back"),
    Case("after-quarantine", BAD, "rolled_back"),
]


def _id(case: Case | Any) -> str:
    return case.id if isinstance(case, Case) else str(case.id)


@pytest.fixture(scope="module")
def repos(registry: RegistryInfo) -> dict[str, str]:
    """Two private repositories: one whose only update is good, one whose only update is bad."""
    good, bad = private_repo(), private_repo()
    publish_tags(registry, good, [OLD, GOOD])
    publish_tags(registry, bad, [OLD, BAD])
    return {GOOD: good, BAD: bad}


@pytest.mark.parametrize("finish", ["recover", "update-again"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_killed_update_is_finished_safely(
    scenario: Scenario, repos: dict[str, str], case: Case, finish: str
) -> None:
    s = scenario(repo=repos[case.target])
    s.start(OLD)

    killed = s.cli(
        "update", s.asset_id, "--yes", "--json", env={"SAFE_UPDATER_FAILPOINTS": case.point}
    )
    assert killed.returncode == -signal.SIGKILL, describe(killed)
    with s.store() as store:
        [open_attempt] = store.journal.find_open(s.asset_id)
        assert open_attempt.to_version == case.target

    if finish == "recover":
        done = s.cli("recover", "--json")
        assert done.returncode == (1 if case.recovered == "failed" else 0), describe(done)
        [recovered] = s.cli_json("history", s.asset_id)
        assert recovered["outcome"] == case.recovered, recovered
        expected = GOOD if case.recovered == "updated" else OLD
    else:
        done = s.cli("update", s.asset_id, "--yes", "--json")
        assert done.returncode == 0, describe(done)
        # A good version is applied (by recovery or by the new attempt); a bad one stays out.
        expected = GOOD if case.target == GOOD else OLD

    check_invariants(s, case, expected)


def check_invariants(s: DockerScenario, case: Case, expected: str) -> None:
    # Exactly one container for the asset, under its own name, serving the expected version.
    s.assert_serving(expected)

    history = s.cli_json("history", s.asset_id)
    assert history, "the journal lost the attempt"
    assert all(row["outcome"] is not None for row in history), history
    if expected == GOOD:
        assert any(r["outcome"] == "updated" and r["to"] == GOOD for r in history), history

    verify = s.cli("audit", "verify", "--json")
    assert verify.returncode == 0, describe(verify)

    with s.store() as store:
        entries = store.quarantine.list(s.asset_id)
        assert store.journal.find_open(s.asset_id) == []
        rows = store.journal.history(s.asset_id)
    per_version = Counter(e.version for e in entries)
    assert all(n == 1 for n in per_version.values()), entries
    if case.target == BAD:
        # It failed verification (before or after the kill): it must stay out.
        assert set(per_version) == {BAD}, entries
        assert any(r.outcome is Outcome.ROLLED_BACK for r in rows)
    else:
        assert per_version == Counter(), entries
