"""Scans resumed over mixed ``_id`` types on nx-27017 (images_service/jobs/id_order.py).

Both scans are interrupted after their first batch and resumed from the last ``_id`` they
saved, as after a crash; every document must be read exactly once. nx-27017 sorts a query
without an ``_id`` predicate by the text of ``_id`` (1, 10, 2) and compares with ``$gt``
within one type, so the ids mix ObjectIds, strings and integers on both sides of 10.
MongoDB's semantics are checked against a fake in tests/unit/images_service/test_id_order.py.
"""

from __future__ import annotations

import uuid

from bson import Int64, ObjectId
from pymongo import MongoClient

from images_service.backends import redis_client
from images_service.jobs.id_order import scan_in_id_order
from images_service.jobs.store import JobStore
from images_service.queueing.broker import build_broker
from images_service.queueing.messages import Enqueuer
from workers.listener import scan as listener_scan
from workers.listener.enqueue import ENQUEUED
from workers.listener.scan import CatchUpScan
from workers.listener.tree import Decider
from workers.pipeline import scan as pipeline_scan
from workers.pipeline.context import PipelineContext
from workers.pipeline.scan import Scanner

IDS = [ObjectId("5f" + "0" * 22), ObjectId("60" + "0" * 22), ObjectId("ff" * 12),
       "a", "b", "zz", "9", -1, 1, 2, 3, 10, 22, 2.5, Int64(7)]


def _collection(mongo_uri: str, **fields) -> tuple[MongoClient, str, str]:
    client = MongoClient(mongo_uri)
    database, name = "idorder", f"c_{uuid.uuid4().hex[:10]}"
    client[database][name].insert_many([{"_id": i, **fields} for i in IDS])
    return client, database, name


def _key(value) -> str:
    """Tells "9" from 9 (and reads back an Int64 as the number it is)."""
    kind = "number" if isinstance(value, (int, float)) else type(value).__name__
    return f"{kind}:{value}"


def test_the_shared_scan_resumed_after_any_document_reads_each_exactly_once(mongo_uri):
    client, database, name = _collection(mongo_uri)
    coll = client[database][name]
    full = [d["_id"] for d in scan_in_id_order(coll, {}, None, batch_size=4)]
    assert sorted(map(_key, full)) == sorted(map(_key, IDS))
    assert full[:9] == [-1, 1, 2, 2.5, 3, 7, 10, 22, "9"]  # by value within a type
    for done in range(1, len(full)):
        resumed = [d["_id"] for d in scan_in_id_order(coll, {}, None, full[done - 1],
                                                      batch_size=4)]
        assert list(map(_key, full[:done] + resumed)) == list(map(_key, full)), done


def test_the_listener_scan_resumed_after_its_first_batch_reads_each_once(
        make_settings, mongo_uri, monkeypatch):
    settings = make_settings()
    client, database, name = _collection(mongo_uri, images=["http://x/a.jpg"])
    monkeypatch.setattr(listener_scan, "SCAN_BATCH", 4)
    submitted: list = []

    class Submitter:  # records what the scan submits; no job exists yet (nothing settled)
        settings = None

        def submit(self, db, collection, source_id, decision, redecide=None):
            submitted.append(source_id)
            return ENQUEUED

        def settled(self, ids):
            return set()

    submitter = Submitter()
    decider = Decider(settings, None, JobStore(client, settings.jobs_database))

    # Given a catch-up scan that stopped after its first batch (its state as saved)
    scan = CatchUpScan()
    scan.add({(database, name)}, "test")
    scan.step(client, settings, submitter, decider)
    assert len(submitted) == 4
    # When a new process resumes it from that state
    resumed = CatchUpScan(scan.state())
    while resumed.active:
        resumed.step(client, settings, submitter, decider)
    # Then every document was submitted exactly once
    assert sorted(map(_key, submitted)) == sorted(map(_key, IDS))


def test_the_job_scan_resumed_after_its_first_batch_reads_each_once(make_settings, mongo_uri,
                                                                     monkeypatch):
    settings = make_settings()
    client, database, name = _collection(mongo_uri, images=["http://x/a.jpg"])
    monkeypatch.setattr(pipeline_scan, "SCAN_BATCH", 4)
    red = redis_client(settings)
    ctx = PipelineContext(settings, mongo=client, redis_client=red,
                          enqueuer=Enqueuer(build_broker(settings, client=red)))
    try:
        scanner = Scanner(ctx, finisher=None)
        job = {"_id": "j", "type": "collection", "database": database, "collection": name}
        # Given a job scan that saved its checkpoint after the first batch, then crashed
        first = next(scanner._documents(job, None, 0))
        # When the scan starts again from that checkpoint
        rest = [doc for batch in scanner._documents(job, first[-1]["_id"], len(first))
                for doc in batch]
    finally:
        ctx.close()
    # Then every document is planned exactly once
    seen = [d["_id"] for d in first + rest]
    assert len(first) == 4 and sorted(map(_key, seen)) == sorted(map(_key, IDS))
