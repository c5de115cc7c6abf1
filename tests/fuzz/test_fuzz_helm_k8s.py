"""helm's JSON output and Kubernetes objects with missing or mistyped fields: a model, or one of
our errors naming the field; never another exception, and the object is not changed.
"""

from __future__ import annotations

import copy
from typing import Any

from fuzzing import FUZZ, FUZZ_SMALL, HOSTILE_JSON, dumps, json_junk, outcome, unchanged
from hypothesis import given
from hypothesis import strategies as st

from safe_updater.adapters import helm_models as helm
from safe_updater.adapters.errors import HelmError
from safe_updater.adapters.k8s_inventory import (
    KubernetesInventory,
    helm_release_of,
    is_opted_in,
    selected_container,
    workload_containers,
)
from safe_updater.domain.assets import Asset, AssetKind
from safe_updater.domain.errors import SafeUpdaterError
from support.fake_kube import FakeKubeApi, deployment

MODELS: list[type[Any]] = [
    helm.ReleaseSummary,
    helm.ReleaseRevision,
    helm.ReleaseMetadata,
    helm.Release,
]
RELEASE_KEYS = [
    "name",
    "namespace",
    "revision",
    "version",
    "updated",
    "status",
    "chart",
    "app_version",
    "appVersion",
    "deployedAt",
    "info",
    "metadata",
    "config",
    "manifest",
    "first_deployed",
    "last_deployed",
    "description",
]
GOOD = {
    "name": "api",
    "namespace": "prod",
    "revision": 3,
    "version": 3,
    "updated": "2024-05-01 10:20:30.123456789 +0000 UTC",
    "status": "deployed",
    "chart": "api-1.2.3",
    "app_version": "1.2.3",
    "info": {"status": "deployed", "last_deployed": "2024-05-01T10:20:30.635215973Z"},
}


@st.composite
def helm_objects(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(json_junk)
    obj = dict(GOOD)
    for key in draw(st.lists(st.sampled_from(RELEASE_KEYS), max_size=4)):
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(json_junk)
    return obj


@FUZZ
@given(st.one_of(helm_objects(), st.lists(helm_objects(), max_size=3)), st.sampled_from(MODELS))
def test_helm_json_gives_models_or_a_helm_error_naming_the_field(data: Any, model: Any) -> None:
    same = unchanged(data)
    text = dumps(data)
    parsed = outcome(lambda: helm.parse_json_output(text, "helm list"), names=("helm list",))
    if isinstance(parsed, SafeUpdaterError):
        return
    result = outcome(
        lambda: (
            helm.parse_list(parsed, model, "helm list")
            if isinstance(parsed, list)
            else [helm.parse_one(parsed, model, "helm list")]
        ),
        names=("helm list",),
    )
    same()
    if isinstance(result, SafeUpdaterError):
        assert isinstance(result, HelmError)
        # It names a field helm got wrong (or says the top level is not an object/list).
        assert any(key in result.message for key in [*RELEASE_KEYS, "top level", "list"]), result
        return
    for item in result:
        assert isinstance(item, model)
        if hasattr(item, "chart") and isinstance(item.chart, str):
            name, version = helm.split_chart(item.chart)
            assert isinstance(name, str) and isinstance(version, str)


@FUZZ_SMALL
@given(
    st.one_of(
        st.sampled_from(HOSTILE_JSON),
        st.text(max_size=80),
        st.sampled_from(["Pulled: x\n" + "[" * 20_000, "v" + "1" * 5000 + ".1.1", "\n{", "n"]),
    )
)
def test_helm_output_and_version_text_never_escape(text: str) -> None:
    outcome(lambda: helm.parse_json_output(text, "helm status"), names=("helm status",))
    version = outcome(lambda: helm.HelmVersion.parse(text), names=("helm version",))
    assert isinstance(version, SafeUpdaterError | helm.HelmVersion)
    error = helm.translate_error(text, "helm upgrade")
    assert isinstance(error, SafeUpdaterError) and error.message.startswith("helm upgrade: ")


# --- Kubernetes objects -------------------------------------------------------------------------

KINDS = ["Deployment", "StatefulSet", "DaemonSet", "CronJob"]
PATHS: list[tuple[str, ...]] = [
    ("metadata",),
    ("metadata", "annotations"),
    ("metadata", "labels"),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "annotations", "safe-updater.io/container"),
    ("metadata", "annotations", "safe-updater.io/enabled"),
    ("metadata", "annotations", "meta.helm.sh/release-name"),
    ("metadata", "labels", "app.kubernetes.io/managed-by"),
    ("spec",),
    ("spec", "template"),
    ("spec", "template", "spec"),
    ("spec", "template", "spec", "containers"),
    ("spec", "template", "spec", "initContainers"),
    ("spec", "jobTemplate"),
    ("spec", "selector"),
]


@st.composite
def workloads(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(KINDS))
    obj = deployment("web", "localhost:5000/demo/web:1.0.0", kind=kind)
    obj["metadata"].setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
    obj["metadata"]["annotations"]["meta.helm.sh/release-name"] = "web"
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3)):
        parent: Any = obj
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(json_junk)
    if draw(st.integers(0, 4)) == 0:
        spec = obj.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("template"), dict):
            pod = spec["template"].get("spec")
            if isinstance(pod, dict) and isinstance(pod.get("containers"), list):
                pod["containers"].append(draw(json_junk))  # a container that is not an object
    return kind, obj


FIELDS = ("metadata", "spec", "container", "annotations", "labels", "name", "namespace")


@FUZZ
@given(workloads())
def test_workload_objects_give_an_asset_none_or_an_error_naming_the_field(
    workload: tuple[str, dict[str, Any]],
) -> None:
    kind, obj = workload
    same = unchanged(obj)
    outcome(lambda: workload_containers(kind, obj), names=FIELDS, what="workload_containers")
    outcome(lambda: selected_container(kind, obj), names=FIELDS, what="selected_container")
    outcome(lambda: helm_release_of(obj), names=FIELDS, what="helm_release_of")
    outcome(lambda: is_opted_in(obj), names=FIELDS, what="is_opted_in")
    inventory = KubernetesInventory(FakeKubeApi(), "prod")
    asset = outcome(lambda: inventory.to_asset(kind, obj), names=FIELDS, what="to_asset")
    same()
    if isinstance(asset, Asset):
        assert asset.kind is AssetKind.KUBERNETES and asset.workload_kind == kind
        assert asset.id == f"k8s:prod/{asset.namespace}/{kind.lower()}/{asset.name}"
        assert asset.image is not None and asset.current_version


@FUZZ_SMALL
@given(st.lists(workloads(), max_size=4))
def test_listing_skips_malformed_workloads_and_keeps_the_rest(
    items: list[tuple[str, dict[str, Any]]],
) -> None:
    api = FakeKubeApi()
    good = deployment("good", "localhost:5000/demo/web:1.0.0", namespace="other")
    api.add(good)
    for index, (kind, obj) in enumerate(items):
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            continue  # the fake needs a name to store it under
        stored = copy.deepcopy(obj)
        stored["metadata"] = {**meta, "name": f"w{index}", "namespace": "ns"}
        stored["kind"] = kind
        api.add(stored)
    assets = outcome(lambda: KubernetesInventory(api, "prod").list_assets())
    assert isinstance(assets, list)
    assert "k8s:prod/other/deployment/good" in [asset.id for asset in assets]
