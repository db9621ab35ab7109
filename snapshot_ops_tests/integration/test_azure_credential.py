"""az:// storage without a connection string: an account URL or name, DefaultAzureCredential.

The store is Azurite over HTTPS with its OAuth check on (it checks a bearer token's issuer,
audience and lifetime, not its signature), trusted through REQUESTS_CA_BUNDLE with a
certificate made for the test. DefaultAzureCredential finds its token as on Azure App
Service, at the managed identity endpoint that IDENTITY_ENDPOINT and IDENTITY_HEADER name;
App Service cannot run here, so a small HTTP server answers that one request.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from azure.storage.blob import BlobServiceClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from snapshot_ops.storage import open_storage
from snapshot_ops.storage.base import Outcome
from snapshot_ops_tests.support.stores import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    start_azurite,
    stop_process,
)

#: What DefaultAzureCredential asks the identity endpoint for, for Blob Storage.
STORAGE_RESOURCE = "https://storage.azure.com"
IDENTITY_HEADER = "identity-header-5d1e"
#: The settings the backend is opened with: short, so a failing store fails fast.
SETTINGS = {"max_attempts": 2, "retry_backoff_seconds": 0.05, "connect_timeout_seconds": 0.5}


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that signs itself, and its key: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class IdentityEndpoint:
    """App Service's managed identity endpoint: a bearer token for the resource asked for,
    with the claims Azurite checks. `asked` holds each request's query and identity header."""

    def __init__(self) -> None:
        self.asked: list[tuple[dict[str, list[str]], str | None]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                endpoint.asked.append((query, self.headers.get("X-IDENTITY-HEADER")))
                now = int(time.time())
                token = jwt.encode(
                    {
                        "aud": query["resource"][0],
                        "iss": f"https://sts.windows.net/{uuid.uuid4()}/",
                        "iat": now,
                        "nbf": now - 60,
                        "exp": now + 3600,
                    },
                    key=None,
                    algorithm="none",
                )
                body = json.dumps(
                    {
                        "access_token": token,
                        "expires_on": str(now + 3600),
                        "resource": query["resource"][0],
                        "token_type": "Bearer",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/msi/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentListener:
    """A port that accepts connections and never says a word; `accepted` counts them."""

    def __init__(self) -> None:
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


@pytest.fixture(scope="module")
def tls_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """Azurite over HTTPS with OAuth on, for the module: (port, its certificate)."""
    folder = tmp_path_factory.mktemp("azurite-tls")
    cert, key = self_signed_certificate(folder)
    process, port = start_azurite(
        folder, "--oauth", "basic", "--cert", str(cert), "--key", str(key)
    )
    yield port, cert
    stop_process(process)


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityEndpoint]:
    """The identity endpoint, and only it among DefaultAzureCredential's sources."""
    endpoint = IdentityEndpoint()
    for name in (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT_URL",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "MSI_ENDPOINT",
        "IDENTITY_SERVER_THUMBPRINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    yield endpoint
    endpoint.close()


@pytest.fixture
def container(tls_azurite: tuple[int, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A new container in the HTTPS Azurite, seen with the account key (not the code under
    test); the SDK trusts Azurite's certificate through REQUESTS_CA_BUNDLE."""
    port, cert = tls_azurite
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    service = BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=https;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=https://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )
    client = service.create_container(f"c{uuid.uuid4().hex[:12]}")
    yield client
    client.delete_container()


def test_the_account_url_and_the_default_credential_reach_the_store(
    identity, container, monkeypatch
):
    port = urlsplit(container.url).port
    for key in ("a.pdf", "b.png", "kept.pdf"):
        container.upload_blob(f"snapshots/{key}", b"x" * 100)
    # The URL wins over the name; the name alone would send it to the public cloud.
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", f"https://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "elsewhere")
    backend = open_storage(f"az://{container.container_name}/snapshots", **SETTINGS)
    try:
        assert sorted(backend.list_keys()) == ["a.pdf", "b.png", "kept.pdf"]
        assert backend.sizes(["a.pdf"]) == {"a.pdf": 100}
        results = backend.delete_many(["a.pdf", "b.png"])
    finally:
        backend.close()

    assert {(r.key, r.outcome) for r in results} == {
        ("a.pdf", Outcome.DELETED),
        ("b.png", Outcome.DELETED),
    }
    assert [b.name for b in container.list_blobs()] == ["snapshots/kept.pdf"]
    assert identity.asked, "no token was asked for"
    for query, header in identity.asked:
        assert (query["resource"], header) == ([STORAGE_RESOURCE], IDENTITY_HEADER)


@pytest.mark.timeout(120)  # without the settings: 4 attempts of the SDK's 20 s
def test_retries_and_the_connect_timeout_hold_without_a_connection_string(identity, monkeypatch):
    # A store that accepts the connection and never answers the TLS handshake: each attempt
    # ends at the connect timeout, and the SDK makes max_attempts of them.
    listener = SilentListener()
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", f"https://127.0.0.1:{listener.port}/acct")
    backend = open_storage("az://snapshots/parse", **SETTINGS)
    started = time.monotonic()
    try:
        sizes = backend.sizes(["a.pdf"])
    finally:
        elapsed = time.monotonic() - started
        backend.close()
        listener.close()
    assert sizes == {"a.pdf": None}
    assert listener.accepted == SETTINGS["max_attempts"]
    # Two attempts of 0.5 s; the SDK's own connect timeout (20 s) would take 40 s.
    assert elapsed < 10
