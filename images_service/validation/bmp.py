"""BMP structure (fast validation): the pixel array, raw or RLE, is whole in the file.

A BMP has no end mark; its pixel array starts at the header's data offset.

* Uncompressed (``BI_RGB``, ``BI_BITFIELDS``, ``BI_ALPHABITFIELDS``): exactly
  ``height × row_bytes`` bytes, each row padded to 4 bytes, must be in the file, so a cut
  anywhere in the pixels (even the last byte) is refused. Bytes after it are accepted (some
  writers pad the file).
* RLE8 / RLE4: the stream of runs and escapes is walked to its end-of-bitmap escape
  (``00 01``), which the format requires; Pillow's decoder stops quietly at the end of the
  data, so a cut RLE file passes a full decode but not this walk.
* Embedded JPEG or PNG (compression 4, 5; printers only) and unknown headers: ``False``, the
  image is decoded instead.
"""

from __future__ import annotations

import struct

from images_service.validation.reader import Reader

_CORE_HEADER_BYTES = 12  #: BITMAPCOREHEADER (OS/2 1.x)
_INFO_HEADER_BYTES = 40  #: BITMAPINFOHEADER and its larger successors (V4, V5)
#: BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS: raw rows whose size follows from the header.
_UNCOMPRESSED = (0, 3, 6)
_RLE8, _RLE4 = 1, 2


def check_bmp(reader: Reader) -> bool:
    """``True`` when the pixel array is whole, ``False`` when only a decode can tell."""
    if reader.take(2, "signature") != b"BM":
        raise reader.corrupt("bad signature")
    reader.skip(8, "file header")  # file size (often wrong in the wild, not trusted), reserved
    data_offset, header_bytes = struct.unpack("<II", reader.take(8, "header"))
    if header_bytes == _CORE_HEADER_BYTES:
        width, height, _planes, bits = struct.unpack("<HHHH", reader.take(8, "core header"))
        compression = 0
    elif header_bytes >= _INFO_HEADER_BYTES:
        width, height, _planes, bits, compression = struct.unpack(
            "<iiHHI", reader.take(16, "info header"))
    else:
        return False
    if compression in (_RLE8, _RLE4):
        reader.seek(data_offset)
        _walk_rle(reader, nibbles=compression == _RLE4)
        return True
    if compression not in _UNCOMPRESSED:
        return False
    row_bytes = (abs(width) * bits + 31) // 32 * 4
    pixels_end = data_offset + row_bytes * abs(height)
    if pixels_end > reader.size_bytes:
        raise reader.corrupt(
            f"the pixel array ends at {pixels_end}, the file at {reader.size_bytes}")
    return True


def _walk_rle(reader: Reader, *, nibbles: bool) -> None:
    """Walk (count, value) pairs and escapes to end-of-bitmap, a block at a time.

    ``00 00`` ends a line, ``00 01`` the bitmap, ``00 02 dx dy`` moves; ``00 n`` (n >= 3) is
    followed by n literal pixels (bytes, or nibbles for RLE4), padded to an even length.
    """
    while True:
        base = reader.offset
        block = reader.block()
        if len(block) < 2:
            raise reader.corrupt("the RLE data ends without its end-of-bitmap (00 01)")
        i = 0
        while i + 1 < len(block):
            if block[i]:  # an encoded run: count, value
                i += 2
                continue
            escape = block[i + 1]
            if escape == 1:
                return
            if escape == 0:
                i += 2
            elif escape == 2:
                i += 4
            else:
                literal_bytes = (escape + 1) // 2 if nibbles else escape
                i += 2 + literal_bytes + (literal_bytes & 1)
        reader.seek(base + i)  # the next pair starts in a later block (or past the end)
