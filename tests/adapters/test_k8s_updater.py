"""KubernetesImageUpdater over a stateful fake API: the patch, idempotency, crash-safe rollback."""

from __future__ import annotations

import pytest

from safe_updater.adapters.errors import ImageNotFoundError
from safe_updater.adapters.k8s_inventory import KubernetesInventory
from safe_updater.adapters.k8s_updater import KubernetesImageUpdater, image_patch, retag
from safe_updater.domain.assets import Asset, ImageRef
from safe_updater.domain.errors import ConflictError, NotFoundError, PolicyViolationError
from support.fake_kube import FakeKubeApi, deployment
from support.fakes import FakeRegistry

REPO = "localhost:5000/demo/web"


class DigestRegistry(FakeRegistry):
    def digest(self, image: ImageRef) -> str:
        if image.tag not in self.tags:
            raise ImageNotFoundError(f"{image} not found")
        return "sha256:" + (image.tag or "x").replace(".", "").ljust(64, "0")


def setup(
    kind: str = "Deployment", **kwargs: object
) -> tuple[FakeKubeApi, KubernetesImageUpdater, Asset]:
    api = FakeKubeApi()
    api.add(deployment("web", f"{REPO}:1.0.0", kind=kind, **kwargs))  # type: ignore[arg-type]
    registry = DigestRegistry(["1.0.0", "1.0.1", "1.1.0"])
    updater = KubernetesImageUpdater(api, registry)  # type: ignore[arg-type]
    (asset,) = KubernetesInventory(api, "c").list_assets()  # type: ignore[arg-type]
    return api, updater, asset


def image_of(api: FakeKubeApi, kind: str = "Deployment", container: str = "app") -> str:
    obj = api.get(kind, "ns", "web")
    spec = obj["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = spec["template"]["spec"]
    return next(
        c["image"]
        for c in [*pod.get("initContainers", []), *pod["containers"]]
        if c["name"] == container
    )


@pytest.mark.parametrize(
    ("reference", "tag", "digest", "expected"),
    [
        ("nginx:1.25", "1.26", None, "nginx:1.26"),
        ("nginx", "1.26", None, "nginx:1.26"),
        ("localhost:5000/a/b:1.0", "2.0", None, "localhost:5000/a/b:2.0"),
        ("localhost:5000/a/b", "2.0", None, "localhost:5000/a/b:2.0"),
        (
            "ghcr.io/a/b:1.0@sha256:" + "a" * 64,
            "2.0",
            "sha256:" + "b" * 64,
            "ghcr.io/a/b:2.0@sha256:" + "b" * 64,
        ),
        ("docker.io/library/redis:7", "7.2", None, "docker.io/library/redis:7.2"),
    ],
)
def test_retag_keeps_the_spelling(
    reference: str, tag: str, digest: str | None, expected: str
) -> None:
    assert retag(reference, tag, digest) == expected


def test_the_patch_sets_one_image_and_nothing_else() -> None:
    assert image_patch("Deployment", "app", "x:2") == {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:2"}]}}}
    }
    assert image_patch("CronJob", "job", "x:2", init=True) == {
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {"spec": {"initContainers": [{"name": "job", "image": "x:2"}]}}
                }
            }
        }
    }


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "CronJob"])
def test_update_and_rollback(kind: str) -> None:
    api, updater, asset = setup(kind)
    updater.preflight(asset, "1.0.1")
    assert api.patches() == []  # preflight only dry-runs
    assert any(c[0] == "patch" and c[5] for c in api.calls)
    snapshot = updater.snapshot(asset)
    assert snapshot.version == "1.0.0" and snapshot.data["image"] == f"{REPO}:1.0.0"
    applied = updater.apply(asset, snapshot, "1.0.1")
    assert image_of(api, kind) == f"{REPO}:1.0.1"
    assert applied.data["image_after"] == f"{REPO}:1.0.1" and applied.data["generation"] == 2
    assert updater.running_version(asset) == "1.0.1"
    updater.rollback(asset, snapshot, applied)
    assert image_of(api, kind) == f"{REPO}:1.0.0"
    assert updater.running_version(asset) == "1.0.0"


def test_apply_is_idempotent_and_rollback_works_without_applied() -> None:
    api, updater, asset = setup()
    snapshot = updater.snapshot(asset)
    updater.apply(asset, snapshot, "1.0.1")
    again = updater.apply(asset, snapshot, "1.0.1")  # resumed after a crash: no second patch
    assert len(api.patches()) == 1 and again.data["image_after"] == f"{REPO}:1.0.1"
    updater.rollback(asset, snapshot, None)  # crash during apply: only the snapshot
    updater.rollback(asset, snapshot, None)  # twice: nothing more to do
    assert len(api.patches()) == 2 and image_of(api) == f"{REPO}:1.0.0"
    updater.commit(asset, snapshot, again)  # a no-op


def test_someone_elses_change_is_not_overwritten() -> None:
    api, updater, asset = setup()
    snapshot = updater.snapshot(asset)
    applied = updater.apply(asset, snapshot, "1.0.1")
    api.patch(
        "Deployment",
        "ns",
        "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "evil:9"}]}}}},
    )
    with pytest.raises(ConflictError, match="someone changed it"):
        updater.rollback(asset, snapshot, applied)
    with pytest.raises(ConflictError, match="someone else changed it"):
        updater.apply(asset, snapshot, "1.1.0")


def test_preflight_refuses_missing_tags_helm_workloads_and_forbidden_patch() -> None:
    api, updater, asset = setup()
    with pytest.raises(ImageNotFoundError):
        updater.preflight(asset, "9.9.9")
    api.forbidden.add("patch")
    with pytest.raises(Exception, match="may not patch"):
        updater.preflight(asset, "1.0.1")

    api, updater, asset = setup(
        labels={"app.kubernetes.io/managed-by": "Helm"},
        annotations={"meta.helm.sh/release-name": "demo", "meta.helm.sh/release-namespace": "ns"},
    )
    with pytest.raises(PolicyViolationError, match="helm:c/ns/demo"):
        updater.preflight(asset, "1.0.1")


def test_digest_pinned_images_stay_pinned() -> None:
    _, updater, asset = setup(
        containers=[{"name": "app", "image": f"{REPO}:1.0.0@sha256:" + "c" * 64}]
    )
    snapshot = updater.snapshot(asset)
    applied = updater.apply(asset, snapshot, "1.1.0")
    assert applied.data["image_after"].startswith(f"{REPO}:1.1.0@sha256:110")
    assert updater.running_version(asset) == "1.1.0"


def test_init_container_update() -> None:
    api, updater, asset = setup(
        init_containers=[{"name": "migrate", "image": f"{REPO}:1.0.0"}],
        annotations={"safe-updater.io/container": "migrate"},
    )
    snapshot = updater.snapshot(asset)
    assert snapshot.data["init"] is True
    updater.apply(asset, snapshot, "1.0.1")
    assert image_of(api, container="migrate") == f"{REPO}:1.0.1"
    assert image_of(api, container="app") == f"{REPO}:1.0.0"


def test_rollback_of_a_deleted_workload_and_running_version() -> None:
    api, updater, asset = setup()
    snapshot = updater.snapshot(asset)
    api.objects.clear()
    assert updater.running_version(asset) is None
    with pytest.raises(NotFoundError, match="gone"):
        updater.rollback(asset, snapshot, None)


def test_a_recreated_workload_is_a_conflict() -> None:
    api, updater, asset = setup()
    snapshot = updater.snapshot(asset)
    api.objects[("Deployment", "ns", "web")]["metadata"]["uid"] = "new-uid"
    with pytest.raises(ConflictError, match="re-created"):
        updater.apply(asset, snapshot, "1.0.1")
