"""Resumable scans in ``_id`` order over collections whose ``_id``s mix BSON types.

Both scans (a job's, workers/pipeline/scan.py, and the listener's catch-up scan) read a
collection sorted by ``_id``, remember the last ``_id`` handled and resume after it. A single
``{_id: {$gt: last}}`` is not enough: MongoDB's comparison operators are type-bracketed
(``{_id: {$gt: 5}}`` matches no string and no ObjectId), so a resumed scan over numbers,
strings and ObjectIds would skip every type other than the last one's.

So a scan is a sequence of *passes*, one per type bracket, in a fixed order of ours: numbers,
strings, ObjectIds, then everything else. The type of the last ``_id`` says which pass it
belongs to: the passes before it are done, its own pass resumes with ``$gt`` (exact within
one type) and the later passes run in full. Because the order of the passes is ours, the
result does not depend on how a server sorts different types against each other.

nx-27017 quirks (measured with 0.8.1; tests/integration/test_id_order.py):

- a query without an ``_id`` predicate (``{}``, ``{"f": {"$exists": true}}``) is sorted by
  the text of ``_id`` (1, 10, 2), while ``$gt`` compares numbers as numbers: every pass
  carries an ``_id`` type predicate, and such queries nx sorts by value;
- ``{"$type": "objectId"}`` (and ``"date"``) match nothing: ObjectIds are selected by the
  range ``ObjectId("00…")``–``ObjectId("ff…")``, which on MongoDB is exactly every ObjectId;
- ``$gt`` with a number also matches booleans: the number pass keeps ``$type: "number"``;
- across types it sorts neither like MongoDB nor consistently between query shapes (which the
  passes make irrelevant).

The last pass (null, objects, binary, booleans, dates, …: rare as ``_id``) restarts from its
beginning when resumed: nx-27017 compares those types unlike MongoDB, and reading a few
documents twice is harmless to both scans (planning and job creation are idempotent).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from bson import Decimal128, ObjectId
from pymongo import ASCENDING
from pymongo.collection import Collection

#: Every ObjectId, as a range: on MongoDB a comparison with an ObjectId only matches ObjectIds.
OBJECT_IDS: dict[str, Any] = {"_id": {"$gte": ObjectId("0" * 24), "$lte": ObjectId("f" * 24)}}
NUMBERS: dict[str, Any] = {"_id": {"$type": "number"}}
STRINGS: dict[str, Any] = {"_id": {"$type": "string"}}
OTHERS: dict[str, Any] = {"$nor": [NUMBERS, STRINGS, OBJECT_IDS]}
#: The ``_id`` predicate of each pass, in scan order.
PASSES: tuple[dict[str, Any], ...] = (NUMBERS, STRINGS, OBJECT_IDS, OTHERS)


def pass_of(value: Any) -> int:
    """The index in :data:`PASSES` of the pass that reads documents with ``_id`` ``value``."""
    if isinstance(value, bool):  # before int: bool is an int in Python, not in BSON
        return 3
    if isinstance(value, (int, float, Decimal128)):  # bson.Int64 is an int
        return 0
    if isinstance(value, str):
        return 1
    if isinstance(value, ObjectId):
        return 2
    return 3


def remaining_passes(last_id: Any) -> list[dict[str, Any]]:
    """The ``_id`` predicates still to run after ``last_id`` (``None``: not started)."""
    if last_id is None:
        return list(PASSES)
    index = pass_of(last_id)
    resumable = index < len(PASSES) - 1 and not (isinstance(last_id, float) and
                                                 math.isnan(last_id))  # NaN: $gt matches none
    current = {"$and": [PASSES[index], {"_id": {"$gt": last_id}}]} if resumable \
        else PASSES[index]
    return [current, *PASSES[index + 1:]]


def scan_in_id_order(collection: Collection, query: Mapping[str, Any] | None,
                     projection: Mapping[str, Any] | None, last_id: Any = None, *,
                     batch_size: int, limit: int = 0) -> Iterator[dict[str, Any]]:
    """Documents matching ``query`` after ``last_id``, pass by pass, ``_id`` ascending within
    each pass; at most ``limit`` documents (0: no limit).

    One cursor per pass, read ``batch_size`` at a time; closing the generator closes it.
    """
    left = limit
    for predicate in remaining_passes(last_id):
        if limit and left <= 0:
            return
        cursor = collection.find({"$and": [dict(query), predicate]} if query else predicate,
                                 projection, sort=[("_id", ASCENDING)], batch_size=batch_size,
                                 limit=left if limit else 0)
        try:
            for doc in cursor:
                left -= 1
                yield doc
        finally:
            cursor.close()
