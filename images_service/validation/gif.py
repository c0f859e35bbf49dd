"""GIF structure (fast validation): header, screen, every block, then the trailer.

Rules: ``GIF87a`` or ``GIF89a``; the logical screen descriptor and its global colour table
inside the file; then a sequence of blocks, each walked to its end: extensions
(``21``, a label, data sub-blocks to the empty one) and image descriptors (``2C``, 9 bytes, an
optional local colour table, the LZW minimum code size, 1-12, and the image's data
sub-blocks); at least one image; the walk ends at the trailer ``3B``. Every frame of an
animation is walked, as a cut in the last frame leaves the trailer missing while the first
frame (the one full validation decodes) is whole: here the file is refused either way.

Bytes after the trailer are accepted, as Pillow (full validation) ignores them.
"""

from __future__ import annotations

from images_service.validation.reader import Reader

_EXTENSION, _IMAGE, _TRAILER = 0x21, 0x2C, 0x3B


def check_gif(reader: Reader) -> bool:
    """Walk every block to the trailer; raise ``corrupt_image`` when the file is not whole."""
    if reader.take(6, "header") not in (b"GIF87a", b"GIF89a"):
        raise reader.corrupt("bad signature")
    screen = reader.take(7, "logical screen descriptor")
    _skip_colour_table(reader, screen[4], "global colour table")
    images = 0
    while True:
        at = reader.offset
        introducer = reader.take(1, "block introducer (the trailer is missing)")[0]
        if introducer == _TRAILER:
            break
        if introducer == _EXTENSION:
            reader.take(1, "extension label")
        elif introducer == _IMAGE:
            descriptor = reader.take(9, "image descriptor")
            _skip_colour_table(reader, descriptor[8], "local colour table")
            code_size = reader.take(1, "LZW minimum code size")[0]
            if not 1 <= code_size <= 12:
                raise reader.corrupt(f"LZW minimum code size {code_size} at offset {at}")
            images += 1
        else:
            raise reader.corrupt(f"unknown block 0x{introducer:02X} at offset {at}")
        _skip_sub_blocks(reader)
    if not images:
        raise reader.corrupt("no image in the file")
    return True


def _skip_colour_table(reader: Reader, flags: int, what: str) -> None:
    if flags & 0x80:
        reader.skip(3 << ((flags & 0x07) + 1), what)


def _skip_sub_blocks(reader: Reader) -> None:
    """Skip data sub-blocks (a length byte, then that many bytes) through the empty one.

    Walked inside a block read at once: an LZW stream is thousands of 255-byte sub-blocks,
    and a read per sub-block would cost more than the walk.
    """
    while True:
        base = reader.offset
        block = reader.block()
        if not block:
            raise reader.corrupt("the file ends inside data sub-blocks (no terminator)")
        i = 0
        while i < len(block):
            length = block[i]
            if length == 0:
                reader.seek(base + i + 1)
                return
            i += length + 1
        reader.seek(base + i)  # the next length byte is in a later block (or past the end)
