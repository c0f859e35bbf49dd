"""IMAGE_VALIDATION=fast: valid files of every format pass, truncated ones never do.

Every sample of :mod:`.samples` is validated in both modes; every truncation is refused in
fast mode (``corrupt_image``, or ``not_an_image`` when the cut leaves no recognisable header).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from images_service.config.settings import Settings, load_settings
from images_service.errors import DownloadError
from images_service.validation import SUPPORTED_FORMATS, core, open_validated, validate_image
from tests.support.image_server import bomb_png
from tests.unit.images_service.validation.samples import VALID, encode, photo, sample

# Pillow warns while it reads the tags of a cut TIFF; the refusal is what is tested.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(Corrupt EXIF data|Truncated File Read):UserWarning")

FAST = load_settings({"IMAGE_VALIDATION": "fast"})
FAST_HASHED = load_settings({"IMAGE_VALIDATION": "fast", "PERCEPTUAL_HASH": "true"})
FULL = load_settings({})
REFUSED = ("corrupt_image", "not_an_image")
#: Fractions of the file kept, then bytes removed from the end.
CUT_FRACTIONS = (0.1, 0.5, 0.9)
CUT_TAILS = (1, 2)


def write(tmp_path: Path, data: bytes, name: str = "image.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refusal(path: Path, settings: Settings = FAST) -> DownloadError:
    with pytest.raises(DownloadError) as info:
        validate_image(path, settings)
    return info.value


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_files_pass_both_modes_with_the_same_record(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, sample(name))
    fast, full = validate_image(path, FAST), validate_image(path, FULL)
    assert fast == unhashed(full)
    assert validate_image(path, FAST_HASHED) == full
    assert fast.sha256 == hashlib.sha256(sample(name)).hexdigest()
    assert fast.bytes == len(sample(name))


def unhashed(info: core.ImageInfo) -> core.ImageInfo:
    """``info`` as fast mode without PERCEPTUAL_HASH gives it: nothing decoded, so no hash and
    no placeholder but ``tiny`` (contract §18)."""
    return replace(info, phash=None, placeholder="tiny" if info.placeholder == "tiny" else None)


def cut_points(size: int) -> list[int]:
    return sorted({int(size * f) for f in CUT_FRACTIONS} | {size - n for n in CUT_TAILS})


def header_opens(data: bytes) -> bool:
    """Whether Pillow still identifies the (cut) file from its header."""
    try:
        Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS).close()
    except Exception:  # noqa: BLE001 -- any failure means "not identified"
        return False
    return True


@pytest.mark.parametrize("name", sorted(VALID))
def test_truncated_files_are_refused_at_every_cut_point(tmp_path: Path, name: str) -> None:
    data = sample(name)
    for cut in cut_points(len(data)):
        error = refusal(write(tmp_path, data[:cut]))
        # not_an_image only when Pillow cannot identify the cut file at all (a TIFF whose IFD
        # is at the end, libavif's container parse, a cut inside a tiny header).
        expected = ("corrupt_image",) if header_opens(data[:cut]) else REFUSED
        assert error.code in expected, (name, cut, error.code, error.message)


@pytest.mark.parametrize("name", sorted(VALID))
@hypothesis_settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_a_cut_anywhere_is_refused(tmp_path: Path, name: str, fraction: float) -> None:
    data = sample(name)
    cut = int(len(data) * fraction)
    assert refusal(write(tmp_path, data[:cut])).code in REFUSED


def test_fast_mode_does_not_decode_formats_with_structural_rules(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    real_decode = core._decode
    monkeypatch.setattr(core, "_decode", lambda image: decoded.append(image.format)
                        or real_decode(image))
    for name in sorted(VALID):
        validate_image(write(tmp_path, sample(name)), FAST)
    # AVIF has no structural rules (see images_service.validation.structure).
    assert decoded == (["AVIF"] if "avif" in VALID else [])


def test_derived_images_decode_whatever_the_mode(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    real_decode = core._decode
    monkeypatch.setattr(core, "_decode", lambda image: decoded.append(image.format)
                        or real_decode(image))
    with open_validated(write(tmp_path, sample("png-rgb")), FAST) as image:
        assert image.image.getpixel((0, 0)) is not None
    assert decoded == ["PNG"]


def test_a_flipped_byte_in_png_data_fails_its_chunk_crc(tmp_path: Path) -> None:
    data = bytearray(sample("png-rgb"))
    idat = data.index(b"IDAT")
    data[idat + 100] ^= 0x01
    error = refusal(write(tmp_path, bytes(data)))
    assert error.code == "corrupt_image" and "CRC mismatch in chunk IDAT" in error.message


@pytest.mark.parametrize("tail", [b"\0" * 3, b"garbage after the image", b"\xff\xd8\xff\xe0"])
def test_bytes_after_jpeg_eoi_are_accepted_like_full_validation(tmp_path: Path,
                                                                tail: bytes) -> None:
    # Cameras append data after EOI (MPO second images, Motion Photo videos, trailers):
    # libjpeg ignores it, and so does fast mode; the image before EOI is whole.
    path = write(tmp_path, sample("jpeg-baseline") + tail)
    assert validate_image(path, FAST) == unhashed(validate_image(path, FULL))


def test_bytes_after_png_iend_and_gif_trailer_are_accepted(tmp_path: Path) -> None:
    for name in ("png-rgb", "gif"):
        path = write(tmp_path, sample(name) + b"trailing data")
        assert validate_image(path, FAST).bytes == len(sample(name)) + 13


def test_bytes_after_the_webp_riff_payload_are_refused(tmp_path: Path) -> None:
    # The RIFF header says where a WebP ends; no writer appends data after it.
    error = refusal(write(tmp_path, sample("webp-lossy") + b"xx"))
    assert error.code == "corrupt_image" and "data after the image" in error.message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_refused_from_the_header_in_fast_mode(tmp_path: Path) -> None:
    # Over Pillow's own limit (30000x30000) and over MAX_IMAGE_PIXELS only (10000x10000):
    # both are caught before any structure is read, as in full mode.
    assert refusal(write(tmp_path, bomb_png())).code == "decompression_bomb"
    error = refusal(write(tmp_path, bomb_png(10000, 10000)))
    assert error.code == "decompression_bomb" and "MAX_IMAGE_PIXELS" in error.message
    small = load_settings({"IMAGE_VALIDATION": "fast", "MAX_IMAGE_PIXELS": "1000"})
    error = refusal(write(tmp_path, encode(photo((40, 30)), "JPEG")), small)
    assert error.code == "decompression_bomb" and "1200 pixels" in error.message


def test_empty_and_non_image_bodies_keep_their_codes(tmp_path: Path) -> None:
    assert refusal(write(tmp_path, b"")).code == "not_an_image"
    assert refusal(write(tmp_path, b"<!doctype html><p>hi</p>")).code == "not_an_image"
