"""PNG mutations: lies inside chunks (IHDR, CRCs, lengths, text/ICC/EXIF, APNG frames)."""

from __future__ import annotations

import random
import struct
import zlib
from functools import cache

from tests.support.fuzz_mutations.generic import (
    LIES_16,
    LIES_32,
    bit_flips,
    exif_garbage,
    garbage,
    lie,
    payload_size,
)


def _png_chunks(data: bytes) -> list[list]:
    """[length, type, payload, crc] of each chunk (a damaged tail is left out)."""
    chunks, at = [], 8
    while at + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if at + 12 + length > len(data):
            break
        chunks.append([length, kind, data[at + 8:at + 8 + length],
                       data[at + 8 + length:at + 12 + length]])
        at += 12 + length
    return chunks


def _crc(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", zlib.crc32(kind + payload))


def _png_join(chunks: list[list], *, fix: bool = True) -> bytes:
    """The file again; ``fix`` recomputes every CRC (so only the lie is wrong)."""
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    for length, kind, payload, crc in chunks:
        out += struct.pack(">I", length) + kind + payload + (_crc(kind, payload) if fix else crc)
    return bytes(out)


def _chunk(kind: bytes, payload: bytes) -> list:
    return [len(payload), kind, payload, _crc(kind, payload)]


@cache
def _zlib_bomb(size: int) -> bytes:
    return zlib.compress(b"\0" * size, 9)


def png_header_lie(rng: random.Random, data: bytes) -> bytes:
    """IHDR width, height, bit depth, colour type or interlace set to a lie (CRC fixed)."""
    chunks = _png_chunks(data)
    payload = bytearray(chunks[0][2])
    which = rng.randrange(4)
    if which < 2:
        at = 4 * which
        true = struct.unpack(">I", payload[at:at + 4])[0]
        payload[at:at + 4] = struct.pack(">I", lie(rng, true, LIES_32, 32))
    elif which == 2:
        payload[8] = rng.choice((0, 1, 2, 3, 4, 5, 8, 16, 32, 255))
        payload[9] = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 255))
    else:
        payload[10 + rng.randrange(3)] = rng.choice((1, 2, 255))
    chunks[0][2] = bytes(payload)
    return _png_join(chunks, fix=rng.random() < 0.9)


def png_crc_and_length_lie(rng: random.Random, data: bytes) -> bytes:
    """A wrong CRC, a length that lies, or IDAT data damaged under a fixed CRC."""
    chunks = _png_chunks(data)
    index = rng.randrange(len(chunks))
    choice = rng.randrange(3)
    if choice == 0:
        chunks[index][3] = struct.pack(">I", rng.randrange(1 << 32))
        return _png_join(chunks, fix=False)
    if choice == 1:
        chunks[index][0] = lie(rng, chunks[index][0], LIES_32, 32)
        return _png_join(chunks, fix=False)
    idats = [c for c in chunks if c[1] == b"IDAT"] or chunks
    target = rng.choice(idats)
    target[2] = bit_flips(rng, target[2]) if target[2] else target[2]
    target[0] = len(target[2])
    return _png_join(chunks)


def png_zero_and_extra_chunks(rng: random.Random, data: bytes) -> bytes:
    """A zero-length chunk, or an ancillary chunk holding garbage, anywhere."""
    chunks = _png_chunks(data)
    kind = rng.choice((b"IDAT", b"iCCP", b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"PLTE", b"tRNS",
                       b"acTL", b"fcTL", b"fdAT", b"gAMA", b"pHYs", b"sRGB", b"cHRM", b"sBIT",
                       b"bKGD", b"hIST", b"IEND", b"IHDR"))
    payload = b"" if rng.random() < 0.5 else garbage(rng, payload_size(rng))
    chunks.insert(rng.randrange(1, len(chunks) + 1), _chunk(kind, payload))
    return _png_join(chunks)


def png_metadata_garbage(rng: random.Random, data: bytes) -> bytes:
    """Text, ICC and EXIF chunks with garbage, bad compression, bombs or huge payloads."""
    chunks = _png_chunks(data)
    choice = rng.randrange(7)
    if choice == 0:  # iCCP: name, method, then garbage or compressed garbage
        body = garbage(rng, payload_size(rng))
        payload = b"icc\0" + bytes((rng.choice((0, 1, 255)),)) + rng.choice(
            (body, zlib.compress(body)))
        new = _chunk(b"iCCP", payload)
    elif choice == 1:  # a zlib bomb in zTXt or iCCP
        bomb = _zlib_bomb(rng.choice((2_000_000, 20_000_000)))
        kind = rng.choice((b"zTXt", b"iCCP"))
        new = _chunk(kind, b"key\0\0" + bomb)
    elif choice == 2:  # eXIf with a lying TIFF structure
        new = _chunk(b"eXIf", exif_garbage(rng))
    elif choice == 3:  # iTXt with a bad compression flag or a cut
        new = _chunk(b"iTXt", b"XML:com.adobe.xmp\0" + bytes((rng.choice((0, 1, 2)),
                                                               rng.choice((0, 1, 9))))
                     + rng.choice((b"", b"en\0", b"en\0x\0")) + garbage(rng, payload_size(rng)))
    elif choice == 4:  # an oversized text chunk
        new = _chunk(rng.choice((b"tEXt", b"zTXt")), b"Comment\0" + (
            garbage(rng, 1_100_000) if rng.random() < 0.5 else b"\0" + zlib.compress(
                garbage(rng, 1_100_000))))
    elif choice == 5:  # a "Raw profile type exif" text (another EXIF path in Pillow)
        new = _chunk(b"tEXt", b"Raw profile type exif\0\nexif\n" + rng.choice(
            (b"      99\n" + garbage(rng, 20), b"zz\n", b"", garbage(rng, 40))))
    else:  # PLTE and tRNS that lie about the palette
        new = _chunk(rng.choice((b"PLTE", b"tRNS")), garbage(rng, rng.choice(
            (1, 2, 4, 300, 769))))
    position = rng.randrange(1, len(chunks))
    chunks.insert(position, new)
    return _png_join(chunks)


def apng_frame_lie(rng: random.Random, data: bytes) -> bytes:
    """acTL frame count, or an fcTL's size, offsets, delay, ops or sequence number, lies."""
    chunks = _png_chunks(data)
    controls = [c for c in chunks if c[1] in (b"fcTL", b"acTL", b"fdAT")]
    if not controls:
        return png_zero_and_extra_chunks(rng, data)
    target = rng.choice(controls)
    payload = bytearray(target[2])
    if target[1] == b"acTL" or target[1] == b"fdAT":
        at = 0 if target[1] == b"fdAT" else 4 * rng.randrange(2)
        payload[at:at + 4] = struct.pack(">I", rng.choice(LIES_32))
    else:  # seq, width, height, x, y (4 each), delay num, den (2 each), dispose, blend
        field = rng.randrange(8)
        if field < 5:
            true = struct.unpack(">I", payload[4 * field:4 * field + 4])[0]
            payload[4 * field:4 * field + 4] = struct.pack(">I", lie(rng, true, LIES_32, 32))
        elif field == 5:
            payload[20:24] = struct.pack(">HH", rng.choice(LIES_16), rng.choice(LIES_16))
        else:
            payload[24 + field - 6] = rng.choice((2, 3, 255))
    target[2] = bytes(payload)
    if rng.random() < 0.2:
        chunks.remove(target)
    return _png_join(chunks)


