"""Resumable scans in ``_id`` order over collections whose ``_id``s mix BSON types.

Both scans (a job's, workers/pipeline/scan.py, and the listener's catch-up scan) read a
collection sorted by ``_id``, remember the last ``_id`` handled and resume after it. A single
``{_id: {$gt: last}}`` is not enough: MongoDB's comparison operators are type-bracketed
(``{_id: {$gt: 5}}`` matches no string and no ObjectId), so a resumed scan over numbers,
strings and ObjectIds would skip every type other than the last one's.

A scan from the start is one cursor sorted by ``_id``. Numbers sort before strings and
strings before ObjectIds (BSON order on MongoDB; nx-27017 too, see below), so the type of the
last ``_id`` says what is done. A resumed scan reads the rest in *passes*, one cursor per type:
the last ``_id``'s own type with ``$gt`` (exact within one type), then each later type in
full, then every other type ("others": null, objects, binary, booleans, dates, …; rare as
``_id``) in full, since servers place those differently. Reading some of them twice is
harmless to both scans (planning and job creation are idempotent). A resume after an ``_id``
of another type starts over.

nx-27017 quirks (measured with 0.8.1; tests/integration/test_id_order.py):

- a query without an ``_id`` predicate (``{}``, ``{"f": {"$exists": true}}``) is sorted by
  the text of ``_id`` (1, 10, 2; strings and ObjectIds interleaved), while ``$gt`` compares
  numbers as numbers: the scan from the start adds :data:`ANY_ID`, an ``_id`` predicate that
  every document matches, and such queries nx sorts by value and type (numbers, strings,
  objects, booleans, dates, then ObjectIds);
- ``{"$type": "objectId"}`` (and ``"date"``) match nothing: ObjectIds are selected by the
  range ``ObjectId("00…")``–``ObjectId("ff…")``, which on MongoDB is exactly every ObjectId;
- ``$gt`` with a number also matches booleans: the number pass keeps ``$type: "number"``.
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
#: The ``_id`` predicate of each pass of a resumed scan, in scan order.
PASSES: tuple[dict[str, Any], ...] = (NUMBERS, STRINGS, OBJECT_IDS, OTHERS)
#: Every document (nx-27017 quirk: gets a query sorted by value, see the module docstring).
ANY_ID: dict[str, Any] = {"$or": list(PASSES)}


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
    """The ``_id`` predicates of the cursors that read what follows ``last_id``.

    ``None`` (not started): one cursor over every type. Otherwise the passes of the module
    docstring; ``others`` always last and in full.
    """
    if last_id is None:
        return [ANY_ID]
    index = pass_of(last_id)
    if index == len(PASSES) - 1 or (isinstance(last_id, float) and math.isnan(last_id)):
        return [ANY_ID]  # an other type, or NaN ($gt NaN matches nothing): start over
    return [{"$and": [PASSES[index], {"_id": {"$gt": last_id}}]}, *PASSES[index + 1:]]


def scan_in_id_order(collection: Collection, query: Mapping[str, Any] | None,
                     projection: Mapping[str, Any] | None, last_id: Any = None, *,
                     batch_size: int, limit: int = 0) -> Iterator[dict[str, Any]]:
    """Documents matching ``query`` after ``last_id`` (``None``: from the start), ``_id``
    ascending within each cursor of :func:`remaining_passes`; at most ``limit`` documents
    (0: no limit).

    Each cursor is read ``batch_size`` documents at a time; closing the generator closes it.
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
