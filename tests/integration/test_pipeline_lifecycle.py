"""Every job ends (contract §10): valid filters run on nx-27017, a step that keeps failing
ends its job as failed, the sweeper ends jobs whose messages are gone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import redis
from pymongo import MongoClient

from images_service.backends import mongo_client
from images_service.queueing.broker import NAMESPACE, build_broker
from images_service.queueing.messages import DOWNLOAD_QUEUE, QUEUES, Enqueuer
from tests.support.pipeline import Rig, api_client, source_db, wait_job
from workers.pipeline import DownloadPipeline
from workers.sweeper import NO_WORK_MESSAGE, Sweeper


def _settings(make_settings, **env):
    return make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "RETRY_BACKOFF_MIN_MS": "50",
                          "RETRY_BACKOFF_MAX_MS": "200", "API_RATE_LIMIT": "100000/minute",
                          **env})


def test_a_regex_filter_downloads_the_matching_documents(make_settings, start_worker,
                                                         image_server):
    # Given hotels of which two names start with "Ho"
    settings = _settings(make_settings)
    db = source_db(settings)
    db.hotels.drop()
    ids = db.hotels.insert_many([
        {"name": name, "images": [image_server.url(f"/image/PNG/{i}")]}
        for i, name in enumerate(("Hotel Ritz", "Hostel Sol", "Motel Uno"))]).inserted_ids
    start_worker(settings)
    client = api_client(settings)

    # When a batch job filters with $regex (json_util would send a Regex value: nx refuses it)
    r = client.post("/api/v1/download/batch", json={
        "database": "serpy_db", "collection": "hotels", "filter": {"name": {"$regex": "^Ho"}}})
    assert r.status_code == 202, r.json

    # Then exactly the matching documents are downloaded
    job = wait_job(client, r.json["job_id"])
    assert job["status"] == "completed", job
    assert job["progress"]["documents_total"] == 2 and job["progress"]["images_downloaded"] == 2
    folders = sorted(p.parent.name for p in settings.storage_path.rglob("metadata.json"))
    assert folders == sorted([f"{ids[0]}-hotel-ritz", f"{ids[1]}-hostel-sol"])


def test_a_step_that_keeps_failing_ends_its_job_failed(make_settings, start_worker):
    # Given a batch job whose stored filter was edited, after the trigger's checks, into one
    # the server refuses at every scan ($mod by zero)
    settings = _settings(make_settings, MAX_RETRIES="1")
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_one({"name": "A", "x": 1})
    client = api_client(settings)
    r = client.post("/api/v1/download/batch", json={
        "database": "serpy_db", "collection": "hotels", "filter": {"x": {"$gte": 0}}})
    job_id = r.json["job_id"]
    jobs = source_db(settings, settings.jobs_database).jobs
    jobs.update_one({"_id": job_id}, {"$set": {"filter_json": json.dumps({"x": {"$mod": [0, 1]}})}})

    # When a worker runs it (the scan raises; Dramatiq retries it MAX_RETRIES times)
    start_worker(settings)

    # Then the job ends failed with the error, instead of staying running forever
    job = wait_job(client, job_id, timeout_s=60)
    assert job["status"] == "failed", job
    assert "retries exhausted" in job["message"] and "divisor" in job["message"], job
    assert job["finished_at"].endswith("Z")


def test_the_sweeper_ends_jobs_whose_messages_are_gone(make_settings):
    settings = _settings(make_settings)
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_one({"name": "A"})
    client = api_client(settings)
    red = redis.Redis.from_url(settings.redis_url)
    pipeline = DownloadPipeline(settings, mongo=mongo_client(settings), redis_client=red,
                                enqueuer=Enqueuer(build_broker(settings, client=red)))
    sweeper = Sweeper(pipeline.ctx, pipeline.finisher, idle_s=0)
    try:
        # Given two jobs waiting for a worker: one with its scan message ready, one whose only
        # message is a delayed retry
        stranded = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
        delayed = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
        for queue in QUEUES:
            red.delete(f"{NAMESPACE}:{queue}.msgs", f"{NAMESPACE}:{queue}")
        pipeline.ctx.enqueuer.retry(delayed, {"images": []}, 1, 2, delay_ms=600_000)
        pipeline.ctx.progress.start(stranded)  # as if its scan had begun

        # When a pass runs, then a second one
        assert sweeper.sweep() == []  # a first pass only suspects (§14: never a live job)
        ended = sweeper.sweep()

        # Then only the job no message names is failed, with a message, and its state is gone
        assert ended == [stranded]
        job = client.get(f"/api/v1/jobs/{stranded}").json
        assert job["status"] == "failed" and job["message"] == NO_WORK_MESSAGE
        assert client.get(f"/api/v1/jobs/{delayed}").json["status"] == "pending"
        assert list(red.scan_iter(f"*{stranded}*")) == []
        assert sweeper.sweep() == []
    finally:
        pipeline.close()


def test_one_process_of_the_fleet_makes_each_pass(make_settings):
    settings = _settings(make_settings)
    red = redis.Redis.from_url(settings.redis_url)
    mongo = MongoClient(settings.mongodb_uri, tz_aware=True)
    pipelines = [DownloadPipeline(settings, mongo=mongo, redis_client=red,
                                  enqueuer=Enqueuer(build_broker(settings, client=red)))
                 for _ in range(2)]
    try:
        passes = []
        for pipeline in pipelines:
            sweeper = Sweeper(pipeline.ctx, pipeline.finisher, idle_s=0, interval_s=600)
            sweeper.sweep = lambda: passes.append(1) or []  # count passes, sweep nothing
            sweeper.tick()
        assert passes == [1]
    finally:
        for pipeline in pipelines:
            pipeline.close()


def test_the_sweeper_never_fails_a_job_whose_message_is_moving_between_queues(make_settings):
    # §14: Dramatiq moves a due retry from the delay queue to the ready queue (enqueue, then
    # ack): a pass reading the hashes one after the other can see the message in neither.
    settings = _settings(make_settings)
    rig = Rig(settings, None)
    rig.db.hotels.drop()
    rig.db.hotels.insert_one({"name": "A"})
    red = rig.redis
    sweeper = Sweeper(rig.pipeline.ctx, rig.pipeline.finisher, idle_s=0)
    try:
        # Given a job whose only work is a delayed retry
        job_id = rig.client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
        for queue in QUEUES:
            red.delete(f"{NAMESPACE}:{queue}.msgs", f"{NAMESPACE}:{queue}")
        rig.pipeline.ctx.enqueuer.retry(job_id, {"images": []}, 1, 2, delay_ms=600_000)
        delayed = f"{NAMESPACE}:{DOWNLOAD_QUEUE}.DQ.msgs"
        saved = red.hgetall(delayed)
        assert saved

        # When a pass runs while the message is between the hashes (in neither) ...
        red.delete(delayed)
        first = sweeper.sweep()
        # ... and the next pass sees it in its new queue
        red.hset(f"{NAMESPACE}:{DOWNLOAD_QUEUE}.msgs", mapping=saved)
        second = sweeper.sweep()

        # Then the job was never failed
        assert first == [] and second == []
        assert rig.job(job_id)["status"] == "pending"
    finally:
        rig.close()


def test_on_nx_27017_the_sweepers_pass_deletes_expired_jobs_and_documents(make_settings):
    # nx-27017 has no TTL monitor (images_service/jobs/expiry.py): the elected pass purges.
    settings = _settings(make_settings)
    red = redis.Redis.from_url(settings.redis_url)
    red.delete("isv:sweeper:tick")
    mongo = MongoClient(settings.mongodb_uri, tz_aware=True)
    pipeline = DownloadPipeline(settings, mongo=mongo, redis_client=red,
                                enqueuer=Enqueuer(build_broker(settings, client=red)))
    jobs = pipeline.ctx.jobs.collection
    rows = pipeline.ctx.job_documents.collection
    past = datetime.now(UTC) - timedelta(minutes=1)
    future = datetime.now(UTC) + timedelta(days=1)
    try:
        # Given a job and a job document past their retention, and one of each not yet
        jobs.insert_many([
            {"_id": "expired", "status": "completed", "retention": {"expire_at": past}},
            {"_id": "kept", "status": "completed", "retention": {"expire_at": future}}])
        rows.insert_many([{"_id": "r-expired", "retention": {"expire_at": past}},
                          {"_id": "r-kept", "retention": {"expire_at": future}}])
        # When the fleet's pass runs
        sweeper = Sweeper(pipeline.ctx, pipeline.finisher, idle_s=3600, interval_s=600)
        sweeper.tick()
        # Then only the expired ones are gone
        left = jobs.find({"_id": {"$in": ["expired", "kept"]}})
        assert sorted(j["_id"] for j in left) == ["kept"]
        assert sorted(r["_id"] for r in rows.find({})) == ["r-kept"]
    finally:
        red.delete("isv:sweeper:tick")
        pipeline.close()
