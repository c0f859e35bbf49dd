"""Near-duplicates within one document (§18): the same photo at another size, re-encoded,
or lightly watermarked, met again further down the document's image list.

An image whose pHash is within ``DUPLICATE_DISTANCE`` bits of an *earlier* image of the same
document is its near-duplicate: ``duplicate_of`` is the index of the earliest such image.
Every earlier hashed image that is not a placeholder is a candidate, duplicates included
(the contract says "an earlier image", so a chain A ← B ← C where C is near B but not A
points C at B). Placeholders are never compared, in either role.

The cost is one XOR and popcount per pair, paid on every write of the document's
metadata.json. In Python (one process, this 2-vCPU VM) 50 images took 0.09 ms, 200 images
1.4 ms and 1000 images 35 ms: quadratic. From :data:`NUMPY_FROM` images on, each image is
compared with all earlier ones at once in numpy (``bitwise_count``): 0.6 ms for 200 and
3.5 ms for 1000 (below ~80 images numpy's per-call overhead loses). An index (BK-tree,
multi-index hashing) would only pay off for far larger sets than one document's images.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy

from images_service.content.bits import distance

#: From this many hashes on, the comparison runs in numpy (the same result, see the tests).
NUMPY_FROM = 80


def find_duplicates(hashes: Iterable[tuple[int, int]], max_distance_bits: int) -> dict[int, int]:
    """``{index: index of the earliest earlier image within max_distance_bits}``.

    ``hashes`` are ``(index, phash)`` of the images to compare (placeholders and images
    without a hash left out), in any order; they are compared in index order.
    """
    ordered = sorted(hashes)
    if len(ordered) >= NUMPY_FROM:
        return _with_numpy(ordered, max_distance_bits)
    earlier: list[tuple[int, int]] = []
    found: dict[int, int] = {}
    for index, value in ordered:
        for other_index, other_value in earlier:
            if distance(value, other_value) <= max_distance_bits:
                found[index] = other_index
                break
        earlier.append((index, value))
    return found


def _with_numpy(ordered: list[tuple[int, int]], max_distance_bits: int) -> dict[int, int]:
    """:func:`find_duplicates` of ``ordered`` (sorted by index), one numpy pass per image."""
    values = numpy.array([value for _, value in ordered], dtype=numpy.uint64)
    found: dict[int, int] = {}
    for i in range(1, len(ordered)):
        near = numpy.flatnonzero(numpy.bitwise_count(values[:i] ^ values[i])
                                 <= max_distance_bits)
        if near.size:
            found[ordered[i][0]] = ordered[int(near[0])][0]
    return found
