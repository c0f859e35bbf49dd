"""Scans that resume after the last ``_id`` over mixed ``_id`` types (images_service/jobs/id_order.py).

MongoDB's semantics come from tests/support/bson_order.py (type-bracketed ``$gt``, BSON sort
order); the same scans on nx-27017 are in tests/integration/test_id_order.py.
"""

from __future__ import annotations

import datetime
import math

from bson import Int64, ObjectId

from images_service.jobs.id_order import (
    ANY_ID,
    OBJECT_IDS,
    OTHERS,
    STRINGS,
    pass_of,
    remaining_passes,
    scan_in_id_order,
)
from tests.support.bson_order import BsonOrderCollection

OIDS = [ObjectId("5f" + "0" * 22), ObjectId("60" + "0" * 22), ObjectId("ff" * 12)]
MIXED = [*OIDS, "a", "b", "zz", 1, 2, 10, 2.5, Int64(7), True]


def _collection() -> BsonOrderCollection:
    return BsonOrderCollection([{"_id": i} for i in MIXED])


def test_each_id_type_has_its_pass():
    assert [pass_of(v) for v in (3, 2.5, Int64(1), "x", OIDS[0], True, None, {"a": 1},
                                 datetime.datetime(2020, 1, 1))] == [0, 0, 0, 1, 2, 3, 3, 3, 3]


def test_the_old_resume_query_skips_every_other_type_on_mongodb():
    # Given a scan of mixed ids interrupted after its first 3 documents (1, 2, 2.5)
    coll = _collection()
    first = [d["_id"] for d in coll.find({}, sort=[("_id", 1)])][:3]
    # When it resumed the old way, {_id: {$gt: last}}, MongoDB only compared numbers
    old = [d["_id"] for d in coll.find({"_id": {"$gt": first[-1]}}, sort=[("_id", 1)])]
    assert first == [1, 2, 2.5] and old == [7, 10]  # strings, ObjectIds, booleans skipped


def test_a_scan_resumed_after_any_document_covers_every_document_exactly_once():
    full = [d["_id"] for d in scan_in_id_order(_collection(), {}, None, batch_size=4)]
    assert full == [1, 2, 2.5, 7, 10, "a", "b", "zz", *OIDS, True]
    for done in range(1, len(full)):
        resumed = [d["_id"] for d in scan_in_id_order(_collection(), {}, None,
                                                      full[done - 1], batch_size=4)]
        assert full[:done] + resumed == full, done


def test_limits_count_across_passes_and_filters_are_kept():
    coll = _collection()
    assert [d["_id"] for d in scan_in_id_order(coll, None, None, 7, batch_size=2, limit=3)] \
        == [10, "a", "b"]
    only = {"$or": [{"_id": {"$gt": "a"}}, {"_id": {"$lt": 2}}]}
    assert [d["_id"] for d in scan_in_id_order(coll, only, None, batch_size=2)] == [1, "b", "zz"]


def test_a_scan_from_the_start_is_one_query_and_a_resume_reads_type_by_type():
    assert remaining_passes(None) == [ANY_ID]
    assert remaining_passes("m") == [{"$and": [STRINGS, {"_id": {"$gt": "m"}}]},
                                     OBJECT_IDS, OTHERS]
    assert remaining_passes(3)[1:] == [STRINGS, OBJECT_IDS, OTHERS]
    # ids of other types (placed differently by the servers) and NaN ($gt NaN matches
    # nothing) start over: some documents are read twice, none is skipped
    assert remaining_passes(True) == remaining_passes({"a": 1}) == [ANY_ID]
    assert remaining_passes(math.nan) == [ANY_ID]
    coll = _collection()
    assert len(list(scan_in_id_order(coll, {}, None, batch_size=4))) == len(MIXED)
    assert coll.queries == [ANY_ID]
