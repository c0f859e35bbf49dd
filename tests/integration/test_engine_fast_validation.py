"""download_image with IMAGE_VALIDATION=fast over a real loopback server (contract §8)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from images_service.download import engine
from images_service.errors import DownloadError
from images_service.fetching.fetcher import Fetcher
from images_service.storage.factory import create_storage
from tests.support.engine import download_one, make_settings
from tests.support.image_server import FORMATS, ImageServer, can_write, make_image


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_is_stored_with_the_same_record_as_full_mode(
        tmp_path: Path, image_server: ImageServer, fmt: str) -> None:
    if not can_write(fmt):
        pytest.skip(f"this Pillow cannot write {fmt}")
    records = {}
    for mode in ("full", "fast"):
        settings = make_settings(tmp_path / mode, IMAGE_VALIDATION=mode)
        plan = engine.plan_document({"_id": 1, "name": "Doc",
                                     "images": [image_server.url(f"/image/{fmt}?w=40&h=30")]},
                                    "db", "coll", settings)
        with Fetcher(settings) as fetcher, create_storage(settings) as storage:
            record = download_one(plan, plan.images[0], fetcher, storage, settings)
        records[mode] = {k: v for k, v in record.items()
                         if k not in ("downloaded_at", "checked_at")}
    # Fast mode without PERCEPTUAL_HASH decodes nothing: no hash (contract §18), else the same.
    assert "phash" in records["full"] and "phash" not in records["fast"]
    assert records["fast"] == {k: v for k, v in records["full"].items() if k != "phash"}
    assert records["fast"]["sha256"] == hashlib.sha256(make_image(fmt, 40, 30, 0)).hexdigest()


@pytest.mark.parametrize("fmt", ["JPEG", "PJPEG", "PNG", "WEBP", "ANIWEBP", "GIF", "ANIGIF",
                                 "BMP", "TIFF"])
def test_a_body_missing_its_last_byte_is_corrupt(tmp_path: Path, image_server: ImageServer,
                                                 fmt: str) -> None:
    settings = make_settings(tmp_path, IMAGE_VALIDATION="fast")
    image_server.set_response(f"/cut-{fmt}", 200, make_image(fmt, 64, 48, 3)[:-1],
                              {"Content-Type": FORMATS[fmt][2]})
    plan = engine.plan_document({"_id": 1, "name": "Doc",
                                 "images": [image_server.url(f"/cut-{fmt}")]}, "db", "coll",
                                settings)
    with Fetcher(settings) as fetcher, create_storage(settings) as storage:
        with pytest.raises(DownloadError) as info:
            download_one(plan, plan.images[0], fetcher, storage, settings)
        assert info.value.code == "corrupt_image" and not info.value.retryable
        assert storage.list(plan.relative_folder) == []  # nothing stored
