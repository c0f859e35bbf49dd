"""The job store on nx-27017: transitions happen once; retention is a TTL index where the
server expires rows itself (MongoDB), a sweeper purge where it does not (nx-27017)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from pymongo import MongoClient

from images_service.jobs.expiry import expires_in_background, purge_expired
from images_service.jobs.store import ACTIVE_RETENTION_MARGIN, JobStore, job_to_api


def _store(make_settings, days: int = 7, ttl_by_server: bool | None = None) -> JobStore:
    settings = make_settings({"JOB_RETENTION_DAYS": str(days)})
    store = JobStore(MongoClient(settings.mongodb_uri, tz_aware=True), settings.jobs_database,
                     retention_days=settings.job_retention_days, ttl_by_server=ttl_by_server)
    store.ensure_indexes()
    return store


def _ttl_indexes(collection) -> list[dict]:
    return [dict(ix["key"]) for ix in collection.list_indexes() if "expireAfterSeconds" in ix]


def test_finished_jobs_expire_after_the_retention(make_settings) -> None:
    # The production branch (MongoDB's TTL monitor deletes the expired rows, documented in
    # the MongoDB manual), forced here: nx-27017 itself takes the other branch (next test).
    store = _store(make_settings, days=7, ttl_by_server=True)
    assert _ttl_indexes(store.collection) == [{"retention.expire_at": 1}]
    job = store.create("collection", "serpy_db", "hotels")
    # Every job expires, counted from its creation, even one that never ends; far enough
    # away to outlive the job (retention + margin).
    active_expiry = store.get(job["_id"])["retention"]["expire_at"]
    expected_active = datetime.now(UTC) + timedelta(days=7) + ACTIVE_RETENTION_MARGIN
    assert abs((active_expiry - expected_active).total_seconds()) < 60
    store.start(job["_id"])
    store.finish(job["_id"], "completed", progress={"documents_total": 2, "documents_done": 2})
    expire_at = store.get(job["_id"])["retention"]["expire_at"]
    expected = datetime.now(UTC) + timedelta(days=7)
    assert abs((expire_at - expected).total_seconds()) < 60


def test_on_nx_27017_the_sweeper_purges_expired_jobs_and_no_ttl_index_slows_finds(
        make_settings) -> None:
    # Given a jobs collection with the TTL index an earlier version made
    store = _store(make_settings, days=7, ttl_by_server=True)
    assert _ttl_indexes(store.collection)
    # When the store asks the server (nx-27017: no TTL monitor, a purge inside every find)
    store = _store(make_settings, days=7)
    # Then it knows it, and the index is gone
    assert store.ttl_by_server is False
    assert _ttl_indexes(store.collection) == []
    # and a purge deletes only the rows whose retention has passed
    old = store.create("collection", "serpy_db", "hotels")
    kept = store.create("collection", "serpy_db", "hotels")
    store.finish(old["_id"], "completed")
    past = datetime.now(UTC) - timedelta(seconds=1)
    store.collection.update_one({"_id": old["_id"]}, {"$set": {"retention": {"expire_at": past}}})
    assert purge_expired(store.collection) == 1
    assert store.get(old["_id"]) is None and store.get(kept["_id"]) is not None


def test_only_the_embedded_server_is_left_to_the_sweeper() -> None:
    # buildInfo of nx-27017 (measured) and of a mongod 7.0 (no "process" field)
    assert expires_in_background({"version": "7.0.0", "process": "nx_27017"}) is False
    assert expires_in_background({"version": "7.0.14", "gitVersion": "ce59cfc6"}) is True


def test_a_finished_job_never_comes_back_to_life(make_settings) -> None:
    store = _store(make_settings)
    job = store.create("batch", "serpy_db", "hotels", filter={"a": {"$gt": 1}}, limit=5)
    assert store.start(job["_id"])["status"] == "running"
    assert store.start(job["_id"]) is None  # only once
    assert store.cancel(job["_id"])["status"] == "cancelled"
    assert store.finish(job["_id"], "completed") is None
    assert store.start(job["_id"]) is None
    api = job_to_api(store.get(job["_id"]))
    assert api["status"] == "cancelled" and api["filter"] == {"a": {"$gt": 1}} and api["limit"] == 5
    assert api["finished_at"].endswith("Z")


def test_progress_only_moves_forward_and_errors_keep_the_last_100(make_settings) -> None:
    store = _store(make_settings)
    job = store.create("collection", "serpy_db", "hotels")
    store.record_progress(job["_id"], {"documents_done": 5, "images_total": 10})
    store.record_progress(job["_id"], {"documents_done": 3, "images_total": 12})  # late, older
    for batch in range(3):
        store.record_progress(job["_id"], {}, [{"document_id": f"d{batch}-{i}", "url": None,
                                                "code": "http_404", "message": "x"} for i in range(40)])
    api = job_to_api(store.get(job["_id"]))
    assert api["progress"]["documents_done"] == 5 and api["progress"]["images_total"] == 12
    assert len(api["errors"]) == 100 and api["errors"][-1]["document_id"] == "d2-39"
    assert api["errors"][0]["document_id"] == "d0-20"


def test_idle_active_jobs_are_those_without_a_recent_write(make_settings) -> None:
    store = _store(make_settings)
    idle = store.create("collection", "serpy_db", "hotels")
    busy = store.create("collection", "serpy_db", "hotels")
    ended = store.create("collection", "serpy_db", "hotels")
    store.finish(ended["_id"], "cancelled")
    cutoff = time.time()  # everything written so far is older than this
    # nx-27017 quirk: doubles come back with 15 significant digits (10 µs on an epoch), so a
    # write a few µs after the cutoff may read as before it; let the clock pass 1 ms first.
    while time.time() < cutoff + 0.001:
        pass
    store.record_progress(busy["_id"], {"documents_total": 1})  # a write touches updated_at
    assert [j["_id"] for j in store.idle_active(cutoff)] == [idle["_id"]]


def test_a_job_is_started_once_by_the_read_that_delivers_it(make_settings) -> None:
    store = _store(make_settings)
    job = store.create("change_stream", "serpy_db", "hotels", document_id="h1")
    started = store.start(job["_id"])
    assert started is not None and started["status"] == "running" and started["started_at"]
    assert store.start(job["_id"]) is None  # a replay: not pending any more
    store.finish(job["_id"], "completed")
    assert store.start(job["_id"]) is None and store.get(job["_id"])["status"] == "completed"
