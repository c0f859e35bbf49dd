"""TIFF structure (fast validation): every directory, value and strip is inside the file.

A TIFF has no end mark: a chain of image file directories (IFDs) says where everything is.
Classic and BigTIFF files, either byte order, are walked the same way:

* each IFD of the chain (every page, as a cut in the last page leaves the first whole) lies
  inside the file, at most :data:`_MAX_PAGES` of them and no IFD twice (a loop);
* every entry's value stored out of line (JPEG tables, ICC profile, colour map…) lies inside
  the file: Pillow only warns when one is cut short;
* the strip (or tile) offsets and byte counts are as many as the page needs (rows per strip
  or tile size, times the samples when planar) and each lies inside the file, non-empty.

Old-style JPEG (compression 6) locates its data through other tags; a page using it makes
:func:`check_tiff` answer ``False`` and the image is decoded instead.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from images_service.validation.reader import Reader

#: Bytes per value of each TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL, …, IFD8).
_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
               13: 4, 16: 8, 17: 8, 18: 8}
#: Integer field types that offsets, counts and sizes use, as struct codes.
_INT_CODES = {1: "B", 3: "H", 4: "I", 16: "Q", 13: "I", 18: "Q"}
_WIDTH, _LENGTH, _COMPRESSION = 256, 257, 259
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS, _PLANAR = 273, 277, 278, 279, 284
_TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_COUNTS = 322, 323, 324, 325
_OLD_STYLE_JPEG = 6
_MAX_PAGES = 1000


@dataclass(frozen=True)
class _Layout:
    """Byte order and the sizes of a classic (32-bit) or BigTIFF (64-bit) file."""

    order: str  #: "<" or ">"
    count_code: str  #: entries in an IFD: H (classic) or Q (BigTIFF)
    entry_code: str  #: an entry's count and value/offset: II or QQ
    inline_bytes: int  #: values up to this size sit in the entry itself: 4 or 8

    @property
    def entry_bytes(self) -> int:
        return 4 + struct.calcsize(self.order + self.entry_code)


def check_tiff(reader: Reader) -> bool:
    """``True`` when every page's data is in the file, ``False`` when only a decode can tell."""
    order = {b"II": "<", b"MM": ">"}.get(reader.take(2, "byte order"))
    if order is None:
        raise reader.corrupt("bad byte order mark")
    magic = struct.unpack(order + "H", reader.take(2, "magic"))[0]
    if magic == 42:
        layout = _Layout(order, "H", "II", 4)
        next_ifd = struct.unpack(order + "I", reader.take(4, "first IFD offset"))[0]
    elif magic == 43:
        layout = _Layout(order, "Q", "QQ", 8)
        reader.skip(4, "BigTIFF header")
        next_ifd = struct.unpack(order + "Q", reader.take(8, "first IFD offset"))[0]
    else:
        raise reader.corrupt(f"bad magic number {magic}")
    seen: set[int] = set()
    while next_ifd:
        if next_ifd in seen or len(seen) >= _MAX_PAGES:
            raise reader.corrupt(f"the IFD chain loops or exceeds {_MAX_PAGES} pages")
        seen.add(next_ifd)
        reader.seek(next_ifd)
        tags, next_ifd = _read_ifd(reader, layout)
        if tags.get(_COMPRESSION, (1,))[0] == _OLD_STYLE_JPEG:
            return False
        _check_page(reader, tags, len(seen) - 1)
    if not seen:
        raise reader.corrupt("no image file directory")
    return True


def _read_ifd(reader: Reader, layout: _Layout) -> tuple[dict[int, tuple[int, ...]], int]:
    """One IFD: its integer tags' values (other types only bounds-checked), next IFD offset."""
    at = reader.offset
    count = struct.unpack(layout.order + layout.count_code,
                          reader.take(struct.calcsize(layout.count_code), "IFD size"))[0]
    entries = reader.take(count * layout.entry_bytes, f"IFD at offset {at}")
    next_ifd = struct.unpack(layout.order + layout.count_code.replace("H", "I"),
                             reader.take(layout.inline_bytes, "next IFD offset"))[0]
    tags: dict[int, tuple[int, ...]] = {}
    for index in range(count):
        raw = entries[index * layout.entry_bytes:(index + 1) * layout.entry_bytes]
        tag, kind = struct.unpack(layout.order + "HH", raw[:4])
        values, value_at = struct.unpack(layout.order + layout.entry_code, raw[4:])
        size = _TYPE_BYTES.get(kind, 1) * values
        if size <= layout.inline_bytes:
            data = raw[4 + struct.calcsize(layout.order + layout.entry_code[0]):][:size]
        elif value_at + size > reader.size_bytes:
            raise reader.corrupt(f"tag {tag}: {size} bytes at offset {value_at} are not inside "
                                 f"the file of {reader.size_bytes} bytes")
        elif kind in _INT_CODES:
            reader.seek(value_at)
            data = reader.take(size, f"tag {tag}")
        if kind in _INT_CODES and values:  # a tag of no values counts as missing
            tags[tag] = struct.unpack(f"{layout.order}{values}{_INT_CODES[kind]}", data)
    return tags, next_ifd


def _check_page(reader: Reader, tags: dict[int, tuple[int, ...]], page: int) -> None:
    width, height = tags.get(_WIDTH, (0,))[0], tags.get(_LENGTH, (0,))[0]
    if not width or not height:
        raise reader.corrupt(f"page {page} has no size")
    if _TILE_OFFSETS in tags:
        offsets, counts = tags[_TILE_OFFSETS], tags.get(_TILE_COUNTS, ())
        tile_width, tile_length = tags.get(_TILE_WIDTH, (0,))[0], tags.get(_TILE_LENGTH, (0,))[0]
        if not tile_width or not tile_length:
            raise reader.corrupt(f"page {page}: tile offsets without a tile size")
        needed = math.ceil(width / tile_width) * math.ceil(height / tile_length)
    else:
        offsets, counts = tags.get(_STRIP_OFFSETS, ()), tags.get(_STRIP_COUNTS, ())
        rows_per_strip = min(tags.get(_ROWS_PER_STRIP, (height,))[0] or height, height)
        needed = math.ceil(height / rows_per_strip)
    if tags.get(_PLANAR, (1,))[0] == 2:
        needed *= tags.get(_SAMPLES, (1,))[0]
    if not offsets or len(offsets) != len(counts) or len(offsets) < needed:
        raise reader.corrupt(f"page {page}: {len(offsets)} data offsets and {len(counts)} "
                             f"byte counts, {needed} needed")
    for offset, count in zip(offsets, counts, strict=True):
        if not count or offset + count > reader.size_bytes:
            raise reader.corrupt(f"page {page}: {count} bytes of image data at offset {offset} "
                                 f"are not inside the file of {reader.size_bytes} bytes")
