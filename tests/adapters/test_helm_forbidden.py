"""helm refused by the cluster's RBAC: our error names the missing verb, the resource and the
role to grant it in. The stderr lines are helm 3.19's and helm 4.3's own (recorded on the test
cluster, tests/k8s/test_k8s_cluster_rbac.py), run through a stand-in helm binary."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from safe_updater.adapters.helm_cli import (
    HelmAuthError,
    HelmCli,
    HelmTimeoutError,
    forbidden_error,
)
from safe_updater.adapters.helm_models import ChartRef

USER = 'User "system:serviceaccount:apps:safe-updater"'

CASES = [
    (  # helm 3 and 4: helm list in one namespace
        f'Error: list: failed to list: secrets is forbidden: {USER} cannot list resource "secrets"'
        ' in API group "" in the namespace "apps"',
        "list",
        "secrets",
        " in namespace apps",
    ),
    (  # helm 3: reading an object of the chart before patching it
        "Error: UPGRADE FAILED: could not get information about the resource: deployments.apps"
        f' "web-demo" is forbidden: {USER} cannot get resource "deployments" in API group "apps"'
        ' in the namespace "apps"',
        "get",
        "apps/deployments",
        " in namespace apps",
    ),
    (  # helm 4: server-side apply of a new object
        "Error: UPGRADE FAILED: failed to create resource: server-side apply failed for object"
        ' apps/web-demo-new batch/v1, Kind=CronJob: cronjobs.batch "web-demo-new" is forbidden:'
        f' {USER} cannot create resource "cronjobs" in API group "batch" in the namespace "apps"',
        "create",
        "batch/cronjobs",
        " in namespace apps",
    ),
    (  # helm list --all-namespaces
        f"Error: list: failed to list: secrets is forbidden: {USER} cannot list resource"
        ' "secrets" in API group "" at the cluster scope',
        "list",
        "secrets",
        " at the cluster scope",
    ),
]

FAKE = """#!{python}
import sys
if sys.argv[1:2] == ["version"]:
    print("v3.19.0+g3d8990f")
    sys.exit(0)
sys.stderr.write(open({stderr!r}).read())
sys.exit(1)
"""


def fake_helm(tmp_path: Path, stderr: str) -> HelmCli:
    (tmp_path / "stderr").write_text(stderr + "\n")
    script = tmp_path / "helm"
    script.write_text(FAKE.format(python=sys.executable, stderr=str(tmp_path / "stderr")))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return HelmCli(str(script), timeout=10)


@pytest.mark.parametrize(("stderr", "verb", "resource", "where"), CASES)
def test_an_rbac_refusal_names_the_missing_verb_and_resource(
    tmp_path: Path, stderr: str, verb: str, resource: str, where: str
) -> None:
    cli = fake_helm(tmp_path, stderr)
    with pytest.raises(HelmAuthError) as info:
        cli.list_releases("apps")
    text = str(info.value)
    assert text.startswith(f"helm list: forbidden: the updater may not {verb} {resource}{where}")
    assert f"(missing RBAC verb {verb!r} on {resource})" in text
    assert "safe-updater-helm" in text and "RoleBinding" in text, text
    assert "chart repository" not in text  # not the registry-login hint


def test_an_upgrade_refused_by_rbac_names_the_operation(tmp_path: Path) -> None:
    stderr, _, _, _ = CASES[2]
    cli = fake_helm(tmp_path, stderr)
    with pytest.raises(HelmAuthError) as info:
        cli.upgrade(
            "web", ChartRef(ref="oci://localhost:5000/charts/demo", version="1.0.1"), "apps"
        )
    assert str(info.value).startswith(
        "helm upgrade web oci://localhost:5000/charts/demo@1.0.1: forbidden: the updater may not "
        "create batch/cronjobs in namespace apps (missing RBAC verb 'create' on batch/cronjobs)"
    )


def test_other_refusals_are_not_rbac() -> None:
    """A chart repository's 403 is a login problem, not the cluster's RBAC."""
    repo_403 = "Error: failed to fetch https://c.example/index.yaml : 403 Forbidden"
    assert forbidden_error(repo_403, "x") is None
    assert (
        forbidden_error("Error: UPGRADE FAILED: timed out waiting for the condition", "x") is None
    )


def test_a_wait_on_an_unreadable_status_points_at_rbac(tmp_path: Path) -> None:
    """helm 4 turns a refused list of a StatefulSet's pods into a wait that times out."""
    cli = fake_helm(
        tmp_path,
        "Error: release web failed: resource StatefulSet/apps/web-demo not ready. status: Unknown,"
        " message: | context deadline exceeded",
    )
    with pytest.raises(HelmTimeoutError) as info:
        cli.rollback("web", 1, "apps", timeout=10)
    assert "timed out" in info.value.message
    assert "`list` on pods or apps/replicasets" in str(info.value)
    assert "safe-updater-helm" in str(info.value)


def test_a_plain_wait_timeout_keeps_its_message(tmp_path: Path) -> None:
    cli = fake_helm(tmp_path, "Error: UPGRADE FAILED: timed out waiting for the condition")
    with pytest.raises(HelmTimeoutError) as info:
        cli.rollback("web", 1, "apps", timeout=10)
    assert info.value.hint is None
