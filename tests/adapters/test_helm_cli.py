"""HelmCli without a cluster: parsing and error mapping of *recorded* real helm 3/4 output
(tests/adapters/data/helm/, made by tests/k8s/record_helm_fixtures.py), and the argv it builds,
seen through a fake `helm` executable that replays a fixture."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from safe_updater.adapters.errors import HelmError, OperationInProgressError
from safe_updater.adapters.helm_cli import (
    ChartNotFoundError,
    ChartRef,
    HelmAuthError,
    HelmCli,
    HelmStatus,
    HelmTimeoutError,
    HelmUnavailableError,
    ReleaseNotFoundError,
    RevisionNotFoundError,
    ValuesMode,
    split_chart,
    translate_error,
)
from safe_updater.adapters.helm_models import (
    Release,
    ReleaseMetadata,
    ReleaseRevision,
    ReleaseSummary,
    helm_message,
    parse_json_output,
)
from safe_updater.domain.errors import InvalidInputError, TransientError

DATA = Path(__file__).parent / "data" / "helm"
HELMS = ["helm3", "helm4"]


def fixture(helm: str, name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{helm}_{name}.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("release_not_found", ReleaseNotFoundError),
        ("no_deployed", ReleaseNotFoundError),
        ("revision_not_found", RevisionNotFoundError),
        ("oci_version_not_found", ChartNotFoundError),
        ("http_version_not_found", ChartNotFoundError),
        ("http_chart_not_found", ChartNotFoundError),
        ("oci_unauthorized", HelmAuthError),
        ("repo_unreachable", HelmUnavailableError),
        ("in_progress", OperationInProgressError),
        ("wait_timeout", HelmTimeoutError),
        ("hostile_release", InvalidInputError),
    ],
)
def test_recorded_errors_map_to_typed_errors(helm: str, name: str, error: type) -> None:
    recorded = fixture(helm, name)
    assert recorded["returncode"] != 0
    translated = translate_error(recorded["stderr"], "op")
    assert type(translated) is error, translated
    assert "Pulled:" not in str(translated) and "Digest:" not in str(translated)
    if error is OperationInProgressError:
        assert isinstance(translated, TransientError)
    if error is HelmTimeoutError:
        assert "timed out" in str(translated) and isinstance(translated, HelmError)


def test_unknown_errors_keep_helms_first_lines_without_secrets() -> None:
    error = translate_error(
        "Error: something odd at https://bob:hunter2@charts.example.com/x\npassword=abc\nl3\nl4",
        "helm upgrade web",
    )
    assert type(error) is HelmError
    text = str(error)
    assert "hunter2" not in text and "abc" not in text and "l4" not in text
    assert text.startswith("helm upgrade web: something odd at https://***@charts")
    assert helm_message("") == "no message"


@pytest.mark.parametrize("helm", HELMS)
def test_recorded_json_parses_into_models(helm: str) -> None:
    [summary] = [
        ReleaseSummary.model_validate(r)
        for r in parse_json_output(fixture(helm, "list")["stdout"], "list")
        if r["namespace"] == "NS"
    ]
    assert (summary.chart_name, summary.chart_version, summary.revision) == ("demo", "1.0.1", 2)
    assert summary.status is HelmStatus.DEPLOYED and summary.updated is not None
    history = [
        ReleaseRevision.model_validate(r)
        for r in parse_json_output(fixture(helm, "history_failed")["stdout"], "h")
    ]
    assert [h.status for h in history][:2] == [HelmStatus.SUPERSEDED, HelmStatus.DEPLOYED] or [
        h.status for h in history
    ][-1] in (HelmStatus.FAILED, HelmStatus.DEPLOYED)
    assert history[0].chart_version == "1.0.0" and history[0].updated is not None
    meta = ReleaseMetadata.model_validate(
        parse_json_output(fixture(helm, "metadata")["stdout"], "m")
    )
    assert (meta.chart, meta.version, meta.revision) == ("demo", "1.0.1", 2)
    # helm 4 prints "Pulled:"/"Digest:" on stdout before the JSON
    upgraded = Release.model_validate(parse_json_output(fixture(helm, "upgrade")["stdout"], "u"))
    assert (upgraded.revision, upgraded.status) == (2, HelmStatus.DEPLOYED)
    assert upgraded.chart is not None and upgraded.chart.metadata.version == "1.0.1"
    assert upgraded.config == {"replicaCount": 1}
    status = Release.model_validate(parse_json_output(fixture(helm, "status")["stdout"], "s"))
    assert status.chart is None and status.revision == 2
    assert parse_json_output(fixture(helm, "values")["stdout"], "v") == {"replicaCount": 1}


@pytest.mark.parametrize(
    ("joined", "name", "version"),
    [
        ("demo-1.0.0", "demo", "1.0.0"),
        ("my-chart-2-1.0.0", "my-chart-2", "1.0.0"),
        ("demo-1.0.0-rc.1+build.5", "demo", "1.0.0-rc.1+build.5"),
        ("odd-v2", "odd", "v2"),
    ],
)
def test_split_chart(joined: str, name: str, version: str) -> None:
    assert split_chart(joined) == (name, version)


# --- argv through a fake helm ---------------------------------------------------------------------

FAKE = """#!{python}
import json, os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_HELM_CALLS"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[:1] == ["version"]:
    print(os.environ["FAKE_HELM_VERSION"])
    sys.exit(0)
time.sleep(float(os.environ.get("FAKE_HELM_SLEEP", "0")))
reply = json.load(open(os.environ["FAKE_HELM_REPLY"]))
sys.stdout.write(reply["stdout"]); sys.stderr.write(reply["stderr"])
sys.exit(reply["returncode"])
"""


def fake_helm(tmp_path: Path, helm: str, reply: str, sleep: float = 0) -> tuple[HelmCli, Path]:
    script = tmp_path / "helm"
    script.write_text(FAKE.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    version = fixture(helm, "version")["stdout"].strip()
    env = {
        "FAKE_HELM_CALLS": str(calls),
        "FAKE_HELM_VERSION": version,
        "FAKE_HELM_REPLY": str(DATA / f"{helm}_{reply}.json"),
        "FAKE_HELM_SLEEP": str(sleep),
    }
    return HelmCli(str(script), kubeconfig="/k/config", context="ctx", timeout=5, env=env), calls


def argv(calls: Path) -> list[list[str]]:
    return [json.loads(line) for line in calls.read_text().splitlines()]


@pytest.mark.parametrize("helm", HELMS)
def test_upgrade_flags_per_helm_major(tmp_path: Path, helm: str) -> None:
    cli, calls = fake_helm(tmp_path, helm, "upgrade")
    ref = ChartRef(ref="oci://localhost:5000/charts/demo", version="1.0.1")
    release = cli.upgrade(
        "web", ref, "ns", set_values={"image.tag": "1.2.3"}, wait=True, atomic=True, timeout=90
    )
    assert release.revision == 2
    call = argv(calls)[-1]
    assert call[:1] == ["upgrade"]
    assert call[-3:] == ["--", "web", "oci://localhost:5000/charts/demo"]
    flags = call[1:-3]
    assert all(flag.startswith("--") for flag in flags)
    assert {"--kubeconfig=/k/config", "--kube-context=ctx", "--namespace=ns", "--version=1.0.1",
            "--plain-http", "--reset-then-reuse-values", "--set-string=image.tag=1.2.3",
            "--timeout=90s", "--output=json"} <= set(flags)  # fmt: skip
    if helm == "helm3":
        assert {"--wait", "--atomic"} <= set(flags)
    else:
        assert {"--wait=watcher", "--rollback-on-failure"} <= set(flags)


@pytest.mark.parametrize("helm", HELMS)
def test_dry_run_and_values_modes(tmp_path: Path, helm: str) -> None:
    cli, calls = fake_helm(tmp_path, helm, "upgrade")
    ref = ChartRef(ref="demo", repo="https://charts.example.com", version="1.0.1")
    cli.upgrade("web", ref, "ns", values=ValuesMode.REUSE, dry_run=True)
    flags = argv(calls)[-1]
    assert {"--dry-run=server", "--reuse-values", "--repo=https://charts.example.com"} <= set(flags)
    assert "--plain-http" not in flags and not any(f.startswith("--wait") for f in flags)


def test_helm_past_its_deadline_is_stopped(tmp_path: Path) -> None:
    cli, _ = fake_helm(tmp_path, "helm3", "status", sleep=30)
    cli.timeout = 0.5
    with pytest.raises(HelmTimeoutError, match="timed out"):
        cli.status("web", "ns")


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    cli = HelmCli(str(tmp_path / "nope"))
    with pytest.raises(HelmError, match="cannot run"):
        cli.version()


@pytest.mark.parametrize(
    "bad",
    ["--post-renderer=x", "a;b", "$(id)", "a\nb", "-n", "A", "x" * 64, "a b", "`id`", ""],
)
def test_hostile_names_never_reach_helm(tmp_path: Path, bad: str) -> None:
    cli, calls = fake_helm(tmp_path, "helm4", "status")
    ref = ChartRef(ref="oci://localhost:5000/charts/demo", version="1.0.0")
    for call in (
        lambda: cli.status(bad, "ns"),
        lambda: cli.status("web", bad),
        lambda: cli.rollback(bad, 1, "ns"),
        lambda: cli.upgrade("web", ref, "ns", set_values={"image.tag": bad + ","}),
        lambda: cli.upgrade("web", ref, "ns", set_values={bad + "=": "1"}),
        lambda: ChartRef(ref=bad or "-x", version="1.0.0"),
        lambda: ChartRef(ref="demo", repo=f"https://x/{bad} --debug", version="1.0.0"),
    ):
        with pytest.raises(InvalidInputError):
            call()
    assert not calls.exists() or all(c[0] == "version" for c in argv(calls))


def test_revision_and_context_are_validated() -> None:
    with pytest.raises(InvalidInputError):
        HelmCli("helm", context="--kubeconfig=/etc/x\n")
    cli = HelmCli("helm")
    with pytest.raises(InvalidInputError):
        cli.rollback("web", 0, "ns")


PROGRESS = """#!/bin/sh
# A helm rollback --wait: progress lines on stderr for a while, then the release is settled.
for i in 1 2 3 4 5 6 7 8 9 10; do
  echo "waiting for resources, round $i" >&2
  sleep 0.2
done
echo settled > "$FAKE_HELM_DONE"
"""

KILLED_PARENT = """
import os, sys
from safe_updater.adapters.helm_cli import HelmCli
cli = HelmCli(sys.argv[1], timeout=30, env={"FAKE_HELM_DONE": sys.argv[2]})
print(os.getpid(), flush=True)
cli.run(["rollback"], what="roll back", cluster=False)
"""


def test_helm_finishes_its_operation_when_the_updater_is_killed(tmp_path: Path) -> None:
    """kill -9 of the updater must not take a helm rollback/upgrade down with it (a Go program
    dies of SIGPIPE when it writes to a pipe whose reader is gone): the release would be left
    pending-* with no helm command to clear it."""
    import signal
    import subprocess
    import time

    script = tmp_path / "helm"
    script.write_text(PROGRESS)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    done = tmp_path / "done"
    parent = subprocess.Popen(
        [sys.executable, "-c", KILLED_PARENT, str(script), str(done)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    time.sleep(0.6)  # helm is half-way through its progress lines
    os.kill(pid, signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.exists(), "helm died with the updater instead of finishing"
