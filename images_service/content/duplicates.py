"""Near-duplicates within one document (§18): the same photo at another size, re-encoded,
or lightly watermarked, met again further down the document's image list.

An image whose pHash is within ``DUPLICATE_DISTANCE`` bits of an *earlier* image of the same
document is its near-duplicate: ``duplicate_of`` is the index of the earliest such image.
Every earlier hashed image that is not a placeholder is a candidate, duplicates included
(the contract says "an earlier image", so a chain A ← B ← C where C is near B but not A
points C at B). Placeholders are never compared, in either role.

The cost is one XOR and popcount per pair: a document of 200 images is 20 000 pairs,
about 3 ms in Python; an index (BK-tree, multi-index hashing) would only pay off for far
larger sets than one document's images.
"""

from __future__ import annotations

from collections.abc import Iterable

from images_service.content.bits import distance


def find_duplicates(hashes: Iterable[tuple[int, int]], max_distance_bits: int) -> dict[int, int]:
    """``{index: index of the earliest earlier image within max_distance_bits}``.

    ``hashes`` are ``(index, phash)`` of the images to compare (placeholders and images
    without a hash left out), in any order; they are compared in index order.
    """
    earlier: list[tuple[int, int]] = []
    found: dict[int, int] = {}
    for index, value in sorted(hashes):
        for other_index, other_value in earlier:
            if distance(value, other_value) <= max_distance_bits:
                found[index] = other_index
                break
        earlier.append((index, value))
    return found
