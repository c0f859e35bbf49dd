"""The perceptual hash of a decoded image, and what the placeholder check needs (§18).

:func:`content_facts` takes the first frame that validation (or the variants' decode) has
already decoded and returns its 64-bit pHash with the standard deviation of its luminance.
The hash is ``imagehash.phash``: the frame converted to greyscale (``convert("L")``),
resized to 32×32 with Lanczos, a 2-D DCT, the 8×8 lowest frequencies compared with their
median. This module makes that 32×32 grey image itself and hands it to ``imagehash.phash``,
which then converts and resizes nothing (an ``L`` image of the target size is copied as it
is), so

* from a full-size decode the hash is exactly ``imagehash.phash(image)``;
* from a JPEG decoded with DCT scaling (``draft``, 1/2 … 1/8) the resize takes the exact
  region of the scaled frame that maps the file's pixels (a scaled frame is rounded *up* to
  whole pixels, so its last row and column stand for less than a pixel of the original);
  without that box the picture is squeezed by up to 7/8 of a scaled pixel and near-median
  coefficients flip (soft pictures of 473×266, 394×295, 603×451 pixels: 12 of 120 files
  moved more than 2 bits from the full decode's hash without the box, none with it);
* the same 32×32 image gives the luminance standard deviation of the ``blank`` check
  (:mod:`.placeholders`): a cheap measure that noise and JPEG ringing barely move.

A frame Pillow cannot convert to greyscale (``LAB`` TIFF, ``La``) has no facts: the image is
still downloaded, only without a hash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import imagehash
import numpy
from PIL import Image

logger = logging.getLogger(__name__)

#: imagehash's phash input: hash_size 8 × highfreq_factor 4.
HASH_INPUT_PX = 32
#: A JPEG is decoded at least this large (each side, when the file is) for the hash: the DCT
#: scale (1/8 at most) is chosen so that the scaled frame still has that many pixels. 64
#: rather than the hash's 32: on the shared benchmark's 1316 JPEGs 90 % of hashes stay within
#: 2 bits of the full decode's (max 6) instead of 87 % (max 8), for the same CPU (the
#: entropy decoding, done at any scale, dominates); 128 gave 92 % for +0.25 ms per image.
MIN_DECODE_PX = 64


@dataclass(frozen=True)
class ContentFacts:
    """What the decoded pixels say about an image."""

    phash: int  #: 64 bits, as ``int(str(imagehash.phash(...)), 16)``
    luminance_sd: float  #: standard deviation of the 32×32 greyscale image, 0-127.5


def content_facts(
    image: Image.Image, *, reduction: int = 1, size_px: tuple[int, int] | None = None
) -> ContentFacts | None:
    """The facts of ``image``, the decoded first frame of an image of ``size_px``.

    ``reduction`` is the JPEG DCT scale of the decode (``DecodedImage.reduction``: the frame
    is ``ceil(size_px / reduction)``); ``size_px`` is needed only when it is not 1. Returns
    None when the frame cannot be made greyscale.
    """
    try:
        grey = image.convert("L")
    except (ValueError, OSError) as e:
        logger.info("no perceptual hash for a %s image: %s", image.mode, e)
        return None
    box = None
    if reduction != 1:
        if size_px is None:
            raise ValueError("size_px is needed for a frame decoded at reduced scale")
        # The frame is rounded up to whole pixels: only size / reduction of it is picture.
        box = (0.0, 0.0, size_px[0] / reduction, size_px[1] / reduction)
    small = grey.resize((HASH_INPUT_PX, HASH_INPUT_PX), Image.Resampling.LANCZOS, box=box)
    bits = imagehash.phash(small).hash  # 8×8 booleans, row by row
    value = int.from_bytes(numpy.packbits(bits).tobytes(), "big")  # = int(str(hash), 16)
    return ContentFacts(value, float(numpy.asarray(small).std()))


def draft_size(size_px: tuple[int, int]) -> tuple[int, int]:
    """The smallest JPEG decode the hash needs for an image of ``size_px``: the request to
    ``Image.draft``, which picks the largest DCT scale that still gives at least that."""
    return (min(size_px[0], MIN_DECODE_PX), min(size_px[1], MIN_DECODE_PX))
