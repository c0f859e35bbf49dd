"""WebP structure (fast validation): the RIFF length, then every chunk inside it.

Rules: ``RIFF``, a little-endian size, ``WEBP``; the file is exactly that size + 8 bytes
(+ 1 when the size is odd: RIFF pads a chunk of odd size with one byte), so any cut, even of
the last byte, is refused; bytes after the RIFF payload are refused too, as the container
says where the image ends (unlike JPEG, where cameras append data after EOI, no WebP writer
adds a trailer). Inside, every chunk (fourcc, size, payload, pad byte when the size is odd)
must end exactly at the RIFF end, and:

* the first chunk is ``VP8 `` (lossy), ``VP8L`` (lossless) or ``VP8X`` (extended, 10 bytes);
* a ``VP8 `` payload is a key frame with the start code ``9D 01 2A`` and a first partition
  inside the chunk; a ``VP8L`` payload starts with the signature byte ``2F``;
* an extended file with the animation flag has ``ANIM`` and at least one ``ANMF``, each frame
  holding its own ``VP8 ``/``VP8L`` (and optional ``ALPH``) chunks, walked the same way;
  without the flag it has exactly one ``VP8 `` or ``VP8L``.
"""

from __future__ import annotations

import struct

from images_service.validation.reader import Reader

_IMAGE_CHUNKS = (b"VP8 ", b"VP8L")
_ANIMATION_FLAG = 0x02
#: ANMF payload: X, Y, width - 1, height - 1, duration (3 bytes each), flags (1).
_ANMF_HEADER_BYTES = 16


def check_webp(reader: Reader) -> bool:
    """Check the RIFF length and walk every chunk; raise ``corrupt_image`` on any fault."""
    riff, riff_size, webp = struct.unpack("<4sI4s", reader.take(12, "RIFF header"))
    if riff != b"RIFF" or webp != b"WEBP":
        raise reader.corrupt("not a RIFF/WEBP container")
    end = 8 + riff_size
    if reader.size_bytes not in (end, end + (riff_size & 1)):
        raise reader.corrupt(
            f"the RIFF header says {end} bytes, the file has {reader.size_bytes}"
            + (" (truncated)" if reader.size_bytes < end else " (data after the image)")
        )
    kinds = _walk_chunks(reader, end)
    if not kinds or kinds[0] not in (*_IMAGE_CHUNKS, b"VP8X"):
        raise reader.corrupt("the first chunk is not VP8, VP8L or VP8X")
    if kinds[0] != b"VP8X":
        return True
    if kinds.count(b"ANIM") == 1 and kinds.count(b"ANMF") >= 1:
        if not _is_animated(reader):
            raise reader.corrupt("ANIM/ANMF chunks without the VP8X animation flag")
        return True
    if _is_animated(reader):
        raise reader.corrupt("an animation without ANIM and ANMF chunks")
    if sum(kinds.count(kind) for kind in _IMAGE_CHUNKS) != 1:
        raise reader.corrupt("an extended file without exactly one VP8 or VP8L chunk")
    return True


def _is_animated(reader: Reader) -> bool:
    """The VP8X animation flag (the first chunk's payload starts at offset 20)."""
    reader.seek(20)
    return bool(reader.take(1, "VP8X flags")[0] & _ANIMATION_FLAG)


def _walk_chunks(reader: Reader, end: int) -> list[bytes]:
    """Walk the chunks from the offset to ``end``; return their fourccs in order."""
    kinds: list[bytes] = []
    while reader.offset < end:
        at = reader.offset
        if end - at < 8:
            raise reader.corrupt(f"{end - at} stray bytes at offset {at}")
        kind, size = struct.unpack("<4sI", reader.take(8, "chunk header"))
        name = kind.decode("latin-1")
        if at + 8 + size > end:
            raise reader.corrupt(f"chunk {name!r} at offset {at} runs past the RIFF end {end}")
        if kind == b"VP8 ":
            _check_vp8(reader, size)
        elif kind == b"VP8L":
            if size < 5 or reader.take(1, "VP8L signature")[0] != 0x2F:
                raise reader.corrupt(f"bad VP8L header at offset {at}")
        elif kind == b"VP8X" and size != 10:
            raise reader.corrupt(f"VP8X chunk of {size} bytes (10 expected)")
        elif kind == b"ANMF":
            _check_frame(reader, at + 8 + size)
        # The pad byte of an odd size may be missing only at the very end (see above).
        reader.seek(min(at + 8 + size + (size & 1), end))
        kinds.append(kind)
    return kinds


def _check_vp8(reader: Reader, size: int) -> None:
    at = reader.offset - 8
    if size < 10:
        raise reader.corrupt(f"VP8 chunk of {size} bytes at offset {at}")
    header = reader.take(10, "VP8 frame header")
    tag = int.from_bytes(header[:3], "little")
    first_partition_bytes = tag >> 5
    if tag & 1 or header[3:6] != b"\x9d\x01\x2a":
        raise reader.corrupt(f"VP8 chunk at offset {at} is not a key frame")
    if first_partition_bytes > size - 10:
        raise reader.corrupt(f"VP8 first partition runs past its chunk at offset {at}")


def _check_frame(reader: Reader, frame_end: int) -> None:
    """An ANMF payload: its header, then its own chunks, with one VP8 or VP8L."""
    at = reader.offset - 8
    if frame_end - reader.offset < _ANMF_HEADER_BYTES:
        raise reader.corrupt(f"ANMF chunk at offset {at} is too short")
    reader.skip(_ANMF_HEADER_BYTES, "ANMF header")
    kinds = _walk_chunks(reader, frame_end)
    if sum(kinds.count(kind) for kind in _IMAGE_CHUNKS) != 1:
        raise reader.corrupt(f"ANMF frame at offset {at} without exactly one VP8 or VP8L")
