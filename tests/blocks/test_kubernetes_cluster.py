"""KubernetesCluster block: save/load through a Prefect server; the inline config stays secret."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import cast

import pytest
from pydantic import SecretStr, ValidationError

from safe_updater.adapters.kube_api import KubeApi
from safe_updater.blocks.kubernetes_cluster import KubernetesCluster
from safe_updater.domain.errors import ConfigError

TOKEN = "tok-" + uuid.uuid4().hex


def config_text(insecure: bool = False) -> str:
    cluster = {"server": "https://127.0.0.1:6443"}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True  # type: ignore[assignment]
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "ctx",
        }
    )


def test_save_load_and_build_a_client(tmp_path: Path) -> None:
    name = f"k8s-{uuid.uuid4().hex[:10]}"
    KubernetesCluster(name="prod", kubeconfig=SecretStr(config_text()), context="ctx").save(name)
    loaded = cast(KubernetesCluster, KubernetesCluster.load(name))
    assert TOKEN not in repr(loaded) and loaded.kubeconfig is not None
    client = loaded.get_api_client()
    try:
        assert client.configuration.host == "https://127.0.0.1:6443"
        assert client.configuration.verify_ssl is True
    finally:
        client.close()
    api = loaded.get_api()
    assert isinstance(api, KubeApi)
    api.close()

    path = tmp_path / "kubeconfig"
    path.write_text(config_text(insecure=True))
    with pytest.raises(ConfigError, match="insecure-skip-tls-verify"):
        KubernetesCluster(kubeconfig_path=str(path)).get_api_client()
    KubernetesCluster(kubeconfig_path=str(path), allow_insecure_tls=True).get_api_client().close()


def test_only_one_source() -> None:
    with pytest.raises(ValidationError, match="only one"):
        KubernetesCluster(kubeconfig_path="/x", in_cluster=True)
