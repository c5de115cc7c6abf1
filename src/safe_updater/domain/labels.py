"""Label and annotation keys the updater reads from assets.

Docker labels, Kubernetes labels/annotations and Helm release annotations all use these keys;
on an asset they override the config file for that asset only.
"""

from __future__ import annotations

from safe_updater.domain.assets import ENABLE_LABEL, LABEL_PREFIX, WATCHTOWER_ENABLE_LABEL

CHANGE_KINDS = ("patch", "minor", "major", "prerelease", "digest")

GROUP = f"{LABEL_PREFIX}group"
POLICY_PREFIX = f"{LABEL_PREFIX}policy."
APPROVAL_PREFIX = f"{LABEL_PREFIX}approval."
APPROVAL_QUORUM = f"{APPROVAL_PREFIX}quorum"
APPROVAL_DEADLINE = f"{APPROVAL_PREFIX}deadline"
APPROVAL_APPROVERS = f"{APPROVAL_PREFIX}approvers"
APPROVAL_TIMEOUT_ACTION = f"{APPROVAL_PREFIX}timeout-action"
WINDOW = f"{LABEL_PREFIX}window"
MIN_RELEASE_AGE = f"{LABEL_PREFIX}min-release-age"
PIN = f"{LABEL_PREFIX}pin"
ALLOW = f"{LABEL_PREFIX}allow"
DENY = f"{LABEL_PREFIX}deny"

HEALTH_PREFIX = f"{LABEL_PREFIX}health."
HEALTH_HTTP = f"{HEALTH_PREFIX}http"
HEALTH_TCP = f"{HEALTH_PREFIX}tcp"
HEALTH_PROMETHEUS_URL = f"{HEALTH_PREFIX}prometheus.url"
HEALTH_PROMETHEUS_QUERY = f"{HEALTH_PREFIX}prometheus.query"
HEALTH_PROMETHEUS_THRESHOLD = f"{HEALTH_PREFIX}prometheus.threshold"
HEALTH_PROMETHEUS_OP = f"{HEALTH_PREFIX}prometheus.op"
HEALTH_WINDOW = f"{HEALTH_PREFIX}window"
HEALTH_INTERVAL = f"{HEALTH_PREFIX}interval"


def policy_key(change: str) -> str:
    """``safe-updater.io/policy.<change>`` for one of :data:`CHANGE_KINDS`."""
    return f"{POLICY_PREFIX}{change}"


POLICY_KEYS: dict[str, str] = {
    **{
        policy_key(kind): f"Action for {kind} updates: auto, approve or skip."
        for kind in CHANGE_KINDS
    },
    APPROVAL_QUORUM: "Approvals needed (a whole number, at least 1).",
    APPROVAL_DEADLINE: "How long an approval may take, e.g. 24h.",
    APPROVAL_APPROVERS: "Who may approve, comma-separated; empty means anyone.",
    APPROVAL_TIMEOUT_ACTION: "What an unanswered approval becomes: reject or approve.",
    WINDOW: "Maintenance windows separated by ';', or 'always' for none.",
    MIN_RELEASE_AGE: "Minimum age of a release before it is applied, e.g. 3d; 'none' for none.",
    PIN: "Keep to a version or range (1.2.3, 1.x, ~1.2, ^1.2, stable); 'none' to clear.",
    ALLOW: "Only tags matching these patterns (comma-separated globs or re:...).",
    DENY: "Never tags matching these patterns (comma-separated globs or re:...).",
}
"""The policy keys and what each means (for the configuration reference)."""

OTHER_KEYS: dict[str, str] = {
    ENABLE_LABEL: "Opt a Docker container in: 'true'.",
    WATCHTOWER_ENABLE_LABEL: "Watchtower's opt-in label, honoured too: 'true'.",
    GROUP: "The asset's group, for policy overrides and fleet waves.",
    HEALTH_HTTP: "HTTP health check URL, e.g. http://127.0.0.1:8080/healthz.",
    HEALTH_TCP: "TCP health check address, e.g. 127.0.0.1:5432.",
    HEALTH_PROMETHEUS_URL: "Prometheus URL for a query check, e.g. http://127.0.0.1:9090.",
    HEALTH_PROMETHEUS_QUERY: "PromQL returning one number, e.g. an error rate.",
    HEALTH_PROMETHEUS_THRESHOLD: "The number the query's value is compared with.",
    HEALTH_PROMETHEUS_OP: "<, <=, > or >= (default <): healthy while value OP threshold.",
    HEALTH_WINDOW: "How long health is watched after an update, e.g. 30s.",
    HEALTH_INTERVAL: "Time between health samples, e.g. 2s.",
}
