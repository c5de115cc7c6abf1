"""Record real helm 3 and helm 4 output for the unit tests (tests/adapters/data/helm/).

Run against the test cluster (``testbed/up registry k8s``; then ``source $TESTBED_DIR/env``)::

    .venv/bin/python tests/k8s/record_helm_fixtures.py

Each fixture is ``{helm, argv, returncode, stdout, stderr}`` with the test bed's ports and
namespace replaced by placeholders, so the unit tests do not depend on one run's ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "adapters" / "data" / "helm"


def main() -> int:
    env_keys = ("KUBECONFIG", "HELM3", "HELM4", "TESTBED_CHART_REPO_OCI", "TESTBED_CHART_REPO_HTTP")
    missing = [k for k in env_keys if not os.environ.get(k)]
    if missing:
        print(f"missing {', '.join(missing)}: source $TESTBED_DIR/env", file=sys.stderr)
        return 2
    oci, http = os.environ["TESTBED_CHART_REPO_OCI"], os.environ["TESTBED_CHART_REPO_HTTP"]
    auth = os.environ.get("TESTBED_REGISTRY_AUTH")
    OUT.mkdir(parents=True, exist_ok=True)
    for which in ("helm3", "helm4"):
        binary = os.environ[which.upper()]
        ns = f"rec-{uuid.uuid4().hex[:6]}"
        home = Path(tempfile.mkdtemp(prefix="helm-rec-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "DOCKER_"))}
        env.update(
            HELM_CONFIG_HOME=str(home / "c"),
            HELM_CACHE_HOME=str(home / "k"),
            HELM_DATA_HOME=str(home / "d"),
        )

        def run(*args: str, _binary: str = binary, _env: dict[str, str] = env) -> dict[str, object]:
            proc = subprocess.run(
                [_binary, *args], capture_output=True, text=True, env=_env, timeout=120
            )
            return {
                "argv": list(args),
                "returncode": proc.returncode,
                "stdout": proc.stdout,
                "stderr": proc.stderr,
            }

        def save(name: str, result: dict[str, object], _which: str = which, _ns: str = ns) -> None:
            text = json.dumps({"helm": _which, **result}, indent=1)
            for real, placeholder in ((oci, "OCI_REPO"), (http, "HTTP_REPO"), (_ns, "NS")):
                text = text.replace(real, placeholder)
            if auth:
                text = text.replace(auth, "AUTH_REGISTRY")
            (OUT / f"{_which}_{name}.json").write_text(text + "\n")

        kubectl = os.environ.get("KUBECTL", "kubectl")
        subprocess.run(
            [kubectl, "create", "namespace", ns], env=env, check=True, capture_output=True
        )
        try:
            ns_flag = f"--namespace={ns}"
            save("version", run("version", "--short"))
            run(
                "install",
                "web",
                "demo",
                f"--repo={http}",
                "--version=1.0.0",
                ns_flag,
                "--set=replicaCount=1",
                "--wait",
                "--timeout=60s",
            )
            save(
                "upgrade",
                run(
                    "upgrade",
                    ns_flag,
                    "--version=1.0.1",
                    "--plain-http",
                    "--reset-then-reuse-values",
                    "--output=json",
                    "--",
                    "web",
                    f"{oci}/demo",
                ),
            )
            save(
                "list",
                run(
                    "list",
                    "--all-namespaces",
                    "--deployed",
                    "--failed",
                    "--pending",
                    "--max=0",
                    "--output=json",
                ),
            )
            save("status", run("status", ns_flag, "--output=json", "--", "web"))
            save("history", run("history", ns_flag, "--output=json", "--", "web"))
            save("metadata", run("get", "metadata", ns_flag, "--output=json", "--", "web"))
            save("values", run("get", "values", ns_flag, "--output=json", "--", "web"))
            save("values_all", run("get", "values", ns_flag, "--all", "--output=json", "--", "web"))
            save("release_not_found", run("status", ns_flag, "--output=json", "--", "nope"))
            save(
                "no_deployed",
                run("upgrade", ns_flag, "--version=1.0.0", f"--repo={http}", "--", "nope", "demo"),
            )
            save("revision_not_found", run("rollback", ns_flag, "--", "web", "99"))
            save(
                "oci_version_not_found",
                run(
                    "upgrade",
                    ns_flag,
                    "--version=9.9.9",
                    "--plain-http",
                    "--",
                    "web",
                    f"{oci}/demo",
                ),
            )
            save(
                "http_version_not_found",
                run("upgrade", ns_flag, "--version=9.9.9", f"--repo={http}", "--", "web", "demo"),
            )
            save(
                "http_chart_not_found",
                run(
                    "upgrade", ns_flag, "--version=1.0.0", f"--repo={http}", "--", "web", "nochart"
                ),
            )
            save(
                "repo_unreachable",
                run(
                    "upgrade",
                    ns_flag,
                    "--version=1.0.0",
                    "--repo=http://127.0.0.1:1",
                    "--",
                    "web",
                    "demo",
                ),
            )
            if auth:
                save(
                    "oci_unauthorized",
                    run(
                        "upgrade",
                        ns_flag,
                        "--version=1.0.0",
                        "--plain-http",
                        "--",
                        "web",
                        f"oci://{auth}/charts/demo",
                    ),
                )
            save(
                "hostile_release",
                run("status", ns_flag, "--output=json", "--", "--post-renderer=/bin/sh"),
            )
            # another operation in progress: a waiting upgrade to the broken version, then another.
            wait = "--wait=watcher" if which == "helm4" else "--wait"
            background = subprocess.Popen(
                [
                    binary,
                    "upgrade",
                    ns_flag,
                    "--version=1.0.2",
                    "--plain-http",
                    wait,
                    "--timeout=15s",
                    "--",
                    "web",
                    f"{oci}/demo",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                for _ in range(100):
                    status = run("status", ns_flag, "--output=json", "--", "web")
                    if '"pending-upgrade"' in str(status["stdout"]):
                        break
                save(
                    "in_progress",
                    run(
                        "upgrade",
                        ns_flag,
                        "--version=1.0.1",
                        "--plain-http",
                        "--",
                        "web",
                        f"{oci}/demo",
                    ),
                )
            finally:
                _, stderr = background.communicate(timeout=120)
            save(
                "wait_timeout",
                {
                    "argv": ["upgrade", "…", wait, "--timeout=15s"],
                    "returncode": background.returncode,
                    "stdout": "",
                    "stderr": stderr,
                },
            )
            save("history_failed", run("history", ns_flag, "--output=json", "--", "web"))
        finally:
            subprocess.run(
                [kubectl, "delete", "namespace", ns, "--wait=false"], env=env, capture_output=True
            )
    print(f"fixtures in {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
