"""PNG structure (fast validation): signature, then every chunk's length and CRC to IEND.

Rules: the 8-byte signature; IHDR first, 13 bytes long; each chunk's type is four ASCII
letters, its length at most 2^31 - 1 (the PNG limit) and inside the file, and its CRC-32
(``zlib.crc32`` over type and data, streamed) matches; at least one IDAT before IEND; the walk
ends at IEND. A cut anywhere leaves a chunk short or IEND missing, and a flipped byte in
compressed data fails its chunk's CRC, which a header-only open never reads.

Bytes after IEND are accepted, as Pillow (full validation) ignores them: the image itself is
whole. APNG frames (``fcTL``/``fdAT``) are chunks like any other, CRC-checked.
"""

from __future__ import annotations

import struct
import zlib

from images_service.validation.reader import Reader

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Chunk lengths are at most 2^31 - 1 (PNG specification, 5.3).
_MAX_CHUNK_BYTES = 2**31 - 1


def check_png(reader: Reader) -> bool:
    """Walk and CRC-check every chunk through IEND; raise ``corrupt_image`` on any fault."""
    if reader.take(8, "signature") != SIGNATURE:
        raise reader.corrupt("bad signature")
    seen_idat = False
    first = True
    while True:
        at = reader.offset
        length, kind = struct.unpack(">I4s", reader.take(8, "chunk header"))
        name = kind.decode("latin-1")
        if not kind.isalpha() or not kind.isascii():
            raise reader.corrupt(f"invalid chunk type {kind!r} at offset {at}")
        if length > _MAX_CHUNK_BYTES:
            raise reader.corrupt(f"chunk {name} at offset {at} claims {length} bytes")
        if first and (kind != b"IHDR" or length != 13):
            raise reader.corrupt("the first chunk is not a 13-byte IHDR")
        first = False
        crc = reader.crc32(length, zlib.crc32(kind), f"chunk {name}")
        stored = int.from_bytes(reader.take(4, f"CRC of chunk {name}"), "big")
        if crc != stored:
            raise reader.corrupt(f"CRC mismatch in chunk {name} at offset {at}")
        if kind == b"IDAT":
            seen_idat = True
        elif kind == b"IEND":
            break
    if not seen_idat:
        raise reader.corrupt("no IDAT chunk before IEND")
    return True
