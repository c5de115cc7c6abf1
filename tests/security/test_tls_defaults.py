"""TLS is verified by default for registries, Docker engines and Kubernetes clusters; turning
verification off is explicit and logged with a WARNING that names the target (issue 7).

The verifying side is shown against a real HTTPS server on 127.0.0.1 with a certificate of a
throw-away CA: refused by default, accepted when that CA is given, accepted with a warning when
verification is turned off.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from safe_updater.adapters.docker_engine import DockerSdkEngine, TlsSettings
from safe_updater.adapters.kube_api import KubeApi, new_api_client
from safe_updater.adapters.registry import OciRegistry, registry_base_url
from safe_updater.config import RegistryConfig, TlsConfig, parse_config_text
from safe_updater.domain.assets import ImageRef
from safe_updater.domain.errors import AuthError, ConfigError, SafeUpdaterError

# Connecting to 0.0.0.0 reaches the loopback interface on Linux, but the updater does not count
# it as loopback, so it takes the path of a remote host (HTTPS for a registry, a warning for a
# Docker engine without TLS) while every packet stays on this machine.
NOT_LOOPBACK = "0.0.0.0"


class _Handler(BaseHTTPRequestHandler):
    """Just enough of the Docker and registry APIs for a client to finish connecting."""

    def do_GET(self) -> None:
        body: dict[str, object]
        if self.path.endswith("/version"):
            body = {"ApiVersion": "1.45", "Version": "27.0.0", "MinAPIVersion": "1.24"}
        elif "/tags/list" in self.path:
            body = {"name": "demo/web", "tags": ["1.0.0"]}
        else:
            body = {}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests assert on the clients' logs."""


@dataclass
class Server:
    port: int
    ca_file: Path | None  # None: plain HTTP


def _ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, 0.0.0.0 and localhost, as PEM files."""
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("safe-updater test CA"))
        .issuer_name(name("safe-updater test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address(NOT_LOOPBACK)),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


def _serve(tls_dir: Path | None) -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ca_file = None
    if tls_dir is not None:
        ca_file, cert_file, key_file = _ca_and_cert(tls_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(port=httpd.server_address[1], ca_file=ca_file)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def http_server() -> Iterator[Server]:
    yield from _serve(None)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --- defaults -------------------------------------------------------------------------------------


def test_config_defaults_verify() -> None:
    config = parse_config_text(
        "registries:\n  - host: ghcr.io\n"
        "targets:\n  docker:\n    - name: remote\n      url: tcp://10.0.0.5:2376\n"
        "      tls: {ca_cert: /etc/su/ca.pem}\n"
    )
    assert config.registries[0].insecure is False
    assert RegistryConfig(host="registry.example").insecure is False
    tls = config.targets.docker[0].tls
    assert tls is not None and tls.verify is True
    assert TlsConfig().verify is True
    assert registry_base_url("ghcr.io").startswith("https://")
    assert registry_base_url("registry.example:5000").startswith("https://")


def test_block_defaults_verify() -> None:
    from safe_updater.blocks.docker_host import DockerHost
    from safe_updater.blocks.kubernetes_cluster import KubernetesCluster

    host = DockerHost(url="tcp://10.0.0.5:2376", tls=True)
    settings = host.tls_settings()
    assert settings is not None and settings.verify is True
    assert KubernetesCluster(kubeconfig_path="/etc/su/kubeconfig").allow_insecure_tls is False


# --- registries -----------------------------------------------------------------------------------


def test_registry_refuses_an_untrusted_certificate(
    https_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    image = ImageRef.parse(f"{NOT_LOOPBACK}:{https_server.port}/demo/web:1.0.0")
    with OciRegistry() as registry, pytest.raises(SafeUpdaterError) as info:
        registry.list_tags(image)
    assert "certificate" in str(info.value).lower(), info.value
    assert _warnings(caplog) == []  # nothing was turned off, so nothing to warn about


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_registry_with_verification_off_is_logged(
    https_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    image = ImageRef.parse(f"{NOT_LOOPBACK}:{https_server.port}/demo/web:1.0.0")
    with OciRegistry(verify_tls=False) as registry:
        assert list(registry.list_tags(image)) == ["1.0.0"]
    assert any("TLS certificate verification is OFF" in m for m in _warnings(caplog))


def test_an_insecure_registry_is_logged_by_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with OciRegistry(insecure_hosts=["registry.example:5000", "localhost:5000"]):
        pass
    assert registry_base_url("registry.example:5000", ["registry.example:5000"]).startswith(
        "http://"
    )
    warnings = _warnings(caplog)
    assert any("registry.example:5000" in m and "plain HTTP" in m for m in warnings), warnings
    assert not any("localhost:5000" in m for m in warnings)  # loopback is always plain HTTP


# --- Docker engines -------------------------------------------------------------------------------


def test_docker_engine_refuses_an_untrusted_certificate(https_server: Server) -> None:
    url = f"tcp://127.0.0.1:{https_server.port}"
    with pytest.raises(AuthError) as info:
        DockerSdkEngine.connect(url, tls=TlsSettings(), timeout=10)
    message = str(info.value)
    assert "TLS verification of the Docker engine failed" in message, message
    assert "certificate verify failed" in message and "tls.ca_cert" in message, message


def test_docker_engine_with_its_ca_connects_without_a_warning(
    https_server: Server, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests would let this variable replace the configured CA (and the CA check with it).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    caplog.set_level(logging.WARNING)
    url = f"tcp://127.0.0.1:{https_server.port}"
    engine = DockerSdkEngine.connect(url, tls=TlsSettings(ca_cert=str(https_server.ca_file)))
    engine.close()
    assert _warnings(caplog) == []


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_docker_engine_with_verification_off_is_logged(
    https_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    url = f"tcp://127.0.0.1:{https_server.port}"
    engine = DockerSdkEngine.connect(url, tls=TlsSettings(verify=False))
    engine.close()
    [warning] = _warnings(caplog)
    assert "TLS certificate verification is OFF" in warning and url in warning


def test_remote_docker_engine_without_tls_is_logged(
    http_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    remote = f"tcp://{NOT_LOOPBACK}:{http_server.port}"
    DockerSdkEngine.connect(remote).close()
    [warning] = _warnings(caplog)
    assert remote in warning and "without TLS" in warning
    caplog.clear()
    DockerSdkEngine.connect(f"tcp://127.0.0.1:{http_server.port}").close()
    assert _warnings(caplog) == []  # the local engine over loopback TCP is not worth a warning


# --- Kubernetes -----------------------------------------------------------------------------------


def _kubeconfig(server: str, *, insecure: bool = False, ca_file: Path | None = None) -> str:
    cluster: dict[str, object] = {"server": server}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )


def test_kubernetes_refuses_an_untrusted_certificate(https_server: Server) -> None:
    api = KubeApi.connect(kubeconfig_data=_kubeconfig(f"https://127.0.0.1:{https_server.port}"))
    try:
        with pytest.raises(SafeUpdaterError, match="TLS verification of the Kubernetes API"):
            api.get("Deployment", "default", "web")
    finally:
        api.close()


def test_kubernetes_insecure_kubeconfig_is_refused_unless_allowed_then_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = "https://10.0.0.7:6443"
    with pytest.raises(ConfigError, match="turns TLS verification off") as info:
        new_api_client(kubeconfig_data=_kubeconfig(server, insecure=True))
    assert "certificate-authority-data" in str(info.value)  # the fix is named

    caplog.set_level(logging.WARNING)
    client = new_api_client(
        kubeconfig_data=_kubeconfig(server, insecure=True), allow_insecure_tls=True
    )
    client.close()  # type: ignore[no-untyped-call]
    [warning] = _warnings(caplog)
    assert "TLS certificate verification is OFF" in warning and server in warning


def test_kubernetes_with_its_ca_verifies_without_a_warning(
    https_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    client = new_api_client(
        kubeconfig_data=_kubeconfig("https://127.0.0.1:6443", ca_file=https_server.ca_file)
    )
    assert client.configuration.verify_ssl is True
    client.close()  # type: ignore[no-untyped-call]
    assert _warnings(caplog) == []
