"""An ended job never swallows a new flag (contract §10), exactly once still (real servers).

A flag job cancelled or failed before its write-back leaves the document's version (the last
write-back's job id) unchanged, so the re-flag computes the same job id as the ended job;
workers/listener/enqueue.py continues the version after it. The first tests drive the
submitter directly; the last ones run the real listener and worker.
"""

from __future__ import annotations

import pytest
import redis
from pymongo import MongoClient

from images_service.backends import mongo_client
from images_service.jobs.store import JobStore
from tests.support.listener import (
    image_doc,
    jobs_of,
    jobs_per_document,
    listener_settings,
    make_submitter,
    metadata_exists,
    unique_db,
    wait_jobs,
    wait_until,
)
from workers.listener.decide import decide, decide_scanned
from workers.listener.enqueue import DEDUPLICATED, ENQUEUED
from workers.listener.lease import Lease


def _end(jobs, job_id: str, status: str) -> None:
    """What the API's cancel and the pipeline's failure hooks do."""
    assert jobs.finish(job_id, status, message="ended by the test") is not None


@pytest.fixture
def submitter(make_settings, redis_url):
    settings = make_settings()
    lease = Lease(redis.Redis.from_url(redis_url), f"ended-{settings.jobs_database}")
    assert lease.try_acquire()
    submitter, jobs = make_submitter(settings, lease)
    coll = MongoClient(settings.mongodb_uri)["src"][f"e_{settings.jobs_database}"]
    return settings, submitter, jobs, coll


@pytest.mark.parametrize("ended", ["cancelled", "failed"])
def test_a_flag_after_a_cancelled_or_failed_job_makes_one_new_job(submitter, ended):
    settings, submitter, jobs, coll = submitter
    doc_id = coll.insert_one({"images": ["http://x/a.jpg"], "download_images": True}).inserted_id
    first = decide_scanned(coll.find_one({"_id": doc_id}), "src", coll.name, settings)
    assert submitter.submit("src", coll.name, doc_id, first) == ENQUEUED
    submitter.flush_marks()
    # An active job still de-duplicates
    assert submitter.submit("src", coll.name, doc_id, first) == DEDUPLICATED
    assert submitter.settled([first.job_id]) == {first.job_id}
    # Given the job ended before any write-back: the document is still flagged, same version
    _end(jobs, first.job_id, ended)
    again = decide(coll.find_one({"_id": doc_id}), "update", "src", coll.name, settings)
    assert again == first
    # Then the flag gets a new job (event path) and the scan does not skip it either
    assert submitter.settled([first.job_id]) == set()
    assert submitter.submit("src", coll.name, doc_id, again) == ENQUEUED
    submitter.flush_marks()
    # And replays while that job is active make no third one
    assert submitter.submit("src", coll.name, doc_id, again) == DEDUPLICATED
    assert jobs.collection.count_documents({"document_id": str(doc_id)}) == 2
    new = jobs.collection.find_one({"document_id": str(doc_id), "_id": {"$ne": first.job_id}})
    assert new["status"] == "pending" and new["source"]["trigger"] == "flag"
    # A second ended job in the chain is followed the same way
    _end(jobs, new["_id"], ended)
    assert submitter.submit("src", coll.name, doc_id, again) == ENQUEUED
    assert jobs.collection.count_documents({"document_id": str(doc_id)}) == 3


def test_a_cancelled_insert_job_is_final_but_a_later_flag_makes_a_job(submitter):
    settings, submitter, jobs, coll = submitter
    doc_id = coll.insert_one({"images": ["http://x/a.jpg"]}).inserted_id
    inserted = decide(coll.find_one({"_id": doc_id}), "insert", "src", coll.name, settings)
    assert submitter.submit("src", coll.name, doc_id, inserted) == ENQUEUED
    submitter.flush_marks()
    _end(jobs, inserted.job_id, "cancelled")
    # A rescan does not redo the insert (a document is inserted once) ...
    assert submitter.settled([inserted.job_id]) == {inserted.job_id}
    assert submitter.submit("src", coll.name, doc_id, inserted) == DEDUPLICATED
    # ... but flagging the document asks for a download
    coll.update_one({"_id": doc_id}, {"$set": {"download_images": True}})
    flagged = decide(coll.find_one({"_id": doc_id}), "update", "src", coll.name, settings)
    assert flagged.trigger == "flag"
    assert submitter.submit("src", coll.name, doc_id, flagged) == ENQUEUED
    assert jobs.collection.count_documents({"document_id": str(doc_id)}) == 2


# --- end to end: real listener and worker ------------------------------------------------------


def _client(settings) -> MongoClient:
    return MongoClient(settings.mongodb_uri, tz_aware=True)


def _job_of(settings, doc_id) -> dict:
    return wait_until(lambda: next((j for j in jobs_of(settings)
                                    if j["document_id"] == str(doc_id)), None),
                      30, f"the job of {doc_id}")


def test_re_flagged_after_a_cancelled_and_a_failed_job_both_are_downloaded(
        make_settings, start_worker, start_listener, image_server):
    database = unique_db()
    settings = listener_settings(make_settings, database)
    coll = _client(settings)[database].hotels
    coll.insert_one({"name": "seed"})
    jobs = JobStore(mongo_client(settings), settings.jobs_database)
    start_listener(settings).wait_leading().wait_scan_done()

    # Given two flagged documents whose jobs ended before any download (no worker yet):
    # one cancelled (the API's cancel), one failed (the pipeline's failure hooks)
    a = coll.insert_one(image_doc(image_server, "a", 2, download_images=True)).inserted_id
    b = coll.insert_one(image_doc(image_server, "b", 1, download_images=True)).inserted_id
    _end(jobs, _job_of(settings, a)["_id"], "cancelled")
    _end(jobs, _job_of(settings, b)["_id"], "failed")

    # When both are flagged again (set to true once more, by a re-scrape: never false in
    # between, because an unflagged document that was never downloaded is an update handled
    # as an insert (§15) and gets an insert job of its own, whether the listener's re-read
    # catches that state or not depends on timing)
    for n, doc_id in enumerate((a, b)):
        coll.update_one({"_id": doc_id}, {"$set": {"download_images": True, "scraped": n}})
    # (and a is touched once more while its new job waits: a replay of the same version)
    coll.update_one({"_id": a}, {"$set": {"rating": 5}})
    sentinel = coll.insert_one(image_doc(image_server, "sentinel")).inserted_id
    wait_jobs(settings, 5, finished=False)
    _job_of(settings, sentinel)

    # Then each got exactly one new job, and the worker downloads them
    start_worker(settings)
    done = wait_jobs(settings, 5)
    assert jobs_per_document(done) == {str(a): 2, str(b): 2, str(sentinel): 1}
    assert sorted(j["status"] for j in done) == \
        ["cancelled", "completed", "completed", "completed", "failed"]
    for doc_id in (a, b):
        assert metadata_exists(settings, database, "hotels", doc_id)
        wait_until(lambda d=doc_id: (coll.find_one({"_id": d}).get("images_download") or {})
                   .get("status") == "completed", 10, f"write-back of {doc_id}")


def test_a_restarted_listener_gives_a_flagged_document_whose_job_was_cancelled_a_new_job(
        make_settings, start_worker, start_listener, image_server):
    database = unique_db()
    settings = listener_settings(make_settings, database)
    coll = _client(settings)[database].hotels
    jobs = JobStore(mongo_client(settings), settings.jobs_database)
    # Given a flagged document and an inserted one whose jobs were cancelled
    flagged = coll.insert_one(image_doc(image_server, "f", 1, download_images=True)).inserted_id
    inserted = coll.insert_one(image_doc(image_server, "i", 1)).inserted_id
    listener = start_listener(settings).wait_leading().wait_scan_done()
    for doc_id in (flagged, inserted):
        _end(jobs, _job_of(settings, doc_id)["_id"], "cancelled")
    assert listener.stop() in (0, 143)

    # When the listener starts again (its catch-up scan runs on every start on nx-27017)
    start_listener(settings, name="again").wait_leading().wait_scan_done()

    # Then the flagged document has a new job and is downloaded; the insert is not redone
    start_worker(settings)
    done = wait_jobs(settings, 3)
    assert jobs_per_document(done) == {str(flagged): 2, str(inserted): 1}
    assert metadata_exists(settings, database, "hotels", flagged)
    assert not metadata_exists(settings, database, "hotels", inserted)
