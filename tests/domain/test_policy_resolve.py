"""resolve_policy(): default -> overrides by tier (first match wins within one) -> labels."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from safe_updater.domain.assets import Asset, AssetId, AssetKind
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.policy import (
    Action,
    AssetContext,
    PolicyConfig,
    resolve_policy,
)


def ctx(**changes: Any) -> AssetContext:
    base: dict[str, Any] = {
        "asset_id": "helm:prod-cluster/prod/api",
        "kind": AssetKind.HELM,
        "namespace": "prod",
        "group": "backend",
        "name": "api",
    }
    return AssetContext.model_validate({**base, **changes})


def config(*overrides: dict[str, Any], **default: Any) -> PolicyConfig:
    return PolicyConfig.model_validate({"default": default, "overrides": list(overrides)})


KIND = {"match": {"kind": "helm"}, "minor": "skip", "patch": "approve"}
NAMESPACE = {"match": {"namespace": "prod"}, "minor": "auto"}
GROUP = {"match": {"group": "back*"}, "minor": "approve", "major": "approve"}
ASSET = {"match": {"asset": "helm:*/prod/api"}, "minor": "skip"}
NAME = {"match": {"name": "api"}, "minor": "approve"}


@pytest.mark.parametrize(
    ("overrides", "expected_minor"),
    [
        ((), Action.APPROVE),  # default
        ((KIND,), Action.SKIP),
        ((NAMESPACE,), Action.AUTO),
        ((KIND, NAMESPACE), Action.AUTO),  # namespace beats kind
        ((NAMESPACE, KIND), Action.AUTO),  # whatever the file order
        ((ASSET, NAMESPACE), Action.SKIP),  # asset beats namespace
        ((NAMESPACE, ASSET), Action.SKIP),
        ((GROUP, NAMESPACE), Action.APPROVE),  # same tier: first in the file wins
        ((NAMESPACE, GROUP), Action.AUTO),
        ((NAME, ASSET), Action.APPROVE),  # same tier (name/asset): first wins
    ],
)
def test_override_precedence(overrides: tuple[dict[str, Any], ...], expected_minor: Action) -> None:
    assert resolve_policy(config(*overrides), ctx()).minor is expected_minor


def test_layers_merge_key_by_key_and_record_sources() -> None:
    policy = resolve_policy(config(KIND, NAMESPACE, ASSET, major="approve"), ctx())
    assert policy.patch is Action.APPROVE  # from the kind override
    assert policy.minor is Action.SKIP  # asset override
    assert policy.major is Action.APPROVE  # default
    assert policy.sources == [
        "default",
        "override #1 (kind=helm)",
        "override #2 (namespace=prod)",
        "override #3 (asset=helm:*/prod/api)",
    ]


@pytest.mark.parametrize(
    ("match", "context", "matches"),
    [
        ({"kind": "kubernetes"}, {"kind": AssetKind.KUBERNETES}, True),
        ({"kind": "k8s"}, {"kind": AssetKind.KUBERNETES}, True),
        ({"kind": "docker"}, {}, False),
        ({"namespace": "prod"}, {"namespace": None}, False),
        ({"namespace": "prod-*"}, {"namespace": "prod-eu"}, True),
        ({"kind": "helm", "namespace": "dev"}, {}, False),  # every key must match
        ({"group": "canary"}, {"group": None}, False),
        ({"name": "a*"}, {}, True),
    ],
)
def test_match_keys(match: dict[str, Any], context: dict[str, Any], matches: bool) -> None:
    policy = resolve_policy(config({"match": match, "minor": "auto"}), ctx(**context))
    assert (policy.minor is Action.AUTO) is matches


def test_approval_merges_key_by_key() -> None:
    cfg = config(
        {"match": {"namespace": "prod"}, "approval": {"quorum": 2}},
        approval={"deadline": "2h", "approvers": ["alice", "bob"]},
    )
    rule = resolve_policy(cfg, ctx()).approval
    assert (rule.quorum, rule.deadline, rule.approvers) == (2, timedelta(hours=2), ["alice", "bob"])
    assert rule.timeout_action == "reject"


def test_override_null_clears_pin_and_release_age() -> None:
    cfg = config(
        {"match": {"name": "api"}, "pin": None, "min_release_age": None},
        pin="1.x",
        min_release_age="3d",
    )
    policy = resolve_policy(cfg, ctx())
    assert policy.pin is None and policy.min_release_age is None
    untouched = resolve_policy(
        config({"match": {"name": "api"}, "minor": "auto"}, pin="1.x"), ctx()
    )
    assert untouched.pin == "1.x"


def test_labels_override_the_file() -> None:
    labels = {
        "safe-updater.io/policy.minor": "Auto",
        "safe-updater.io/policy.major": "approve",
        "safe-updater.io/approval.quorum": "3",
        "safe-updater.io/approval.deadline": "90m",
        "safe-updater.io/approval.approvers": "alice, bob",
        "safe-updater.io/approval.timeout-action": "approve",
        "safe-updater.io/window": "mon-fri 22:00-02:00 Europe/Berlin; 0 3 * * 6 for 2h",
        "safe-updater.io/min-release-age": "2d",
        "safe-updater.io/pin": "1.x",
        "safe-updater.io/allow": "1.*, re:2\\.[0-9]+\\.[0-9]+",
        "safe-updater.io/deny": "*-beta*",
        "safe-updater.io/enabled": "true",  # not a policy key: ignored here
        "app": "web",
    }
    policy = resolve_policy(config(ASSET), ctx(labels=labels))
    assert policy.minor is Action.AUTO  # label beats the asset override's skip
    assert policy.major is Action.APPROVE
    assert policy.approval.quorum == 3
    assert policy.approval.deadline == timedelta(minutes=90)
    assert policy.approval.approvers == ["alice", "bob"]
    assert policy.approval.timeout_action == "approve"
    assert [str(w) for w in policy.windows] == [
        "mon-fri 22:00-02:00 Europe/Berlin",
        "0 3 * * 6 for 2h UTC",
    ]
    assert policy.min_release_age == timedelta(days=2)
    assert policy.pin == "1.x"
    assert policy.allow == ["1.*", "re:2\\.[0-9]+\\.[0-9]+"]
    assert policy.deny == ["*-beta*"]
    assert policy.sources[-1] == "labels"


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("safe-updater.io/window", "always", "windows"),
        ("safe-updater.io/pin", "none", "pin"),
        ("safe-updater.io/min-release-age", "0", "min_release_age"),
    ],
)
def test_labels_can_clear_file_settings(key: str, value: str, field: str) -> None:
    cfg = config(pin="1.x", min_release_age="3d", windows=["22:00-02:00"])
    policy = resolve_policy(cfg, ctx(labels={key: value}))
    assert getattr(policy, field) in (None, [])


@pytest.mark.parametrize(
    ("key", "value", "message_part", "hint_part"),
    [
        ("safe-updater.io/policy.minor", "sometimes", "must be one of auto, approve, skip", "auto"),
        ("safe-updater.io/policy.minr", "auto", "unknown policy label", "policy.minor"),
        ("safe-updater.io/approval.quorum", "0", "whole number from 1", "e.g. 2"),
        ("safe-updater.io/approval.quorum", "two", "whole number", "e.g. 2"),
        ("safe-updater.io/approval.deadline", "soon", "not a duration", "24h"),
        ("safe-updater.io/approval.deadline", "0s", "longer than 0s", "24h"),
        ("safe-updater.io/approval.timeout-action", "maybe", "reject or approve", "reject"),
        ("safe-updater.io/window", "sometimes at night", "not a maintenance window", "HH:MM"),
        ("safe-updater.io/window", "22:00-02:00 Mars/Olympus", "not a maintenance window", ""),
        ("safe-updater.io/min-release-age", "old", "not a duration", "3d"),
        ("safe-updater.io/pin", "~banana", "not a version range", "1.x"),
        ("safe-updater.io/deny", "re:(a+)+", "repeats a group", "glob"),
    ],
)
def test_bad_label_values_name_label_asset_and_fix(
    key: str, value: str, message_part: str, hint_part: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        resolve_policy(config(), ctx(labels={key: value}))
    error = caught.value
    assert error.field == key
    assert message_part in error.message
    assert "labels of helm:prod-cluster/prod/api" in error.message
    assert hint_part in (error.hint or "")
    assert str(error).startswith(f"{key}: ")


def test_source_name_appears_in_label_errors() -> None:
    with pytest.raises(InvalidInputError, match="in the annotations of"):
        resolve_policy(
            config(),
            ctx(labels={"safe-updater.io/policy.major": "x"}),
            source="annotations",
        )


def test_allow_prerelease_is_derived() -> None:
    assert not resolve_policy(config(), ctx()).allow_prerelease
    assert resolve_policy(config(prerelease="approve"), ctx()).allow_prerelease


def test_context_from_asset_uses_group_label() -> None:
    asset = Asset(
        id=AssetId("docker:local/web"),
        kind=AssetKind.DOCKER,
        target="local",
        name="web",
        current_version="1.2.3",
        labels={"safe-updater.io/group": "canary"},
    )
    assert AssetContext.from_asset(asset).group == "canary"
    assert AssetContext.from_asset(asset, group="wave-2").group == "wave-2"


def test_empty_match_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one of kind"):
        config({"match": {}, "minor": "auto"})
