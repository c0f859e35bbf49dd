"""Placeholders (contract §18): tiny, blank, known, tried in that order; every format."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from images_service.content.bits import distance, from_hex
from images_service.content.phash import ContentFacts
from images_service.content.placeholders import classify
from images_service.processing.render import validate_and_render
from images_service.processing.specs import parse_variants
from images_service.validation import validate_image
from tests.support.scenes import (
    FORMATS,
    add_noise,
    scene,
    settings,
    watermark,
    write,
)

BUSY = ContentFacts(phash=0x8F373714ACFCF4D0, luminance_sd=40.0)
FLAT = ContentFacts(phash=0, luminance_sd=0.0)


# --- the rule -------------------------------------------------------------------------------

def test_a_side_under_min_image_side_is_tiny_and_the_other_side_does_not_matter() -> None:
    assert classify(15, 400, BUSY, min_side_px=16) == "tiny"
    assert classify(400, 15, BUSY, min_side_px=16) == "tiny"
    assert classify(16, 16, BUSY, min_side_px=16) is None
    assert classify(1, 1, BUSY, min_side_px=0) is None  # MIN_IMAGE_SIDE=0: never tiny


def test_the_reasons_are_tried_in_order() -> None:
    # A 1×1 pixel is one colour, and its hash may be known: it is tiny.
    assert classify(1, 1, FLAT, min_side_px=16, known_hashes=(0,)) == "tiny"
    # A blank frame whose hash is known is blank.
    assert classify(100, 100, FLAT, min_side_px=16, known_hashes=(0,)) == "blank"
    assert classify(100, 100, BUSY, min_side_px=16, known_hashes=(BUSY.phash,)) == "known"


def test_blank_is_a_luminance_spread_under_2() -> None:
    assert classify(99, 99, ContentFacts(1, 1.99), min_side_px=16) == "blank"
    assert classify(99, 99, ContentFacts(1, 2.0), min_side_px=16) is None


def test_known_is_within_4_bits() -> None:
    four, five = BUSY.phash ^ 0b1111, BUSY.phash ^ 0b11111
    assert classify(99, 99, BUSY, min_side_px=16, known_hashes=(1, four)) == "known"
    assert classify(99, 99, BUSY, min_side_px=16, known_hashes=(five,)) is None


def test_without_decoded_pixels_only_tiny_is_told() -> None:
    assert classify(1, 1, None, min_side_px=16) == "tiny"
    assert classify(100, 100, None, min_side_px=16, known_hashes=(0,)) is None


# --- every reason in every format, through validation ---------------------------------------

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_tiny_images(tmp_path: Path, fmt: str) -> None:
    for size in ((1, 1), (15, 300), (300, 8)):
        path = write(tmp_path, f"t{size[0]}x{size[1]}", scene(1, size), fmt)
        assert validate_image(path, settings()).placeholder == "tiny", size
    path = write(tmp_path, "edge", scene(1, (16, 16)), fmt)
    assert validate_image(path, settings()).placeholder is None
    assert validate_image(path, settings(MIN_IMAGE_SIDE="17")).placeholder == "tiny"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_blank_images(tmp_path: Path, fmt: str) -> None:
    white = Image.new("RGB", (400, 300), (255, 255, 255))
    grey_with_grain = add_noise(Image.new("RGB", (400, 300), (128, 128, 128)), 3.0, seed=1)
    for name, image in (("white", white), ("grain", grey_with_grain)):
        path = write(tmp_path, name, image, fmt)
        assert validate_image(path, settings()).placeholder == "blank", name
    # A plain frame with a picture in a corner is not blank.
    framed = white.copy()
    framed.paste(scene(2, (120, 90)), (10, 10))
    path = write(tmp_path, "framed", framed, fmt)
    assert validate_image(path, settings()).placeholder is None


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_known_placeholders(tmp_path: Path, fmt: str) -> None:
    no_photo = scene(3, (400, 300))
    reference = validate_image(write(tmp_path, "ref", no_photo, "PNG"), settings()).phash
    assert reference is not None
    known = settings(PLACEHOLDER_HASHES=f"ffffffffffffffff,{reference}")
    # The same "no photo" image served at another size and format by another site.
    path = write(tmp_path, "copy", watermark(no_photo.resize((300, 225))), fmt)
    assert validate_image(path, known).placeholder == "known"
    assert validate_image(path, settings()).placeholder is None
    other = write(tmp_path, "other", scene(4, (400, 300)), fmt)
    assert validate_image(other, known).placeholder is None


def test_placeholders_get_no_variants(tmp_path: Path) -> None:
    variants = parse_variants("thumb:320x320:fit:webp:80")
    spacer = write(tmp_path, "spacer", Image.new("RGB", (1, 1)), "GIF")
    blank = write(tmp_path, "blank", Image.new("RGB", (640, 480), (250, 250, 250)), "JPEG")
    photo = write(tmp_path, "photo", scene(5, (640, 480)), "JPEG")
    for path, reason in ((spacer, "tiny"), (blank, "blank")):
        info, results = validate_and_render(path, settings(), variants)
        assert (info.placeholder, results) == (reason, ())
    info, results = validate_and_render(photo, settings(), variants)
    assert info.placeholder is None and [r.name for r in results] == ["thumb"]
    # The variants' decode (JPEG at 1/2 here, for the thumbnail) hashes too, like validation
    # alone (at 1/8).
    assert info.phash is not None
    alone = validate_image(photo, settings()).phash
    assert distance(from_hex(info.phash), from_hex(alone or "")) <= 2
