"""Hostile metadata in a valid image never costs it its variants (contract §12, §14).

The last test: neither does a storage failure while its stored original is read.

Each file here is the smallest reproducer of a fuzz finding (tests/support/fuzz_corpus.py):
the image decodes, but its EXIF, ICC profile, comment or transparency is damaged in a way
that made Pillow raise while the variants were prepared, before the fixes, either out of
validation itself (the issue 17 JPEG) or for every variant of the image.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from images_service.errors import StorageUnavailable
from images_service.processing.render import (
    RenderedVariant,
    render_variants,
    validate_and_render,
)
from tests.unit.images_service.processing.factories import (
    RED,
    open_bytes,
    photo,
    settings,
    swapped_primaries_profile,
    variant,
)

SETTINGS = settings()
VARIANTS = [variant("as_is:10000x10000:fit:png"), variant("thumb:16x16:fit:webp:80"),
            variant("card:16x8:cover:jpeg:85")]


def encode(image: Image.Image, image_format: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **params)
    return out.getvalue()


def made(data: bytes) -> list[RenderedVariant]:
    """Every variant of ``data``, asserting each was made."""
    results = render_variants(io.BytesIO(data), SETTINGS, VARIANTS)
    assert all(isinstance(r, RenderedVariant) for r in results), results
    return list(results)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


def png_with_chunk(image: Image.Image, kind: bytes, payload: bytes) -> bytes:
    """``image`` as a PNG with one more chunk (CRC right) just after IHDR."""
    data = encode(image, "PNG")
    return data[:33] + png_chunk(kind, payload) + data[33:]


def test_the_issue_17_jpeg_validates_and_gets_every_variant(tmp_path: Path) -> None:
    # JFIF with a DPI, then an APP1 "Exif\0\0" of garbage: getexif() raised SyntaxError
    # from the JPEG decode-size hook, outside any handler, and failed the whole message.
    data = encode(photo((48, 32)), "JPEG", dpi=(72, 72))
    app0_end = 4 + struct.unpack(">H", data[4:6])[0]
    payload = b"Exif\0\0" + b"garbage!" * 4
    path = tmp_path / "issue17.jpg"
    path.write_bytes(data[:app0_end] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2)
                     + payload + data[app0_end:])

    info, results = validate_and_render(path, SETTINGS, VARIANTS)

    assert (info.format, info.width, info.height) == ("JPEG", 48, 32)
    assert [type(r) for r in results] == [RenderedVariant] * 3
    assert (results[0].width, results[0].height) == (48, 32)  # shown unrotated


def test_a_png_exif_chunk_of_garbage_is_ignored() -> None:
    data = png_with_chunk(photo((48, 32)), b"eXIf", b"garbage!" * 4)
    assert made(data)[0].width == 48


def test_a_raw_profile_exif_text_that_is_not_hex_is_ignored() -> None:
    # ImageMagick's way of storing EXIF in PNG text; Pillow's bytes.fromhex() raised.
    text = b"Raw profile type exif\0\nexif\n      99\nzz not hex at all"
    data = png_with_chunk(photo((48, 32)), b"tEXt", text)
    assert made(data)[0].width == 48


def test_an_orientation_is_applied_when_the_rest_of_the_exif_cannot_be_written_back() -> None:
    # Orientation 6 is readable, but Make (0x010F, text) holds a DOUBLE: exif_transpose's
    # re-serialisation raised AttributeError and every variant failed.
    ifd = struct.pack("<H", 2) + struct.pack("<HHII", 0x010F, 12, 1, 38) + struct.pack(
        "<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<I", 0)
    exif = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<d", 1.5)
    image = Image.new("RGB", (48, 32), RED)
    as_is = made(encode(image, "JPEG", exif=exif))[0]
    assert (as_is.width, as_is.height) == (32, 48)  # rotated upright


def test_an_icc_profile_no_transform_can_be_built_from_is_dropped() -> None:
    profile = bytearray(swapped_primaries_profile())
    count = int.from_bytes(profile[128:132], "big")
    for i in range(count):  # the red tone curve's type made unknown
        entry = 132 + 12 * i
        if profile[entry:entry + 4] == b"rTRC":
            offset = int.from_bytes(profile[entry + 4:entry + 8], "big")
            profile[offset:offset + 4] = b"XXXX"
    data = encode(Image.new("RGB", (48, 32), RED), "PNG", icc_profile=bytes(profile))
    as_is = made(data)[0]
    assert open_bytes(as_is.data).getpixel((5, 5))[:3] == RED  # unmanaged, as browsers show it


def test_a_gif_comment_longer_than_a_jpeg_segment_stays_out_of_jpeg_variants() -> None:
    data = encode(photo((48, 32)).convert("P"), "GIF", comment=b"c" * 70_000)
    card = made(data)[2]
    assert card.format == "JPEG"
    assert "comment" not in open_bytes(card.data).info


def test_palette_alphas_beyond_the_palette_are_ignored() -> None:
    # tRNS with more entries than PLTE (here more than any palette has): invalid, the extra
    # entries ignored by libpng; convert() raised "palette index out of range".
    ihdr = struct.pack(">IIBBBBB", 4, 2, 8, 3, 0, 0, 0)
    palette = bytes((255, 0, 0, 0, 0, 255))  # red, blue
    pixels = zlib.compress(b"\0\0\0\1\1" + b"\0\1\1\0\0")
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"PLTE", palette)
            + png_chunk(b"tRNS", bytes((0, 255)) + b"\7" * 298) + png_chunk(b"IDAT", pixels)
            + png_chunk(b"IEND", b""))
    as_is = open_bytes(made(data)[0].data).convert("RGBA")
    assert as_is.getpixel((0, 0))[3] == 0  # red: transparent
    assert as_is.getpixel((2, 0)) == (0, 0, 255, 255)  # blue: opaque


class FailingStorageStream(io.RawIOBase):
    """A stored original whose storage fails after ``good_bytes`` (S3 gone mid-stream)."""

    def __init__(self, data: bytes, good_bytes: int) -> None:
        self._data, self._good, self._at = data, good_bytes, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self._at >= self._good:
            raise StorageUnavailable("S3: reading 'x/original/img_001.png' failed")
        chunk = self._data[self._at:min(self._good, self._at + len(buffer))]
        buffer[:len(chunk)] = chunk
        self._at += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("good_bytes", [0, 200], ids=["in-the-header", "in-the-pixels"])
def test_a_storage_failure_while_reading_the_original_is_not_a_bad_original(
        good_bytes: int) -> None:
    # Not the original's fault: retried by the pipeline, not recorded processing_failed.
    data = encode(photo((160, 120)), "PNG")
    stream = io.BufferedReader(FailingStorageStream(data, good_bytes), buffer_size=64)
    with pytest.raises(StorageUnavailable):
        render_variants(stream, SETTINGS, VARIANTS)
