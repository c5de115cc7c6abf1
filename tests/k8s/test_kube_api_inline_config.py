"""An inline kubeconfig (what a KubernetesCluster Block holds) with embedded certificates and
key works for every client of the process: the client library writes them to files, caches the
paths by content for the whole process, and urllib3 reads them at every new connection.

Runs in a fresh interpreter, so the library's cache starts empty as in a real run. Needs
`testbed/up registry k8s`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from k8s_support import K8sCluster

pytestmark = pytest.mark.k8s

SCRIPT = """
import gc, json, os, stat, sys
from pathlib import Path
from safe_updater.adapters.kube_api import KubeApi

data = Path(sys.argv[1]).read_text()
namespace = sys.argv[2]
seen = []
for _ in range(2):  # a second client with the same kubeconfig: the library's cache is hit
    api = KubeApi.connect(kubeconfig_data=data)
    gc.collect()
    seen.append(len(list(api.list_all("Deployment", namespace))))
    api.api_client.rest_client.pool_manager.clear()  # new TLS connections read the files again
    seen.append(len(list(api.list_all("Deployment", namespace))))
    key = Path(api.api_client.configuration.key_file)
    api.close()
    del api
    gc.collect()
print(json.dumps({
    "seen": seen,
    "key_mode": stat.S_IMODE(os.stat(key).st_mode),
    "dir_mode": stat.S_IMODE(os.stat(key.parent).st_mode),
    "dir": str(key.parent),
}))
"""


def test_inline_kubeconfig_with_embedded_certificates_serves_every_client(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    text = Path(k8s_cluster.kubeconfig).read_text()
    assert "client-key-data" in text and "certificate-authority-data" in text
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(k8s_cluster.kubeconfig), k8s_namespace],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["seen"] == [0, 0, 0, 0]
    assert result["key_mode"] == 0o600 and result["dir_mode"] == 0o700, result
    assert not Path(result["dir"]).exists(), "the key files outlived the process"
