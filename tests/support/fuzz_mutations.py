"""Mutations of valid image files for the fuzz corpus: generic ones and one set per format.

A mutation is ``(rng, data) -> bytes``: it draws everything it changes from ``rng`` (a seeded
``random.Random``), so a seed gives the same file on every run. Generic mutations treat the
file as bytes (truncations, bit flips, lying integers, inserted, deleted or duplicated runs,
garbage after the end). Format mutations parse the file's own structure and lie inside it:
JPEG segments (garbage and oversized EXIF/ICC/XMP/MPF segments, SOF dimensions, zero-length
segments), PNG chunks (IHDR and APNG frame lies, wrong and fixed CRCs, zero-length, garbage
and bomb-sized text/ICC/EXIF chunks), GIF blocks (screen and frame offsets, LZW code size,
colour tables, huge comments), WebP RIFF chunks (RIFF and chunk length lies, canvas and
ANMF frame lies, garbage EXIF/ICCP/XMP), BMP headers and TIFF directories (every field of an
entry, orientation, ICC and EXIF pointers, loops). A format mutation that finds nothing to
change in a file falls back to a generic one, so every mutation returns changed bytes.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable
from functools import cache

Mutation = Callable[[random.Random, bytes], bytes]

#: Integers that break parsers: zero, one, signed and unsigned edges.
LIES_16 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
LIES_32 = (0, 1, 2, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


def _lie(rng: random.Random, true: int, edges: tuple[int, ...], bits: int) -> int:
    """An edge value, or the true value nudged, doubled or multiplied (within ``bits``)."""
    if rng.random() < 0.6:
        return rng.choice(edges)
    return rng.choice((true + 1, true - 1, true * 2, true * 100, true // 2, true * 1000,
                       true + 0x10000)) % (1 << bits)


#: Byte maps from random bytes to TIFF-looking bytes and to printable text.
_TIFFISH = bytes(b"MMII*\x00\x01\x08\xff"[i % 9] for i in range(256))
_TEXT = bytes(32 + i % 95 for i in range(256))


def garbage(rng: random.Random, size: int) -> bytes:
    """Random bytes, or runs of one value, or TIFF-looking bytes, or text."""
    kind = rng.randrange(4)
    if kind == 1:
        return bytes([rng.choice((0, 0xFF, 0x20, 0x41))]) * size
    data = rng.randbytes(size)
    return data if kind == 0 else data.translate(_TIFFISH if kind == 2 else _TEXT)


def _size(rng: random.Random) -> int:
    """A payload size, mostly small, sometimes large."""
    return rng.choice((0, 1, 2, 7, 8, 13, 31, 64, 200, 1000, 4096, 65000))


# --- generic ----------------------------------------------------------------------------------


def truncate(rng: random.Random, data: bytes) -> bytes:
    n = len(data)
    where = rng.randrange(3)
    if where == 0:  # inside the header
        return data[:rng.randrange(1, min(n, 80))]
    if where == 1:  # just before the end
        return data[:max(1, n - rng.randrange(1, min(n, 24)))]
    return data[:rng.randrange(1, n)]


def bit_flips(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    span = len(out) if rng.random() < 0.5 else min(len(out), 128)  # half of them in the header
    for _ in range(rng.choice((1, 1, 2, 3, 8, 32))):
        out[rng.randrange(span)] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 9)):
        out[rng.randrange(len(out))] = rng.choice((0, 1, 0x7F, 0x80, 0xFE, 0xFF))
    return bytes(out)


def integer_lie(rng: random.Random, data: bytes) -> bytes:
    """A 16- or 32-bit integer somewhere in the first 512 bytes set to a lie."""
    wide = rng.random() < 0.5
    width = 4 if wide else 2
    at = rng.randrange(max(1, min(len(data), 512) - width))
    code = rng.choice("<>") + ("I" if wide else "H")
    value = _lie(rng, struct.unpack(code, data[at:at + width].ljust(width, b"\0"))[0],
                 LIES_32 if wide else LIES_16, 32 if wide else 16)
    return data[:at] + struct.pack(code, value) + data[at + width:]


def overwrite_run(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + garbage(rng, rng.randrange(1, 65)) + data[at + rng.randrange(1, 65):]


def insert_garbage(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + garbage(rng, rng.choice((1, 3, 16, 200, 4096))) + data[at:]


def delete_run(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.choice((1, 2, 4, 16, 256)):] or data[:1]


def duplicate_run(rng: random.Random, data: bytes) -> bytes:
    start = rng.randrange(len(data))
    run = data[start:start + rng.choice((4, 16, 64, 512))]
    at = rng.randrange(len(data) + 1)
    return data[:at] + run + data[at:]


def append_garbage(rng: random.Random, data: bytes) -> bytes:
    return data + garbage(rng, rng.choice((1, 2, 100, 70000)))


GENERIC: dict[str, Mutation] = {
    "truncate": truncate, "bit_flips": bit_flips, "set_bytes": set_bytes,
    "integer_lie": integer_lie, "overwrite_run": overwrite_run,
    "insert_garbage": insert_garbage, "delete_run": delete_run,
    "duplicate_run": duplicate_run, "append_garbage": append_garbage,
}


def _fallback(rng: random.Random, data: bytes) -> bytes:
    return rng.choice(list(GENERIC.values()))(rng, data)


def _exif_garbage(rng: random.Random) -> bytes:
    """A TIFF-structured EXIF block that lies, or plain garbage."""
    kind = rng.randrange(5)
    if kind == 0:
        return garbage(rng, _size(rng))
    order = rng.choice("<>")
    head = (b"II" if order == "<" else b"MM") + struct.pack(order + "H", 42)
    if kind == 1:  # the first IFD offset points anywhere
        return head + struct.pack(order + "I", rng.choice(LIES_32)) + garbage(rng, 16)
    entries = []
    for _ in range(rng.choice((1, 3, 40))):
        tag = rng.choice((0x0112, 0x0112, 0x8769, 0x8825, 0xA005, 0x927C, 0x010F,
                          rng.randrange(0x10000)))
        kind_ = rng.choice((1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 0, 19, 0xFFFF))
        count = rng.choice((0, 1, 2, 4, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF))
        value = rng.choice((0, 1, 6, 9, 8, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)))
        entries.append(struct.pack(order + "HHII", tag, kind_, count, value))
    count = len(entries) if kind == 2 else rng.choice((0, 0xFFFF, len(entries) + 5))
    ifd = struct.pack(order + "H", count) + b"".join(entries)
    next_ifd = struct.pack(order + "I", rng.choice((0, 8, 0xFFFFFFFF, len(ifd) + 8)))
    return head + struct.pack(order + "I", 8) + ifd + next_ifd + garbage(rng, rng.choice(
        (0, 8, 100)))


# --- JPEG -------------------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Marker segments up to and including SOS (code, payload) and the rest after SOS."""
    segments: list[tuple[int, bytes]] = []
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        code = data[at + 1]
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        segments.append((code, data[at + 4:at + 2 + length]))
        at += 2 + length
        if code == 0xDA:
            break
    return segments, data[at:]


def _jpeg_join(segments: list[tuple[int, bytes]], rest: bytes) -> bytes:
    out = bytearray(b"\xff\xd8")
    for code, payload in segments:
        out += bytes((0xFF, code)) + struct.pack(">H", min(0xFFFF, len(payload) + 2)) + payload
    return bytes(out + rest)


def _after_app0(segments: list[tuple[int, bytes]]) -> int:
    return 1 if segments and segments[0][0] == 0xE0 else 0


def jpeg_exif_garbage(rng: random.Random, data: bytes) -> bytes:
    """An APP1 ``Exif\\0\\0`` with garbage after it (the issue's case with a JFIF DPI)."""
    segments, rest = _jpeg_segments(data)
    payload = (b"Exif\0\0" + _exif_garbage(rng))[:65533]
    at = _after_app0(segments) if rng.random() < 0.7 else rng.randrange(len(segments))
    if rng.random() < 0.3:  # replace the file's own EXIF, if any
        segments = [s for s in segments if not (s[0] == 0xE1 and s[1].startswith(b"Exif"))]
    segments.insert(min(at, len(segments) - 1), (0xE1, payload))
    return _jpeg_join(segments, rest)


def jpeg_oversized_segments(rng: random.Random, data: bytes) -> bytes:
    """Maximal APP1 (EXIF, XMP), APP2 (ICC), COM segments, possibly several of each."""
    segments, rest = _jpeg_segments(data)
    prefix = rng.choice((b"Exif\0\0", b"http://ns.adobe.com/xap/1.0/\0",
                         b"ICC_PROFILE\0\x01\x01", b"ICC_PROFILE\0\x02\x01", b"", b"MPF\0"))
    code = {b"": 0xFE, b"MPF\0": 0xE2}.get(prefix, 0xE2 if prefix.startswith(b"ICC") else 0xE1)
    for _ in range(rng.choice((1, 2, 5))):
        segments.insert(_after_app0(segments), (code, prefix + garbage(rng, 65533 -
                                                                       len(prefix))))
    return _jpeg_join(segments, rest)


def jpeg_metadata_garbage(rng: random.Random, data: bytes) -> bytes:
    """Garbage ICC chunks (sequence numbers that lie), XMP, MPF, Adobe, JFIF segments."""
    segments, rest = _jpeg_segments(data)
    choice = rng.randrange(6)
    if choice == 0:
        payload = b"ICC_PROFILE\0" + bytes((rng.choice((0, 1, 2, 255)),
                                            rng.choice((0, 1, 2, 255)))) + garbage(rng, _size(rng))
        code = 0xE2
    elif choice == 1:
        payload = b"http://ns.adobe.com/xap/1.0/\0" + rng.choice(
            (garbage(rng, _size(rng)), b"<x:xmpmeta tiff:Orientation=\"9\"", b"\xff\xfe<?xml"))
        code = 0xE1
    elif choice == 2:
        order = rng.choice("<>")
        mp = (b"MPF\0" + (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8)
              + struct.pack(order + "H", 3)
              + struct.pack(order + "HHII", 0xB000, 7, 4, 0x30313030)
              + struct.pack(order + "HHII", 0xB001, 4, 1, rng.choice((0, 1, 2, 0xFFFFFFFF)))
              + struct.pack(order + "HHII", rng.choice((0xB002, 0xB003)), 7,
                            rng.choice((0, 16, 32, 0xFFFF)), 50)
              + garbage(rng, rng.choice((0, 16, 40))))
        payload, code = mp, 0xE2
    elif choice == 3:
        payload, code = b"Adobe" + garbage(rng, rng.choice((0, 1, 6, 7))), 0xEE
    elif choice == 4:
        payload = b"JFIF\0" + garbage(rng, rng.choice((0, 1, 9, 14)))
        code = 0xE0
    else:  # a second EXIF segment: Pillow concatenates them
        payload, code = b"Exif\0\0" + garbage(rng, _size(rng)), 0xE1
    segments.insert(rng.randrange(len(segments)), (code, payload[:65533]))
    return _jpeg_join(segments, rest)


def jpeg_frame_lie(rng: random.Random, data: bytes) -> bytes:
    """SOF: precision, height, width or component count set to a lie."""
    segments, rest = _jpeg_segments(data)
    for i, (code, payload) in enumerate(segments):
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC) and len(payload) >= 6:
            field = bytearray(payload)
            which = rng.randrange(4)
            if which == 0:
                field[0] = rng.choice((0, 1, 12, 16, 255))
            elif which == 3:
                field[5] = rng.choice((0, 2, 4, 5, 255))
            else:
                at = 1 if which == 1 else 3
                true = struct.unpack(">H", field[at:at + 2])[0]
                field[at:at + 2] = struct.pack(">H", _lie(rng, true, LIES_16, 16))
            segments[i] = (code, bytes(field))
            return _jpeg_join(segments, rest)
    return _fallback(rng, data)


def jpeg_segment_lie(rng: random.Random, data: bytes) -> bytes:
    """A zero-length or length-lying segment, a dropped or duplicated table, no EOI."""
    segments, rest = _jpeg_segments(data)
    choice = rng.randrange(5)
    if choice == 0:  # a segment whose length field says 0, 1 or 2
        at = rng.randrange(len(segments))
        raw = bytes((0xFF, rng.choice((0xE1, 0xE2, 0xE0, 0xFE, 0xDB, 0xC4, 0xC0)))) + bytes(
            (0, rng.choice((0, 1, 2))))
        head = _jpeg_join(segments[:at], b"")
        return head + raw + _jpeg_join(segments[at:], rest)[2:]
    if choice == 1:  # a length field that lies
        index = rng.randrange(len(segments))
        code, payload = segments[index]
        head = _jpeg_join(segments[:index], b"")
        lie = _lie(rng, len(payload) + 2, LIES_16, 16)
        return head + bytes((0xFF, code)) + struct.pack(">H", lie) + payload + _jpeg_join(
            segments[index + 1:], rest)[2:]
    if choice == 2:  # a table or header dropped
        kinds = [i for i, (code, _) in enumerate(segments) if code in (0xDB, 0xC4, 0xC0, 0xC2)]
        if kinds:
            del segments[rng.choice(kinds)]
        return _jpeg_join(segments, rest)
    if choice == 3:  # a segment repeated
        index = rng.randrange(len(segments))
        segments.insert(index, segments[index])
        return _jpeg_join(segments, rest)
    return data[:-2] if data.endswith(b"\xff\xd9") else data + b"\xff\xd8"


# --- PNG --------------------------------------------------------------------------------------


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
        payload[at:at + 4] = struct.pack(">I", _lie(rng, true, LIES_32, 32))
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
        chunks[index][0] = _lie(rng, chunks[index][0], LIES_32, 32)
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
    payload = b"" if rng.random() < 0.5 else garbage(rng, _size(rng))
    chunks.insert(rng.randrange(1, len(chunks) + 1), _chunk(kind, payload))
    return _png_join(chunks)


def png_metadata_garbage(rng: random.Random, data: bytes) -> bytes:
    """Text, ICC and EXIF chunks with garbage, bad compression, bombs or huge payloads."""
    chunks = _png_chunks(data)
    choice = rng.randrange(7)
    if choice == 0:  # iCCP: name, method, then garbage or compressed garbage
        body = garbage(rng, _size(rng))
        payload = b"icc\0" + bytes((rng.choice((0, 1, 255)),)) + rng.choice(
            (body, zlib.compress(body)))
        new = _chunk(b"iCCP", payload)
    elif choice == 1:  # a zlib bomb in zTXt or iCCP
        bomb = _zlib_bomb(rng.choice((2_000_000, 20_000_000)))
        kind = rng.choice((b"zTXt", b"iCCP"))
        new = _chunk(kind, b"key\0\0" + bomb)
    elif choice == 2:  # eXIf with a lying TIFF structure
        new = _chunk(b"eXIf", _exif_garbage(rng))
    elif choice == 3:  # iTXt with a bad compression flag or a cut
        new = _chunk(b"iTXt", b"XML:com.adobe.xmp\0" + bytes((rng.choice((0, 1, 2)),
                                                               rng.choice((0, 1, 9))))
                     + rng.choice((b"", b"en\0", b"en\0x\0")) + garbage(rng, _size(rng)))
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
            payload[4 * field:4 * field + 4] = struct.pack(">I", _lie(rng, true, LIES_32, 32))
        elif field == 5:
            payload[20:24] = struct.pack(">HH", rng.choice(LIES_16), rng.choice(LIES_16))
        else:
            payload[24 + field - 6] = rng.choice((2, 3, 255))
    target[2] = bytes(payload)
    if rng.random() < 0.2:
        chunks.remove(target)
    return _png_join(chunks)


# --- GIF --------------------------------------------------------------------------------------


def _gif_blocks(data: bytes) -> list[tuple[str, int, int]]:
    """(kind, start, end) of the screen descriptor, image descriptors and extensions."""
    blocks = [("screen", 6, 13)]
    at = 13
    if data[10] & 0x80:
        at += 3 << ((data[10] & 7) + 1)
    while at < len(data):
        if data[at] == 0x3B:
            blocks.append(("trailer", at, at + 1))
            break
        start = at
        if data[at] == 0x21:
            kind, at = "extension", at + 2
        elif data[at] == 0x2C:
            flags = data[at + 9] if at + 9 < len(data) else 0
            kind, at = "image", at + 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1
        else:
            break
        while at < len(data) and data[at]:
            at += data[at] + 1
        at += 1
        blocks.append((kind, start, min(at, len(data))))
    return blocks


def gif_lie(rng: random.Random, data: bytes) -> bytes:
    """Screen size, a frame's offsets or size, LZW code size, colour table flags, trailer."""
    blocks = _gif_blocks(data)
    out = bytearray(data)
    images = [b for b in blocks if b[0] == "image"]
    choice = rng.randrange(6)
    if choice == 0:  # logical screen
        at = 6 + 2 * rng.randrange(2)
        out[at:at + 2] = struct.pack("<H", _lie(rng, struct.unpack("<H", out[at:at + 2])[0],
                                                LIES_16, 16))
    elif choice == 1 and images:  # frame left, top, width, height
        _, start, _ = rng.choice(images)
        at = start + 1 + 2 * rng.randrange(4)
        out[at:at + 2] = struct.pack("<H", _lie(rng, struct.unpack("<H", out[at:at + 2])[0],
                                                LIES_16, 16))
    elif choice == 2 and images:  # LZW minimum code size
        _, start, _ = rng.choice(images)
        flags = out[start + 9]
        table = (3 << ((flags & 7) + 1)) if flags & 0x80 else 0
        out[start + 10 + table] = rng.choice((0, 1, 9, 12, 13, 255))
    elif choice == 3:  # colour table flags or sizes (global or a frame's local)
        at = 10 if not images or rng.random() < 0.5 else rng.choice(images)[1] + 9
        out[at] ^= rng.choice((0x80, 0x07, 0x01, 0x40, 0x87))
    elif choice == 4:  # the trailer removed, or a frame cut out
        if images and rng.random() < 0.5:
            _, start, end = rng.choice(images)
            del out[start + rng.randrange(1, max(2, end - start)):end]
        else:
            del out[-1:]
    else:  # an extension with a lying block size or a huge comment
        at = blocks[-1][1] if blocks[-1][0] == "trailer" else len(out)
        extension = rng.choice((
            b"\x21\xf9" + bytes((rng.choice((0, 3, 4, 255)),)) + garbage(rng, 4) + b"\0",
            b"\x21\xff\x0bNETSCAPE2.0" + bytes((rng.choice((0, 3, 255)),)) + garbage(rng, 3)
            + b"\0",
            b"\x21\xfe" + b"".join(b"\xff" + garbage(rng, 255) for _ in range(rng.choice(
                (1, 300)))) + b"\0",
        ))
        position = rng.choice((at, blocks[min(1, len(blocks) - 1)][1]))
        out[position:position] = extension
    return bytes(out)


# --- WebP -------------------------------------------------------------------------------------


def _riff_chunks(data: bytes, start: int = 12, end: int | None = None) -> list[tuple[int, int]]:
    """(offset, size) of each chunk between ``start`` and ``end``."""
    end = len(data) if end is None else end
    chunks, at = [], start
    while at + 8 <= end:
        size = struct.unpack("<I", data[at + 4:at + 8])[0]
        chunks.append((at, size))
        at += 8 + size + (size & 1)
    return chunks


def webp_lie(rng: random.Random, data: bytes) -> bytes:
    """RIFF or chunk sizes, VP8X canvas and flags, ANMF frames, VP8 frame size lie."""
    out = bytearray(data)
    chunks = _riff_chunks(data)
    kinds = {bytes(data[at:at + 4]): (at, size) for at, size in chunks}
    choice = rng.randrange(6)
    if choice == 0:
        out[4:8] = struct.pack("<I", _lie(rng, len(data) - 8, LIES_32, 32))
    elif choice == 1:
        at, size = rng.choice(chunks)
        out[at + 4:at + 8] = struct.pack("<I", _lie(rng, size, LIES_32, 32))
    elif choice == 2 and b"VP8X" in kinds:  # flags, canvas width - 1, height - 1 (24 bits)
        at = kinds[b"VP8X"][0] + 8
        if rng.random() < 0.4:
            out[at] ^= rng.choice((0x02, 0x04, 0x08, 0x10, 0x20, 0x3E))
        else:
            field = at + 4 + 3 * rng.randrange(2)
            true = int.from_bytes(out[field:field + 3], "little")
            out[field:field + 3] = (_lie(rng, true, (0, 1, 0xFFFF, 0xFFFFFF), 24)
                                    ).to_bytes(3, "little")
    elif choice == 3 and b"ANMF" in kinds:  # a frame's X, Y, width - 1, height - 1
        frames = [(at, size) for at, size in chunks if data[at:at + 4] == b"ANMF"]
        at = rng.choice(frames)[0] + 8 + 3 * rng.randrange(5)
        true = int.from_bytes(out[at:at + 3], "little")
        out[at:at + 3] = _lie(rng, true, (0, 1, 0xFFFF, 0xFFFFFF), 24).to_bytes(3, "little")
    elif choice == 4 and b"VP8 " in kinds:  # the key frame's 14-bit width or height
        at = kinds[b"VP8 "][0] + 8 + 6 + 2 * rng.randrange(2)
        value = rng.choice((0, 1, 0x3FFF, 0xFFFF))
        out[at:at + 2] = struct.pack("<H", value)
    else:  # a zero-length or garbage metadata chunk (flags set so readers look at it)
        kind = rng.choice((b"EXIF", b"ICCP", b"XMP ", b"ALPH", b"VP8L", b"ANIM", b"ANMF"))
        payload = rng.choice((b"", garbage(rng, _size(rng)), b"Exif\0\0" + _exif_garbage(rng)))
        if kind == b"EXIF" and rng.random() < 0.5:
            payload = _exif_garbage(rng)
        chunk = kind + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)
        at = rng.choice([at for at, _ in chunks] + [len(out)])
        out[at:at] = chunk
        if b"VP8X" in kinds and kinds[b"VP8X"][0] < at:
            out[kinds[b"VP8X"][0] + 8] |= {b"EXIF": 0x08, b"ICCP": 0x20, b"XMP ": 0x04,
                                           b"ALPH": 0x10}.get(kind, 0x02)
        if rng.random() < 0.8:
            out[4:8] = struct.pack("<I", len(out) - 8)
    return bytes(out)


# --- BMP --------------------------------------------------------------------------------------


def bmp_lie(rng: random.Random, data: bytes) -> bytes:
    """Data offset, header size, width, height, bit count, compression or colours lie."""
    fields = [(10, "<I"), (14, "<I"), (18, "<i"), (22, "<i"), (28, "<H"), (30, "<I"),
              (46, "<I"), (34, "<I")]
    at, code = rng.choice(fields)
    true = struct.unpack(code, data[at:at + struct.calcsize(code)])[0]
    if code == "<H":
        value = rng.choice((0, 1, 2, 3, 4, 7, 8, 15, 16, 24, 32, 33, 64, 0xFFFF))
    elif at == 30:
        value = rng.choice((0, 1, 2, 3, 4, 5, 6, 11, 0xFFFFFFFF))
    elif code == "<i":
        value = rng.choice((0, 1, -1, -true, true * 2, 0x7FFFFFFF, -0x80000000, 70000))
    else:
        value = _lie(rng, true, LIES_32, 32)
    return data[:at] + struct.pack(code, value) + data[at + struct.calcsize(code):]


# --- TIFF -------------------------------------------------------------------------------------


def _tiff_entries(data: bytes) -> tuple[str, list[int]]:
    """Byte order and the offset of every 12-byte entry of the first IFD (classic TIFF)."""
    order = "<" if data[:2] == b"II" else ">"
    if struct.unpack(order + "H", data[2:4])[0] != 42:
        return order, []
    ifd = struct.unpack(order + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return order, []
    count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
    return order, [ifd + 2 + 12 * i for i in range(count) if ifd + 14 + 12 * i <= len(data)]


#: Tags worth lying about: size, bits, compression, photometric, strips, orientation,
#: samples, rows per strip, planar, tiles, extra samples, sample format, ICC, EXIF, XMP.
_TIFF_TAGS = (256, 257, 258, 259, 262, 273, 274, 277, 278, 279, 284, 322, 323, 324, 325,
              338, 339, 34675, 34665, 700, 320)


def tiff_lie(rng: random.Random, data: bytes) -> bytes:
    """An IFD entry's tag, type, count or value lies; or the entry count or next IFD does."""
    order, entries = _tiff_entries(data)
    if not entries:
        return _fallback(rng, data)
    out = bytearray(data)
    choice = rng.randrange(6)
    at = rng.choice(entries)
    if choice == 0:  # the entry becomes a tag readers act on, pointing at whatever it held
        out[at:at + 2] = struct.pack(order + "H", rng.choice(_TIFF_TAGS))
    elif choice == 1:
        out[at + 2:at + 4] = struct.pack(order + "H", rng.choice(
            (0, 1, 2, 3, 4, 5, 7, 11, 12, 13, 16, 17, 18, 19, 0xFFFF)))
    elif choice == 2:
        true = struct.unpack(order + "I", out[at + 4:at + 8])[0]
        out[at + 4:at + 8] = struct.pack(order + "I", _lie(rng, true, LIES_32, 32))
    elif choice == 3:
        true = struct.unpack(order + "I", out[at + 8:at + 12])[0]
        out[at + 8:at + 12] = struct.pack(order + "I", _lie(rng, true, LIES_32, 32))
    elif choice == 4:  # the entry count of the IFD
        ifd = entries[0] - 2
        out[ifd:ifd + 2] = struct.pack(order + "H", rng.choice((0, 1, len(entries) + 1,
                                                                0xFFFF)))
    else:  # the next-IFD pointer: itself (a loop), the header, past the end, garbage
        end = entries[-1] + 12
        ifd = entries[0] - 2
        out[end:end + 4] = struct.pack(order + "I", rng.choice((ifd, 0, 8, 1, len(data),
                                                                0xFFFFFFFF, len(data) - 2)))
    return bytes(out)


def tiff_orientation_icc_exif(rng: random.Random, data: bytes) -> bytes:
    """The orientation, ICC or EXIF-IFD entry (made from another entry) holds a lie."""
    order, entries = _tiff_entries(data)
    if not entries:
        return _fallback(rng, data)
    out = bytearray(data)
    at = rng.choice(entries[1:] or entries)
    tag = rng.choice((274, 34675, 34665, 34853, 700))
    kind = {274: rng.choice((3, 2, 4, 5)), 34675: 7, 34665: 4, 34853: 4, 700: 1}[tag]
    count = rng.choice((1, 0, 2, 128, 0xFFFF, len(data) // 2))
    value = rng.choice((0, 6, 9, 0xFFFF, 8, len(data) - 4, 0xFFFFFFFF, rng.randrange(len(data))))
    out[at:at + 12] = struct.pack(order + "HHII", tag, kind, count, value)
    # Entries must stay sorted for a strict reader; this one need not: readers differ there.
    return bytes(out)


# --- AVIF (ISOBMFF boxes) ---------------------------------------------------------------------


def avif_box_lie(rng: random.Random, data: bytes) -> bytes:
    """A box size, or an ``ispe`` width/height, anywhere in the file lies."""
    out = bytearray(data)
    ispe = data.find(b"ispe")
    if ispe >= 4 and rng.random() < 0.4:
        at = ispe + 8 + 4 * rng.randrange(2)
        true = struct.unpack(">I", out[at:at + 4])[0]
        out[at:at + 4] = struct.pack(">I", _lie(rng, true, LIES_32, 32))
        return bytes(out)
    boxes = [i - 4 for i in range(4, len(data) - 4) if data[i:i + 4] in (
        b"ftyp", b"meta", b"hdlr", b"pitm", b"iloc", b"iinf", b"infe", b"iprp", b"ipco",
        b"ispe", b"av1C", b"pixi", b"ipma", b"mdat", b"colr", b"auxC", b"iref")]
    if not boxes:
        return _fallback(rng, data)
    at = rng.choice(boxes)
    true = struct.unpack(">I", out[at:at + 4])[0]
    out[at:at + 4] = struct.pack(">I", _lie(rng, true, LIES_32, 32))
    return bytes(out)


#: format -> its own mutations.
BY_FORMAT: dict[str, dict[str, Mutation]] = {
    "JPEG": {"jpeg_exif_garbage": jpeg_exif_garbage,
             "jpeg_oversized_segments": jpeg_oversized_segments,
             "jpeg_metadata_garbage": jpeg_metadata_garbage, "jpeg_frame_lie": jpeg_frame_lie,
             "jpeg_segment_lie": jpeg_segment_lie},
    "PNG": {"png_header_lie": png_header_lie, "png_crc_and_length_lie": png_crc_and_length_lie,
            "png_zero_and_extra_chunks": png_zero_and_extra_chunks,
            "png_metadata_garbage": png_metadata_garbage, "apng_frame_lie": apng_frame_lie},
    "GIF": {"gif_lie": gif_lie},
    "WEBP": {"webp_lie": webp_lie},
    "BMP": {"bmp_lie": bmp_lie},
    "TIFF": {"tiff_lie": tiff_lie, "tiff_orientation_icc_exif": tiff_orientation_icc_exif},
    "AVIF": {"avif_box_lie": avif_box_lie},
}
