"""Placeholders: images nobody wants to show, recorded but given no variants (§18).

An image is a placeholder for the first of these reasons that holds, tried in this order
(a 1×1 pixel is ``tiny``, never ``blank``):

``tiny``
    a side under ``MIN_IMAGE_SIDE`` pixels (tracking pixels, spacers). Only the header is
    needed, so it is known even when nothing is decoded (``IMAGE_VALIDATION=fast`` without
    ``PERCEPTUAL_HASH``).
``blank``
    one colour, or a luminance standard deviation under 2 (grey levels, 0-255). Measured on
    the 32×32 greyscale image the hash is made from (:mod:`.phash`): a single colour gives 0
    there, and sensor noise or JPEG ringing on an empty frame, which would pass a full-size
    measure, is averaged away. A frame with a little fine detail (a thin line, small text on
    a plain page) can read as blank: such an image shows next to nothing at thumbnail size.
``known``
    its pHash within 4 bits of one in ``PLACEHOLDER_HASHES`` ("no photo available" images
    shared by thousands of listings; ``images-service placeholders`` lists candidates).

``blank`` and ``known`` need the decoded pixels (:class:`~.phash.ContentFacts`); without them
only ``tiny`` is tried.
"""

from __future__ import annotations

from collections.abc import Iterable

from images_service.content.bits import distance
from images_service.content.phash import ContentFacts

TINY, BLANK, KNOWN = "tiny", "blank", "known"
#: Every reason, in the order they are tried.
REASONS = (TINY, BLANK, KNOWN)
#: ``blank``: a luminance standard deviation under this (grey levels).
BLANK_LUMINANCE_SD = 2.0
#: ``known``: at most this many bits from a hash of ``PLACEHOLDER_HASHES``.
KNOWN_DISTANCE_BITS = 4


def is_tiny(width: int, height: int, min_side_px: int) -> bool:
    """A side under ``min_side_px`` (``MIN_IMAGE_SIDE``; 0 never)."""
    return min(width, height) < min_side_px


def is_known(phash: int, known_hashes: Iterable[int]) -> bool:
    """``phash`` within :data:`KNOWN_DISTANCE_BITS` of one of ``known_hashes``."""
    return any(distance(phash, known) <= KNOWN_DISTANCE_BITS for known in known_hashes)


def classify(
    width: int,
    height: int,
    facts: ContentFacts | None,
    *,
    min_side_px: int,
    known_hashes: Iterable[int] = (),
) -> str | None:
    """The placeholder reason of an image of ``width`` × ``height``, or None.

    ``facts`` are its decoded pixels' (None when nothing was decoded, or the frame had no
    greyscale form): then only ``tiny`` can be told.
    """
    if is_tiny(width, height, min_side_px):
        return TINY
    if facts is None:
        return None
    if facts.luminance_sd < BLANK_LUMINANCE_SD:
        return BLANK
    if is_known(facts.phash, known_hashes):
        return KNOWN
    return None
