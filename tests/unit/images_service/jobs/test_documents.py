"""A job's document rows: natural order of ids, typed keys (images_service/jobs/documents.py)."""

from __future__ import annotations

import random

from bson import ObjectId, json_util

from images_service.jobs.documents import JobDocument, natural_key


def test_natural_order_puts_item2_before_item10() -> None:
    ids = ["item10", "item2", "item1", "Item3", "item", "item02", "item2a", "item10b",
           "a99999999999999999999", "a100000000000000000000", "7", "10", "0", "b"]
    ordered = sorted(ids, key=natural_key)
    assert ordered.index("item2") < ordered.index("item10")
    assert ordered.index("item") < ordered.index("item1") < ordered.index("item2")
    assert ordered.index("item2") < ordered.index("item2a") < ordered.index("item10")
    assert ordered.index("item10") < ordered.index("item10b")
    assert ordered[:3] == ["0", "7", "10"]
    assert ordered.index("a99999999999999999999") < ordered.index("a100000000000000000000")
    # a binary string order, as MongoDB's index compares strings
    keys = [natural_key(i) for i in ids]
    assert sorted(keys) == [natural_key(i) for i in ordered]


def test_natural_order_of_object_ids_keeps_them_apart() -> None:
    oids = [str(ObjectId()) for _ in range(50)]
    random.Random(4).shuffle(oids)
    assert len({natural_key(o) for o in oids}) == 50


def _doc(source: object) -> JobDocument:
    return JobDocument("job", str(source), json_util.dumps(source), "f", "completed", 1, 0)


def test_ids_that_differ_only_in_type_are_two_rows() -> None:
    five, text_five = _doc(5), _doc("5")
    assert five.document_key == '{"$numberInt": "5"}' and text_five.document_key == '"5"'
    assert five.row_id != text_five.row_id
    oid = ObjectId()
    assert _doc(oid).row_id != _doc(str(oid)).row_id
    assert _doc(5).row_id == five.row_id  # deterministic: a replay upserts the same row
