"""prefect.yaml is valid for Prefect and every entrypoint names a real flow of ours."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.flows import Flow, load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_prefect_accepts_the_file() -> None:
    model = PrefectYamlModel.model_validate(SPEC)
    assert {d.name for d in model.deployments} >= {
        "scan",
        "update-asset",
        "rollback-asset",
        "recover-updates",
    }


@pytest.mark.parametrize("deployment", SPEC["deployments"], ids=lambda d: d["name"])
def test_entrypoint_loads_a_flow(
    deployment: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    flow = load_flow_from_entrypoint(str(deployment["entrypoint"]))
    assert isinstance(flow, Flow)
    # Parameters in the file must be parameters of the flow.
    names = set(flow.parameters.properties)
    assert set(dict(deployment.get("parameters") or {})) <= names  # type: ignore[call-overload]


def test_file_is_the_rendering_of_the_standard_deployments() -> None:
    """prefect.yaml is generated: `safe-updater deployments export > prefect.yaml`."""
    from safe_updater.deployments.standard import render_prefect_yaml

    assert (ROOT / "prefect.yaml").read_text() == render_prefect_yaml()
