"""Resize modes of a variant: ``fit`` and ``cover`` (CONTRACT.md §12), one class each.

Like Wagtail's image operations, each mode is a small class registered by name in
:data:`MODES`; a new mode is one class with ``@MODES.register``. A mode only does
geometry: from the (oriented) size of the original and the variant's box it returns a :class:`Plan`,
the region of the original to keep and the exact output size. The renderer applies the plan
with one ``Image.resize(size, box=region)`` call, whatever scale the JPEG was decoded at,
so output sizes depend on the original's size and the spec only, never on decoding shortcuts.

Rounding (documented so sizes are reproducible): sizes are computed in integers, halves
rounded up (``round_half_up(a / b)`` = ``(2a + b) // 2b``), never below 1 pixel; a crop
region is centred with its offset rounded down. Images are never enlarged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from images_service.processing.registry import Registry


@dataclass(frozen=True)
class Plan:
    """Keep ``region`` (left, top, right, bottom in original pixels), output ``size_px``."""

    region: tuple[int, int, int, int]
    size_px: tuple[int, int]

    @property
    def region_size_px(self) -> tuple[int, int]:
        left, top, right, bottom = self.region
        return right - left, bottom - top

    @property
    def scales(self) -> bool:
        """False when the output is the region itself (a plain crop, no resampling)."""
        return self.size_px != self.region_size_px


class ResizeMode(ABC):
    """Geometry of one mode; ``name`` is its key in ``PROCESSED_VARIANTS``."""

    name: str

    @abstractmethod
    def plan(self, size_px: tuple[int, int], box_px: tuple[int, int]) -> Plan:
        """The plan for an original of ``size_px`` (after orientation) and a box."""


def round_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded to the nearest integer, halves up, at least 1."""
    return max(1, (2 * numerator + denominator) // (2 * denominator))


#: mode name -> the mode.
MODES: Registry[ResizeMode] = Registry()


@MODES.register
class Fit(ResizeMode):
    """Scale the whole image to fit inside the box, aspect ratio kept, never enlarged.

    The constraining side gets the box's length exactly; the other is rounded.
    """

    name = "fit"

    def plan(self, size_px: tuple[int, int], box_px: tuple[int, int]) -> Plan:
        (width, height), (box_w, box_h) = size_px, box_px
        region = (0, 0, width, height)
        if width <= box_w and height <= box_h:
            return Plan(region, (width, height))
        # Compare the scales box_w/width and box_h/height without floats.
        if box_w * height <= box_h * width:
            return Plan(region, (box_w, min(box_h, round_half_up(height * box_w, width))))
        return Plan(region, (min(box_w, round_half_up(width * box_h, height)), box_h))


@MODES.register
class Cover(ResizeMode):
    """Crop the centre of the image to the box's aspect ratio, then scale it to the box.

    An image smaller than the box is cropped to the box's aspect ratio at its own scale and
    not scaled (never enlarged), so the output may be smaller than the box.
    """

    name = "cover"

    def plan(self, size_px: tuple[int, int], box_px: tuple[int, int]) -> Plan:
        (width, height), (box_w, box_h) = size_px, box_px
        if width * box_h > height * box_w:  # wider than the box: keep the full height
            crop_w, crop_h = min(width, round_half_up(height * box_w, box_h)), height
        else:  # taller (or the same aspect): keep the full width
            crop_w, crop_h = width, min(height, round_half_up(width * box_h, box_w))
        left, top = (width - crop_w) // 2, (height - crop_h) // 2
        region = (left, top, left + crop_w, top + crop_h)
        if crop_w >= box_w and crop_h >= box_h:
            return Plan(region, (box_w, box_h))
        return Plan(region, (crop_w, crop_h))

