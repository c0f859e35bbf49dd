"""Generic mutations (the file as bytes) and the helpers the format mutations share."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

Mutation = Callable[[random.Random, bytes], bytes]

#: Integers that break parsers: zero, one, signed and unsigned edges.
LIES_16 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
LIES_32 = (0, 1, 2, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


def lie(rng: random.Random, true: int, edges: tuple[int, ...], bits: int) -> int:
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


def payload_size(rng: random.Random) -> int:
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
    value = lie(rng, struct.unpack(code, data[at:at + width].ljust(width, b"\0"))[0],
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


def fallback(rng: random.Random, data: bytes) -> bytes:
    return rng.choice(list(GENERIC.values()))(rng, data)


def exif_garbage(rng: random.Random) -> bytes:
    """A TIFF-structured EXIF block that lies, or plain garbage."""
    kind = rng.randrange(5)
    if kind == 0:
        return garbage(rng, payload_size(rng))
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


