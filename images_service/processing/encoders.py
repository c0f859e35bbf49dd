"""Output formats of a variant: ``jpeg``, ``webp`` and ``png`` (CONTRACT.md §12).

One class per format, registered by name in :data:`ENCODERS` (a new format is one class
with ``@ENCODERS.register``). An encoder receives an RGB or RGBA image already at its final
size and returns the file's bytes. It writes no EXIF (the orientation is already applied: a
kept tag would rotate the image twice), no ICC profile (pixels are already sRGB, the web's
default) and nothing else of the original's metadata (comments, text, transparency keys),
so the same original and spec always give the same bytes.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod

from PIL import Image

from images_service.processing.registry import Registry

#: Background that transparent pixels are flattened on for formats without alpha.
FLATTEN_BACKGROUND = (255, 255, 255)
#: Passed to every save: Pillow's savers fall back to ``image.info["icc_profile"]``, which
#: still holds the original's profile although the pixels were converted to sRGB.
NO_METADATA: dict[str, object] = {"icc_profile": None, "exif": b""}


class Encoder(ABC):
    """Writes one format. Class attributes describe the file it makes."""

    name: str  #: the FORMAT of ``PROCESSED_VARIANTS``
    pillow_format: str  #: metadata.json ``format``
    extension: str  #: file extension, from the contract's table
    content_type: str
    uses_quality: bool  #: False: QUALITY is accepted but has no effect (left out of the spec)
    keeps_alpha: bool  #: False: RGBA is flattened on FLATTEN_BACKGROUND before encoding

    def encode(self, image: Image.Image, quality: int) -> bytes:
        """The encoded file for an RGB or RGBA ``image``."""
        if image.mode == "RGBA":
            if not self.keeps_alpha:
                image = flatten(image)
            elif image.getchannel("A").getextrema() == (255, 255):
                image = image.convert("RGB")  # opaque: an alpha channel only costs bytes
        if image.info:
            # Savers read some keys of ``info``, which resizing and converting carry over
            # from the original: JPEG writes its ``comment`` (a GIF's comment may exceed a
            # JPEG segment: "Comment is too long"), PNG its ``transparency``… A variant
            # carries nothing of the original's metadata.
            image = image.copy()
            image.info.clear()
        buffer = io.BytesIO()
        self._save(image, buffer, quality)
        return buffer.getvalue()

    @abstractmethod
    def _save(self, image: Image.Image, buffer: io.BytesIO, quality: int) -> None:
        """Write ``image`` (RGB, or RGBA when ``keeps_alpha``) to ``buffer``."""


def flatten(image: Image.Image) -> Image.Image:
    """An RGBA image composited on :data:`FLATTEN_BACKGROUND`, as RGB."""
    background = Image.new("RGB", image.size, FLATTEN_BACKGROUND)
    background.paste(image, mask=image.getchannel("A"))
    return background


#: format name -> the encoder.
ENCODERS: Registry[Encoder] = Registry()


@ENCODERS.register
class JpegEncoder(Encoder):
    name, pillow_format, extension, content_type = "jpeg", "JPEG", ".jpg", "image/jpeg"
    uses_quality, keeps_alpha = True, False

    def _save(self, image: Image.Image, buffer: io.BytesIO, quality: int) -> None:
        # optimize: Huffman tables fitted to the image, a few % smaller for little CPU on
        # thumbnail sizes. Pillow's default 4:2:0 subsampling is kept (what browsers expect).
        image.save(buffer, "JPEG", quality=quality, optimize=True, **NO_METADATA)


@ENCODERS.register
class WebpEncoder(Encoder):
    name, pillow_format, extension, content_type = "webp", "WEBP", ".webp", "image/webp"
    uses_quality, keeps_alpha = True, True

    def _save(self, image: Image.Image, buffer: io.BytesIO, quality: int) -> None:
        # method 4, libwebp's default. Measured on 320x240 photo thumbnails: 6.3 ms, method 2
        # 3.1 ms but 4% bigger, method 6 12 ms for 1% smaller. Thumbnails are served often.
        image.save(buffer, "WEBP", quality=quality, method=4, **NO_METADATA)


@ENCODERS.register
class PngEncoder(Encoder):
    name, pillow_format, extension, content_type = "png", "PNG", ".png", "image/png"
    uses_quality, keeps_alpha = False, True

    def _save(self, image: Image.Image, buffer: io.BytesIO, quality: int) -> None:
        # zlib level 6 (the default); optimize=True tries every filter and costs ~5x the time.
        image.save(buffer, "PNG", compress_level=6, **NO_METADATA)
