"""A stateful fake of :class:`safe_updater.adapters.kube_api.KubeApi` for unit tests.

It keeps objects as JSON dicts, pages lists, and applies the one kind of strategic merge patch
the updater sends (containers merged by name). The real API is covered by tests/k8s.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from safe_updater.adapters.kube_api import Page, canonical_kind
from safe_updater.domain.errors import AuthError, NotFoundError


class FakeKubeApi:
    def __init__(self, page_size: int = 500) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.page_size = page_size
        self.calls: list[tuple[Any, ...]] = []
        self.forbidden: set[str] = set()  # verbs that answer 403

    def add(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(obj))
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        kind = canonical_kind(obj["kind"])
        self.objects[(kind, meta["namespace"], meta["name"])] = obj
        return obj

    def _deny(self, verb: str, kind: str) -> None:
        if verb in self.forbidden:
            raise AuthError(f"forbidden: the updater may not {verb} {kind}")

    def list_page(
        self,
        kind: str,
        namespace: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Page:
        kind = canonical_kind(kind)
        self._deny("list", kind)
        self.calls.append(("list", kind, namespace, limit, continue_token))
        items = [
            copy.deepcopy(o)
            for (k, ns, _), o in sorted(self.objects.items())
            if k == kind and (namespace is None or ns == namespace)
        ]
        start = int(continue_token or 0)
        size = limit or self.page_size
        page = items[start : start + size]
        more = start + size < len(items)
        return Page(
            items=page, resource_version="1", continue_token=str(start + size) if more else None
        )

    def list_all(
        self,
        kind: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self.list_page(kind, namespace, limit=page_size, continue_token=token)
            yield from page.items
            token = page.continue_token
            if not token:
                return

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        kind = canonical_kind(kind)
        self._deny("get", kind)
        self.calls.append(("get", kind, namespace, name))
        try:
            return copy.deepcopy(self.objects[(kind, namespace, name)])
        except KeyError:
            raise NotFoundError(f"{kind} {namespace}/{name} was not found") from None

    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, namespace, name)
        except NotFoundError:
            return None

    def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        *,
        dry_run: bool = False,
        field_manager: str = "safe-updater",
    ) -> dict[str, Any]:
        kind = canonical_kind(kind)
        self._deny("patch", kind)
        self.calls.append(("patch", kind, namespace, name, copy.deepcopy(dict(body)), dry_run))
        obj = copy.deepcopy(self.get(kind, namespace, name))
        _merge(obj, body)
        if not dry_run:
            obj["metadata"]["generation"] = int(obj["metadata"].get("generation", 1)) + 1
            self.objects[(kind, namespace, name)] = obj
        return copy.deepcopy(obj)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        kind = canonical_kind(kind)
        self._deny("delete", kind)
        self.calls.append(("delete", kind, namespace, name))
        return self.objects.pop((kind, namespace, name), None) is not None

    def patches(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == "patch" and not c[5]]


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            current = target.setdefault(key, [])
            for item in value:
                match = next((c for c in current if c.get("name") == item["name"]), None)
                if match is None:
                    current.append(dict(item))
                else:
                    match.update(item)
        elif isinstance(value, Mapping):
            _merge(target.setdefault(key, {}), value)
        else:
            target[key] = value


def deployment(
    name: str,
    image: str,
    *,
    namespace: str = "ns",
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    kind: str = "Deployment",
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"containers": containers or [{"name": "app", "image": image}]}
    if init_containers:
        pod_spec["initContainers"] = init_containers
    template = {"metadata": {"labels": {"app": name}}, "spec": pod_spec}
    spec: dict[str, Any]
    if kind == "CronJob":
        spec = {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        spec = {"replicas": 2, "selector": {"matchLabels": {"app": name}}, "template": template}
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"safe-updater.io/enabled": "true", **(annotations or {})},
            "labels": dict(labels or {}),
        },
        "spec": spec,
    }
