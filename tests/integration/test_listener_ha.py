"""High availability and outages: one active listener, fast takeover, fencing, Redis down.

Real listener subprocesses share one Redis lease; a paused (SIGSTOP) leader is the classic
"zombie leader": it must notice on waking that its lease is gone and act on nothing.
"""

from __future__ import annotations

import time
from dataclasses import replace

from pymongo import MongoClient

from images_service.dev.embedded import start_embedded_mongo, start_redis
from tests.support.listener import (
    image_doc,
    jobs_of,
    jobs_per_document,
    listener_settings,
    sigcont,
    sigstop,
    unique_db,
    wait_jobs,
    wait_until,
)

#: The ``start_listener`` fixture.

#: The contract's bound on a standby taking over (seconds).
TAKEOVER_S = 15


def _coll(settings, database: str):
    return MongoClient(settings.mongodb_uri, tz_aware=True)[database].hotels


def _insert(coll, image_server, prefix: str, count: int) -> list:
    return list(coll.insert_many([image_doc(image_server, f"{prefix}{i}")
                                  for i in range(count)]).inserted_ids)


def test_one_leader_takeover_and_a_paused_leader_acts_on_nothing(make_settings, start_worker,
                                                                  start_listener, image_server):
    database = unique_db()
    settings = listener_settings(make_settings, database)
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    start_worker(settings, threads=8)
    first = start_listener(settings, name="first").wait_leading()
    second = start_listener(settings, name="second")
    second.wait_for("listener started")

    # Given two listeners: exactly one is active
    ids = _insert(coll, image_server, "a", 5)
    wait_jobs(settings, 5)
    assert not second.leading()

    # When the leader is paused (SIGSTOP) and documents keep coming
    sigstop(first.proc)
    paused_at = time.monotonic()
    paused_ids = _insert(coll, image_server, "p", 5)
    # Then the standby takes over within the bound and handles them
    second.wait_leading(TAKEOVER_S + 5)
    assert time.monotonic() - paused_at < TAKEOVER_S
    wait_jobs(settings, 10)

    # When the paused leader wakes up, with those events still waiting in its open stream
    woke_at = len(first.text())
    sigcont(first.proc)
    wait_until(lambda: "lease" in first.text()[woke_at:], 10, "the woken leader noticing")
    more_ids = _insert(coll, image_server, "m", 5)
    jobs = wait_jobs(settings, 15)
    time.sleep(1.5)  # give a misbehaving zombie the time to act (and to checkpoint)

    # Then it handled no event, enqueued nothing and wrote no checkpoint after waking
    after_wake = first.text()[woke_at:]
    assert " event: " not in after_wake and "created" not in after_wake, after_wake
    assert "stepping down" in after_wake or "lease dropped" in after_wake, after_wake
    state = MongoClient(settings.mongodb_uri)[settings.jobs_database].listener_state
    assert all(doc["epoch"] >= 2 for doc in state.find({"epoch": {"$exists": True}}))
    counts = jobs_per_document(jobs_of(settings))
    assert counts == {str(i): 1 for i in ids + paused_ids + more_ids}

    # When the new leader is SIGKILLed, the old one (now standing by) takes over in time
    second.kill()
    killed_at = time.monotonic()
    first.wait_for("leading with epoch 3", TAKEOVER_S + 5)
    assert time.monotonic() - killed_at < TAKEOVER_S
    last_ids = _insert(coll, image_server, "k", 3)
    jobs = wait_jobs(settings, 18)
    assert jobs_per_document(jobs) == {str(i): 1 for i in ids + paused_ids + more_ids + last_ids}
    assert all(j["status"] == "completed" for j in jobs)


def test_redis_outage_during_inserts_loses_nothing(make_settings, start_worker, start_listener,
                                                   own_redis, image_server, tmp_path):
    database = unique_db()
    base = listener_settings(make_settings, database)
    settings = replace(base, redis_url=f"redis://127.0.0.1:{own_redis.port}/0")
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    start_worker(settings, threads=8)
    listener = start_listener(settings).wait_leading().wait_scan_done()
    before = _insert(coll, image_server, "b", 3)
    wait_jobs(settings, 3)

    # Given Redis goes away for longer than the lease, while documents keep coming
    own_redis.stop()
    during: list = []
    outage_end = time.monotonic() + 10
    while time.monotonic() < outage_end:
        during += _insert(coll, image_server, f"d{len(during)}-", 2)
        time.sleep(0.5)
    listener.wait_for("Redis unavailable", 10)
    # When it comes back (same port, same data: AOF)
    revived = start_redis(own_redis.log_path.parent, port=own_redis.port)
    try:
        after = _insert(coll, image_server, "a", 3)
        # Then every document is downloaded exactly once
        jobs = wait_jobs(settings, len(before) + len(during) + len(after), timeout_s=60)
        assert jobs_per_document(jobs) == {str(i): 1 for i in before + during + after}
        assert all(j["status"] == "completed" for j in jobs)
        assert listener.proc.poll() is None
    finally:
        revived.stop()


def test_mongodb_restart_loses_nothing(make_settings, start_worker, start_listener, own_mongo,
                                       image_server, tmp_path):
    database = unique_db()
    uri = f"mongodb://127.0.0.1:{own_mongo.port}/?directConnection=true"
    settings = replace(listener_settings(make_settings, database), mongodb_uri=uri)
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    start_worker(settings, threads=8)
    listener = start_listener(settings).wait_leading().wait_scan_done()

    # Given documents inserted right before MongoDB goes away (some events not yet handled)
    before = _insert(coll, image_server, "b", 5)
    own_mongo.stop()
    listener.wait_for("failed", 15)  # it noticed: the stream broke
    # When it comes back (same port, same data) and documents keep coming
    revived = start_embedded_mongo(tmp_path / "own-mongo", port=own_mongo.port)
    try:
        after = _insert(_coll(settings, database), image_server, "a", 5)
        # Then every document is downloaded exactly once
        jobs = wait_jobs(settings, 10, timeout_s=60)
        assert jobs_per_document(jobs) == {str(i): 1 for i in before + after}
        assert all(j["status"] == "completed" for j in jobs)
        assert "reopened" in listener.text()
        assert 'reason="reopen"' in str(listener.metrics().keys())  # and it scanned
        # And it still stops cleanly, within the contract's 30 s
        started = time.monotonic()
        assert listener.stop() == 0 and time.monotonic() - started < 30
    finally:
        revived.stop()
