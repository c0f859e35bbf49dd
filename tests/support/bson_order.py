"""A fake collection with MongoDB's documented ``_id`` semantics, for what nx-27017 lacks.

MongoDB (manual, "Comparison/Sort Order" and "Query predicates ... type bracketing"): values
of different BSON types sort by type — MinKey, Null, Numbers, Symbol/String, Object, Array,
BinData, ObjectId, Boolean, Date, Timestamp, Regex, MaxKey — and a comparison operator
(``$gt``, ``$gte``, ``$lt``, ``$lte``) only matches values of the operand's type bracket.
nx-27017 sorts ``_id`` differently (images_service/jobs/id_order.py), so a test showing what a
query does on MongoDB runs it here. Only what the scans send is implemented: ``$and``,
``$or``, ``$nor`` and ``_id`` predicates with ``$gt``, ``$gte``, ``$lt``, ``$lte``,
``$type`` (``number``, ``string``), sorted by ``_id`` ascending.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from bson import Decimal128, ObjectId


def type_rank(value: Any) -> int:
    """The BSON sort rank of ``value``'s type bracket (MongoDB's order)."""
    if value is None:
        return 2
    if isinstance(value, bool):
        return 9
    if isinstance(value, (int, float, Decimal128)):
        return 3
    if isinstance(value, str):
        return 4
    if isinstance(value, Mapping):
        return 5
    if isinstance(value, list):
        return 6
    if isinstance(value, bytes):
        return 7
    if isinstance(value, ObjectId):
        return 8
    if isinstance(value, datetime.datetime):
        return 10
    raise TypeError(f"no rank for {value!r} in this fake")


def sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    return type_rank(value), value


def _compare(op: str, value: Any, operand: Any) -> bool:
    if type_rank(value) != type_rank(operand):  # type bracketing
        return False
    a, b = sort_key(value)[1], sort_key(operand)[1]
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def _id_matches(value: Any, condition: Mapping[str, Any]) -> bool:
    for op, operand in condition.items():
        if op == "$type":
            wanted = {"number": 3, "string": 4}[operand]
            if type_rank(value) != wanted:
                return False
        elif not _compare(op, value, operand):
            return False
    return True


def matches(doc: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    for key, condition in query.items():
        if key == "$and":
            ok = all(matches(doc, q) for q in condition)
        elif key == "$or":
            ok = any(matches(doc, q) for q in condition)
        elif key == "$nor":
            ok = not any(matches(doc, q) for q in condition)
        elif key == "_id":
            ok = _id_matches(doc["_id"], condition)
        else:
            raise NotImplementedError(key)
        if not ok:
            return False
    return True


class _Cursor(list):
    def close(self) -> None:
        pass


class BsonOrderCollection:
    """``find(query, projection, sort=[("_id", 1)], batch_size=, limit=)`` over a list."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self.queries: list[Mapping[str, Any]] = []

    def find(self, query: Mapping[str, Any], projection: Any = None, *, sort: Any = None,
             batch_size: int = 0, limit: int = 0) -> _Cursor:
        assert sort == [("_id", 1)]
        self.queries.append(query)
        found = sorted((d for d in self.docs if matches(d, query)),
                       key=lambda d: sort_key(d["_id"]))
        return _Cursor(found[:limit] if limit else found)
