"""The fetcher against a real loopback server: status codes, timeouts, caps, redirects, SSRF.

No HTTP is mocked. Only loopback addresses are ever contacted: the SSRF tests for other
private ranges live in tests/unit/test_address_guard.py and classify addresses only.
"""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from images_service.config.settings import Settings, load_settings
from images_service.errors import DownloadError
from images_service.fetching.fetcher import MAX_REDIRECTS, Fetcher
from tests.support.image_server import ImageServer, make_image


def make_settings(tmp_path: Path, **env: str) -> Settings:
    values = {
        "STORAGE_PATH": str(tmp_path / "images"),
        "ALLOW_PRIVATE_NETWORKS": "false",
        "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27",
        "DOWNLOAD_TIMEOUT": "2",
    }
    values.update(env)
    return load_settings(values)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "dl"
    path.mkdir()
    return path


@pytest.fixture
def fetcher(tmp_path: Path) -> Iterator[Fetcher]:
    with Fetcher(make_settings(tmp_path)) as f:
        yield f


def fetch_error(fetcher: Fetcher, url: str, dest: Path) -> DownloadError:
    with pytest.raises(DownloadError) as info:
        fetcher.fetch(url, dest)
    assert list(dest.iterdir()) == [], "a failed fetch must leave no temporary file"
    return info.value


def test_fetches_an_image_with_its_metadata(fetcher: Fetcher, image_server: ImageServer,
                                            dest: Path) -> None:
    body = fetcher.fetch(image_server.url("/image/PNG"), dest)
    assert body.path.read_bytes() == make_image("PNG")
    assert body.bytes == len(make_image("PNG"))
    assert body.http_status == 200 and body.content_type == "image/png"
    assert body.path.parent == dest and body.path.name.startswith(".tmp-")
    body.discard()
    assert list(dest.iterdir()) == []


def test_sends_the_user_agent_and_asks_for_identity(tmp_path: Path, image_server: ImageServer,
                                                    dest: Path) -> None:
    settings = make_settings(tmp_path, USER_AGENT="serpy-images-test/9.9 (+ops@example.com)")
    with Fetcher(settings) as f:
        f.fetch(image_server.url("/image/JPEG"), dest).discard()
    (request,) = image_server.requests
    assert request.headers["User-Agent"] == "serpy-images-test/9.9 (+ops@example.com)"
    assert request.headers["Accept-Encoding"] == "identity"


def test_connections_are_kept_alive(fetcher: Fetcher, image_server: ImageServer,
                                    dest: Path) -> None:
    for seed in range(10):
        fetcher.fetch(image_server.url(f"/image/JPEG?seed={seed}"), dest).discard()
    assert len({r.client for r in image_server.requests}) == 1


def test_threads_share_kept_alive_connections(fetcher: Fetcher, image_server: ImageServer,
                                              dest: Path) -> None:
    """A connection one thread released serves the next thread's request to the same host
    (one pool for the worker's threads, not one per thread)."""

    def work(n: int) -> None:
        for seed in range(3):
            fetcher.fetch(image_server.url(f"/image/GIF/{n}?seed={seed}"), dest).discard()

    for n in range(4):  # one after the other: the connection is idle between threads
        thread = threading.Thread(target=work, args=(n,))
        thread.start()
        thread.join()
    assert image_server.hits() == 12
    assert len({r.client for r in image_server.requests}) == 1


# --- HTTP statuses and Retry-After -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(404, False), (403, False), (410, False), (400, False), (408, True), (425, True),
     (429, True), (500, True), (502, True), (503, True), (504, True)],
)
def test_http_statuses(fetcher: Fetcher, image_server: ImageServer, dest: Path, status: int,
                       retryable: bool) -> None:
    error = fetch_error(fetcher, image_server.url(f"/status/{status}"), dest)
    assert error.code == f"http_{status}"
    assert error.http_status == status
    assert error.retryable is retryable


def test_retry_after_in_seconds(fetcher: Fetcher, image_server: ImageServer, dest: Path) -> None:
    error = fetch_error(fetcher, image_server.url("/status/429?retry_after=7"), dest)
    assert (error.code, error.retry_after_s, error.retryable) == ("http_429", 7.0, True)


def test_retry_after_as_an_http_date(fetcher: Fetcher, image_server: ImageServer,
                                     dest: Path) -> None:
    error = fetch_error(fetcher, image_server.url("/status/503?retry_after_date=30"), dest)
    assert error.code == "http_503"
    assert error.retry_after_s is not None and 27 <= error.retry_after_s <= 30


def test_503_once_then_success(fetcher: Fetcher, image_server: ImageServer, dest: Path) -> None:
    url = image_server.url("/once/503/k1?fmt=WEBP")
    assert fetch_error(fetcher, url, dest).code == "http_503"
    fetcher.fetch(url, dest).discard()
    assert image_server.hits("/once/503/k1") == 2


# --- timeouts and connection errors ------------------------------------------------------------


def test_a_stalled_server_hits_the_read_timeout(tmp_path: Path, image_server: ImageServer,
                                                dest: Path) -> None:
    with Fetcher(make_settings(tmp_path, DOWNLOAD_TIMEOUT="0.3")) as f:
        started = time.monotonic()
        error = fetch_error(f, image_server.url("/stall?seconds=10"), dest)
    assert error.code == "timeout" and error.retryable
    assert time.monotonic() - started < 2


def test_a_trickling_body_hits_the_total_deadline(tmp_path: Path, image_server: ImageServer,
                                                  dest: Path) -> None:
    # One byte every 50 ms never trips a 0.3 s read timeout; the 0.9 s deadline stops it.
    with Fetcher(make_settings(tmp_path, DOWNLOAD_TIMEOUT="0.3")) as f:
        assert f.deadline_s == pytest.approx(0.9)
        started = time.monotonic()
        error = fetch_error(f, image_server.url("/trickle?size=100000&interval=0.05"), dest)
    elapsed = time.monotonic() - started
    assert error.code == "timeout" and "deadline" in error.message
    assert 0.8 < elapsed < 2.0


def test_trickling_headers_hit_the_total_deadline(tmp_path: Path, image_server: ImageServer,
                                                  dest: Path) -> None:
    def slow_headers(req, query) -> None:  # type: ignore[no-untyped-def]
        req.close_connection = True
        req.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for n in range(400):
            req.wfile.write(b"X-Pad-%d: x\r\n" % n)
            req.wfile.flush()
            if req.wait(0.05):
                return

    image_server.add_route("/slow-headers", slow_headers)
    with Fetcher(make_settings(tmp_path, DOWNLOAD_TIMEOUT="0.3")) as f:
        started = time.monotonic()
        error = fetch_error(f, image_server.url("/slow-headers"), dest)
    assert error.code == "timeout"
    assert time.monotonic() - started < 2.0


def test_connection_refused_is_a_connection_error(fetcher: Fetcher, dest: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = fetch_error(fetcher, f"http://127.0.0.1:{port}/x.jpg", dest)
    assert error.code == "connection_error" and error.retryable


def test_a_body_shorter_than_its_content_length_is_a_connection_error(
    fetcher: Fetcher, image_server: ImageServer, dest: Path
) -> None:
    error = fetch_error(fetcher, image_server.url("/lying-length/long"), dest)
    assert error.code == "connection_error" and error.retryable


# --- size cap ------------------------------------------------------------------------------------


def test_a_large_content_length_is_refused_before_reading(tmp_path: Path,
                                                          image_server: ImageServer,
                                                          dest: Path) -> None:
    with Fetcher(make_settings(tmp_path, MAX_IMAGE_BYTES="100000")) as f:
        error = fetch_error(f, image_server.url("/big?size=5000000"), dest)
    assert error.code == "too_large" and not error.retryable
    assert "Content-Length 5000000" in error.message


@pytest.mark.parametrize("path", ["/no-length?size=300000", "/chunked?size=300000"])
def test_the_cap_holds_without_content_length(tmp_path: Path, image_server: ImageServer,
                                              dest: Path, path: str) -> None:
    with Fetcher(make_settings(tmp_path, MAX_IMAGE_BYTES="100000")) as f:
        error = fetch_error(f, image_server.url(path), dest)
    assert error.code == "too_large" and "body exceeds" in error.message


def test_a_content_length_smaller_than_the_body_bounds_what_is_read(
    tmp_path: Path, image_server: ImageServer, dest: Path
) -> None:
    # The server claims 1000 bytes and sends 5 MB (50x the cap): only the claimed bytes are
    # read, so the cap is never approached; the connection is not reused.
    with Fetcher(make_settings(tmp_path, MAX_IMAGE_BYTES="100000")) as f:
        body = f.fetch(image_server.url("/lying-length/short?size=5000000&claim=1000"), dest)
        assert body.bytes == 1000
        body.discard()
        f.fetch(image_server.url("/image/JPEG"), dest).discard()
    assert image_server.hits() == 2


@pytest.mark.parametrize("path", ["/no-length?fmt=PNG", "/chunked?fmt=GIF"])
def test_bodies_without_content_length_are_read(fetcher: Fetcher, image_server: ImageServer,
                                                dest: Path, path: str) -> None:
    body = fetcher.fetch(image_server.url(path), dest)
    assert body.bytes > 0
    body.discard()


def test_a_20_mb_body_streams_in_constant_memory(tmp_path: Path, image_server: ImageServer,
                                                 dest: Path) -> None:
    size = 20 * 1024 * 1024
    with Fetcher(make_settings(tmp_path, MAX_IMAGE_BYTES=str(size))) as f:
        tracemalloc.start()
        try:
            body = f.fetch(image_server.url(f"/big?size={size}"), dest)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert body.bytes == size
    body.discard()
    # The server side (same process) holds the 20 MB body itself; count only what the
    # client could add on top: it must be far below the body size.
    assert peak < size + 4 * 1024 * 1024


# --- redirects -------------------------------------------------------------------------------


def test_redirects_are_followed_up_to_five(fetcher: Fetcher, image_server: ImageServer,
                                           dest: Path) -> None:
    body = fetcher.fetch(image_server.url(f"/redirect/{MAX_REDIRECTS}/image/BMP"), dest)
    assert body.redirects == MAX_REDIRECTS
    assert body.final_url == image_server.url("/image/BMP")
    body.discard()


def test_a_sixth_redirect_is_too_many(fetcher: Fetcher, image_server: ImageServer,
                                      dest: Path) -> None:
    error = fetch_error(fetcher, image_server.url(f"/redirect/{MAX_REDIRECTS + 1}/image/BMP"),
                        dest)
    assert error.code == "too_many_redirects" and not error.retryable
    assert image_server.hits() == MAX_REDIRECTS + 1


def test_a_redirect_loop_is_too_many(fetcher: Fetcher, image_server: ImageServer,
                                     dest: Path) -> None:
    assert fetch_error(fetcher, image_server.url("/redirect-loop"), dest).code == (
        "too_many_redirects"
    )


def test_redirect_to_another_allowlisted_host(fetcher: Fetcher, image_server: ImageServer,
                                              make_image_server, dest: Path) -> None:
    other = make_image_server("127.0.0.2")
    target = other.url("/image/TIFF")
    body = fetcher.fetch(image_server.url(f"/redirect-to?url={target}&status=307"), dest)
    assert body.final_url == target
    body.discard()
    assert other.requests[0].host == "127.0.0.2"


def test_a_redirect_to_a_non_http_url_is_invalid(fetcher: Fetcher, image_server: ImageServer,
                                                 dest: Path) -> None:
    error = fetch_error(fetcher, image_server.url("/redirect-to?url=file:///etc/passwd"), dest)
    assert error.code == "invalid_url"


# --- SSRF --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "[::ffff:127.0.0.1]", "localhost", "127.1",
             "127.0.0.1", "017700000001", "[::ffff:7f00:1]"],
)
def test_local_spellings_are_blocked_before_any_connection(
    tmp_path: Path, image_server: ImageServer, dest: Path, host: str
) -> None:
    settings = make_settings(tmp_path, PRIVATE_NETWORK_ALLOWLIST="")
    with Fetcher(settings) as f:
        error = fetch_error(f, f"http://{host}:{image_server.port}/image/JPEG", dest)
    assert error.code == "blocked_address" and not error.retryable
    assert image_server.hits() == 0


def test_a_redirect_hop_outside_the_allowlist_is_refused(fetcher: Fetcher,
                                                         image_server: ImageServer,
                                                         dest: Path) -> None:
    # Given the allowlist 127.0.0.0/27 and a server on 127.0.0.1 (inside it)
    # When it redirects to 127.0.0.200 (loopback, outside; nothing listens there)
    target = f"http://127.0.0.200:{image_server.port}/image/JPEG"
    error = fetch_error(fetcher, image_server.url(f"/redirect-to?url={target}"), dest)
    # Then the guard refuses that hop before connecting: not a connection_error.
    assert error.code == "blocked_address"
    assert "127.0.0.200" in error.message
    assert image_server.hits() == 1


def test_allow_private_networks_allows_loopback(tmp_path: Path, image_server: ImageServer,
                                                dest: Path) -> None:
    settings = make_settings(tmp_path, PRIVATE_NETWORK_ALLOWLIST="", ALLOW_PRIVATE_NETWORKS="true")
    with Fetcher(settings) as f:
        f.fetch(f"http://localhost:{image_server.port}/image/JPEG", dest).discard()
    assert image_server.hits() == 1


# --- invalid URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://[bad", "http:///x.jpg", "http://exa mple.com/a.jpg", "http://host:99999/",
            "http:/x.jpg", "https://", "http://a\x00b/", "http://host:0/a.jpg", "ftp://a.test/"],
)
def test_malformed_urls_are_invalid(fetcher: Fetcher, dest: Path, url: str) -> None:
    error = fetch_error(fetcher, url, dest)
    assert error.code == "invalid_url" and not error.retryable
