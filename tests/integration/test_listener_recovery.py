"""Crashes, restarts and unusable checkpoints: every change acted on exactly once.

Real listener subprocesses (SIGKILLed, or exiting abruptly at a crash point), a real worker,
Redis and nx-27017. Documents are of two kinds, each needing exactly one job:
``new`` documents inserted with images (insert trigger), and ``old`` documents inserted as
already downloaded (a finished status, so no insert trigger) and later flagged.
"""

from __future__ import annotations

import random
import threading
import time

import redis
from pymongo import MongoClient

from tests.support.listener import (
    image_doc,
    jobs_of,
    jobs_per_document,
    listener_settings,
    metadata_exists,
    unique_db,
    wait_jobs,
    wait_until,
)

#: The ``start_listener`` fixture.

DONE = {"status": "completed", "job_id": "previous-job", "downloaded": 1, "failed": 0}


def _coll(settings, database: str, name: str = "hotels"):
    return MongoClient(settings.mongodb_uri, tz_aware=True)[database][name]


def _old_docs(coll, image_server, count: int, prefix: str = "old") -> list:
    docs = [image_doc(image_server, f"{prefix}{i}", images_download=dict(DONE))
            for i in range(count)]
    return coll.insert_many(docs).inserted_ids if docs else []


def _lease_key(settings) -> str:
    return f"isv:listener:{{{settings.jobs_database}}}:lease"


def _state(settings):
    return MongoClient(settings.mongodb_uri, tz_aware=True)[settings.jobs_database].listener_state


def _assert_each_once(settings, expected_ids) -> list[dict]:
    jobs = wait_jobs(settings, len(expected_ids), timeout_s=90)
    counts = jobs_per_document(jobs)
    assert counts == {str(i): 1 for i in expected_ids}, (
        f"missing: {sorted(set(map(str, expected_ids)) - set(counts))}, "
        f"duplicated: {sorted(k for k, v in counts.items() if v > 1)}")
    assert all(j["status"] == "completed" for j in jobs)
    return jobs


def test_checkpoint_is_saved_while_quiet_and_follows_the_stream(make_settings, start_listener,
                                                                image_server):
    database = unique_db()
    settings = listener_settings(make_settings, database)
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    start_listener(settings).wait_leading()
    key = f"token:{database}.hotels"
    # A quiet stream is checkpointed too (its own resume token), within about a second
    first = wait_until(lambda: _state(settings).find_one({"_id": key}), 5, "quiet checkpoint")
    # Busy: after events the saved token moves on to the stream's position
    coll.insert_many([image_doc(image_server, f"d{i}") for i in range(30)])
    now = coll.watch().resume_token  # the server's current position for this collection
    saved = wait_until(lambda: (d := _state(settings).find_one({"_id": key})) and
                       d["token"] == now and d, 5, "checkpoint at the stream's position")
    assert saved["token"] != first["token"] and saved["epoch"] == 1
    assert len(jobs_of(settings)) == 30


def test_sigkill_then_changes_while_down_are_done_exactly_once(make_settings, start_worker,
                                                              start_listener, image_server):
    database = unique_db()
    settings = listener_settings(make_settings, database)
    coll = _coll(settings, database)
    old = _old_docs(coll, image_server, 12)
    start_worker(settings)
    listener = start_listener(settings).wait_leading().wait_scan_done()
    before = coll.insert_one(image_doc(image_server, "before")).inserted_id
    wait_jobs(settings, 1)
    wait_until(lambda: _state(settings).find_one({"_id": f"token:{database}.hotels"}), 5,
               "a checkpoint")

    # Given the listener is SIGKILLed
    listener.kill()
    # When documents are inserted and flagged (by update and by replace) while it is down
    new = coll.insert_many([image_doc(image_server, f"new{i}", 3) for i in range(10)]).inserted_ids
    for doc_id in old[:8]:
        coll.update_one({"_id": doc_id}, {"$set": {"download_images": True}})
    for doc_id in old[8:10]:
        coll.replace_one({"_id": doc_id}, {**image_doc(image_server, f"re{doc_id}"),
                                           "download_images": True,
                                           "images_download": dict(DONE)})
    for _ in range(5):  # and unrelated updates
        coll.update_many({}, {"$inc": {"views": 1}})
    # And it restarts
    start_listener(settings, name="listener-2").wait_leading()

    # Then every change made meanwhile has exactly one job, all downloaded
    expected = [before, *new, *old[:10]]
    _assert_each_once(settings, expected)
    for doc_id in expected:
        assert metadata_exists(settings, database, "hotels", doc_id), doc_id


def test_random_kills_and_crash_points_never_lose_or_duplicate(make_settings, start_worker,
                                                               start_listener, image_server):
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    database = unique_db()
    settings = listener_settings(make_settings, database)
    coll = _coll(settings, database)
    old = list(_old_docs(coll, image_server, 150))
    start_worker(settings, threads=8)
    expected: list = []
    writing = threading.Event()
    writing.set()

    def writer() -> None:
        # Inserts new documents and flags old ones at ~20/s, listener up or down, and makes
        # unrelated updates (which must create nothing).
        wcoll = _coll(settings, database)
        i = 0
        while writing.is_set():
            if i % 2 == 0 or not old:
                expected.append(wcoll.insert_one(image_doc(image_server, f"w{i}")).inserted_id)
            else:
                doc_id = old.pop()
                wcoll.update_one({"_id": doc_id}, {"$set": {"download_images": True}})
                expected.append(doc_id)
            if i % 10 == 0 and expected:
                wcoll.update_one({"_id": expected[0]}, {"$inc": {"views": 1}})
            i += 1
            time.sleep(rng.uniform(0.04, 0.12))

    red = redis.Redis.from_url(settings.redis_url)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        # Crash points first (exactly between enqueue and checkpoint), then SIGKILLs at
        # random moments, each followed by a restart while writes go on.
        crash_points = ["after_enqueue:3", "before_checkpoint:2", "after_enqueue:1",
                        "before_checkpoint:1"]
        for n, point in enumerate(crash_points):
            proc = start_listener(settings, name=f"crash-{n}",
                                  env={"IMAGES_SERVICE_LISTENER_CRASH_AT": point})
            assert proc.proc.wait(30) == 137, proc.text()[-3000:]
            assert "crash point" in proc.text()
            red.delete(_lease_key(settings))  # the dead leader's lease: skip its 10 s expiry
        for n in range(5):
            proc = start_listener(settings, name=f"kill-{n}")
            if rng.random() < 0.6:
                proc.wait_leading()
            time.sleep(rng.uniform(0.0, 1.5))
            proc.kill()
            red.delete(_lease_key(settings))
        # A last listener catches up, while the writes go on for a little longer
        start_listener(settings, name="final").wait_leading()
        wait_until(lambda: len(expected) >= 120, 20, "120 changes")
    finally:
        writing.clear()
        thread.join(10)
    jobs = _assert_each_once(settings, expected)
    assert any(j.get("listener") is None or j["listener"]["epoch"] > 1 for j in jobs)


def test_unusable_checkpoints_lead_to_a_scan_and_nothing_is_missed(make_settings, start_worker,
                                                                   start_listener,
                                                                   image_server):
    database = unique_db()
    settings = listener_settings(make_settings, database)
    hotels, shops = _coll(settings, database), _coll(settings, database, "shops")
    hotels.insert_one({"name": "seed"})
    shops.insert_one({"name": "seed"})
    start_worker(settings)
    listener = start_listener(settings).wait_leading()
    first = [hotels.insert_one(image_doc(image_server, "h0")).inserted_id,
             shops.insert_one(image_doc(image_server, "s0")).inserted_id]
    wait_jobs(settings, 2)
    assert listener.stop() == 0  # SIGTERM: checkpoint saved
    state = _state(settings)
    assert state.count_documents({"_id": {"$in": [f"token:{database}.hotels",
                                                  f"token:{database}.shops"]}}) == 2

    # Given one checkpoint is garbage and the other is ahead of the server's history (as after
    # the database was dropped and recreated): nx-27017 would accept both silently
    state.update_one({"_id": f"token:{database}.hotels"}, {"$set": {"token": {"_data": "junk"}}})
    state.update_one({"_id": f"token:{database}.shops"},
                     {"$set": {"token": {"_data": "nx:999999999"}}})
    down = [hotels.insert_one(image_doc(image_server, "h1")).inserted_id,
            shops.insert_one(image_doc(image_server, "s1")).inserted_id]

    # When the listener restarts
    listener = start_listener(settings, name="listener-2").wait_leading().wait_scan_done()
    after = [hotels.insert_one(image_doc(image_server, "h2")).inserted_id,
             shops.insert_one(image_doc(image_server, "s2")).inserted_id]

    # Then it says so, scans, and misses nothing, neither from the downtime nor afterwards
    assert listener.text().count("is unusable") == 2
    assert "invalid_token" in listener.text()
    _assert_each_once(settings, first + down + after)


def test_rescan_on_demand_is_run_by_the_leader(make_settings, start_listener, image_server):
    database = unique_db()
    settings = listener_settings(make_settings, database)
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    leader = start_listener(settings).wait_leading().wait_scan_done()
    # A standby started with --rescan hands the request to the leader, and keeps running
    # (even though its metrics port is taken: a warning, not a failure)
    standby = start_listener(settings, name="standby", args=("--rescan",),
                             env={"LISTENER_METRICS_PORT": str(leader.metrics_port)})
    standby.wait_for("catch-up scan requested")
    leader.wait_for("catch-up scan finished (requested)", 10)
    assert standby.proc.poll() is None and not standby.leading()
    assert "metrics port" in standby.text()
    assert leader.metrics()['images_listener_rescans_total{reason="requested"}'] == 1
    assert standby.metrics_port == leader.metrics_port
