"""Render the configured variants of one image from one decode (CONTRACT.md §12).

Two entry points, both ending in :func:`_render_decoded`:

* :func:`validate_and_render`, in the download: validation's own decode is the variants'
  decode (:func:`images_service.validation.open_validated`). Validation alone decodes JPEG
  at 1/8 scale, too small for most variants; with variants it asks instead for the largest
  DCT scale that still covers the biggest variant (orientation taken into account). Every
  scan is still entropy-decoded, so validity is proved exactly as before, and the file is
  opened and decoded once instead of twice. Measured with ``bench/processing_bench.py``
  (120 photo-like 1024×768 images: 69 JPEG, 30 PNG, 21 WebP; one process, CPU ms/image):

  ======================  ============  =========  ========  =========
  work                    all           JPEG       PNG       WebP
  ======================  ============  =========  ========  =========
  validation alone        7.2           1.8        18.5      8.5
  + thumb, two opens      24.1          12.2       48.4      28.7
  + thumb, one decode     16.8          10.1       30.0      19.8
  ======================  ============  =========  ========  =========

  (thumb = ``320x320:fit:webp:80``; encoding it is ~6 ms of that, the resize ~2 ms.)
  PNG and WebP gain most: their only decode is the full-size one.
* :func:`render_variants`, on a re-download: variants that are missing or whose spec changed
  are made from the stored original (a path or a binary file object from the storage),
  without any request to the image's server. The original is checked again on the way, as
  the decode needs to happen anyway; if it is no longer a valid image every variant fails.

Per original: first frame (validation decodes only that), EXIF orientation applied first
(an unreadable EXIF block counts as no orientation, as in browsers), then colours to a
working mode (:mod:`.colour`). Per variant: its mode's :class:`~.modes.Plan` is computed
on the original's oriented size, applied with one ``resize(box=…)`` (``reducing_gap`` lets
Pillow ``reduce()`` by an integer factor first, near-identical to a full Lanczos and much
faster on large originals), converted to sRGB and encoded in memory. A variant that fails
is a :class:`VariantFailure` for that variant only; the others are still made.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import ExifTags, Image

from images_service.config.settings import Settings
from images_service.content.bits import to_hex
from images_service.errors import DownloadError, StorageUnavailable
from images_service.processing.colour import SrgbConverter, working_image
from images_service.processing.specs import VariantSpec
from images_service.validation import (
    DecodedImage,
    DecodeSize,
    ImageInfo,
    image_info,
    open_validated,
)
from images_service.validation.core import placeholder_reason

logger = logging.getLogger(__name__)

#: ``resize(reducing_gap=…)``: reduce() by an integer factor while the rest is >= 3× the
#: output; Pillow's docs: 3.0 is indistinguishable from a full Lanczos resize.
REDUCING_GAP = 3.0
#: EXIF orientations that swap width and height (transpose, 90°, transverse, 270°).
_SWAPS_AXES = frozenset({5, 6, 7, 8})
#: EXIF orientation -> the transposition that shows the image upright (as exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
PROCESSING_FAILED = "processing_failed"


@dataclass(frozen=True)
class RenderedVariant:
    """One variant made: its file's bytes and what metadata.json records of it."""

    name: str
    spec: str  #: canonical spec it was made with (VariantSpec.spec)
    format: str  #: Pillow format name: JPEG, WEBP, PNG
    extension: str  #: .jpg, .webp, .png
    content_type: str
    width: int
    height: int
    data: bytes
    sha256: str

    @property
    def size_bytes(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class VariantFailure:
    """One variant that could not be made; recorded as ``{"error": {...}}`` under its name."""

    name: str
    spec: str
    message: str
    code: str = PROCESSING_FAILED


VariantResult = RenderedVariant | VariantFailure


def validate_and_render(
    path: str | os.PathLike[str],
    settings: Settings,
    variants: Sequence[VariantSpec],
    *,
    sha256: str | None = None,
    size: int | None = None,
) -> tuple[ImageInfo, tuple[VariantResult, ...]]:
    """Validate a downloaded file (as ``validate_image``) and render ``variants`` from it.

    Raises DownloadError when the file is not a valid image (then no variant is made). The
    same decode gives the image's perceptual hash; a placeholder (contract §18: ``tiny``,
    ``blank``, ``known``) gets no variant, so its ImageInfo comes with an empty tuple.
    """
    path = Path(path)
    if size is None:
        size = path.stat().st_size
    with open_validated(path, settings, size=size, decode_size=_decode_size(variants)) as dec:
        info = image_info(dec, path, sha256=sha256, size=size, facts=dec.facts(),
                          settings=settings)
        results = () if info.placeholder is not None else _render_decoded(dec, variants)
    return info, results


def render_variants(
    source: str | os.PathLike[str] | BinaryIO,
    settings: Settings,
    variants: Sequence[VariantSpec],
) -> tuple[VariantResult, ...]:
    """Render ``variants`` from a stored original; never raises for a bad original.

    Raises StorageUnavailable when reading ``source`` fails (the storage, not the original:
    retried like any storage outage, instead of recording the variants as failed).
    """
    return render_stored(source, settings, variants).results


@dataclass(frozen=True)
class StoredRender:
    """What :func:`render_stored` made of a stored original."""

    results: tuple[VariantResult, ...]
    #: Its perceptual hash (16 hex digits) and placeholder reason (contract §18) when asked
    #: for and the decode gave them; a placeholder's ``results`` are empty.
    phash: str | None = None
    placeholder: str | None = None


def render_stored(
    source: str | os.PathLike[str] | BinaryIO,
    settings: Settings,
    variants: Sequence[VariantSpec],
    *,
    describe: bool = False,
) -> StoredRender:
    """:func:`render_variants`, and with ``describe`` what the image shows from the same
    decode: for a record made before its hash was recorded (contract §18), which is hashed
    when its variants are made anyway. A placeholder found so gets no variant."""
    if not variants:
        return StoredRender(())
    try:
        with open_validated(source, settings, decode_size=_decode_size(variants)) as decoded:
            if not describe:
                return StoredRender(_render_decoded(decoded, variants))
            try:
                facts = decoded.facts()
            except Exception as e:  # noqa: BLE001 -- no hash; the variants are still made
                logger.warning("no perceptual hash for a stored %s: %s: %s", decoded.format,
                               type(e).__name__, e)
                facts = None
            reason = placeholder_reason(decoded.width, decoded.height, facts, settings)
            return StoredRender(
                () if reason is not None else _render_decoded(decoded, variants),
                phash=to_hex(facts.phash) if facts is not None else None,
                placeholder=reason)
    except StorageUnavailable:
        raise
    except DownloadError as e:
        message = f"the original is not a valid image ({e.code}): {e.message}"
        return StoredRender(tuple(VariantFailure(v.name, v.spec, message) for v in variants))


def _decode_size(variants: Sequence[VariantSpec]) -> DecodeSize:
    """The validation hook: the JPEG decode size that covers every variant's output."""

    def decode_size(image: Image.Image) -> tuple[int, int]:
        swaps = _orientation(image) in _SWAPS_AXES
        width, height = image.size[::-1] if swaps else image.size
        need_w = need_h = 1
        for variant in variants:
            plan = variant.resize_mode.plan((width, height), (variant.width_px, variant.height_px))
            (out_w, out_h), (region_w, region_h) = plan.size_px, plan.region_size_px
            # The region, decoded at 1/s, must still have out_w × out_h pixels: Pillow picks
            # the largest s with width // need_w >= s, i.e. s <= region_w / out_w.
            need_w = max(need_w, math.ceil(out_w * width / region_w))
            need_h = max(need_h, math.ceil(out_h * height / region_h))
        return (need_h, need_w) if swaps else (need_w, need_h)

    return decode_size


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, 1-8; 1 for a missing, nonsensical or unreadable tag.

    EXIF is untrusted: Pillow's parser raises SyntaxError, ValueError, struct.error… on a
    damaged block (a garbage ``Exif`` APP1, a PNG ``eXIf`` or "Raw profile type exif" text
    that is not what it says), and a browser shows such an image unrotated: so do we. The
    image itself was (or will be) proved valid by its decode, not by its metadata.
    """
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as e:  # noqa: BLE001 -- any parser error of untrusted metadata
        logger.info("unreadable EXIF of a %s image ignored (orientation 1): %s: %s",
                    image.format, type(e).__name__, e)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _render_decoded(
    decoded: DecodedImage, variants: Sequence[VariantSpec]
) -> tuple[VariantResult, ...]:
    if not variants:
        return ()
    image = decoded.image
    try:
        orientation = _orientation(image)
        icc_profile = image.info.get("icc_profile")
        if orientation != 1:
            # Not ImageOps.exif_transpose: it re-serialises the EXIF block to drop the tag,
            # which raises on tags Pillow cannot write back (a text tag holding a float…);
            # variants carry no EXIF anyway (encoders).
            image = image.transpose(_TRANSPOSE[orientation])
        image = working_image(image)
        converter = SrgbConverter(icc_profile, image.mode)
    except Exception as e:  # noqa: BLE001 -- Pillow raises many types; every variant fails
        logger.warning("cannot prepare %s %s for variants: %s", decoded.format, image.mode, e)
        message = f"cannot convert a {decoded.format} image in mode {image.mode}: {e}"
        return tuple(VariantFailure(v.name, v.spec, message) for v in variants)
    size_px = (decoded.height, decoded.width) if orientation in _SWAPS_AXES else (
        decoded.width, decoded.height)
    results: list[VariantResult] = []
    for variant in variants:
        try:
            results.append(_render_one(image, size_px, decoded.reduction, converter, variant))
        except Exception as e:  # noqa: BLE001 -- that variant only; the others go on
            logger.warning("variant %s (%s) failed: %s", variant.name, variant.spec, e)
            results.append(VariantFailure(variant.name, variant.spec, f"{e}"))
    return tuple(results)


def _render_one(
    image: Image.Image,
    size_px: tuple[int, int],
    reduction: int,
    converter: SrgbConverter,
    variant: VariantSpec,
) -> RenderedVariant:
    """``image`` is the oriented working image, decoded at 1/``reduction`` of ``size_px``."""
    plan = variant.resize_mode.plan(size_px, (variant.width_px, variant.height_px))
    if plan.scales or reduction != 1:
        region = tuple(edge / reduction for edge in plan.region)
        resized = image.resize(
            plan.size_px, Image.Resampling.LANCZOS, box=region, reducing_gap=REDUCING_GAP
        )
    else:
        resized = image.crop(plan.region)
    encoder = variant.encoder
    data = encoder.encode(converter(resized), variant.quality)
    return RenderedVariant(
        name=variant.name,
        spec=variant.spec,
        format=encoder.pillow_format,
        extension=encoder.extension,
        content_type=encoder.content_type,
        width=plan.size_px[0],
        height=plan.size_px[1],
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
    )
