"""The inventory (bulk upsert of 10,000 assets) and the shared request budgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from safe_updater.adapters.store import StateStore
from safe_updater.domain.assets import Asset, AssetId, AssetKind, ImageRef
from safe_updater.domain.errors import InvalidInputError

if TYPE_CHECKING:
    from conftest import FakeClock


def docker_asset(i: int, *, target: str = "local", version: str = "1.0.0") -> Asset:
    return Asset(
        id=AssetId(f"docker:{target}/app{i:05d}"),
        kind=AssetKind.DOCKER,
        target=target,
        name=f"app{i:05d}",
        image=ImageRef(registry="127.0.0.1:5000", repository="demo/web", tag=version),
        current_version=version,
        labels={"safe-updater.io/enabled": "true"},
    )


def test_upsert_10000_assets_then_update_and_prune(store: StateStore, clock: FakeClock) -> None:
    assets = [docker_asset(i) for i in range(10_000)]
    store.assets.upsert(assets)
    assert store.assets.counts() == {"docker": 10_000, "k8s": 0, "helm": 0}
    listed = store.assets.list(AssetKind.DOCKER)
    assert len(listed) == 10_000 and listed[0] == assets[0]
    assert store.assets.list(AssetKind.HELM) == []

    clock.advance(3600)
    store.assets.upsert([docker_asset(3, version="1.0.1"), docker_asset(3, version="1.0.2")])
    got = store.assets.get("docker:local/app00003")
    assert got is not None and got.current_version == "1.0.2"  # the last one wins
    assert got.image is not None and got.image.tag == "1.0.2"
    assert store.assets.get("docker:local/none") is None

    present = {a.id for a in assets[:9_000]}
    store.assets.upsert([docker_asset(1, target="other")])
    assert store.assets.remove_missing("local", set(present)) == 1_000
    assert store.assets.counts()["docker"] == 9_001  # the other target is untouched
    assert store.assets.remove_missing("local", set(present)) == 0


def test_remove_missing_keeps_other_kinds_with_the_same_target_name(store: StateStore) -> None:
    helm = Asset(
        id=AssetId("helm:local/web/web"),
        kind=AssetKind.HELM,
        target="local",
        name="web",
        namespace="web",
        chart="web",
        current_version="1.2.3",
    )
    store.assets.upsert([docker_asset(1), docker_asset(2), helm])
    assert store.assets.remove_missing("docker:local", {"docker:local/app00001"}) == 1
    assert store.assets.remove_missing("local", set(), kind=AssetKind.DOCKER) == 1
    assert store.assets.counts() == {"docker": 0, "k8s": 0, "helm": 1}
    assert store.assets.remove_missing("local", set()) == 1  # no kind: the whole target


def test_upsert_nothing_is_fine(store: StateStore) -> None:
    store.assets.upsert([])
    assert store.assets.list() == []


def test_budget_spends_and_refills_with_the_clock(store: StateStore, clock: FakeClock) -> None:
    clock.tick = clock.tick * 0  # time moves only when the test says so
    budgets = store.budgets
    take = {"capacity": 3, "refill_per_second": 0.5}
    assert [budgets.acquire("registry-1", **take) for _ in range(4)] == [True, True, True, False]
    assert budgets.seconds_until("registry-1", **take) == pytest.approx(2.0)
    assert budgets.acquire("registry-2", **take)  # another key has its own bucket
    clock.advance(1.0)
    assert not budgets.acquire("registry-1", **take)  # half a token
    clock.advance(1.0)
    assert budgets.acquire("registry-1", **take)
    assert not budgets.acquire("registry-1", **take)
    clock.advance(3600)  # never more than the capacity
    assert [budgets.acquire("registry-1", **take) for _ in range(4)] == [True, True, True, False]
    clock.advance(-60)  # a clock going backwards refills nothing
    assert not budgets.acquire("registry-1", **take)
    clock.advance(60 + 4)
    assert budgets.acquire("registry-1", capacity=3, refill_per_second=0.5, cost=2)


def test_budget_is_shared_between_store_instances(store_url: str, clock: FakeClock) -> None:
    clock.tick = clock.tick * 0
    with (
        StateStore.open(store_url, clock=clock) as one,
        StateStore.open(store_url, clock=clock) as two,
    ):
        assert one.budgets.acquire("r", capacity=2, refill_per_second=0)
        assert two.budgets.acquire("r", capacity=2, refill_per_second=0)
        assert not one.budgets.acquire("r", capacity=2, refill_per_second=0)
        assert two.budgets.seconds_until("r", capacity=2, refill_per_second=0) == float("inf")


def test_budget_rejects_nonsense(store: StateStore) -> None:
    with pytest.raises(InvalidInputError):
        store.budgets.acquire("r", capacity=0, refill_per_second=1)
    with pytest.raises(InvalidInputError):
        store.budgets.acquire("r", capacity=2, refill_per_second=1, cost=3)


def test_request_counts(store: StateStore) -> None:
    for status in (200, 200, 429, 200):
        store.budgets.record_request("127.0.0.1:5000", status)
    store.budgets.record_request("127.0.0.1:5001", 0)
    assert store.budgets.request_counts() == {
        ("127.0.0.1:5000", 200): 3,
        ("127.0.0.1:5000", 429): 1,
        ("127.0.0.1:5001", 0): 1,
    }
