"""GIF, WebP, BMP, TIFF and AVIF mutations: lies in blocks, chunks, headers, IFDs, boxes."""

from __future__ import annotations

import random
import struct

from tests.support.fuzz_mutations.generic import (
    LIES_16,
    LIES_32,
    exif_garbage,
    fallback,
    garbage,
    lie,
    payload_size,
)

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
        out[at:at + 2] = struct.pack("<H", lie(rng, struct.unpack("<H", out[at:at + 2])[0],
                                                LIES_16, 16))
    elif choice == 1 and images:  # frame left, top, width, height
        _, start, _ = rng.choice(images)
        at = start + 1 + 2 * rng.randrange(4)
        out[at:at + 2] = struct.pack("<H", lie(rng, struct.unpack("<H", out[at:at + 2])[0],
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
        out[4:8] = struct.pack("<I", lie(rng, len(data) - 8, LIES_32, 32))
    elif choice == 1:
        at, size = rng.choice(chunks)
        out[at + 4:at + 8] = struct.pack("<I", lie(rng, size, LIES_32, 32))
    elif choice == 2 and b"VP8X" in kinds:  # flags, canvas width - 1, height - 1 (24 bits)
        at = kinds[b"VP8X"][0] + 8
        if rng.random() < 0.4:
            out[at] ^= rng.choice((0x02, 0x04, 0x08, 0x10, 0x20, 0x3E))
        else:
            field = at + 4 + 3 * rng.randrange(2)
            true = int.from_bytes(out[field:field + 3], "little")
            out[field:field + 3] = (lie(rng, true, (0, 1, 0xFFFF, 0xFFFFFF), 24)
                                    ).to_bytes(3, "little")
    elif choice == 3 and b"ANMF" in kinds:  # a frame's X, Y, width - 1, height - 1
        frames = [(at, size) for at, size in chunks if data[at:at + 4] == b"ANMF"]
        at = rng.choice(frames)[0] + 8 + 3 * rng.randrange(5)
        true = int.from_bytes(out[at:at + 3], "little")
        out[at:at + 3] = lie(rng, true, (0, 1, 0xFFFF, 0xFFFFFF), 24).to_bytes(3, "little")
    elif choice == 4 and b"VP8 " in kinds:  # the key frame's 14-bit width or height
        at = kinds[b"VP8 "][0] + 8 + 6 + 2 * rng.randrange(2)
        value = rng.choice((0, 1, 0x3FFF, 0xFFFF))
        out[at:at + 2] = struct.pack("<H", value)
    else:  # a zero-length or garbage metadata chunk (flags set so readers look at it)
        kind = rng.choice((b"EXIF", b"ICCP", b"XMP ", b"ALPH", b"VP8L", b"ANIM", b"ANMF"))
        payload = rng.choice((b"", garbage(rng, payload_size(rng)),
                              b"Exif\0\0" + exif_garbage(rng)))
        if kind == b"EXIF" and rng.random() < 0.5:
            payload = exif_garbage(rng)
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
        value = lie(rng, true, LIES_32, 32)
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
        return fallback(rng, data)
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
        out[at + 4:at + 8] = struct.pack(order + "I", lie(rng, true, LIES_32, 32))
    elif choice == 3:
        true = struct.unpack(order + "I", out[at + 8:at + 12])[0]
        out[at + 8:at + 12] = struct.pack(order + "I", lie(rng, true, LIES_32, 32))
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
        return fallback(rng, data)
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
        out[at:at + 4] = struct.pack(">I", lie(rng, true, LIES_32, 32))
        return bytes(out)
    boxes = [i - 4 for i in range(4, len(data) - 4) if data[i:i + 4] in (
        b"ftyp", b"meta", b"hdlr", b"pitm", b"iloc", b"iinf", b"infe", b"iprp", b"ipco",
        b"ispe", b"av1C", b"pixi", b"ipma", b"mdat", b"colr", b"auxC", b"iref")]
    if not boxes:
        return fallback(rng, data)
    at = rng.choice(boxes)
    true = struct.unpack(">I", out[at:at + 4])[0]
    out[at:at + 4] = struct.pack(">I", lie(rng, true, LIES_32, 32))
    return bytes(out)


