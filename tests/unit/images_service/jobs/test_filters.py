"""Filter validation and decoding (images_service.jobs.filters): the allow-list and the quirk."""

from __future__ import annotations

from datetime import datetime

import pytest
from bson import ObjectId
from bson.regex import Regex

from images_service.errors import InvalidFilter, InvalidRequest
from images_service.jobs.filters import check_filter, decode_filter_json

OID = "0123456789abcdef01234567"


@pytest.mark.parametrize("raw", [
    {"$bogus": 1},
    {"name": {"$bogus": 1}},
    {"name": {"$regex": "("}},
    {"name": {"$regex": "a", "$options": "q"}},
    {"name": {"$options": "i"}},
    {"x": {"$in": 5}},
    {"x": {"$nin": "a"}},
    {"x": {"$all": {"a": 1}}},
    {"$and": []},
    {"$or": [1, 2]},
    {"$nor": {"a": 1}},
    {"$where": "1"},
    {"$expr": {"$gt": ["$x", 1]}},
    {"x": {"$elemMatch": {"$function": {"body": "x"}}}},
    {"x": {"$size": -1}},
    {"x": {"$mod": [2]}},
    {"x": {"$not": 3}},
    {"x": {"$eq": {"$where": "1"}}},
    {"x": {"$gt": {"$bogus": 1}}},
    {"$text": {"$search": "a"}},
    {"x": {"$oid": "nothex"}},
])
def test_refused_filters_are_invalid_filter(raw):
    with pytest.raises(InvalidFilter):
        check_filter(raw)


def test_a_filter_that_is_not_an_object_is_invalid_request():
    with pytest.raises(InvalidRequest) as info:
        check_filter([{"a": 1}])
    assert info.value.code == "invalid_request"


def test_regex_stays_an_operator_with_string_pattern():
    # json_util.loads would make these Regex values (refused by nx-27017) and drop $ne.
    assert check_filter({"name": {"$regex": "^Ho", "$options": "i", "$ne": "Hostel"}}) == {
        "name": {"$regex": "^Ho", "$options": "i", "$ne": "Hostel"}}
    assert check_filter({"name": {"$regularExpression": {"pattern": "^F", "options": "i"}}}) == {
        "name": {"$regex": "^F", "$options": "i"}}
    negated = {"name": {"$not": {"$regex": "^F"}}}
    assert check_filter(negated) == negated


def test_extended_json_values_are_decoded_everywhere():
    decoded = check_filter({
        "_id": {"$oid": OID},
        "$or": [{"at": {"$gte": {"$date": "2026-01-01T00:00:00Z"}}}, {"n": {"$numberLong": "7"}}],
        "tags": {"$in": ["a", {"$oid": OID}], "$all": [{"$elemMatch": {"k": {"$gt": 1}}}]},
        "scores": {"$elemMatch": {"$gte": 80, "$lt": 85}},
        "x": {"$exists": True, "$type": ["string", "int"], "$mod": [4, 0], "$size": 2},
    })
    assert decoded["_id"] == ObjectId(OID)
    assert decoded["$or"][0]["at"]["$gte"] == datetime(2026, 1, 1)  # naive UTC, as pymongo reads it
    assert decoded["$or"][1]["n"] == 7
    assert decoded["tags"]["$in"] == ["a", ObjectId(OID)]
    assert decoded["tags"]["$all"] == [{"$elemMatch": {"k": {"$gt": 1}}}]
    assert decoded["scores"] == {"$elemMatch": {"$gte": 80, "$lt": 85}}


def test_regex_values_inside_in_are_left_to_the_server():
    decoded = check_filter({"name": {"$in": [{"$regularExpression": {"pattern": "^a",
                                                                      "options": ""}}]}})
    assert decoded["name"]["$in"] == [Regex("^a", "")]


def test_the_scan_decodes_the_stored_text_the_same_way():
    assert decode_filter_json('{"name": {"$regex": "^Ho"}}') == {"name": {"$regex": "^Ho"}}
    assert decode_filter_json(None) == {}
    with pytest.raises(InvalidFilter):
        decode_filter_json('{"$bogus": 1}')


def test_deep_nesting_is_refused():
    raw: dict = {"a": 1}
    for _ in range(30):
        raw = {"$and": [raw]}
    with pytest.raises(InvalidFilter):
        check_filter(raw)
