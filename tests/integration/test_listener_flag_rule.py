"""One flag rule for events and catch-up scans, evaluated by nx-27017 (workers/listener/decide.py).

Events decide with :func:`is_flagged` in Python; scans ask the server with
:func:`scan_filter`. Both must accept exactly the same documents, whichever way the flag was
written (nx-27017 stores a boolean set by a top-level ``$set`` as ``1``).
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from bson import Int64
from pymongo import MongoClient

from workers.listener.decide import is_flagged, scan_filter, scan_projection

MISSING = object()
#: name -> flag value inserted with the document
INSERTED = {"true": True, "one": 1, "one_float": 1.0, "one_long": Int64(1), "string": "true",
            "false": False, "zero": 0, "two": 2, "null": None, "missing": MISSING,
            "array_true": [True], "array_one": [0, 1], "array_false": [False]}
#: name -> flag value written later by a top-level $set
SET_LATER = {"set_true": True, "set_false": False, "set_one": 1}


def _flag_table(mongo_uri: str):
    coll = MongoClient(mongo_uri)["flagrule"][f"c_{uuid.uuid4().hex[:10]}"]
    coll.insert_many([{"_id": name} if value is MISSING else {"_id": name, "download_images": value}
                      for name, value in INSERTED.items()])
    for name, value in SET_LATER.items():
        coll.insert_one({"_id": name})
        coll.update_one({"_id": name}, {"$set": {"download_images": value}})
    return coll


@pytest.mark.parametrize("watch_inserts", [True, False])
def test_the_scan_filter_and_the_event_rule_agree_on_every_flag_value(make_settings, mongo_uri,
                                                                     watch_inserts):
    settings = replace(make_settings(), watch_inserts=watch_inserts)
    coll = _flag_table(mongo_uri)
    by_python = {d["_id"] for d in coll.find() if is_flagged(d, settings)}
    by_server = {d["_id"] for d in coll.find(scan_filter(settings), scan_projection(settings))}
    assert by_python == {"true", "one", "one_float", "one_long", "array_true", "array_one",
                         "set_true", "set_one"}
    assert by_server == by_python
