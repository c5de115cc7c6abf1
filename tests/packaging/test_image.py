"""The Dockerfile: its structure always, and a real build and run where a base image exists.

The test-bed engine cannot pull `python:3.11-slim` (no Docker Hub here), so the real build runs
only when SAFE_UPDATER_TEST_PYTHON_IMAGE names a Python 3.11 image already in that engine
(tests/packaging/make-python-base-image makes one from Debian packages). It builds offline from
a wheelhouse (`--network none`), then runs `serve` with a read-only root filesystem and checks
the Prefect API, /metrics, the user and a clean stop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.testbed import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
STATE_DIR = "/var/lib/safe-updater"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    result = []
    for line in logical:
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def final_stage(parsed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(parsed) if word == "FROM")
    return parsed[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                env[key] = value
    return env


def test_dockerfile_runs_as_a_fixed_non_root_user() -> None:
    stage = final_stage(instructions(DOCKERFILE.read_text()))
    users = [rest for word, rest in stage if word == "USER"]
    assert users, "the final stage sets no USER: the container would run as root"
    args = {
        m.group(1): m.group(2)
        for word, rest in stage
        if word == "ARG"
        for m in [re.match(r"(\w+)=(\S+)", rest)]
        if m
    }
    user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[-1])
    uid, _, gid = user.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, user
    # USER comes after every RUN: nothing runs as root after the switch, and nothing needs to.
    last_run = max(i for i, (word, _) in enumerate(stage) if word == "RUN")
    assert stage.index(("USER", users[-1])) > last_run


def test_dockerfile_entrypoint_cmd_volume_and_environment() -> None:
    stage = final_stage(instructions(DOCKERFILE.read_text()))
    found = {word: rest for word, rest in stage if word in ("ENTRYPOINT", "CMD", "VOLUME")}
    assert json.loads(found["ENTRYPOINT"]) == ["safe-updater"]  # exec form: signals reach it
    cmd = json.loads(found["CMD"])
    assert cmd[0] == "serve" and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert json.loads(found["VOLUME"]) == [STATE_DIR]
    env = env_of(stage)
    assert env["SAFE_UPDATER_HOME"] == STATE_DIR
    assert env["PREFECT_HOME"].startswith(STATE_DIR + "/")
    assert env["HOME"] == STATE_DIR  # helm and Prefect write under HOME: the volume
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    exposed = {p for word, rest in stage if word == "EXPOSE" for p in rest.split()}
    assert exposed == {"4200", "9720"}


def test_dockerfile_installs_the_package_and_names_no_registry_or_secret() -> None:
    text = DOCKERFILE.read_text()
    # A `# syntax=` directive makes BuildKit pull a frontend image from a registry first.
    assert not re.match(r"#\s*syntax\s*=", text, re.I)
    parsed = instructions(text)
    froms = [rest for word, rest in parsed if word == "FROM"]
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms
    (default,) = [rest for word, rest in parsed if word == "ARG" and rest.startswith("PYTHON_")]
    base = default.split("=", 1)[1]
    assert base == "python:3.11-slim"
    # No registry host: the first path part of an image name with a dot or port is a host.
    assert "/" not in base or not re.search(r"[.:]", base.split("/", 1)[0])
    runs = " ".join(rest for word, rest in parsed if word == "RUN")
    assert re.search(r"pip install \$\{PIP_INSTALL_OPTIONS\} \.", runs), runs
    code = "\n".join(f"{word} {rest}" for word, rest in parsed)
    assert not re.search(r"https?://", code), "no index, registry or download URL in the build"
    assert "--index-url" not in code and "--extra-index-url" not in code
    assert not any(word == "ADD" for word, _ in parsed)  # ADD can fetch URLs; COPY cannot
    for word, rest in parsed:
        if word in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", rest) or [rest.split("=")[0]]
            for name in names:
                assert not re.search(r"PASSWORD|TOKEN|SECRET|API_KEY|AUTH", name), (word, rest)


def test_dockerignore_lets_in_only_the_package_source() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # an allowlist: anything new stays out of the context
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "src", "wheelhouse"}
    for name in ("pyproject.toml", "README.md", "src"):
        assert (REPO_ROOT / name).exists(), name


# --- a real build (needs the Docker test bed and a local base image) --------------------------


@pytest.fixture
def base_image(docker_client: Any) -> str:
    name = os.environ.get("SAFE_UPDATER_TEST_PYTHON_IMAGE", "")
    if not name:
        pytest.skip(
            "SAFE_UPDATER_TEST_PYTHON_IMAGE is not set: the test-bed engine cannot pull "
            "python:3.11-slim; make a local one with tests/packaging/make-python-base-image"
        )
    import docker.errors

    try:
        docker_client.images.get(name)
    except docker.errors.ImageNotFound:
        pytest.fail(f"SAFE_UPDATER_TEST_PYTHON_IMAGE={name} is not in the test-bed engine")
    return name


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True, timeout=600)


@pytest.fixture
def build_context(tmp_path: Path) -> Path:
    """A copy of what .dockerignore lets in, plus a wheelhouse, so the build needs no network."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, context / name)
    shutil.copytree(
        REPO_ROOT / "src",
        context / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    wheels = context / "wheelhouse"
    # The package and its dependencies; setuptools and wheel for pip's isolated build of `.`;
    # async-timeout because Debian's Python is 3.11.2 and redis needs it below 3.11.3.
    pip("wheel", str(context), "--wheel-dir", str(wheels))
    pip("download", "setuptools>=68", "wheel", "async-timeout>=4.0.3", "--dest", str(wheels))
    return context


@pytest.fixture
def built_image(docker_client: Any, base_image: str, build_context: Path) -> Iterator[Any]:
    tag = f"safe-updater-test/safe-updater:{uuid.uuid4().hex[:8]}"
    image, _ = docker_client.images.build(
        path=str(build_context),
        tag=tag,
        rm=True,
        forcerm=True,
        network_mode="none",  # offline: everything comes from the context
        buildargs={
            "PYTHON_IMAGE": base_image,
            "PIP_INSTALL_OPTIONS": "--no-index --find-links=/src/wheelhouse",
        },
    )
    try:
        yield image
    finally:
        docker_client.images.remove(image.id, force=True)


def wait_for_http(url: str, timeout: float) -> httpx.Response:
    """Poll a server in another process (no clock to inject) until it answers 200."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=5, trust_env=False)
            if response.status_code == 200:
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 in {timeout:g} s (last: {last})")


@pytest.mark.integration
def test_image_builds_and_serves_read_only_as_non_root(
    docker_client: Any, built_image: Any, tmp_path: Path
) -> None:
    config = built_image.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["safe-updater"]
    assert config["Cmd"] == ["serve", "--host", "0.0.0.0"]

    config_file = tmp_path / "safe-updater.yaml"
    config_file.write_text("targets: {}\n")
    config_file.chmod(0o644)
    api_port, metrics_port = free_port(), free_port()
    volume = docker_client.volumes.create(f"safe-updater-test-{uuid.uuid4().hex[:8]}")
    # Host network (the test bed has no bridge) and loopback addresses only.
    command = ["serve", "--host", "127.0.0.1", "--port", str(api_port)]
    command += ["--metrics-port", str(metrics_port)]
    container = docker_client.containers.run(
        built_image.id,
        command,
        detach=True,
        network_mode="host",
        read_only=True,
        tmpfs={"/tmp": "rw,size=64m"},
        volumes={
            volume.name: {"bind": STATE_DIR, "mode": "rw"},
            str(config_file): {"bind": "/etc/safe-updater/safe-updater.yaml", "mode": "ro"},
        },
        labels={"testbed.demo": "safe-updater-image"},
    )
    try:
        health = wait_for_http(f"http://127.0.0.1:{api_port}/api/health", timeout=180)
        assert health.json() is True
        metrics = wait_for_http(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60).text
        assert re.search(r"^safe_updater_store_up 1\.0$", metrics, re.M), metrics[:2000]
        uid = container.exec_run(["id", "-u"]).output.decode().strip()
        assert uid == "10001"
        # The state store and Prefect's database went to the volume, not the (read-only) root.
        state = container.exec_run(["ls", STATE_DIR]).output.decode().split()
        assert {"state.db", "prefect"} <= set(state), state
        prefect = container.exec_run(["ls", f"{STATE_DIR}/prefect"]).output.decode().split()
        assert any(name.endswith(".db") for name in prefect), prefect
        container.stop(timeout=30)
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, container.logs()[-3000:]
    finally:
        container.remove(force=True)
        volume.remove(force=True)
