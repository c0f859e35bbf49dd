"""The perceptual hash of a decoded image (contract §18): imagehash's phash of the first
frame in greyscale, from the decode validation makes."""

from __future__ import annotations

from pathlib import Path

import imagehash
import pytest
from PIL import Image

from images_service.content.bits import distance, from_hex
from images_service.content.phash import content_facts, draft_size
from images_service.validation import validate_image
from tests.support.scenes import FORMATS, blobs, scene, settings, write

FULL = settings()


def imagehash_of(path: Path) -> str:
    """The contract's definition on the file's full-size decode."""
    with Image.open(path) as image:
        return str(imagehash.phash(image.convert("L")))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_the_hash_of_a_full_decode_is_imagehash_phash(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, "a", scene(1), fmt)
    with Image.open(path) as image:
        image.load()
        facts = content_facts(image)
    assert facts is not None
    assert f"{facts.phash:016x}" == imagehash_of(path)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_validation_records_imagehash_of_formats_decoded_at_full_size(tmp_path: Path,
                                                                      fmt: str) -> None:
    path = write(tmp_path, "a", scene(2), fmt)
    assert validate_image(path, FULL).phash == imagehash_of(path)


@pytest.mark.parametrize("size", [(320, 240), (641, 479), (1203, 805), (200, 1000)])
def test_a_jpeg_drafted_at_reduced_scale_stays_within_2_bits(tmp_path: Path,
                                                             size: tuple[int, int]) -> None:
    # Sizes that are not multiples of the DCT scale too: the resize takes the exact region.
    for seed in range(3):
        path = write(tmp_path, f"s{seed}", scene(seed, size), "JPEG", quality=90)
        info = validate_image(path, FULL)
        assert info.phash is not None
        assert distance(from_hex(info.phash), from_hex(imagehash_of(path))) <= 2, (size, seed)


@pytest.mark.parametrize("size", [(473, 266), (394, 295), (603, 451)])
def test_a_drafted_jpeg_is_resized_from_the_region_that_is_picture(tmp_path: Path,
                                                                   size: tuple[int, int]) -> None:
    # At 1/4 a 473-pixel width decodes to 119 pixels of which 118.25 are picture: resizing
    # all 119 would squeeze the picture and flip near-median coefficients (measured: 12 of
    # 120 such files moved more than 2 bits; none does with the region).
    for seed in range(10):
        path = write(tmp_path, f"b{seed}", blobs(seed, size), "JPEG", quality=90)
        hashed = from_hex(validate_image(path, FULL).phash or "")
        assert distance(hashed, from_hex(imagehash_of(path))) <= 2, (size, seed)


def test_draft_size_keeps_64_pixels_a_side_at_most_the_image() -> None:
    assert draft_size((1024, 768)) == (64, 64)
    assert draft_size((20, 500)) == (20, 64)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_an_animation_is_hashed_from_its_first_frame(tmp_path: Path, fmt: str) -> None:
    first, second = scene(3), scene(4)
    animation = tmp_path / f"anim.{FORMATS[fmt]}"
    if fmt == "GIF":
        first, second = first.quantize(256), second.quantize(256)
    first.save(animation, fmt, save_all=True, append_images=[second], duration=100, loop=0)
    stills = [write(tmp_path, f"frame{i}", frame, fmt) for i, frame in enumerate((first, second))]
    frame_hashes = [from_hex(validate_image(still, FULL).phash or "") for still in stills]
    assert distance(*frame_hashes) > 16  # the two frames are different pictures
    hashed = from_hex(validate_image(animation, FULL).phash or "")
    assert distance(hashed, frame_hashes[0]) <= 2
    assert distance(hashed, frame_hashes[1]) > 16


def test_a_frame_without_a_greyscale_form_has_no_hash(tmp_path: Path) -> None:
    # LAB TIFF: Pillow decodes it but cannot convert it to L; the image is still valid.
    path = tmp_path / "lab.tif"
    Image.new("LAB", (64, 48), (50, 10, 20)).save(path)
    info = validate_image(path, FULL)
    assert (info.format, info.phash, info.placeholder) == ("TIFF", None, None)


def test_luminance_spread_of_a_flat_and_a_busy_image() -> None:
    flat, busy = content_facts(Image.new("RGB", (300, 200), (90, 140, 200))), content_facts(
        scene(5))
    assert flat is not None and busy is not None
    assert flat.luminance_sd == 0.0
    assert busy.luminance_sd > 20


def test_reduced_scale_needs_the_image_size() -> None:
    with pytest.raises(ValueError):
        content_facts(Image.new("L", (40, 30)), reduction=8)
