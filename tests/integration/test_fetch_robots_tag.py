"""X-Robots-Tag opt-outs (contract §17) against a real loopback server: refused from the
response headers, before the body is read; scoped directives only when they name us."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from images_service.errors import DownloadError
from images_service.fetching.fetcher import Fetcher
from tests.support.engine import make_settings
from tests.support.image_server import ImageServer, make_image

BODY_DELAY_S = 3.0


def tagged(value: str | None, body_delay_s: float = 0.0):
    """An image whose headers (with ``X-Robots-Tag: value``) go out at once, its body only
    ``body_delay_s`` later: a client that waits for the body is seen to wait."""

    def handler(req, query) -> None:
        body = make_image("JPEG")
        req.send_response(200)
        req.send_header("Content-Type", "image/jpeg")
        req.send_header("Content-Length", str(len(body)))
        if value is not None:
            req.send_header("X-Robots-Tag", value)
        req.end_headers()
        req.wfile.flush()
        if body_delay_s and req.wait(body_delay_s):
            return
        req.wfile.write(body)

    return handler


@pytest.fixture
def opting_fetcher(tmp_path: Path):
    with Fetcher(make_settings(tmp_path, DISALLOWED_HEADER_DIRECTIVES="noai,noimageai",
                               USER_AGENT="serpy-images/1.0")) as fetcher:
        yield fetcher


@pytest.mark.parametrize("value", ["noai", "noindex, NoImageAI", "serpy-images: noai",
                                   "Serpy-Images: noindex, noimageai"])
def test_an_opt_out_for_all_or_for_us_refuses_the_image_before_its_body(
        opting_fetcher: Fetcher, image_server: ImageServer, tmp_path: Path, value: str) -> None:
    image_server.add_route("/tagged", tagged(value, BODY_DELAY_S))
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        opting_fetcher.fetch(image_server.url("/tagged"), tmp_path)
    assert time.monotonic() - started < BODY_DELAY_S / 2  # the body was never waited for
    assert info.value.code == "opted_out" and not info.value.retryable
    assert info.value.http_status == 200 and "X-Robots-Tag" in info.value.message
    assert [p for p in tmp_path.iterdir() if p.is_file()] == []


@pytest.mark.parametrize("value", ["otherbot: noai", "noindex, nofollow", "serpy: noai", None])
def test_other_crawlers_directives_and_other_directives_do_not_refuse(
        opting_fetcher: Fetcher, image_server: ImageServer, tmp_path: Path,
        value: str | None) -> None:
    image_server.add_route("/tagged", tagged(value))
    body = opting_fetcher.fetch(image_server.url("/tagged"), tmp_path)
    assert body.path.read_bytes() == make_image("JPEG")


def test_without_disallowed_directives_the_header_is_ignored(
        image_server: ImageServer, tmp_path: Path) -> None:
    image_server.add_route("/tagged", tagged("noai"))
    with Fetcher(make_settings(tmp_path)) as fetcher:
        assert fetcher.fetch(image_server.url("/tagged"), tmp_path).bytes == len(
            make_image("JPEG"))
