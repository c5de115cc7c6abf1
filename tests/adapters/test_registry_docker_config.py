"""DockerConfigCredentials: config.json auths, credential helpers (real subprocesses)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from safe_updater.adapters.docker_config import DockerConfigCredentials, default_docker_config_path
from safe_updater.adapters.errors import RegistryAuthError
from safe_updater.domain.errors import ConfigError


def write_config(directory: Path, data: object) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps(data))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_default_path_honours_docker_config(tmp_path: Path) -> None:
    assert default_docker_config_path({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path / "config.json"
    assert default_docker_config_path({"HOME": "/h"}) == Path("/h/.docker/config.json")


def test_auth_entries_base64_and_username_password(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "auths": {
                "localhost:5001": {"auth": b64("alice:pa:ss")},
                "https://ghcr.io": {"username": "bob", "password": "pw"},
                "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
                "empty.test": {},
            }
        },
    )
    provider = DockerConfigCredentials(path)
    local = provider.for_registry("localhost:5001")
    assert local is not None and local.username == "alice"
    assert local.password.get_secret_value() == "pa:ss"
    ghcr = provider.for_registry("ghcr.io")
    assert ghcr is not None and ghcr.username == "bob"
    hub = provider.for_registry("docker.io")
    assert hub is not None and hub.username == "hub"
    assert provider.for_registry("empty.test") is None
    assert provider.for_registry("quay.io") is None
    assert "pa:ss" not in repr(provider)


def test_env_docker_config_is_used(tmp_path: Path) -> None:
    write_config(tmp_path, {"auths": {"r.test": {"username": "u", "password": "p"}}})
    provider = DockerConfigCredentials(env={"DOCKER_CONFIG": str(tmp_path)})
    assert provider.for_registry("r.test") is not None


def test_missing_file_means_no_credentials(tmp_path: Path) -> None:
    assert DockerConfigCredentials(tmp_path / "nope.json").for_registry("r.test") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ("[]", "top level must be an object"),
        (json.dumps({"auths": []}), "auths must be an object"),
        (json.dumps({"auths": {"r.test": {"auth": "!!!"}}}), "not base64"),
        (json.dumps({"auths": {"r.test": {"auth": b64("nocolon")}}}), "not base64"),
    ],
)
def test_invalid_config_is_config_error_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        DockerConfigCredentials(path).for_registry("r.test")
    assert str(path) in str(info.value)


def install_helper(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / f"docker-credential-{name}"
    helper.write_text("#!/bin/sh\n" + script)
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def helper_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    # The host arrives on stdin, never as an argument; the helper echoes it back.
    install_helper(
        bin_dir,
        "fake",
        '[ "$1" = get ] || exit 3\nread host\n'
        'printf \'{"ServerURL":"%s","Username":"user-%s","Secret":"s3cret"}\' "$host" "$host"\n',
    )
    install_helper(bin_dir, "empty", 'echo "credentials not found in native keychain"; exit 1\n')
    install_helper(bin_dir, "broken", 'echo "boom" >&2; exit 2\n')
    install_helper(bin_dir, "garbage", "echo not-json\n")
    return bin_dir


def test_cred_helpers_per_host_and_creds_store(tmp_path: Path, helper_bin: Path) -> None:
    path = write_config(
        tmp_path,
        {"credHelpers": {"ghcr.io": "fake"}, "credsStore": "fake", "auths": {"quay.io": {}}},
    )
    provider = DockerConfigCredentials(path)
    ghcr = provider.for_registry("ghcr.io")
    assert ghcr is not None and ghcr.username == "user-ghcr.io"
    assert ghcr.password.get_secret_value() == "s3cret"
    quay = provider.for_registry("quay.io")  # empty auths entry -> the store
    assert quay is not None and quay.username == "user-quay.io"
    hub = provider.for_registry("docker.io")  # Docker Hub's helper key
    assert hub is not None and hub.username == "user-https://index.docker.io/v1/"


def test_helper_without_credentials_is_none(tmp_path: Path, helper_bin: Path) -> None:
    path = write_config(tmp_path, {"credsStore": "empty"})
    assert DockerConfigCredentials(path).for_registry("ghcr.io") is None


@pytest.mark.parametrize(("helper", "message"), [("broken", "failed"), ("garbage", "JSON")])
def test_failing_helper_is_auth_error(
    tmp_path: Path, helper_bin: Path, helper: str, message: str
) -> None:
    path = write_config(tmp_path, {"credHelpers": {"ghcr.io": helper}})
    with pytest.raises(RegistryAuthError, match=message):
        DockerConfigCredentials(path).for_registry("ghcr.io")


def test_missing_helper_gives_clear_error(tmp_path: Path, helper_bin: Path) -> None:
    path = write_config(tmp_path, {"credsStore": "not-installed-anywhere"})
    with pytest.raises(RegistryAuthError) as info:
        DockerConfigCredentials(path).for_registry("ghcr.io")
    text = str(info.value)
    assert "docker-credential-not-installed-anywhere" in text
    assert "not installed or not on PATH" in text
    assert "credsStore" in text
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_helper_name_with_path_characters_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"credsStore": "../../bin/sh"})
    with pytest.raises(ConfigError, match="invalid credential helper"):
        DockerConfigCredentials(path).for_registry("ghcr.io")
