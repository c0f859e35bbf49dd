"""Prove that a downloaded file is an image, with Pillow (CONTRACT.md §8).

The format comes from the bytes only (never the URL or Content-Type). Steps:

1. ``Image.open`` reads the header; it is limited to the formats of the contract's extension
   table, so no other Pillow plugin (EPS, which would run Ghostscript, PSD, ICO…) ever parses
   untrusted bytes. Nothing recognisable → ``not_an_image``.
2. Width × height above ``MAX_IMAGE_PIXELS`` → ``decompression_bomb``, *before* any pixel is
   decoded. Pillow's own global limit is left alone: when it trips first (an image over twice
   its default) its ``DecompressionBombError`` is reported as ``decompression_bomb`` too.
3. One full decode of the first frame (``load()``). A truncated or damaged stream fails there
   → ``corrupt_image``. JPEG is decoded with DCT scaling (``draft``, 1/8 size): libjpeg still
   entropy-decodes every scan of the file, so truncation and corrupt data are still caught
   (tests/integration check it on truncated baseline and progressive files), at a fraction
   of the time and memory of a full-size decode. :func:`open_validated` yields that decoded
   frame, so derived images (:mod:`images_service.processing`) are made from the very decode
   that proved the file valid; it may then ask for JPEG at the larger DCT scale they need.

Animated GIF/WebP and multi-page TIFF: the first frame is decoded; later frames are not
(decoding every frame of a long animation costs more than the download). The width and
height reported are those of the image (the canvas), as Pillow gives them.

``IMAGE_VALIDATION=fast`` changes step 3 in :func:`validate_image` only: steps 1 and 2 are the
same, then the file's structure is checked instead of decoded
(:mod:`images_service.validation.structure`); a format or variant without structural rules
(AVIF, RLE-compressed BMP) is still decoded. :func:`open_validated` always decodes, whatever
the mode: derived images need the pixels anyway (contract §12).

What the image shows (contract §18, :mod:`images_service.content`): the decode of step 3 also
gives the image's perceptual hash and its placeholder reason, carried by :class:`ImageInfo`
(``phash``, ``placeholder``). A JPEG is then decoded at the largest DCT scale that keeps
64 pixels a side (:func:`~images_service.content.phash.draft_size`; 1/8, as before, for
any image of 512 pixels or more a side). ``fast`` decodes nothing unless ``PERCEPTUAL_HASH=true``;
without it the image has no hash, and only the ``tiny`` reason (from the header) is told.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from images_service.config.settings import Settings
from images_service.content.bits import to_hex
from images_service.content.phash import ContentFacts, content_facts, draft_size
from images_service.content.placeholders import classify
from images_service.errors import DownloadError
from images_service.validation.structure import check_structure

logger = logging.getLogger(__name__)

#: Formats accepted, as Pillow names them (the contract's extension table).
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
#: Pillow returns MPO for JPEGs carrying a multi-picture index (many camera files): it is a
#: JPEG file, reported and stored as such.
_FORMAT_ALIASES = {"MPO": "JPEG"}
_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ImageInfo:
    """What validation learned about an image file."""

    format: str  #: Pillow format name of the contract's table (JPEG, PNG, …)
    width: int
    height: int
    sha256: str
    bytes: int
    #: The perceptual hash (16 hex digits) of the first frame; None when nothing was decoded
    #: (``IMAGE_VALIDATION=fast`` without ``PERCEPTUAL_HASH``) or it has no greyscale form.
    phash: str | None = None
    #: ``tiny``, ``blank`` or ``known`` (contract §18), None when the image is none of them.
    placeholder: str | None = None


#: Called with the opened, not yet decoded image; returns the smallest size (in the file's
#: own orientation, pixels) the decoded first frame must have. Only JPEG can decode smaller.
DecodeSize = Callable[[Image.Image], tuple[int, int]]


@dataclass(frozen=True)
class DecodedImage:
    """An image proved valid: its format and size, and its decoded first frame."""

    format: str
    width: int  #: of the image in the file; ``image.size`` is smaller when JPEG was drafted
    height: int
    image: Image.Image
    #: The frame was decoded at 1/reduction of the file's size (JPEG DCT scaling: 1, 2, 4, 8).
    reduction: int = 1

    def facts(self) -> ContentFacts | None:
        """The perceptual hash and luminance spread of the decoded frame (contract §18)."""
        return content_facts(self.image, reduction=self.reduction,
                             size_px=(self.width, self.height))


def validate_image(
    path: str | os.PathLike[str],
    settings: Settings,
    *,
    sha256: str | None = None,
    size: int | None = None,
) -> ImageInfo:
    """Validate the image at ``path``; raise DownloadError when it is not a usable image.

    ``sha256`` and ``size`` may be passed when already known (the fetcher hashes while
    streaming); otherwise they are computed from the file. ``settings.image_validation``
    chooses between one decode (``full``) and structural checks (``fast``).
    """
    path = Path(path)
    if size is None:
        size = path.stat().st_size
    if settings.image_validation == "fast":
        with _open_header(path, settings, size=size) as (image, image_format):
            facts = None
            width, height = image.size  # before a JPEG draft makes image.size smaller
            whole = check_structure(path, image_format)
            if not whole or settings.perceptual_hash:
                if not whole:
                    logger.debug("no structural rules for this %s file: decoding it",
                                 image_format)
                decoded = _decode_first_frame(image, image_format, None)
                facts = decoded.facts() if settings.perceptual_hash else None
    else:
        with open_validated(path, settings, size=size) as decoded:
            image_format, width, height = decoded.format, decoded.width, decoded.height
            facts = decoded.facts()
    return _info(image_format, width, height, path, sha256=sha256, size=size,
                 facts=facts, settings=settings)


def image_info(
    decoded: DecodedImage,
    path: str | os.PathLike[str],
    *,
    sha256: str | None,
    size: int,
    facts: ContentFacts | None = None,
    settings: Settings | None = None,
) -> ImageInfo:
    """The ImageInfo of a validated file (its hash computed unless given).

    ``facts`` (from ``decoded.facts()``) and ``settings`` give its perceptual hash and
    placeholder reason; without settings neither is set.
    """
    return _info(decoded.format, decoded.width, decoded.height, path, sha256=sha256, size=size,
                 facts=facts, settings=settings)


def placeholder_reason(
    width: int, height: int, facts: ContentFacts | None, settings: Settings
) -> str | None:
    """The image's placeholder reason under ``settings`` (contract §18), or None."""
    return classify(width, height, facts, min_side_px=settings.min_image_side_px,
                    known_hashes=_known_hashes(settings.placeholder_hashes))


def _info(image_format: str, width: int, height: int, path: str | os.PathLike[str], *,
          sha256: str | None, size: int, facts: ContentFacts | None = None,
          settings: Settings | None = None) -> ImageInfo:
    return ImageInfo(
        format=image_format,
        width=width,
        height=height,
        sha256=sha256 if sha256 is not None else file_sha256(path),
        bytes=size,
        phash=to_hex(facts.phash) if facts is not None else None,
        placeholder=(placeholder_reason(width, height, facts, settings)
                     if settings is not None else None),
    )


@lru_cache(maxsize=8)
def _known_hashes(hex_hashes: tuple[str, ...]) -> tuple[int, ...]:
    """``PLACEHOLDER_HASHES`` as ints (parsed once per settings value)."""
    return tuple(int(value, 16) for value in hex_hashes)


@contextmanager
def open_validated(
    source: str | os.PathLike[str] | BinaryIO,
    settings: Settings,
    *,
    size: int | None = None,
    decode_size: DecodeSize | None = None,
) -> Iterator[DecodedImage]:
    """Open and validate ``source``; yield its decoded first frame, closed on exit.

    The decode that proves validity is the one yielded, so a caller that needs the pixels
    (derived images) decodes once. ``decode_size`` asks for a JPEG decoded at least that
    large instead of 1/8 scale; every scan is entropy-decoded at any scale.
    """
    with _open_header(source, settings, size=size) as (image, image_format):
        yield _decode_first_frame(image, image_format, decode_size)


def _decode_first_frame(
    image: Image.Image, image_format: str, decode_size: DecodeSize | None
) -> DecodedImage:
    """Step 3: decode ``image``'s first frame; a JPEG at the smallest DCT scale that is at
    least ``decode_size`` and large enough for the perceptual hash."""
    width, height = image.size
    reduction = 1
    if image_format == "JPEG":
        # Scale 1/8 (the largest DCT scaling) unless more is needed: every entropy-coded
        # byte is still decoded.
        need_w, need_h = draft_size((width, height))
        asked_w, asked_h = _wanted_size(decode_size, image)
        need_w, need_h = max(need_w, asked_w), max(need_h, asked_h)
        drafted = image.draft(None, (need_w, need_h))
        if drafted is not None:  # (mode, (0, 0, width / scale, height / scale))
            reduction = round(width / drafted[1][2])
    _decode(image)
    return DecodedImage(image_format, width, height, image, reduction)


@contextmanager
def _open_header(
    source: str | os.PathLike[str] | BinaryIO, settings: Settings, *, size: int | None
) -> Iterator[tuple[Image.Image, str]]:
    """Steps 1 and 2: yield the opened image (header read, nothing decoded) and its format."""
    if size == 0:
        raise DownloadError("not_an_image", "the body is empty")
    try:
        image = Image.open(source, formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as e:
        raise DownloadError("decompression_bomb", str(e)) from e
    except UnidentifiedImageError as e:
        raise DownloadError("not_an_image", "not an image of a supported format") from e
    except DownloadError:
        raise  # the source itself failed (a storage stream): not the file's fault
    except MemoryError as e:
        raise DownloadError("decompression_bomb", "reading the header needs too much memory"
                            ) from e
    except Exception as e:  # noqa: BLE001 -- see below
        # A recognised format whose header does not parse. Plugins raise OSError,
        # SyntaxError, ValueError, EOFError, but also RuntimeError (libavif: "Missing or
        # empty image item"), KeyError, struct.error, ZeroDivisionError… on hostile bytes.
        raise DownloadError("corrupt_image",
                            f"unreadable image header: {type(e).__name__}: {e}") from e
    with image:
        image_format = _FORMAT_ALIASES.get(image.format or "", image.format or "")
        if image_format not in SUPPORTED_FORMATS:
            raise DownloadError("not_an_image", f"unsupported image format {image.format}")
        width, height = image.size
        pixels = width * height
        if pixels > settings.max_image_pixels:
            raise DownloadError(
                "decompression_bomb",
                f"{width}x{height} = {pixels} pixels exceeds MAX_IMAGE_PIXELS "
                f"{settings.max_image_pixels}",
            )
        if pixels == 0:
            raise DownloadError("corrupt_image", f"image has no pixels ({width}x{height})")
        yield image, image_format


def _wanted_size(decode_size: DecodeSize | None, image: Image.Image) -> tuple[int, int]:
    """The JPEG decode size: 1/8 scale without a hook, the hook's answer, or full size.

    The hook (derived images) reads metadata of the file; should it fail anyway, the file
    is decoded at full size rather than refused: its validity does not depend on it.
    """
    if decode_size is None:
        return (1, 1)
    try:
        return decode_size(image)
    except Exception as e:  # noqa: BLE001 -- never let the hook decide validity
        logger.warning("decode size of a %dx%d JPEG unknown (%s: %s): decoding at full size",
                       *image.size, type(e).__name__, e)
        return image.size


def _decode(image: Image.Image) -> None:
    """Decode the first frame fully once; raise ``corrupt_image`` on any decoder failure."""
    try:
        image.load()
    except DownloadError:
        raise  # the source itself failed (a storage stream): not the file's fault
    except Image.DecompressionBombError as e:
        raise DownloadError("decompression_bomb", str(e)) from e
    except MemoryError as e:
        raise DownloadError("decompression_bomb", "decoding needs too much memory") from e
    except Exception as e:  # noqa: BLE001 -- decoders raise many types on bad data
        raise DownloadError("corrupt_image", f"cannot decode image: {e}") from e


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
