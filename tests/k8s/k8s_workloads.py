"""Helpers for the updater's own tests on the test cluster (tests/k8s/test_k8s_*.py).

Broken image versions: kwok fails pods by their labels, so a MutatingAdmissionPolicy (a real
kube-apiserver feature, admissionregistration.k8s.io/v1) scoped to the test's namespace adds the
label when a pod is created with a "broken" tag. The image change alone then breaks the rollout,
and restoring the previous image heals it, as with a real bad release.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from k8s_support import CRASHLOOP_LABEL, FAIL_LABEL, K8sCluster

from safe_updater.adapters.k8s_health import RolloutProbe
from safe_updater.adapters.kube_api import KubeApi
from safe_updater.adapters.probes import Probe, monitor
from safe_updater.domain.health import HealthPolicy, Sample, Verdict
from safe_updater.domain.rollout import RolloutCheck

BROKEN_TAG = "1.0.2"  # pods never become Ready
CRASHLOOP_TAG = "1.2.0"  # pods crash-loop


@contextmanager
def broken_image_policy(cluster: K8sCluster, namespace: str) -> Iterator[None]:
    """Pods in `namespace` running a `:1.0.2` image never get Ready; `:1.2.0` ones crash-loop."""
    from kubernetes import client

    api = client.AdmissionregistrationV1Api(cluster.api_client)
    names = []
    for tag, label in ((BROKEN_TAG, FAIL_LABEL), (CRASHLOOP_TAG, CRASHLOOP_LABEL)):
        name = f"su-{namespace}-{tag.replace('.', '-')}"
        label_path = label.replace("/", "~1")
        api.create_mutating_admission_policy(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingAdmissionPolicy",
                "metadata": {"name": name},
                "spec": {
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": [""],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE"],
                                "resources": ["pods"],
                            }
                        ],
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": namespace}
                        },
                    },
                    "matchConditions": [
                        {
                            "name": "broken-tag",
                            "expression": "object.spec.containers.exists(c, "
                            f"c.image.endsWith(':{tag}')) || "
                            "(has(object.spec.initContainers) && object.spec.initContainers"
                            f".exists(c, c.image.endsWith(':{tag}')))",
                        }
                    ],
                    "failurePolicy": "Fail",
                    "reinvocationPolicy": "Never",
                    "mutations": [
                        {
                            "patchType": "JSONPatch",
                            "jsonPatch": {
                                "expression": '[JSONPatch{op: "add", path: '
                                f'"/metadata/labels/{label_path}", value: "true"}}]'
                            },
                        }
                    ],
                },
            }
        )
        api.create_mutating_admission_policy_binding(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingAdmissionPolicyBinding",
                "metadata": {"name": name},
                "spec": {"policyName": name},
            }
        )
        names.append(name)
    time.sleep(1.5)  # the apiserver loads admission policies asynchronously
    try:
        yield
    finally:
        for name in names:
            api.delete_mutating_admission_policy_binding(name)
            api.delete_mutating_admission_policy(name)


def workload_manifest(
    kind: str,
    name: str,
    namespace: str,
    image: str,
    *,
    replicas: int = 2,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    template = {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "web", "image": image}]},
    }
    metadata = {
        "name": name,
        "namespace": namespace,
        "annotations": {"safe-updater.io/enabled": "true", **(annotations or {})},
        "labels": dict(labels or {}),
    }
    if kind == "CronJob":
        template["spec"]["restartPolicy"] = "OnFailure"  # type: ignore[index]
        return {
            "apiVersion": "batch/v1",
            "kind": kind,
            "metadata": metadata,
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}},
        }
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": template}
    if kind != "DaemonSet":
        spec["replicas"] = replicas
    if kind == "StatefulSet":
        spec["serviceName"] = name
    if kind == "Deployment":
        spec["strategy"] = {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        spec["progressDeadlineSeconds"] = 600
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": metadata, "spec": spec}


def create_workload(cluster: K8sCluster, manifest: dict[str, Any]) -> None:
    from kubernetes import client, utils

    utils.create_from_dict(client.ApiClient(cluster.api_client.configuration), manifest)


def watch_rollout(
    api: KubeApi,
    kind: str,
    namespace: str,
    name: str,
    *,
    window: float,
    interval: float = 0.5,
    expected_image: tuple[str, str] | None = None,
    fraction: float = 0.1,
    extra: list[Probe] | None = None,
) -> tuple[Verdict, list[Sample], float]:
    """Run the real monitor over a RolloutProbe; returns the verdict, samples and seconds taken."""
    probe = RolloutProbe(
        api,
        RolloutCheck(
            workload_kind=kind, namespace=namespace, workload=name, failure_fraction=fraction
        ),
        expected_image=expected_image,
    )
    policy = HealthPolicy(
        window=timedelta(seconds=window),
        interval=timedelta(seconds=interval),
        failure_threshold=3,
        success_threshold=2,
    )
    started = time.monotonic()
    try:
        verdict, samples = monitor(
            [probe, *(extra or [])], policy, clock=lambda: datetime.now(UTC), sleep=time.sleep
        )
    finally:
        probe.close()
    return verdict, samples, time.monotonic() - started
