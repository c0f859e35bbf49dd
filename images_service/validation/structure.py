"""Fast validation (``IMAGE_VALIDATION=fast``): a file's structure instead of a decode.

After the header and pixel limit (:mod:`.core`), :func:`check_structure` runs the rules of the
file's format, each in its own module: JPEG (SOI, segments, scans to EOI), PNG (every chunk's
CRC through IEND), GIF (every block to the trailer), WebP (RIFF length and chunk walk), BMP
(the pixel array inside the file), TIFF (every strip or tile inside the file). They read the
file forward a block at a time (:mod:`.reader`), so memory stays bounded, and cost a fraction
of a decode (``bench/validation_bench.py``). They refuse truncated and structurally damaged
files as ``corrupt_image``; damage inside compressed data that keeps the structure intact
(a flipped bit in a JPEG scan) is only caught by a decode, which is what ``full`` is for.

AVIF has no rules here and is decoded: its AV1 payload sits in an ISOBMFF container whose
item locations (``iloc``), grids, alpha planes and sequences would need a reader larger than
all the others together, for a format that is rare among the images we fetch; libavif
already parses that container when Pillow opens the header.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from images_service.errors import DownloadError
from images_service.validation.bmp import check_bmp
from images_service.validation.gif import check_gif
from images_service.validation.jpeg import check_jpeg
from images_service.validation.png import check_png
from images_service.validation.reader import Reader
from images_service.validation.tiff import check_tiff
from images_service.validation.webp import check_webp

logger = logging.getLogger(__name__)

#: Pillow format -> its rules; each returns False when the file needs a decode instead.
_CHECKS: dict[str, Callable[[Reader], bool]] = {
    "JPEG": check_jpeg,
    "PNG": check_png,
    "GIF": check_gif,
    "WEBP": check_webp,
    "BMP": check_bmp,
    "TIFF": check_tiff,
}


def check_structure(path: str | os.PathLike[str], image_format: str) -> bool:
    """Check the file at ``path`` by the rules of ``image_format``; raise ``corrupt_image``.

    Returns ``True`` when the structure proved the file whole, ``False`` when the format (or
    this file's variant of it) has no structural rules and the caller must decode it.
    """
    check = _CHECKS.get(image_format)
    if check is None:
        return False
    with open(path, "rb") as handle:
        try:
            return check(Reader(handle, os.fstat(handle.fileno()).st_size, image_format))
        except DownloadError:
            raise
        except Exception as e:  # noqa: BLE001 -- a fault of a rule, not a verdict on the file
            # The rules read hostile bytes; one that trips over a layout it did not expect
            # must not fail the image: the decode decides instead (and the warning shows
            # the rule to fix; the fuzz tests treat it as a failure).
            logger.warning("structural check of a %s file failed (%s: %s): decoding it instead",
                           image_format, type(e).__name__, e)
            return False
