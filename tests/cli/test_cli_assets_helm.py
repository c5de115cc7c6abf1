"""`safe-updater assets` shows Helm releases with their workloads (linked by the Kubernetes
inventory's `safe-updater.io/helm-release` label), in the table and in `--json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safe_updater.adapters.store import StateStore
from safe_updater.cli.app import main
from safe_updater.domain.assets import Asset, AssetId, AssetKind, ImageRef

RELEASE = "helm:prod/shop/web"


def _workload(name: str, release: str | None, target: str = "prod") -> Asset:
    labels = {"safe-updater.io/enabled": "true"}
    if release:
        labels["safe-updater.io/helm-release"] = release
    return Asset(
        id=AssetId(f"k8s:{target}/shop/deployment/{name}"),
        kind=AssetKind.KUBERNETES,
        target=target,
        name=name,
        namespace="shop",
        workload_kind="Deployment",
        container="app",
        image=ImageRef(registry="localhost:5000", repository=f"demo/{name}", tag="1.0.0"),
        current_version="1.0.0",
        labels=labels,
    )


@pytest.fixture
def store_with_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAFE_UPDATER_CONFIG", raising=False)
    monkeypatch.setenv("SAFE_UPDATER_STATE_URL", url)
    monkeypatch.setenv("SAFE_UPDATER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    with StateStore.open(url) as store:
        store.assets.upsert(
            [
                Asset(
                    id=AssetId(RELEASE),
                    kind=AssetKind.HELM,
                    target="prod",
                    name="web",
                    namespace="shop",
                    chart="demo",
                    current_version="1.0.1",
                    labels={"safe-updater.io/enabled": "true"},
                ),
                _workload("web-demo", "shop/web"),
                _workload("worker", "shop/web"),
                _workload("other", None),
                _workload("elsewhere", "shop/web", target="staging"),  # another cluster's
            ]
        )


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().out


@pytest.mark.usefixtures("store_with_release")
def test_assets_json_lists_a_releases_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "assets", "--json")
    assert code == 0
    by_id = {a["id"]: a for a in json.loads(out)}
    workloads = by_id[RELEASE]["workloads"]
    assert [w["id"] for w in workloads] == [
        "k8s:prod/shop/deployment/web-demo",
        "k8s:prod/shop/deployment/worker",
    ]
    assert workloads[0]["image"] == "localhost:5000/demo/web-demo:1.0.0"
    assert by_id["k8s:prod/shop/deployment/worker"]["release"] == RELEASE
    assert by_id["k8s:prod/shop/deployment/other"]["release"] is None
    assert by_id["k8s:staging/shop/deployment/elsewhere"]["release"] == "helm:staging/shop/web"
    # Filtered to Helm releases, the workloads are still found.
    code, out = _run(capsys, "assets", "--kind", "helm", "--json")
    [release] = json.loads(out)
    assert len(release["workloads"]) == 2


@pytest.mark.usefixtures("store_with_release")
def test_assets_table_nests_workloads_under_the_release(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "assets")
    assert code == 0
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if RELEASE in line and "demo" in line)
    assert "└ Deployment/web-demo" in lines[at + 1]
    assert "└ Deployment/worker" in lines[at + 2]
    assert any("worker" in line and RELEASE in line for line in lines[at + 3 :])
