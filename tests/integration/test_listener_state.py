"""The listener's building blocks on the real servers: lease, fenced state, dedup, scan.

Real Redis and nx-27017, no subprocess: each test drives one part directly.
"""

from __future__ import annotations

import time

import pytest
import redis
from pymongo import MongoClient

from images_service.errors import Unavailable
from images_service.jobs.store import JobStore
from tests.support.listener import make_submitter
from workers.listener import scan as listener_scan
from workers.listener.checkpoint import Fenced, StateStore
from workers.listener.decide import decide_scanned, job_id_for
from workers.listener.enqueue import DEDUPLICATED, ENQUEUED, REPAIRED, LeaseLost
from workers.listener.lease import Lease
from workers.listener.scan import CatchUpScan
from workers.listener.tree import Decider

SCAN_MESSAGES = "images-service:images-scan.msgs"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- lease -------------------------------------------------------------------------------------


def test_one_holder_at_a_time_with_growing_epochs(redis_url):
    client = redis.Redis.from_url(redis_url)
    first, second = Lease(client, "t1"), Lease(client, "t1")
    assert first.try_acquire() and first.epoch == 1 and first.valid()
    assert not second.try_acquire() and not second.valid()
    assert first.renew()
    first.release()
    assert not first.valid()
    assert second.try_acquire() and second.epoch == 2


def test_an_expired_lease_is_taken_over_and_the_old_holder_knows(redis_url):
    client = redis.Redis.from_url(redis_url)
    old = Lease(client, "t2", ttl_ms=300, safety_margin_s=0.1)
    new = Lease(client, "t2", ttl_ms=300, safety_margin_s=0.1)
    assert old.try_acquire()
    time.sleep(0.4)  # the holder was paused for longer than the lease
    assert not old.valid()  # it knows without asking Redis
    assert new.try_acquire() and new.epoch == old.epoch + 1
    assert not old.renew() and not old.valid() and new.valid()


def test_a_paused_holder_distrusts_its_lease_by_its_own_clock(redis_url):
    clock = Clock()
    lease = Lease(redis.Redis.from_url(redis_url), "t3", ttl_ms=10_000, safety_margin_s=2,
                  clock=clock)
    assert lease.try_acquire()
    clock.now += 7.9
    assert lease.valid()
    clock.now += 0.2  # 8.1 s after the acquisition was sent: TTL minus margin has passed
    assert not lease.valid()


def test_the_epoch_continues_above_what_mongodb_remembers(redis_url):
    lease = Lease(redis.Redis.from_url(redis_url), "t4")
    assert lease.try_acquire() and lease.epoch == 1
    assert lease.raise_epoch(41) == 41
    lease.release()
    assert lease.try_acquire() and lease.epoch == 42


# --- fenced state ------------------------------------------------------------------------------


def test_a_deposed_leader_cannot_write_a_checkpoint(mongo_uri, make_settings):
    settings = make_settings()
    state = StateStore(MongoClient(mongo_uri), settings.jobs_database)
    state.save_token("db.c", {"_data": "nx:1"}, 1)
    state.fence(2)  # a new leader takes over
    with pytest.raises(Fenced):
        state.save_token("db.c", {"_data": "nx:9"}, 1)
    with pytest.raises(Fenced):
        state.save_scan({"items": []}, 1)
    assert state.load_tokens() == {"db.c": {"_data": "nx:1"}}
    state.save_token("db.c", {"_data": "nx:5"}, 2)
    assert state.load_tokens() == {"db.c": {"_data": "nx:5"}} and state.max_epoch() == 2


def test_scan_progress_and_rescan_requests_round_trip(mongo_uri, make_settings):
    settings = make_settings()
    state = StateStore(MongoClient(mongo_uri), settings.jobs_database)
    assert state.load_scan() is None and not state.take_rescan_request()
    scan = CatchUpScan()
    scan.add({("db", "c")}, "test")
    scan.items[0]["last_id"] = 42
    state.save_scan(scan.state(), 1)
    assert CatchUpScan(state.load_scan()).items == scan.items
    state.request_rescan()
    assert state.take_rescan_request() and not state.take_rescan_request()
    state.save_scan(None, 1)
    assert state.load_scan() is None


# --- de-duplication ----------------------------------------------------------------------------


def _decision(settings, doc):
    return decide_scanned(doc, "src", "hotels", settings)


def test_the_same_document_version_makes_one_job_and_one_message(make_settings, redis_url):
    settings = make_settings()
    red = redis.Redis.from_url(redis_url)
    lease = Lease(red, "d1")
    assert lease.try_acquire()
    submitter, jobs = make_submitter(settings, lease)
    doc = {"_id": 7, "images": ["http://x/a.jpg"], "download_images": True}
    decision = _decision(settings, doc)
    assert submitter.submit("src", "hotels", 7, decision) == ENQUEUED
    submitter.flush_marks()
    assert submitter.submit("src", "hotels", 7, decision) == DEDUPLICATED
    assert jobs.collection.count_documents({}) == 1 and red.hlen(SCAN_MESSAGES) == 1
    job = jobs.get(decision.job_id)
    assert job["source"]["trigger"] == "flag" and job["listener"]["epoch"] == lease.epoch
    assert submitter.settled([decision.job_id, "nope"]) == {decision.job_id}


def test_a_job_created_but_never_enqueued_is_repaired_on_replay(make_settings, redis_url):
    settings = make_settings()
    red = redis.Redis.from_url(redis_url)
    lease = Lease(red, "d2")
    assert lease.try_acquire()
    submitter, jobs = make_submitter(settings, lease)
    decision = _decision(settings, {"_id": 8, "images": ["http://x/a.jpg"]})
    # Given a crash right after the job was inserted, before its message was enqueued
    jobs.create("change_stream", "src", "hotels", document_id="8", job_id=decision.job_id)
    assert red.hlen(SCAN_MESSAGES) == 0
    # When the event is handled again, the message is enqueued, once
    assert submitter.submit("src", "hotels", 8, decision) == REPAIRED
    submitter.flush_marks()
    assert submitter.submit("src", "hotels", 8, decision) == DEDUPLICATED
    assert red.hlen(SCAN_MESSAGES) == 1 and jobs.collection.count_documents({}) == 1


def test_a_listener_without_the_lease_creates_nothing(make_settings, redis_url):
    settings = make_settings()
    lease = Lease(redis.Redis.from_url(redis_url), "d3")  # never acquired
    submitter, jobs = make_submitter(settings, lease)
    decision = _decision(settings, {"_id": 9, "images": ["http://x/a.jpg"]})
    with pytest.raises(LeaseLost):
        submitter.submit("src", "hotels", 9, decision)
    assert jobs.collection.count_documents({}) == 0


def test_redis_down_leaves_no_job_behind(make_settings, own_redis):
    settings = make_settings({"REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"})
    lease = Lease(redis.Redis.from_url(settings.redis_url), "d4")
    assert lease.try_acquire()
    submitter, jobs = make_submitter(settings, lease)
    own_redis.stop()
    decision = _decision(settings, {"_id": 10, "images": ["http://x/a.jpg"]})
    with pytest.raises(Unavailable):
        submitter.submit("src", "hotels", 10, decision)
    assert jobs.collection.count_documents({}) == 0  # retried later: the key is still free


# --- catch-up scan -----------------------------------------------------------------------------


def test_the_scan_finds_what_needs_work_in_batches_and_resumes_from_its_last_id(
        make_settings, mongo_uri, monkeypatch):
    settings = make_settings()
    coll = MongoClient(mongo_uri)["scan_src"][f"c_{settings.jobs_database}"]
    done = {"status": "completed", "job_id": "j0"}
    coll.insert_many(
        [{"_id": i, "images": ["http://x/a.jpg"]} for i in range(0, 10)]           # never done
        + [{"_id": i, "images": ["http://x/a.jpg"], "images_download": done}
           for i in range(10, 15)]                                                   # done
        + [{"_id": i, "images_download": done, "download_images": True}
           for i in range(15, 18)]                                                   # re-flagged
        + [{"_id": 18, "name": "no images"}])
    monkeypatch.setattr(listener_scan, "SCAN_BATCH", 4)
    submitted: list = []

    class Submitter:
        def submit(self, database, collection, source_id, decision, redecide=None):
            if len(submitted) == 6 and not crashed:
                raise Unavailable("simulated outage mid-batch")
            submitted.append((source_id, decision.trigger))
            return ENQUEUED

        def settled(self, ids):
            return set()

    submitter, decider = Submitter(), Decider(settings, None, JobStore(
        MongoClient(mongo_uri), settings.jobs_database))

    scan = CatchUpScan()
    scan.add({("scan_src", coll.name)}, "test")
    crashed = False
    with pytest.raises(Unavailable):
        while scan.active:
            scan.step(coll.database.client, settings, submitter, decider)
    crashed = True
    # The state survives (as saved after each batch) and the scan resumes after its last _id
    resumed = CatchUpScan(scan.state())
    assert resumed.items[0]["last_id"] == submitted[-1][0]
    while resumed.active:
        resumed.step(coll.database.client, settings, submitter, decider)
    assert submitted == [(i, "insert") for i in range(10)] + [(i, "flag") for i in (15, 16, 17)]
    assert job_id_for("scan_src", coll.name, 15, "flag", "j0") != \
        job_id_for("scan_src", coll.name, 15, "flag", None)


def test_a_flagged_document_rewritten_after_its_download_gets_a_new_job(make_settings,
                                                                        redis_url):
    settings = make_settings()
    red = redis.Redis.from_url(redis_url)
    lease = Lease(red, "d5")
    assert lease.try_acquire()
    submitter, jobs = make_submitter(settings, lease)
    coll = MongoClient(settings.mongodb_uri)["src"][f"r_{settings.jobs_database}"]
    doc_id = coll.insert_one({"images": ["http://x/a.jpg"], "download_images": True}).inserted_id
    first = decide_scanned(coll.find_one({"_id": doc_id}), "src", coll.name, settings)
    assert submitter.submit("src", coll.name, doc_id, first) == ENQUEUED
    # Given its job completed (the write-back lands first: flag false, status = the job)
    coll.update_one({"_id": doc_id}, {"$set": {"download_images": False, "images_download": {
        "status": "completed", "job_id": first.job_id}}})
    jobs.finish(first.job_id, "completed")
    # A replay of the old event, reading the document now, needs nothing
    assert decide_scanned(coll.find_one({"_id": doc_id}), "src", coll.name, settings) is None
    assert submitter.submit("src", coll.name, doc_id, first) == DEDUPLICATED
    # When the document is replaced by a flagged version without the status field
    coll.replace_one({"_id": doc_id}, {"images": ["http://x/b.jpg"], "download_images": True})
    again = decide_scanned(coll.find_one({"_id": doc_id}), "src", coll.name, settings)
    assert again == first  # same version as the first time: the job id alone cannot tell
    # Then one new job is made for it, and only one
    assert submitter.submit("src", coll.name, doc_id, again) == ENQUEUED
    submitter.flush_marks()
    assert submitter.submit("src", coll.name, doc_id, again) == DEDUPLICATED
    assert submitter.settled([first.job_id]) == set()  # completed: never "settled" for scans
    assert jobs.collection.count_documents({"document_id": str(doc_id)}) == 2
