"""Content-Encoding is never decoded: a body is stored as received, never inflated.

The fetcher asks for ``Accept-Encoding: identity``, but a server may compress anyway. Inflating
such a body would let a few kilobytes of gzip expand past MAX_IMAGE_BYTES in memory (the
decompression-bomb class of urllib3 CVE-2025-66471 / CVE-2026-21441), and a compressed image
is not what the contract stores. The received bytes are kept; validation then refuses them
as not an image.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from images_service.config.settings import load_settings
from images_service.fetching.fetcher import Fetcher
from tests.support.image_server import ImageServer, make_image


def _fetcher(tmp_path: Path) -> Fetcher:
    return Fetcher(load_settings({"STORAGE_PATH": str(tmp_path / "images"),
                                  "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27",
                                  "MAX_IMAGE_BYTES": "100000", "DOWNLOAD_TIMEOUT": "5"}))


def test_a_gzip_bomb_is_stored_as_the_received_bytes(tmp_path: Path,
                                                     image_server: ImageServer) -> None:
    # Given 20 MB of zeros served as ~20 kB of gzip, with Content-Encoding: gzip
    bomb = gzip.compress(b"\0" * 20_000_000)
    assert len(bomb) < 100_000
    image_server.set_response("/bomb.jpg", body=bomb,
                              headers={"Content-Type": "image/jpeg", "Content-Encoding": "gzip"})
    # When it is fetched with MAX_IMAGE_BYTES = 100 kB
    with _fetcher(tmp_path) as fetcher:
        body = fetcher.fetch(image_server.url("/bomb.jpg"), tmp_path)
    # Then exactly the received bytes were written: nothing was inflated
    assert body.bytes == len(bomb)
    assert body.path.read_bytes() == bomb
    sent = image_server.requests[-1].headers
    assert sent.get("Accept-Encoding") == "identity"


def test_a_gzipped_image_is_not_decoded_into_an_image(tmp_path: Path,
                                                      image_server: ImageServer) -> None:
    packed = gzip.compress(make_image("PNG"))
    image_server.set_response("/packed.png", body=packed,
                              headers={"Content-Type": "image/png", "Content-Encoding": "gzip"})
    with _fetcher(tmp_path) as fetcher:
        body = fetcher.fetch(image_server.url("/packed.png"), tmp_path)
    assert body.path.read_bytes() == packed  # validation will refuse it: not an image
