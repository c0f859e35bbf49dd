"""Prove that a downloaded file is an image of a supported format (CONTRACT.md §8).

:mod:`.core` opens the header with Pillow, applies the pixel limit and either decodes the
first frame (``IMAGE_VALIDATION=full``, and always for derived images) or checks the file's
structure (``fast``, :mod:`.structure` and one module per format). This package re-exports
what the rest of the service imports.
"""

from images_service.validation.core import (
    SUPPORTED_FORMATS,
    DecodedImage,
    DecodeSize,
    ImageInfo,
    file_sha256,
    image_info,
    open_validated,
    validate_image,
)

__all__ = [
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "DecodeSize",
    "ImageInfo",
    "file_sha256",
    "image_info",
    "open_validated",
    "validate_image",
]
