"""What an image shows (CONTRACT.md §18): perceptual hashes, placeholders, near-duplicates.

* :mod:`.bits` — a 64-bit hash as an int and as 16 hex digits; Hamming distance.
* :mod:`.phash` — the pHash (imagehash's) and luminance spread of an already decoded frame.
* :mod:`.placeholders` — ``tiny``, ``blank``, ``known``, tried in that order.
* :mod:`.duplicates` — near-duplicates among one document's hashes.
* :mod:`.document` — a document's merged records marked (``placeholder``, ``duplicate_of``)
  and the summary's counts.

Validation (:mod:`images_service.validation`) computes the facts from the decode it makes
anyway and carries them in ``ImageInfo``. Nothing is imported here, so that validation can
import :mod:`.phash` without the settings (which :mod:`.document` needs).
"""
