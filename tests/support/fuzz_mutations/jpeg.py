"""JPEG mutations: lies inside marker segments (EXIF, ICC, XMP, MPF, SOF, lengths)."""

from __future__ import annotations

import random
import struct

from tests.support.fuzz_mutations.generic import (
    LIES_16,
    exif_garbage,
    fallback,
    garbage,
    lie,
    payload_size,
)


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
    payload = (b"Exif\0\0" + exif_garbage(rng))[:65533]
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
        sequence = bytes((rng.choice((0, 1, 2, 255)), rng.choice((0, 1, 2, 255))))
        payload = b"ICC_PROFILE\0" + sequence + garbage(rng, payload_size(rng))
        code = 0xE2
    elif choice == 1:
        payload = b"http://ns.adobe.com/xap/1.0/\0" + rng.choice((
            garbage(rng, payload_size(rng)), b"<x:xmpmeta tiff:Orientation=\"9\"",
            b"\xff\xfe<?xml"))
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
        payload, code = b"Exif\0\0" + garbage(rng, payload_size(rng)), 0xE1
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
                field[at:at + 2] = struct.pack(">H", lie(rng, true, LIES_16, 16))
            segments[i] = (code, bytes(field))
            return _jpeg_join(segments, rest)
    return fallback(rng, data)


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
        length = lie(rng, len(payload) + 2, LIES_16, 16)
        return head + bytes((0xFF, code)) + struct.pack(">H", length) + payload + _jpeg_join(
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


