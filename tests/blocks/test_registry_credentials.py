"""RegistryCredentials block: save/load through a real Prefect server; the secret stays hidden."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import cast

import pytest
from pydantic import SecretStr, ValidationError

from safe_updater.adapters.registry import RegistryCredential
from safe_updater.blocks.registry_credentials import RegistryCredentials, credentials_from_blocks

PASSWORD = "bl0ck-Secret-" + uuid.uuid4().hex


def load(name: str) -> RegistryCredentials:
    return cast(RegistryCredentials, RegistryCredentials.load(name))


def _name() -> str:
    return f"reg-{uuid.uuid4().hex[:12]}"


def test_save_and_load_round_trip() -> None:
    name = _name()
    RegistryCredentials(registry="ghcr.io", username="bot", password=SecretStr(PASSWORD)).save(name)
    loaded = load(name)
    assert loaded.registry == "ghcr.io"
    assert loaded.username == "bot"
    assert loaded.password.get_secret_value() == PASSWORD
    assert loaded.to_credential() == RegistryCredential(
        username="bot", password=SecretStr(PASSWORD)
    )
    assert loaded.get_credentials_provider().for_registry("ghcr.io") == loaded.to_credential()
    assert loaded.get_credentials_provider().for_registry("quay.io") is None


def test_secret_never_in_repr_str_or_json() -> None:
    block = RegistryCredentials(registry="ghcr.io", username="bot", password=SecretStr(PASSWORD))
    name = _name()
    block.save(name)
    loaded = load(name)
    for obj in (block, loaded, loaded.to_credential()):
        for text in (
            repr(obj),
            str(obj),
            obj.model_dump_json(),
            json.dumps(obj.model_dump(), default=str),
        ):
            assert PASSWORD not in text


def test_registry_is_normalized() -> None:
    block = RegistryCredentials(
        registry="https://Registry.Example.com:5000/", username="u", password=SecretStr("p")
    )
    assert block.registry == "registry.example.com:5000"
    hub = RegistryCredentials(
        registry="https://index.docker.io/v1/", username="u", password=SecretStr("p")
    )
    assert hub.registry == "docker.io"
    with pytest.raises(ValidationError):
        RegistryCredentials(registry="  ", username="u", password=SecretStr("p"))


def test_provider_from_block_names_first_block_per_host_wins() -> None:
    first, second, other = _name(), _name(), _name()
    RegistryCredentials(registry="ghcr.io", username="one", password=SecretStr("1")).save(first)
    RegistryCredentials(registry="ghcr.io", username="two", password=SecretStr("2")).save(second)
    RegistryCredentials(registry="quay.io", username="q", password=SecretStr("3")).save(other)
    provider = credentials_from_blocks([first, second, other])
    ghcr = provider.for_registry("ghcr.io")
    assert ghcr is not None and ghcr.username == "one"
    quay = provider.for_registry("quay.io")
    assert quay is not None and quay.username == "q"
    assert provider.for_registry("docker.io") is None


def test_provider_falls_back_to_docker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"localhost:5000": {"username": "cfg", "password": "pw"}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    name = _name()
    RegistryCredentials(registry="ghcr.io", username="bot", password=SecretStr("x")).save(name)
    provider = credentials_from_blocks([name], docker_config=True)
    local = provider.for_registry("localhost:5000")
    assert local is not None and local.username == "cfg"
    ghcr = provider.for_registry("ghcr.io")
    assert ghcr is not None and ghcr.username == "bot"


def test_missing_block_name_raises() -> None:
    with pytest.raises(ValueError):
        credentials_from_blocks([_name()])
