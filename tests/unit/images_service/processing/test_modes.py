"""fit and cover geometry: exact, deterministic sizes; never enlarged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from images_service.processing.modes import MODES, Plan

FIT, COVER = MODES["fit"], MODES["cover"]
sides = st.integers(min_value=1, max_value=10_000)


@pytest.mark.parametrize(
    ("size", "box", "output"),
    [
        ((1024, 768), (320, 320), (320, 240)),
        ((768, 1024), (320, 320), (240, 320)),
        ((1000, 333), (320, 320), (320, 107)),  # 106.56 rounds up
        ((1000, 331), (320, 320), (320, 106)),  # 105.92
        ((1000, 500), (301, 301), (301, 151)),  # 150.5: halves round up
        ((10000, 10), (320, 320), (320, 1)),  # 0.32 px: never below 1
        ((10, 10000), (320, 320), (1, 320)),
        ((200, 100), (320, 320), (200, 100)),  # smaller: untouched
        ((1, 1), (320, 320), (1, 1)),
        ((640, 480), (320, 240), (320, 240)),  # same aspect: exactly the box
    ],
)
def test_fit(size: tuple[int, int], box: tuple[int, int], output: tuple[int, int]) -> None:
    plan = FIT.plan(size, box)
    assert plan == Plan((0, 0, *size), output)


@pytest.mark.parametrize(
    ("size", "box", "region", "output"),
    [
        ((1024, 768), (320, 320), (128, 0, 896, 768), (320, 320)),
        ((768, 1024), (320, 320), (0, 128, 768, 896), (320, 320)),
        ((1024, 768), (640, 360), (0, 96, 1024, 672), (640, 360)),
        # Smaller than the box: cropped to its aspect ratio at the image's own scale.
        ((200, 200), (640, 360), (0, 43, 200, 156), (200, 113)),  # 112.5 rounds up
        ((10000, 10), (320, 320), (4995, 0, 5005, 10), (10, 10)),
        ((1, 1), (320, 180), (0, 0, 1, 1), (1, 1)),
        ((321, 100), (320, 100), (0, 0, 320, 100), (320, 100)),  # 1 px column cut, left
    ],
)
def test_cover(
    size: tuple[int, int],
    box: tuple[int, int],
    region: tuple[int, int, int, int],
    output: tuple[int, int],
) -> None:
    assert COVER.plan(size, box) == Plan(region, output)


@given(sides, sides, sides, sides)
def test_fit_keeps_aspect_inside_the_box_and_never_enlarges(w: int, h: int, bw: int,
                                                            bh: int) -> None:
    out_w, out_h = FIT.plan((w, h), (bw, bh)).size_px
    assert 1 <= out_w <= min(w, bw) and 1 <= out_h <= min(h, bh)
    assert out_w == min(w, bw) or out_h == min(h, bh)  # one side touches its limit
    # Aspect kept to the rounding of one pixel on the computed side.
    assert abs(out_w * h - out_h * w) <= max(w, h)


@given(sides, sides, sides, sides)
def test_cover_crops_to_the_box_aspect_and_never_enlarges(w: int, h: int, bw: int,
                                                          bh: int) -> None:
    plan = COVER.plan((w, h), (bw, bh))
    left, top, right, bottom = plan.region
    crop_w, crop_h = plan.region_size_px
    assert 0 <= left and 0 <= top and right <= w and bottom <= h
    assert crop_w == w or crop_h == h  # as much of the image as the aspect allows
    assert abs(left - (w - right)) <= 1 and abs(top - (h - bottom)) <= 1  # centred
    out_w, out_h = plan.size_px
    assert out_w <= crop_w and out_h <= crop_h  # never enlarged
    assert plan.size_px == (bw, bh) or plan.size_px == (crop_w, crop_h)
    # Aspect of the box, to the rounding of one pixel on the computed side.
    assert abs(crop_w * bh - crop_h * bw) <= max(bw, bh)
