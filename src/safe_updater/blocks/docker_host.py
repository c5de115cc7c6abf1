"""The ``DockerHost`` Block: one Docker engine the updater manages; the factory for its adapter."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from safe_updater.adapters.docker_engine import DEFAULT_API_TIMEOUT, DockerSdkEngine, TlsSettings


class DockerHost(Block):
    """A Docker engine: ``unix:///var/run/docker.sock`` or ``tcp://host:2376`` with TLS.

    Example:
        ```python
        host = DockerHost(name="local", url="unix:///var/run/docker.sock")
        engine = host.get_engine()
        ```
    """

    _block_type_name: ClassVar[str] = "Docker Host"
    _block_type_slug: ClassVar[str] = "safe-updater-docker-host"
    _description: ClassVar[str] = (
        "A Docker engine whose opted-in containers Safe Auto-Updater keeps up to date."
    )

    name: str = Field(
        default="local",
        description="The host's name in asset ids: docker:<name>/<container>.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
    )
    url: str | None = Field(
        default=None,
        description="Engine URL (unix:///path or tcp://host:port); empty: DOCKER_HOST or the "
        "default socket.",
    )
    tls: bool = Field(default=False, description="Use TLS for a tcp:// URL.")
    tls_verify: bool = Field(default=True, description="Verify the engine's certificate.")
    tls_ca_cert: str | None = Field(default=None, description="Path of the CA certificate.")
    tls_client_cert: str | None = Field(default=None, description="Path of the client certificate.")
    tls_client_key: str | None = Field(default=None, description="Path of the client key.")
    timeout: float = Field(default=DEFAULT_API_TIMEOUT, gt=0, description="API timeout, seconds.")

    def tls_settings(self) -> TlsSettings | None:
        if not (self.tls or self.tls_ca_cert or self.tls_client_cert):
            return None
        return TlsSettings(
            verify=self.tls_verify,
            ca_cert=self.tls_ca_cert,
            client_cert=self.tls_client_cert,
            client_key=self.tls_client_key,
        )

    def get_engine(self) -> DockerSdkEngine:
        """Connect to the engine; raises ``EngineUnavailableError`` when it does not answer."""
        return DockerSdkEngine.connect(self.url, tls=self.tls_settings(), timeout=self.timeout)
