"""Colour handling of derived images: any decoded mode in, 8-bit RGB or RGBA out (§12).

Two steps, so the expensive one runs on the small image:

1. :func:`working_image`, once per original, before resizing: a mode Pillow resamples
   correctly (``L``, ``LA``, ``RGB``, ``RGBA`` or ``CMYK``). Palette images become RGB, or
   RGBA when they carry transparency (also ``L``/``RGB`` with a ``tRNS`` colour); 1-bit
   becomes ``L``; 16-bit and 32-bit integer and float greys (``I;16`` PNG/TIFF, ``I``,
   ``F``) are scaled to 8 bits (:func:`_to_8bit`), not clipped as ``convert("L")`` would.
   CMYK stays CMYK so its ICC profile, if any, still applies after resizing.
2. :class:`SrgbConverter`, once per original, applied to each resized variant: the
   embedded ICC profile converted to sRGB with littlecms (``ImageCms``), or a plain
   ``convert`` when there is no profile. A profile that is already sRGB is skipped (building
   a transform costs ~2 ms, applying it ~1 ms per 320×240: as much as the resize itself).
   A profile littlecms cannot read or use (damaged tags: no transform can be built from it)
   or that does not match the pixels (an RGB profile on a grey image) is dropped with a log
   line, as browsers do. Without littlecms in the Pillow build every profile is dropped,
   logged once.

Alpha is kept (RGBA); the encoder flattens it for formats without alpha.
"""

from __future__ import annotations

import io
import logging
from functools import lru_cache
from typing import Any

from PIL import Image

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without littlecms
    ImageCms = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: Modes the renderer resizes in; anything else is converted by working_image first.
WORKING_MODES = ("L", "LA", "RGB", "RGBA", "CMYK")
#: ICC colour space (as littlecms names it, 4 chars) each working mode's pixels are in.
_ICC_SPACE = {"L": "GRAY", "LA": "GRAY", "RGB": "RGB ", "RGBA": "RGB ", "CMYK": "CMYK"}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_warned_no_cms = False


def working_image(image: Image.Image) -> Image.Image:
    """``image`` in one of :data:`WORKING_MODES` (may return ``image`` itself)."""
    mode = image.mode
    if mode in ("P", "PA", "L", "RGB") and _has_transparency(image):
        if mode == "P":
            _drop_extra_alphas(image)
        return image.convert("LA" if mode == "L" else "RGBA")
    if mode in WORKING_MODES:
        return image
    if mode in ("P", "1"):
        return image.convert("RGB" if mode == "P" else "L")
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return _to_8bit(image)
    # RGBX, YCbCr, LAB (TIFF)…: Pillow converts these; a mode it cannot raises ValueError,
    # which the renderer records as processing_failed for each variant.
    return image.convert("RGB")


def _has_transparency(image: Image.Image) -> bool:
    return image.mode == "PA" or "transparency" in image.info


def _drop_extra_alphas(image: Image.Image) -> None:
    """Cut a palette's transparency (PNG ``tRNS``) to the palette's length, in place.

    A ``tRNS`` with more entries than ``PLTE`` is invalid; libpng (browsers) ignores the extra
    ones, Pillow's ``convert`` raises "palette index out of range". ``image`` is the decode
    that variants are made from, so changing its ``info`` affects nothing else.
    """
    alphas = image.info.get("transparency")
    entries = len(image.getpalette() or ()) // 3
    if isinstance(alphas, bytes) and len(alphas) > entries:
        image.info["transparency"] = alphas[:entries]


def _to_8bit(image: Image.Image) -> Image.Image:
    """A grey image of more than 8 bits as ``L``, its range mapped to 0-255.

    16-bit data (``I;16*``, or ``I`` within 0-65535) is divided by 256, 8-bit data in an
    ``I`` or ``F`` image is kept, ``F`` within 0-1 is multiplied by 255; any other range is
    stretched from its minimum to its maximum.
    """
    if image.mode in _SIXTEEN_BIT:
        return image.convert("I").point(lambda v: v / 256).convert("L")
    low, high = image.getextrema()
    if image.mode == "F" and low >= 0 and high <= 1:
        scale, offset = 255.0, 0.0
    elif low >= 0 and high <= 255:
        scale, offset = 1.0, 0.0
    elif image.mode == "I" and low >= 0 and high <= 65535:
        scale, offset = 1 / 256, 0.0
    else:
        scale = 255.0 / (high - low) if high > low else 0.0
        offset = -low * scale
    return image.point(lambda v: v * scale + offset).convert("L")


class SrgbConverter:
    """Converts resized variants of one original to RGB/RGBA in sRGB.

    Built once per original from its ICC profile (``None``: no profile); the littlecms
    transform is built lazily on first use and kept for the other variants.
    """

    def __init__(self, icc_profile: bytes | None, working_mode: str) -> None:
        self.working_mode = working_mode
        self.output_mode = "RGBA" if working_mode in ("LA", "RGBA") else "RGB"
        self._profile = _usable_profile(icc_profile, working_mode)
        self._transform: Any = None

    @property
    def colour_managed(self) -> bool:
        """True when the pixels go through an ICC transform."""
        return self._profile is not None

    def __call__(self, image: Image.Image) -> Image.Image:
        if self._profile is None:
            return image if image.mode == self.output_mode else image.convert(self.output_mode)
        if self.working_mode == "LA":
            # littlecms has no grey+alpha → RGBA transform: convert the grey, re-attach alpha.
            rgb = self._apply(image.convert("L"))
            rgb.putalpha(image.getchannel("A"))
            return rgb
        return self._apply(image)

    def _apply(self, image: Image.Image) -> Image.Image:
        try:
            if self._transform is None:
                in_mode = "L" if self.working_mode == "LA" else self.working_mode
                out_mode = "RGB" if self.working_mode == "LA" else self.output_mode
                self._transform = ImageCms.buildTransform(
                    self._profile, _srgb_profile(), in_mode, out_mode,
                    renderingIntent=ImageCms.Intent.PERCEPTUAL,
                )
            return ImageCms.applyTransform(image, self._transform)
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as e:
            # A profile littlecms parsed but cannot use (damaged tags): dropped, as browsers
            # do, for this and the next variants of the original.
            logger.info("unusable ICC profile dropped: %s", e)
            self._profile = None
            return image.convert("RGB" if self.working_mode == "LA" else self.output_mode)


def _usable_profile(icc_profile: bytes | None, working_mode: str) -> Any:
    """The parsed profile when it must be applied; None to skip it (see module docstring)."""
    global _warned_no_cms
    if not icc_profile:
        return None
    if ImageCms is None:
        if not _warned_no_cms:
            logger.warning("Pillow has no littlecms: ICC profiles of originals are dropped")
            _warned_no_cms = True
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    except (OSError, ValueError, TypeError) as e:
        logger.info("unreadable ICC profile dropped: %s", e)
        return None
    space = profile.profile.xcolor_space
    if space != _ICC_SPACE[working_mode]:
        logger.info("ICC profile for %r dropped: the image's pixels are %s", space, working_mode)
        return None
    if space == "RGB " and (profile.profile.profile_description or "").startswith("sRGB"):
        return None  # already sRGB: the transform would be the identity
    return profile


@lru_cache(maxsize=1)
def _srgb_profile() -> Any:
    return ImageCms.createProfile("sRGB")
