"""The per-format structural rules, on files damaged in one precise way each.

The rules are called directly on bytes (``check_structure`` opens a path; here a Reader over
``BytesIO``), so each test shows which rule refuses which fault.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from images_service.config.settings import load_settings
from images_service.errors import DownloadError
from images_service.validation import reader as reader_module
from images_service.validation import validate_image
from images_service.validation.bmp import check_bmp
from images_service.validation.gif import check_gif
from images_service.validation.jpeg import check_jpeg
from images_service.validation.png import check_png
from images_service.validation.reader import Reader
from images_service.validation.tiff import check_tiff
from images_service.validation.webp import check_webp
from tests.unit.images_service.validation.samples import VALID, encode, photo, sample

FAST = load_settings({"IMAGE_VALIDATION": "fast"})


def run(check: Callable[[Reader], bool], data: bytes) -> bool:
    return check(Reader(io.BytesIO(data), len(data), "TEST"))


def refused(check: Callable[[Reader], bool], data: bytes, fragment: str) -> None:
    with pytest.raises(DownloadError) as info:
        run(check, data)
    assert info.value.code == "corrupt_image"
    assert fragment in info.value.message


def jpeg_with_thumbnail() -> tuple[bytes, int]:
    """A JPEG whose APP1 segment holds a whole JPEG thumbnail; and where that thumbnail ends."""
    thumbnail = encode(photo((8, 8)), "JPEG")
    payload = b"Exif\0\0" + thumbnail
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    main = sample("jpeg-baseline")
    data = main[:2] + app1 + main[2:]
    return data, 2 + 4 + len(payload)


def test_a_cut_just_after_an_exif_thumbnail_eoi_is_refused() -> None:
    data, thumbnail_end = jpeg_with_thumbnail()
    assert run(check_jpeg, data)
    assert data[thumbnail_end - 2:thumbnail_end] == b"\xff\xd9"  # the cut file ends in EOI
    # The thumbnail's EOI is inside APP1, skipped by length: the main image's frame is missing.
    refused(check_jpeg, data[:thumbnail_end], f"marker at offset {thumbnail_end}")
    refused(check_jpeg, data[:thumbnail_end - 1], "segment FF E1")


def test_jpeg_rules() -> None:
    data = sample("jpeg-baseline")
    refused(check_jpeg, b"\x00" + data[1:], "does not start with SOI")
    sos = data.index(b"\xff\xda")
    no_frame = data[:2] + data[sos:]
    refused(check_jpeg, no_frame, "before any frame header")
    refused(check_jpeg, data[:-2] + b"\xff\xd8\xff\xd9", "SOI inside the image data")
    refused(check_jpeg, data[:-1], "no EOI")


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


def test_png_rules() -> None:
    data = sample("png-rgb")
    signature, ihdr = data[:8], data[8:33]
    iend = png_chunk(b"IEND", b"")
    assert run(check_png, data)
    refused(check_png, signature + png_chunk(b"tEXt", b"a\0b") + data[8:], "not a 13-byte IHDR")
    refused(check_png, signature + ihdr + iend, "no IDAT")
    refused(check_png, signature + ihdr + png_chunk(b"ID4T", b"x"), "invalid chunk type")
    refused(check_png, signature + ihdr + struct.pack(">I", 2**31) + b"IDAT", "claims")


def test_gif_rules() -> None:
    data = sample("gif")
    assert run(check_gif, data)
    screen_end = 13 + 3 * 256 if data[10] & 0x80 else 13
    header = data[:screen_end]
    refused(check_gif, header + b"\x3b", "no image")
    refused(check_gif, header + b"\x99", "unknown block 0x99")
    descriptor = b"\x2c" + bytes(8) + b"\x00"  # no local colour table
    refused(check_gif, header + descriptor + b"\x0d\x00\x3b", "LZW minimum code size 13")


def test_webp_rules() -> None:
    lossy = sample("webp-lossy")
    assert run(check_webp, lossy)
    size = struct.unpack("<I", lossy[4:8])[0]
    refused(check_webp, lossy[:4] + struct.pack("<I", size + 2) + lossy[8:] + b"\0",
            "truncated")
    vp8_at = lossy.index(b"VP8 ") + 8
    inter_frame = lossy[:vp8_at] + bytes([lossy[vp8_at] | 1]) + lossy[vp8_at + 1:]
    refused(check_webp, inter_frame, "not a key frame")
    animated = bytearray(sample("webp-animated"))
    animated[20] &= ~0x02  # clear the VP8X animation flag
    refused(check_webp, bytes(animated), "without the VP8X animation flag")
    lossless = bytearray(sample("webp-lossless"))
    lossless[lossless.index(b"VP8L") + 8] = 0x00
    refused(check_webp, bytes(lossless), "bad VP8L header")


def test_bmp_rules() -> None:
    rle = sample("bmp-rle8")
    assert rle.endswith(b"\x00\x01") and run(check_bmp, rle)
    refused(check_bmp, rle[:-2] + b"\x00\x00", "without its end-of-bitmap")
    raw = sample("bmp-rgb")
    refused(check_bmp, raw[:-1], "the pixel array ends at")
    assert run(check_bmp, raw + b"\0\0")  # padding after the pixels is accepted


def test_tiff_rules() -> None:
    data = sample("tiff-raw")  # IFD at offset 8, one strip after it
    assert run(check_tiff, data)
    refused(check_tiff, data[:-1], "page 0: 18432 bytes of image data at offset 140")
    looped = bytearray(data)
    count = struct.unpack("<H", data[8:10])[0]
    looped[10 + 12 * count:14 + 12 * count] = struct.pack("<I", 8)  # next IFD: itself
    refused(check_tiff, bytes(looped), "loops")
    refused(check_tiff, b"II\x2c\x00" + data[4:], "bad magic number 44")


@pytest.mark.parametrize("block_bytes", [2, 3, 7])
def test_rules_hold_when_markers_straddle_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                block_bytes: int) -> None:
    # Tiny blocks put JPEG markers, GIF sub-block lengths and RLE pairs across two reads.
    monkeypatch.setattr(reader_module, "BLOCK_BYTES", block_bytes)
    path = tmp_path / "image.bin"
    for name in ("jpeg-progressive", "jpeg-restart-markers", "gif-animated", "bmp-rle8",
                 "png-rgb", "webp-animated"):
        data = sample(name)
        path.write_bytes(data)
        assert validate_image(path, FAST).bytes == len(data)
        for cut in (len(data) - 1, len(data) - 2, len(data) * 3 // 4):
            path.write_bytes(data[:cut])
            with pytest.raises(DownloadError):
                validate_image(path, FAST)
    assert set(VALID) >= {"jpeg-progressive", "bmp-rle8"}
