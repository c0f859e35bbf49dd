"""https through the guarded connection: certificate and host name checks stay on.

The guard connects to the address it checked; TLS must still verify the certificate against
the host name of the URL (SNI and hostname checking), not against the address.
A self-signed certificate valid for IP 127.0.0.1 only is made with the openssl CLI.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from images_service.config.settings import Settings, load_settings
from images_service.errors import DownloadError
from images_service.fetching.fetcher import Fetcher
from tests.support.image_server import ImageServer, make_image

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=image-server-test", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[ImageServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = ImageServer("127.0.0.1", tls=context).start()
    yield server
    server.stop()


def make_settings(tmp_path: Path, **env: str) -> Settings:
    values = {"STORAGE_PATH": str(tmp_path), "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27",
              "DOWNLOAD_TIMEOUT": "2"}
    values.update(env)
    return load_settings(values)


def test_https_with_a_trusted_certificate(tmp_path: Path, tls_server: ImageServer,
                                          certificate: tuple[Path, Path]) -> None:
    with Fetcher(make_settings(tmp_path), ca_certs=str(certificate[0])) as fetcher:
        body = fetcher.fetch(tls_server.url("/image/PNG"), tmp_path)
    assert body.path.read_bytes() == make_image("PNG")
    body.discard()


def test_an_untrusted_certificate_is_refused(tmp_path: Path, tls_server: ImageServer) -> None:
    with Fetcher(make_settings(tmp_path)) as fetcher, pytest.raises(DownloadError) as info:
        fetcher.fetch(tls_server.url("/image/PNG"), tmp_path)
    assert info.value.code == "connection_error"
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.message


def test_the_certificate_is_checked_against_the_url_host(tmp_path: Path,
                                                         tls_server: ImageServer,
                                                         certificate: tuple[Path, Path]) -> None:
    # localhost resolves to 127.0.0.1, the address the certificate names; the URL's host
    # is "localhost", which it does not name: verification must fail.
    settings = make_settings(tmp_path, ALLOW_PRIVATE_NETWORKS="true")
    with Fetcher(settings, ca_certs=str(certificate[0])) as fetcher:
        with pytest.raises(DownloadError) as info:
            fetcher.fetch(f"https://localhost:{tls_server.port}/image/PNG", tmp_path)
    assert info.value.code == "connection_error"
    assert "localhost" in info.value.message or "match" in info.value.message


def test_https_odd_spellings_are_blocked_too(tmp_path: Path, tls_server: ImageServer) -> None:
    tls_server.reset()
    settings = make_settings(tmp_path, PRIVATE_NETWORK_ALLOWLIST="")
    with Fetcher(settings) as fetcher, pytest.raises(DownloadError) as info:
        fetcher.fetch(f"https://2130706433:{tls_server.port}/image/PNG", tmp_path)
    assert info.value.code == "blocked_address"
    assert tls_server.hits() == 0
