"""64-bit perceptual hashes as integers and as the 16 hex digits metadata.json records (§18).

A hash travels as an ``int`` inside the service (a Hamming distance is then one XOR and a
popcount) and as exactly 16 lowercase hex digits in records and settings, the form
``str(imagehash.phash(...))`` prints: the 8×8 bits row by row, the first bit the most
significant.
"""

from __future__ import annotations

import re

#: Bits in a hash (8×8 DCT coefficients).
HASH_BITS = 64
_HEX_RE = re.compile(r"^[0-9a-fA-F]{16}$")


def to_hex(value: int) -> str:
    """``value`` (0 .. 2**64-1) as 16 lowercase hex digits."""
    if not 0 <= value < 1 << HASH_BITS:
        raise ValueError(f"not a 64-bit hash: {value}")
    return f"{value:016x}"


def from_hex(text: str) -> int:
    """16 hex digits (either case) as an int; raise ValueError for anything else."""
    if not isinstance(text, str) or not _HEX_RE.match(text):
        raise ValueError(f"not 16 hex digits: {text!r}")
    return int(text, 16)


def parse_hex(text: object) -> int | None:
    """:func:`from_hex`, or None for a value that is not a hash (records are untrusted)."""
    try:
        return from_hex(text)  # type: ignore[arg-type]
    except ValueError:
        return None


def distance(a: int, b: int) -> int:
    """The Hamming distance of two hashes: how many of their 64 bits differ."""
    return (a ^ b).bit_count()


def nearest(value: int, candidates: tuple[int, ...] | list[int]) -> int | None:
    """The smallest distance from ``value`` to any of ``candidates`` (None when empty)."""
    return min((distance(value, other) for other in candidates), default=None)
