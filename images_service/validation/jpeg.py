"""JPEG structure (fast validation): SOI, marker segments, every scan, then EOI.

The file is walked as libjpeg reads it, without decoding the entropy-coded data:

* it starts with SOI (``FF D8``);
* up to the first scan (SOS) it is a chain of marker segments whose 2-byte lengths must stay
  inside the file (so an APP1 EXIF thumbnail's own ``FF D9`` is skipped, never mistaken for
  the end), with a frame header (SOF) before the first SOS;
* after that, the entropy-coded data is searched for markers: ``FF 00`` (a stuffed byte),
  RST0–7 and fill bytes belong to a scan; a marker segment between scans (DHT, SOS, DQT…
  in a progressive file) is skipped by its length, and the walk ends at EOI (``FF D9``).
  ``FF D9`` cannot occur inside entropy-coded data (every ``FF`` there is followed by ``00``
  or RSTn), so a file cut anywhere, including after its last scan or inside a segment between
  scans, has no EOI and is refused.

Bytes after EOI are accepted, as libjpeg (full validation) ignores them: cameras and phones
append data there (the second image of an MPO, Google Motion Photo videos, Samsung trailers),
and a cut there leaves the image itself whole.
"""

from __future__ import annotations

from images_service.validation.reader import Reader

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
#: Markers without a length: TEM and the restart markers RST0-7.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
#: Frame headers SOF0-15, minus DHT (C4), JPG (C8) and DAC (CC) which share the range.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def check_jpeg(reader: Reader) -> bool:
    """Walk the file from SOI to EOI; raise ``corrupt_image`` when it is not whole."""
    if reader.take(2, "SOI marker") != b"\xff\xd8":
        raise reader.corrupt("it does not start with SOI (FF D8)")
    seen_frame = False
    while True:
        code = _header_marker(reader)
        if code in _STANDALONE:
            continue
        if code in (_SOI, _EOI):
            raise reader.corrupt(f"marker FF {code:02X} before the first scan")
        _skip_segment(reader, code)
        seen_frame = seen_frame or code in _SOF
        if code == _SOS:
            if not seen_frame:
                raise reader.corrupt("a scan (SOS) before any frame header (SOF)")
            break
    while (code := _next_scan_marker(reader)) != _EOI:
        if code == _SOI:
            raise reader.corrupt(f"SOI inside the image data at offset {reader.offset - 2}")
        _skip_segment(reader, code)
    return True


def _header_marker(reader: Reader) -> int:
    """The next marker's code, where a marker must follow (fill bytes ``FF`` allowed)."""
    at = reader.offset
    if reader.take(1, "marker")[0] != 0xFF:
        raise reader.corrupt(f"expected a marker at offset {at}")
    while (code := reader.take(1, "marker")[0]) == 0xFF:
        pass
    if code == 0x00:
        raise reader.corrupt(f"invalid marker FF 00 at offset {at}")
    return code


def _skip_segment(reader: Reader, code: int) -> None:
    at = reader.offset - 2
    length = int.from_bytes(reader.take(2, f"length of segment FF {code:02X}"), "big")
    if length < 2:
        raise reader.corrupt(f"segment FF {code:02X} at offset {at} has length {length}")
    reader.skip(length - 2, f"segment FF {code:02X}")


def _next_scan_marker(reader: Reader) -> int:
    """Search entropy-coded data for the next marker that is not part of a scan.

    Returns its code with the reader just after it. Searched a block at a time with
    ``bytes.find`` (C speed); ``FF`` is rare in compressed data.
    """
    while True:
        base = reader.offset
        block = reader.block()
        if not block:
            raise reader.corrupt("no EOI marker (FF D9): the image data is truncated")
        i = block.find(b"\xff")
        while 0 <= i < len(block) - 1:
            code = block[i + 1]
            if code == 0xFF:  # a fill byte: the marker code comes later
                i += 1
            elif code == 0x00 or code in _STANDALONE:
                i = block.find(b"\xff", i + 2)
            else:
                reader.seek(base + i + 2)
                return code
        if i == len(block) - 1:
            if reader.at_end:
                raise reader.corrupt("the file ends inside a marker: no EOI (FF D9)")
            reader.seek(base + i)  # the marker's code is in the next block: read again from FF
