"""Whatever a file holds, validation answers a contract code (contract §6, §8, §14).

Reproducers of fuzz findings (tests/support/fuzz_corpus.py) and of the safety nets behind
them: a plugin raising an exception type the old handler did not list, a decoder raising any
type, a structural rule tripping over a layout it did not expect, the decode-size hook failing.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin, features

from images_service.config.settings import load_settings
from images_service.errors import DownloadError
from images_service.validation import open_validated, structure, validate_image
from tests.unit.images_service.validation.samples import photo, sample

FULL = load_settings({"IMAGE_VALIDATION": "full"})
FAST = load_settings({"IMAGE_VALIDATION": "fast"})


def write(tmp_path: Path, data: bytes, name: str = "image") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def code(path: Path, settings) -> str:
    with pytest.raises(DownloadError) as raised:
        validate_image(path, settings)
    return raised.value.code


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF")
@pytest.mark.parametrize("settings", [FULL, FAST], ids=["full", "fast"])
def test_an_avif_whose_primary_item_is_missing_is_corrupt(tmp_path: Path, settings) -> None:
    # libavif raises RuntimeError("… Missing or empty image item") from Image.open.
    data = bytearray(sample("avif"))
    pitm = data.find(b"pitm")
    data[pitm + 8:pitm + 10] = (99).to_bytes(2, "big")  # an item id that does not exist
    assert code(write(tmp_path, bytes(data)), settings) == "corrupt_image"


@pytest.mark.parametrize(("raised", "expected"), [
    (RuntimeError("x"), "corrupt_image"), (ZeroDivisionError(), "corrupt_image"),
    (AttributeError("x"), "corrupt_image"), (OverflowError(), "corrupt_image"),
    (MemoryError(), "decompression_bomb"),
])
def test_any_exception_of_a_header_parser_gets_a_contract_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raised: Exception, expected: str) -> None:
    # Pillow itself turns IndexError, TypeError, KeyError, EOFError and struct.error of a
    # plugin into "cannot identify" (not_an_image); these others it lets through.
    def broken_open(self: PngImagePlugin.PngImageFile) -> None:
        raise raised

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "_open", broken_open)
    assert code(write(tmp_path, sample("png-rgb")), FULL) == expected


@pytest.mark.parametrize(("raised", "expected"), [
    (MemoryError(), "decompression_bomb"),
    (Image.DecompressionBombError("x"), "decompression_bomb"),
    *((error, "corrupt_image") for error in (
        SyntaxError("x"), struct.error("x"), ValueError("x"), OSError("x"), EOFError(),
        IndexError("x"), ZeroDivisionError(), TypeError("x"), KeyError("x"), RuntimeError("x"))),
])
def test_any_exception_of_a_decoder_gets_a_contract_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raised: Exception, expected: str) -> None:
    def broken_load(self: Image.Image) -> None:
        raise raised

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", broken_load)
    path = write(tmp_path, sample("png-rgb"))
    assert code(path, FULL) == expected
    with pytest.raises(DownloadError) as with_variants, open_validated(path, FULL):
        pass
    assert with_variants.value.code == expected


def tiff_with_empty_tag(tag: int) -> bytes:
    """A classic little-endian TIFF whose entry ``tag`` has a count of 0."""
    data = bytearray(sample("tiff-raw"))
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        at = ifd + 2 + 12 * i
        if struct.unpack("<H", data[at:at + 2])[0] == tag:
            data[at + 4:at + 8] = struct.pack("<I", 0)
            return bytes(data)
    raise AssertionError(f"no tag {tag}")


@pytest.mark.parametrize("tag", [259, 278, 284])  # compression, rows per strip, planar
def test_a_tiff_tag_without_values_counts_as_missing_in_fast_mode(
        tmp_path: Path, tag: int, caplog: pytest.LogCaptureFixture) -> None:
    # Pillow reads these files (defaults apply); the rules indexed the tag's empty tuple of
    # values and raised IndexError. Missing, each has a default that fits this file.
    path = write(tmp_path, tiff_with_empty_tag(tag))
    with caplog.at_level(logging.WARNING, "images_service.validation"):
        fast, full = validate_image(path, FAST), validate_image(path, FULL)
        # The same image (fast mode decodes nothing, so it has no perceptual hash, §18)
        assert replace(fast, phash=None) == replace(full, phash=None)
    assert caplog.text == ""  # the rules walked it (no fallback to a decode)


def test_a_structural_rule_that_raises_leaves_the_verdict_to_the_decode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken_rule(reader: object) -> bool:
        raise IndexError("a rule's own bug")

    monkeypatch.setitem(structure._CHECKS, "PNG", broken_rule)
    whole = sample("png-rgb")
    with caplog.at_level(logging.WARNING, "images_service.validation"):
        info = validate_image(write(tmp_path, whole, "whole.png"), FAST)
        cut = code(write(tmp_path, whole[:len(whole) // 2], "cut.png"), FAST)
    assert (info.format, info.width) == ("PNG", 96)
    assert cut == "corrupt_image"  # the decode refused it
    assert "structural check of a PNG file failed (IndexError" in caplog.text


def test_a_decode_size_hook_that_raises_decodes_the_jpeg_at_full_size() -> None:
    def broken_hook(image: Image.Image) -> tuple[int, int]:
        raise SyntaxError("not a TIFF file")

    data = io.BytesIO(sample("jpeg-baseline"))
    with open_validated(data, FULL, decode_size=broken_hook) as decoded:
        assert decoded.reduction == 1
        assert decoded.image.size == photo().size == (decoded.width, decoded.height)
