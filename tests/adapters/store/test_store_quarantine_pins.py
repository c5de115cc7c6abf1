"""Loop prevention: the quarantine of failed versions, and pins."""

from __future__ import annotations

from safe_updater.adapters.store import StateStore

A = "docker:local/web"
B = "docker:local/db"


def test_quarantine_add_is_idempotent(store: StateStore) -> None:
    first = store.quarantine.add(A, "1.0.1", "health 404 for 20s", attempt_id=7)
    again = store.quarantine.add(A, "1.0.1", "a second rollback")
    assert again == first  # the first reason and attempt are kept
    assert len(store.quarantine.list()) == 1
    assert store.quarantine.is_quarantined(A, "1.0.1")
    assert not store.quarantine.is_quarantined(A, "1.0.2")
    assert not store.quarantine.is_quarantined(B, "1.0.1")


def test_quarantine_versions_list_and_clear(store: StateStore) -> None:
    store.quarantine.add(A, "1.0.1", "r")
    store.quarantine.add(A, "1.0.2", "r")
    store.quarantine.add(B, "5", "r")
    assert store.quarantine.versions(A) == {"1.0.1", "1.0.2"}
    assert store.quarantine.versions("docker:local/none") == set()
    assert [e.version for e in store.quarantine.list(A)] == ["1.0.1", "1.0.2"]
    assert len(store.quarantine.list()) == 3
    assert store.quarantine.clear(A, "1.0.1") == 1
    assert store.quarantine.clear(A, "1.0.1") == 0
    assert store.quarantine.versions(A) == {"1.0.2"}
    assert store.quarantine.clear(B) == 1
    assert [e.asset_id for e in store.quarantine.list()] == [A]


def test_pins(store: StateStore) -> None:
    assert store.pins.get(A) is None
    pin = store.pins.set(A, "1.0.0", "waiting for vendor fix")
    assert (pin.version, pin.reason) == ("1.0.0", "waiting for vendor fix")
    moved = store.pins.set(A, "1.0.3")
    assert moved.version == "1.0.3" and moved.reason == ""
    store.pins.set(B, "15")
    assert [p.asset_id for p in store.pins.list()] == [B, A]
    assert store.pins.clear(A) is True
    assert store.pins.clear(A) is False
    assert store.pins.get(A) is None
