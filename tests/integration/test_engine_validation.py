"""download_image over a real loopback server: formats, extensions and content errors."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from images_service.config.settings import Settings
from images_service.download import engine
from images_service.errors import DownloadError
from images_service.fetching.fetcher import Fetcher
from images_service.storage.backend import Storage
from images_service.storage.factory import create_storage
from images_service.validation import validate_image
from tests.support.engine import download_one, make_settings
from tests.support.image_server import FORMATS, ImageServer, can_write, make_image

EXPECTED = {
    "JPEG": ("JPEG", ".jpg"), "PJPEG": ("JPEG", ".jpg"), "PNG": ("PNG", ".png"),
    "RGBAPNG": ("PNG", ".png"), "WEBP": ("WEBP", ".webp"), "ANIWEBP": ("WEBP", ".webp"),
    "GIF": ("GIF", ".gif"), "ANIGIF": ("GIF", ".gif"), "BMP": ("BMP", ".bmp"),
    "TIFF": ("TIFF", ".tif"), "AVIF": ("AVIF", ".avif"),
}


def plan_for(settings: Settings, *urls: str) -> engine.DocumentPlan:
    return engine.plan_document({"_id": 1, "name": "Doc", "images": list(urls)}, "db", "coll",
                                settings)


def folder_of(settings: Settings, plan: engine.DocumentPlan) -> Path:
    return settings.storage_path / plan.relative_folder


def layout_names(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_round_trips_with_its_extension(settings: Settings, fetcher: Fetcher,
        storage: Storage,
                                                     image_server: ImageServer, fmt: str) -> None:
    if not can_write(fmt):
        pytest.skip(f"this Pillow cannot write {fmt} (features.check('avif') is False)")
    plan = plan_for(settings, image_server.url(f"/image/{fmt}?w=40&h=30"))
    record = download_one(plan, plan.images[0], fetcher, storage, settings)
    expected_format, extension = EXPECTED[fmt]
    served = make_image(fmt, 40, 30, 0)
    assert record["format"] == expected_format
    assert record["file"] == f"original/img_001{extension}"
    assert (record["width"], record["height"]) == (40, 30)
    assert record["bytes"] == len(served)
    assert record["sha256"] == hashlib.sha256(served).hexdigest()
    assert record["content_type"] == FORMATS[fmt][2]
    assert (folder_of(settings, plan) / record["file"]).read_bytes() == served
    assert layout_names(folder_of(settings, plan)) == {"original", "processed", record["file"]}


def test_the_extension_comes_from_the_bytes(settings: Settings, fetcher: Fetcher,
        storage: Storage,
                                            image_server: ImageServer) -> None:
    plan = plan_for(settings, image_server.url("/image/PNG/photo.jpg?ct=image/jpeg"))
    record = download_one(plan, plan.images[0], fetcher, storage, settings)
    assert (record["format"], record["file"]) == ("PNG", "original/img_001.png")
    assert record["content_type"] == "image/jpeg"  # recorded as sent, not trusted


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/html", "not_an_image"),
        ("/html?ct=image/jpeg", "not_an_image"),
        ("/empty", "not_an_image"),
        ("/truncated.jpg", "corrupt_image"),
        ("/bomb.png", "decompression_bomb"),  # 30000x30000: Pillow's own error
        ("/bomb.png?w=10000&h=10000", "decompression_bomb"),  # over MAX_IMAGE_PIXELS only
    ],
)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_content_errors(settings: Settings, fetcher: Fetcher,
        storage: Storage, image_server: ImageServer,
                        path: str, code: str) -> None:
    plan = plan_for(settings, image_server.url(path))
    with pytest.raises(DownloadError) as info:
        download_one(plan, plan.images[0], fetcher, storage, settings)
    assert info.value.code == code and not info.value.retryable
    assert layout_names(folder_of(settings, plan)) == {"original", "processed"}  # nothing left behind


def test_max_image_pixels_is_checked_before_decoding(tmp_path: Path, image_server: ImageServer
                                                     ) -> None:
    settings = make_settings(tmp_path, MAX_IMAGE_PIXELS="1000")
    plan = plan_for(settings, image_server.url("/image/JPEG?w=40&h=30"))
    with Fetcher(settings) as f, create_storage(settings) as storage, \
            pytest.raises(DownloadError) as info:
        download_one(plan, plan.images[0], f, storage, settings)
    assert info.value.code == "decompression_bomb"
    assert "1200 pixels" in info.value.message


def _truncate(fmt: str, **save: object) -> bytes:
    image = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 64).convert("RGB")
    out = io.BytesIO()
    image.save(out, fmt, **save)
    data = out.getvalue()
    return data[: int(len(data) * 0.7)]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("baseline.jpg", _truncate("JPEG", quality=90)),
        ("progressive.jpg", _truncate("JPEG", quality=90, progressive=True)),
        ("cut.png", _truncate("PNG")),
        ("cut.webp", _truncate("WEBP")),
        ("cut.gif", _truncate("GIF")),
    ],
)
def test_truncated_files_are_corrupt_even_with_draft_decoding(settings: Settings,
                                                              fetcher: Fetcher,
                                                              storage: Storage,
                                                              image_server: ImageServer,
                                                              name: str, data: bytes) -> None:
    image_server.set_response(f"/{name}", 200, data, {"Content-Type": "image/jpeg"})
    plan = plan_for(settings, image_server.url(f"/{name}"))
    with pytest.raises(DownloadError) as info:
        download_one(plan, plan.images[0], fetcher, storage, settings)
    assert info.value.code == "corrupt_image"


def test_validate_image_computes_hash_and_size_when_not_given(settings: Settings,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(make_image("GIF", 10, 10))
    info = validate_image(path, settings)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.bytes == os.path.getsize(path) and info.format == "GIF"


def test_a_format_outside_the_table_is_not_an_image(settings: Settings, fetcher: Fetcher,
        storage: Storage,
                                                    image_server: ImageServer) -> None:
    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "ICO")
    image_server.set_response("/favicon.ico", 200, out.getvalue(), {"Content-Type": "image/png"})
    plan = plan_for(settings, image_server.url("/favicon.ico"))
    with pytest.raises(DownloadError) as info:
        download_one(plan, plan.images[0], fetcher, storage, settings)
    assert info.value.code == "not_an_image"
