"""HelmCli, ChartSources, HelmReleaseUpdater and HelmInventory against the real test cluster.

Real kube-apiserver, real helm 3.19 and 4.3 (the `helm` fixture is parametrized), real OCI and
HTTP chart repositories (docs/test-cluster.md). The demo chart: 1.0.0/1.0.1/1.1.0/2.0.0 good,
1.0.2 broken (pods never Ready), 1.1.1 crash-looping.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8s_support import Helm, K8sCluster, pod_images, ready_pods, tool_env, wait_until

from safe_updater.adapters.chart_sources import ChartSources
from safe_updater.adapters.errors import OperationInProgressError
from safe_updater.adapters.helm_cli import (
    ChartRef,
    HelmCli,
    HelmStatus,
    ReleaseNotFoundError,
    RevisionNotFoundError,
)
from safe_updater.adapters.helm_inventory import HelmInventory
from safe_updater.adapters.helm_updater import HelmReleaseUpdater
from safe_updater.adapters.registry import OciRegistry
from safe_updater.domain.assets import Asset, AssetKind, helm_asset_id
from safe_updater.domain.errors import InvalidInputError, NotFoundError

pytestmark = pytest.mark.k8s

RELEASE = "web"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"


def helm_cli(helm: Helm, cluster: K8sCluster) -> HelmCli:
    env = tool_env(cluster.kubeconfig, helm.home)
    extra = {k: v for k, v in env.items() if k.startswith("HELM_")}
    return HelmCli(str(helm.binary), kubeconfig=str(cluster.kubeconfig), timeout=60, env=extra)


@pytest.fixture
def cli(helm: Helm, k8s_cluster: K8sCluster) -> HelmCli:
    return helm_cli(helm, k8s_cluster)


@pytest.fixture
def registry() -> Iterator[OciRegistry]:
    client = OciRegistry(cache_ttl=0.001)
    try:
        yield client
    finally:
        client.close()


def install(helm: Helm, cluster: K8sCluster, ns: str, version: str, *extra: str) -> None:
    helm.run(
        "install", RELEASE, "demo", "--repo", cluster.chart_repo_http, "--version", version,
        "-n", ns, "--wait", "--timeout", "60s", *extra,
    )  # fmt: skip


def asset(ns: str, version: str, chart: str = "demo") -> Asset:
    return Asset(
        id=helm_asset_id("test", ns, RELEASE),
        kind=AssetKind.HELM,
        target="test",
        name=RELEASE,
        namespace=ns,
        current_version=version,
        chart=chart,
    )


def test_list_status_history_values_metadata(
    k8s_cluster: K8sCluster, k8s_namespace: str, helm: Helm, cli: HelmCli
) -> None:
    ns = k8s_namespace
    install(helm, k8s_cluster, ns, "1.0.0", "--set", "replicaCount=1")
    assert cli.version().major == (3 if helm.name == "helm3" else 4)
    [summary] = [r for r in cli.list_releases(ns)]
    assert (summary.name, summary.namespace, summary.revision) == (RELEASE, ns, 1)
    assert (summary.chart_name, summary.chart_version, summary.status) == (
        "demo",
        "1.0.0",
        HelmStatus.DEPLOYED,
    )
    assert any(r.namespace == ns for r in cli.list_releases())
    status = cli.status(RELEASE, ns)
    assert (status.revision, status.status) == (1, HelmStatus.DEPLOYED)
    meta = cli.metadata(RELEASE, ns)
    assert (meta.chart, meta.version, meta.app_version, meta.revision) == (
        "demo",
        "1.0.0",
        "1.0.0",
        1,
    )
    [entry] = cli.history(RELEASE, ns)
    assert (entry.revision, entry.status, entry.chart_version) == (1, HelmStatus.DEPLOYED, "1.0.0")
    assert entry.updated is not None
    assert cli.get_values(RELEASE, ns) == {"replicaCount": 1}
    assert cli.get_values(RELEASE, ns, all_values=True)["image"]["repository"]
    with pytest.raises(ReleaseNotFoundError):
        cli.status("nope", ns)
    with pytest.raises(RevisionNotFoundError):
        cli.rollback(RELEASE, 42, ns, wait=False, timeout=10)


def test_upgrade_broken_without_wait_then_rollback_to_snapshot(
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    helm: Helm,
    cli: HelmCli,
    registry: OciRegistry,
) -> None:
    ns = k8s_namespace
    install(helm, k8s_cluster, ns, "1.0.0")
    sources = ChartSources(
        [{"release": f"{ns}/{RELEASE}", "source": k8s_cluster.oci_chart()}], registry
    )
    updater = HelmReleaseUpdater(cli, sources, timeout=60, rollback_timeout=90)

    # good upgrade: 1.0.0 -> 1.0.1 is revision 2, deployed
    web = asset(ns, "1.0.0")
    updater.preflight(web, "1.0.1")
    assert cli.history(RELEASE, ns)[-1].revision == 1  # the dry-run changed nothing
    first = updater.snapshot(web)
    assert (first.version, first.data["revision"]) == ("1.0.0", 1)
    applied = updater.apply(web, first, "1.0.1")
    assert applied.data["revision"] == 2
    assert cli.status(RELEASE, ns).status is HelmStatus.DEPLOYED
    assert updater.running_version(web) == "1.0.1"
    assert updater.apply(web, first, "1.0.1").data["revision"] == 2  # idempotent: no revision 3
    updater.commit(web, first, applied)

    # broken upgrade without wait: revision 3 is "deployed" at once; the pods never get Ready
    web = asset(ns, "1.0.1")
    snap = updater.snapshot(web)
    assert (snap.version, snap.data["revision"]) == ("1.0.1", 2)
    broken = updater.apply(web, snap, "1.0.2")
    assert broken.data["revision"] == 3
    assert updater.running_version(web) == "1.0.2"

    # rollback to the snapshot revision: revision 4 serves 1.0.1 again
    updater.rollback(web, snap, broken)
    history = cli.history(RELEASE, ns)
    assert [(h.revision, h.status.value, h.chart_version) for h in history] == [
        (1, "superseded", "1.0.0"),
        (2, "superseded", "1.0.1"),
        (3, "superseded", "1.0.2"),
        (4, "deployed", "1.0.1"),
    ]
    assert history[-1].description == "Rollback to 2"
    assert history[2].description.startswith("safe-updater: 1.0.1 -> 1.0.2")
    assert updater.running_version(web) == "1.0.1"
    pods = wait_until(lambda: ready_pods(k8s_cluster, ns, SELECTOR, 2), 60, what="1.0.1 pods")
    assert pod_images(pods) == {"localhost:5000/demo/web:1.0.1"}

    # rollback again (a retried task, or recovery after a crash): nothing happens
    updater.rollback(web, snap, broken)
    updater.rollback(web, snap, None)
    assert cli.history(RELEASE, ns)[-1].revision == 4


def test_another_operation_in_progress(
    k8s_cluster: K8sCluster, k8s_namespace: str, helm: Helm, cli: HelmCli, registry: OciRegistry
) -> None:
    ns = k8s_namespace
    install(helm, k8s_cluster, ns, "1.0.0")
    wait = "--wait=watcher" if helm.name == "helm4" else "--wait"
    background = subprocess.Popen(
        [str(helm.binary), "upgrade", RELEASE, k8s_cluster.oci_chart(), "--version=1.0.2",
         "--plain-http", f"--namespace={ns}", wait, "--timeout=30s"],
        env=tool_env(k8s_cluster.kubeconfig, helm.home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(
            lambda: cli.history(RELEASE, ns)[-1].status is HelmStatus.PENDING_UPGRADE,
            30,
            what="the background upgrade holds the release",
        )
        ref = ChartRef(ref=k8s_cluster.oci_chart(), version="1.0.1")
        with pytest.raises(OperationInProgressError) as caught:
            cli.upgrade(RELEASE, ref, ns, timeout=30)
        assert "in progress" in str(caught.value)
        sources = ChartSources(
            [{"release": f"{ns}/{RELEASE}", "source": k8s_cluster.oci_chart()}], registry
        )
        updater = HelmReleaseUpdater(cli, sources)
        with pytest.raises(OperationInProgressError):
            updater.snapshot(asset(ns, "1.0.0"))
    finally:
        background.send_signal(signal.SIGTERM)
        background.wait(timeout=60)


def test_rollback_after_helm_was_killed_mid_upgrade(
    k8s_cluster: K8sCluster, k8s_namespace: str, helm: Helm, cli: HelmCli, registry: OciRegistry
) -> None:
    """kill -9 of helm leaves `pending-upgrade`; rollback (as recovery runs it) still restores."""
    ns = k8s_namespace
    install(helm, k8s_cluster, ns, "1.0.0")
    sources = ChartSources(
        [{"release": f"{ns}/{RELEASE}", "source": k8s_cluster.oci_chart()}], registry
    )
    updater = HelmReleaseUpdater(cli, sources, pending_settle=2, poll_interval=0.2)
    web = asset(ns, "1.0.0")
    snap = updater.snapshot(web)
    wait = "--wait=watcher" if helm.name == "helm4" else "--wait"
    background = subprocess.Popen(
        [str(helm.binary), "upgrade", RELEASE, k8s_cluster.oci_chart(), "--version=1.0.2",
         "--plain-http", f"--namespace={ns}", wait, "--timeout=60s"],
        env=tool_env(k8s_cluster.kubeconfig, helm.home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(
            lambda: cli.history(RELEASE, ns)[-1].status is HelmStatus.PENDING_UPGRADE,
            30,
            what="pending-upgrade",
        )
    finally:
        os.kill(background.pid, signal.SIGKILL)
        background.wait(timeout=30)
    assert cli.history(RELEASE, ns)[-1].status is HelmStatus.PENDING_UPGRADE

    updater.rollback(web, snap, None)  # the journal had no AppliedChange: crash during apply
    history = cli.history(RELEASE, ns)
    assert [(h.revision, h.status.value, h.chart_version) for h in history] == [
        (1, "superseded", "1.0.0"),
        (2, "pending-upgrade", "1.0.2"),
        (3, "deployed", "1.0.0"),
    ]
    assert updater.running_version(web) == "1.0.0"
    updater.rollback(web, snap, None)  # idempotent
    assert cli.history(RELEASE, ns)[-1].revision == 3
    # and the next update can snapshot the release again
    assert updater.snapshot(web).data["revision"] == 3


def test_image_tag_in_values_update_and_rollback(
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    helm: Helm,
    cli: HelmCli,
    registry: OciRegistry,
    testbed_env: dict[str, str],
) -> None:
    image_repo = testbed_env.get("TESTBED_IMAGE_REPO")
    if not image_repo:
        pytest.skip("TESTBED_IMAGE_REPO is not set: start the registry part too")
    ns = k8s_namespace
    install(helm, k8s_cluster, ns, "1.0.0", "--set", f"image.repository={image_repo}",
            "--set-string", "image.tag=1.0.0")  # fmt: skip
    charts = [
        {
            "release": f"{ns}/*",
            "source": k8s_cluster.chart_repo_oci,
            "values_path": "image.tag",
        }
    ]
    sources = ChartSources(charts, registry)
    inventory = HelmInventory(cli, "test", sources, namespaces=[ns])
    [web] = inventory.list_assets()
    assert (web.current_version, web.chart, str(web.image)) == (
        "1.0.0",
        "demo",
        f"{image_repo}:1.0.0",
    )
    assert web.labels["safe-updater.io/enabled"] == "true"
    assert {"1.0.0", "1.1.0", "2.0.0"} <= set(sources.list_versions(web))

    updater = HelmReleaseUpdater(cli, sources, timeout=60, rollback_timeout=90)
    with pytest.raises(NotFoundError):
        updater.preflight(web, "9.9.9")  # no such image tag
    updater.preflight(web, "1.1.0")
    snap = updater.snapshot(web)
    applied = updater.apply(web, snap, "1.1.0")
    assert applied.data["revision"] == 2
    assert applied.data["chart_version"] == "1.0.0"  # the chart stays, only the tag moves
    assert updater.running_version(web) == "1.1.0"
    pods = wait_until(lambda: ready_pods(k8s_cluster, ns, SELECTOR, 2), 60, what="1.1.0 pods")
    assert pod_images(pods) == {f"{image_repo}:1.1.0"}
    assert inventory.find(web.id) is not None
    assert inventory.find(web.id).current_version == "1.1.0"  # type: ignore[union-attr]

    updater.rollback(web, snap, applied)
    assert updater.running_version(web) == "1.0.0"
    assert cli.history(RELEASE, ns)[-1].revision == 3
    updater.rollback(web, snap, applied)
    assert cli.history(RELEASE, ns)[-1].revision == 3


def test_inventory_lists_opted_in_releases_only(
    k8s_cluster: K8sCluster, k8s_namespace: str, helm: Helm, cli: HelmCli, registry: OciRegistry
) -> None:
    ns = k8s_namespace
    install(helm, k8s_cluster, ns, "1.0.0")
    helm.run("install", "other", "demo", "--repo", k8s_cluster.chart_repo_http,
             "--version", "1.0.1", "-n", ns)  # fmt: skip
    sources = ChartSources(
        [{"release": f"{ns}/{RELEASE}", "source": k8s_cluster.chart_repo_http, "chart": "demo"}],
        registry,
    )
    inventory = HelmInventory(cli, "test", sources)
    mine = [a for a in inventory.list_assets() if a.namespace == ns]
    assert [(a.id, a.current_version, a.chart) for a in mine] == [
        (helm_asset_id("test", ns, RELEASE), "1.0.0", "demo")
    ]
    assert mine[0].labels["helm.sh/status"] == "deployed"
    assert inventory.find(helm_asset_id("test", ns, "other")) is None  # not opted in
    assert inventory.find(helm_asset_id("test", ns, RELEASE)) == mine[0]
    excluded = HelmInventory(cli, "test", sources, exclude_namespaces=[ns[:4] + "*"])
    assert not [a for a in excluded.list_assets() if a.namespace == ns]

    # Named namespaces are listed one by one (never --all-namespaces, which needs every Secret
    # of the cluster), and releases of all of them are found.
    ns2 = k8s_cluster.create_namespace("helm2")
    try:
        install(helm, k8s_cluster, ns2, "1.0.1")
        both = ChartSources(
            [{"release": f"*/{RELEASE}", "source": k8s_cluster.chart_repo_http, "chart": "demo"}],
            registry,
        )
        named = HelmInventory(cli, "test", both, namespaces=[ns, ns2])
        assert sorted((a.namespace, a.current_version) for a in named.list_assets()) == sorted(
            [(ns, "1.0.0"), (ns2, "1.0.1")]
        )
    finally:
        k8s_cluster.delete_namespace(ns2)


def test_chart_sources_from_the_real_repos(k8s_cluster: K8sCluster, registry: OciRegistry) -> None:
    from k8s_support import demo_chart_versions

    expected = set(demo_chart_versions())
    sources = ChartSources(
        [
            {"release": "a/web", "source": k8s_cluster.oci_chart()},
            {"release": "b/web", "source": k8s_cluster.chart_repo_http, "chart": "demo"},
            {"release": "c/web", "source": k8s_cluster.chart_repo_oci},
            {"release": "d/web", "source": k8s_cluster.chart_repo_http},
        ],
        registry,
    )
    for ns in ("a", "b", "c"):
        web = asset(ns, "1.0.0")
        assert set(sources.list_versions(web)) == expected, ns
        digest = sources.digest(web, "1.0.1")
        assert digest is not None and digest.startswith("sha256:")
    http = asset("b", "1.0.0")
    created = sources.created_at(http, "1.0.1")
    assert created is not None and created.tzinfo is not None
    with pytest.raises(NotFoundError):
        sources.digest(http, "9.9.9")
    with pytest.raises(NotFoundError):
        sources.list_versions(asset("d", "1.0.0", chart="nochart"))
    ref = sources.chart_ref(sources.spec(asset("c", "1.0.0")), "demo", "1.0.1")
    assert ref.ref == k8s_cluster.oci_chart()
    assert sources.spec_for("e", "web") is None


@pytest.mark.parametrize(
    "hostile",
    ["--post-renderer=/bin/sh", "a;b", "$(touch /tmp/pwned)", "web\n--debug", "-n", "../x", ""],
)
def test_hostile_arguments_are_rejected_before_helm_runs(
    k8s_cluster: K8sCluster, helm: Helm, cli: HelmCli, hostile: str
) -> None:
    ref = ChartRef(ref=k8s_cluster.oci_chart(), version="1.0.0")
    calls = len(cli.calls)
    with pytest.raises(InvalidInputError):
        cli.status(hostile, "default")
    with pytest.raises(InvalidInputError):
        cli.history("web", hostile)
    with pytest.raises(InvalidInputError):
        cli.upgrade("web", ref, "default", set_values={"image.tag": hostile or ","})
    with pytest.raises(InvalidInputError):
        cli.upgrade("web", ref, "default", set_values={hostile or ",": "1.0.0"})
    with pytest.raises(InvalidInputError):
        ChartRef(ref=hostile or "-", version="1.0.0")
    with pytest.raises(InvalidInputError):
        ChartRef(ref=k8s_cluster.oci_chart(), version=hostile or "-")
    assert all(call[1] == "version" for call in cli.calls[calls:])


def test_positionals_after_double_dash_are_inert(
    k8s_cluster: K8sCluster, helm: Helm, cli: HelmCli, tmp_path: Path
) -> None:
    """Even past validation, helm sees a hostile word after `--` as a name, never as a flag."""
    marker = tmp_path / "ran"
    with pytest.raises(InvalidInputError, match="Release name is invalid"):
        cli.run(
            ["status"],
            ["--namespace=default", "--output=json"],
            [f"--post-renderer={marker}"],
            what="status",
        )
    assert not marker.exists()
