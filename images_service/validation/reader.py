"""Forward reads over an image file for the structural checks, in bounded memory.

Every read is bounded by the file's size, so a length field that points past the end is
reported as truncation (``corrupt_image``) before anything is read, and no check ever holds
more than one block (:data:`BLOCK_BYTES`) or one small header of the file in memory.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from images_service.errors import DownloadError

#: Largest read at once: bounds the memory of a check whatever the file's size.
BLOCK_BYTES = 64 * 1024


def corrupt(image_format: str, detail: str) -> DownloadError:
    """The error of a structural check that failed (raise it)."""
    return DownloadError("corrupt_image", f"damaged or truncated {image_format} file: {detail}")


class Reader:
    """Reads and skips through ``handle`` (``size_bytes`` long) with the offset tracked."""

    def __init__(self, handle: BinaryIO, size_bytes: int, image_format: str) -> None:
        self._handle = handle
        self.size_bytes = size_bytes
        self.image_format = image_format
        self.offset = 0
        handle.seek(0)

    def corrupt(self, detail: str) -> DownloadError:
        return corrupt(self.image_format, detail)

    def _need(self, count: int, what: str) -> None:
        if count < 0 or self.offset + count > self.size_bytes:
            raise self.corrupt(
                f"{what} at offset {self.offset} needs {count} bytes, the file ends at "
                f"{self.size_bytes}"
            )

    def take(self, count: int, what: str = "data") -> bytes:
        """Exactly ``count`` bytes (``what`` names them in the error when the file is short)."""
        self._need(count, what)
        data = self._handle.read(count)
        self.offset += count
        return data

    def skip(self, count: int, what: str = "data") -> None:
        """Move ``count`` bytes forward without reading them; they must be in the file."""
        self._need(count, what)
        self.offset += count
        self._handle.seek(self.offset)

    def seek(self, offset: int) -> None:
        """Move to ``offset`` (at most the end of the file)."""
        if offset > self.size_bytes:
            raise self.corrupt(f"data runs past the end of the file ({offset} > {self.size_bytes})")
        self.offset = offset
        self._handle.seek(offset)

    def block(self) -> bytes:
        """Up to :data:`BLOCK_BYTES` from the offset, consumed (empty at the end of the file)."""
        data = self._handle.read(min(BLOCK_BYTES, self.size_bytes - self.offset))
        self.offset += len(data)
        return data

    def crc32(self, count: int, crc: int, what: str = "data") -> int:
        """``crc`` continued over the next ``count`` bytes (``zlib.crc32``), consumed."""
        self._need(count, what)
        left = count
        while left:
            data = self._handle.read(min(BLOCK_BYTES, left))
            if not data:  # shorter than its size when opened: changed under us
                raise self.corrupt(f"the file ends before offset {self.offset + count}")
            crc = zlib.crc32(data, crc)
            left -= len(data)
        self.offset += count
        return crc

    @property
    def at_end(self) -> bool:
        return self.offset >= self.size_bytes
