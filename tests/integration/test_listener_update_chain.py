"""Exactly one job per change for updates and re-inserts (contract §15 with §4, §10): the
listener's submitter on real servers (nx-27017, Redis), driven directly."""

from __future__ import annotations

import pytest
import redis
from pymongo import MongoClient

from images_service.download.urls import url_list_sha256
from tests.support.listener import make_submitter
from workers.listener.decide import INSERT, UPDATE, decide
from workers.listener.enqueue import DEDUPLICATED, ENQUEUED, MAX_REWRITES
from workers.listener.lease import Lease

A = ["http://x/a.jpg", "http://x/b.jpg"]
B = ["http://x/b.jpg", "http://x/a.jpg"]


@pytest.fixture
def rig(make_settings, redis_url):
    settings = make_settings()
    lease = Lease(redis.Redis.from_url(redis_url), f"chain-{settings.jobs_database}")
    assert lease.try_acquire()
    submitter, jobs = make_submitter(settings, lease)
    coll = MongoClient(settings.mongodb_uri)["src"][f"u_{settings.jobs_database}"]
    return settings, submitter, jobs, coll


def _written_back(coll, doc_id, job_id: str, urls: list[str]) -> None:
    """What a job's write-back sets (flag false, status with the planned list's hash)."""
    coll.update_one({"_id": doc_id}, {"$set": {"download_images": False, "images_download": {
        "status": "completed", "job_id": job_id, "path": f"src/{coll.name}/{doc_id}-h",
        "urls_sha256": url_list_sha256(urls)}}})


def _update(settings, submitter, coll, doc_id) -> tuple[str, str]:
    decision = decide(coll.find_one({"_id": doc_id}), "update", "src", coll.name, settings)
    assert decision is not None and decision.trigger == UPDATE
    outcome = submitter.submit("src", coll.name, doc_id, decision)
    submitter.flush_marks()
    return outcome, decision.job_id


def test_one_job_per_change_and_a_change_back_is_a_new_change(rig):
    settings, submitter, jobs, coll = rig
    doc_id = coll.insert_one({"name": "H", "images": A}).inserted_id
    _written_back(coll, doc_id, "job-0", A)

    # A change to B: one update job; seen again (a replay, the scan): the same job
    coll.update_one({"_id": doc_id}, {"$set": {"images": B}})
    outcome, first = _update(settings, submitter, coll, doc_id)
    assert outcome == ENQUEUED
    assert _update(settings, submitter, coll, doc_id) == (DEDUPLICATED, first)
    # The write-back of another job (it had planned A) arrives while the update job waits:
    # it lands on the same job
    _written_back(coll, doc_id, "flag-job", A)
    assert _update(settings, submitter, coll, doc_id) == (DEDUPLICATED, first)
    assert submitter.settled([first]) == {first}

    # The update job completes (its write-back: B); the document changes back to A: new job
    _written_back(coll, doc_id, first, B)
    jobs.finish(first, "completed")
    assert decide(coll.find_one({"_id": doc_id}), "update", "src", coll.name, settings) is None
    coll.update_one({"_id": doc_id}, {"$set": {"images": A}})
    outcome, back = _update(settings, submitter, coll, doc_id)
    assert outcome == ENQUEUED and back != first
    _written_back(coll, doc_id, back, A)
    jobs.finish(back, "completed")

    # And to B again: the job of that target has ended, so the chain makes one more
    coll.update_one({"_id": doc_id}, {"$set": {"images": B}})
    assert submitter.settled([first]) == set()
    outcome, again = _update(settings, submitter, coll, doc_id)
    assert (outcome, again) == (ENQUEUED, first)  # decided as the chain's first job ...
    assert jobs.collection.count_documents({"document_id": str(doc_id)}) == 3
    assert _update(settings, submitter, coll, doc_id) == (DEDUPLICATED, first)  # ... once
    triggers = [j["source"]["trigger"] for j in jobs.collection.find({})]
    assert triggers == [UPDATE] * 3


def test_a_list_flipping_back_and_forth_never_walks_a_long_chain(rig):
    settings, submitter, jobs, coll = rig
    doc_id = coll.insert_one({"name": "H", "images": A}).inserted_id
    _written_back(coll, doc_id, "job-0", A)
    # More flips than a walk may take steps: each is one new job, found in a few reads
    for flip in range(2 * MAX_REWRITES + 4):
        urls = B if flip % 2 == 0 else A
        coll.update_one({"_id": doc_id}, {"$set": {"images": urls}})
        before = jobs.collection.count_documents({})
        outcome, _ = _update(settings, submitter, coll, doc_id)
        assert outcome == ENQUEUED, flip
        assert jobs.collection.count_documents({}) == before + 1
        created = jobs.collection.find_one({"status": "pending"})
        _written_back(coll, doc_id, created["_id"], urls)
        jobs.finish(created["_id"], "completed")


def test_an_insert_after_a_delete_is_a_new_insert_once(rig):
    settings, submitter, jobs, coll = rig
    doc_id = coll.insert_one({"images": A}).inserted_id
    inserted = decide(coll.find_one({"_id": doc_id}), "insert", "src", coll.name, settings)
    assert submitter.submit("src", coll.name, doc_id, inserted) == ENQUEUED
    submitter.flush_marks()
    jobs.finish(inserted.job_id, "completed")

    # The document is deleted (the event seen twice: a replay) and inserted again
    coll.delete_one({"_id": doc_id})
    for _ in range(2):
        submitter.record_delete("src", coll.name, [doc_id], '{"_data": "nx:41"}')
    coll.insert_one({"_id": doc_id, "images": A})
    again = decide(coll.find_one({"_id": doc_id}), "insert", "src", coll.name, settings)
    assert again == inserted  # the document alone cannot tell
    assert submitter.settled([inserted.job_id]) == set()
    assert submitter.submit("src", coll.name, doc_id, again) == ENQUEUED
    submitter.flush_marks()
    assert submitter.submit("src", coll.name, doc_id, again) == DEDUPLICATED
    assert jobs.collection.count_documents({"document_id": str(doc_id)}) == 2
    new = jobs.collection.find_one({"_id": {"$ne": inserted.job_id}})
    assert new["source"]["trigger"] == INSERT

    # A second delete and insert: a third job
    submitter.record_delete("src", coll.name, [doc_id], '{"_data": "nx:57"}')
    assert submitter.submit("src", coll.name, doc_id, again) == ENQUEUED
    assert jobs.collection.count_documents({"document_id": str(doc_id)}) == 3
