"""The ``RegistryCredentials`` block: a registry login stored (encrypted) in Prefect.

Each block holds one registry's username and password; flows pass block *names*, never
secrets. :func:`credentials_from_blocks` turns a list of names into the adapter's
:class:`~safe_updater.adapters.registry_auth.CredentialsProvider`, optionally falling back to
Docker's config file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from safe_updater.adapters.docker_config import DockerConfigCredentials
from safe_updater.adapters.registry_auth import (
    ChainedCredentials,
    CredentialsProvider,
    RegistryCredential,
    StaticCredentials,
    normalize_registry_host,
)

__all__ = ["RegistryCredentials", "credentials_from_blocks"]


class RegistryCredentials(Block):
    """Username and password (or access token) for one container registry."""

    _block_type_name = "Safe Updater Registry Credentials"
    _block_type_slug = "safe-updater-registry-credentials"
    _description = (
        "A login for one OCI registry (Docker Hub, GHCR, a private registry), used by the "
        "Safe Auto-Updater to list tags and read digests."
    )

    registry: str = Field(
        description="Registry host[:port] as in image references, e.g. ghcr.io or "
        "registry.example.com:5000 (docker.io for Docker Hub).",
    )
    username: str = Field(description="Registry username (or a robot/service account).")
    password: SecretStr = Field(description="Password or access token.")

    @field_validator("registry")
    @classmethod
    def _normalize_registry(cls, value: str) -> str:
        host = normalize_registry_host(value)
        if not host:
            raise ValueError("registry must be a host[:port] such as ghcr.io")
        return host

    def to_credential(self) -> RegistryCredential:
        return RegistryCredential(username=self.username, password=self.password)

    def get_credentials_provider(self) -> CredentialsProvider:
        """A provider that answers for this block's registry only."""
        return StaticCredentials({self.registry: self.to_credential()})


def credentials_from_blocks(
    names: Iterable[str], *, docker_config: bool = False
) -> CredentialsProvider:
    """Load each named ``RegistryCredentials`` block; the first block for a host wins.

    With ``docker_config=True``, hosts no block covers fall back to Docker's config file
    (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``).
    """
    static = StaticCredentials()
    covered: set[str] = set()
    for name in names:
        # _sync=True: a plain call even when a caller runs this inside an event loop.
        loaded = RegistryCredentials.load(name, _sync=True)  # type: ignore[call-arg]
        block = cast(RegistryCredentials, loaded)
        if block.registry not in covered:
            covered.add(block.registry)
            static.add(block.registry, block.to_credential())
    if docker_config:
        return ChainedCredentials(static, DockerConfigCredentials())
    return static
