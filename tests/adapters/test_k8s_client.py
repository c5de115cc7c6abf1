"""adapters/kube_api: error translation, the client factory, paging (no cluster needed)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from safe_updater.adapters.errors import EngineUnavailableError
from safe_updater.adapters.kube_api import (
    RBAC_FILE,
    KubeApi,
    Page,
    canonical_kind,
    new_api_client,
    resource_of,
    selector_string,
    translate_api_error,
)
from safe_updater.domain.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    TransientError,
)


def api_exception(
    status: int, message: str = "boom", headers: dict[str, str] | None = None
) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    exc.headers = headers or {}
    return exc


FORBIDDEN = (
    'deployments.apps "web" is forbidden: User "system:serviceaccount:su:updater" cannot patch '
    'resource "deployments" in API group "apps" in the namespace "prod"'
)


@pytest.mark.parametrize(
    ("status", "error", "transient"),
    [
        (401, AuthError, False),
        (403, AuthError, False),
        (404, NotFoundError, False),
        (409, ConflictError, False),
        (422, InvalidInputError, False),
        (400, InvalidInputError, False),
        (429, EngineUnavailableError, True),
        (500, EngineUnavailableError, True),
        (503, EngineUnavailableError, True),
        (418, PermanentError, False),
    ],
)
def test_status_codes(status: int, error: type[Exception], transient: bool) -> None:
    result = translate_api_error(
        api_exception(status),
        verb="patch",
        resource="apps/deployments",
        namespace="prod",
        name="web",
    )
    assert isinstance(result, error)
    assert isinstance(result, TransientError) is transient


def test_forbidden_names_the_verb_resource_and_the_shipped_role() -> None:
    result = translate_api_error(
        api_exception(403, FORBIDDEN),
        verb="patch",
        resource="apps/deployments",
        namespace="prod",
        name="web",
    )
    text = str(result)
    assert "may not patch apps/deployments in namespace prod" in text
    assert "missing RBAC verb 'patch'" in text
    assert "cannot patch resource" in text  # the server's own words
    assert RBAC_FILE in text and "ClusterRole safe-updater" in text


def test_retry_after_is_kept() -> None:
    result = translate_api_error(
        api_exception(429, headers={"Retry-After": "3"}), verb="list", resource="pods"
    )
    assert isinstance(result, TransientError) and result.retry_after == 3.0


def test_connection_errors_are_transient_and_cert_errors_are_not() -> None:
    refused = urllib3.exceptions.MaxRetryError(
        None,  # type: ignore[arg-type]
        "/api",
        urllib3.exceptions.NewConnectionError(None, "Connection refused"),  # type: ignore[arg-type]
    )
    assert isinstance(
        translate_api_error(refused, verb="list", resource="pods"), EngineUnavailableError
    )
    assert isinstance(
        translate_api_error(
            urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),
            verb="get",
            resource="pods",
        ),  # type: ignore[arg-type]
        EngineUnavailableError,
    )
    cert = urllib3.exceptions.MaxRetryError(
        None,  # type: ignore[arg-type]
        "/api",
        urllib3.exceptions.SSLError(ssl.SSLCertVerificationError("CERTIFICATE_VERIFY_FAILED")),
    )
    result = translate_api_error(cert, verb="list", resource="pods")
    assert isinstance(result, AuthError) and "TLS verification" in str(result)


def kubeconfig(path: Path, *, insecure: bool = False, server: str = "https://127.0.0.1:1") -> Path:
    cluster: dict[str, Any] = {"server": server}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    else:
        cluster["certificate-authority-data"] = (
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K"
        )
    data = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": "secret-token-value"}}],
        "contexts": [
            {"name": "one", "context": {"cluster": "c", "user": "u"}},
            {"name": "two", "context": {"cluster": "c", "user": "u", "namespace": "x"}},
        ],
        "current-context": "one",
    }
    path.write_text(json.dumps(data))
    return path


def test_client_factory_verifies_tls_by_default(tmp_path: Path) -> None:
    client = new_api_client(kubeconfig=kubeconfig(tmp_path / "k"), context="two")
    try:
        assert client.configuration.verify_ssl is True
        assert client.configuration.host == "https://127.0.0.1:1"
        assert client.configuration.proxy is None
    finally:
        client.close()
    with pytest.raises(ConfigError, match="insecure-skip-tls-verify"):
        new_api_client(kubeconfig=kubeconfig(tmp_path / "i", insecure=True))
    allowed = new_api_client(
        kubeconfig=kubeconfig(tmp_path / "i", insecure=True), allow_insecure_tls=True
    )
    allowed.close()


def test_client_factory_inline_and_errors(tmp_path: Path) -> None:
    text = kubeconfig(tmp_path / "k").read_text()
    client = new_api_client(kubeconfig_data=text, context="one")
    client.close()
    with pytest.raises(ConfigError, match="context"):
        new_api_client(kubeconfig_data=text, context="missing")
    with pytest.raises(ConfigError) as info:
        new_api_client(kubeconfig=tmp_path / "nope")
    assert "secret-token-value" not in str(info.value)
    with pytest.raises(ConfigError, match="only one"):
        new_api_client(kubeconfig=tmp_path / "k", in_cluster=True)


def test_unreachable_api_is_transient(tmp_path: Path) -> None:
    api = KubeApi(
        new_api_client(kubeconfig=kubeconfig(tmp_path / "k", server="https://127.0.0.1:9")),
        request_timeout=2,
    )
    try:
        with pytest.raises(
            EngineUnavailableError,
            match="could not be reached to get apps/deployments/web in namespace ns",
        ):
            api.get("Deployment", "ns", "web")
    finally:
        api.close()


def test_list_all_pages_and_restarts_after_an_expired_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = KubeApi.__new__(KubeApi)
    pages = {
        None: Page([{"metadata": {"uid": "1"}}, {"metadata": {"uid": "2"}}], "5", "t1"),
        "t1": Page([{"metadata": {"uid": "3"}}], "5", None),
    }
    calls: list[str | None] = []
    expired = {"done": False}

    def list_page(
        kind: str, namespace: str | None, *, continue_token: str | None = None, **_: Any
    ) -> Page:
        calls.append(continue_token)
        if continue_token == "t1" and not expired["done"]:
            expired["done"] = True
            error = translate_api_error(api_exception(410), verb="list", resource="pods")
            raise error from api_exception(410)
        return pages[continue_token]

    monkeypatch.setattr(api, "list_page", list_page)
    uids = [item["metadata"]["uid"] for item in api.list_all("Pod", "ns")]
    assert uids == ["1", "2", "3"]  # nothing twice after the restart
    assert calls == [None, "t1", None, "t1"]


def test_kinds_and_selectors() -> None:
    assert canonical_kind("deployments") == "Deployment"
    assert canonical_kind("cronjob") == "CronJob"
    assert resource_of("CronJob") == "batch/cronjobs" and resource_of("Pod") == "pods"
    with pytest.raises(InvalidInputError):
        canonical_kind("Service")
    assert (
        selector_string(
            {
                "matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["x", "y"]},
                    {"key": "skip", "operator": "DoesNotExist"},
                ],
            }
        )
        == "a=1,b=2,tier in (x,y),!skip"
    )
    assert selector_string(None) is None
