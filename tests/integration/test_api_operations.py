"""Operating endpoints (contract §13): job retry, queue depths and workers, dead-letter redrive.

Real Redis broker keys, nx-27017 and, where messages must be consumed, a real worker.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dramatiq
import pytest
import redis
from bson import ObjectId
from pymongo import MongoClient

from images_service.jobs.store import JobStore
from images_service.jobs.triggers import Triggers
from images_service.queueing.broker import NAMESPACE, build_broker
from images_service.queueing.messages import DOWNLOAD_QUEUE, SCAN_ACTOR, SCAN_QUEUE, Enqueuer
from tests.support.pipeline import api_client, source_db, wait_job


def _settings(make_settings, **env):
    return make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                          "RETRY_BACKOFF_MIN_MS": "50", "RETRY_BACKOFF_MAX_MS": "500", **env})


@pytest.fixture
def setup(make_settings):
    settings = _settings(make_settings)
    db = source_db(settings)
    db.hotels.drop()
    oid = ObjectId()
    db.hotels.insert_many([{"_id": oid, "name": "A", "images": []}, {"_id": 42, "name": "B"}])
    return settings, api_client(settings), oid


def _queues(client) -> dict:
    response = client.get("/api/v1/queues")
    assert response.status_code == 200
    return response.json


def _depth(client, name: str) -> dict:
    return next(q for q in _queues(client)["queues"] if q["name"] == name)


# --- POST /jobs/{job_id}/retry -------------------------------------------------------------

@pytest.mark.parametrize("path,code", [("/api/v1/jobs/no-such-job/retry", "job_not_found"),
                                       ("/api/v1/queues/default/redrive", "queue_not_found")])
def test_unknown_job_or_queue_is_404(setup, path, code):
    _, client, _ = setup
    response = client.post(path)
    assert response.status_code == 404
    assert response.json["error"]["code"] == code


def test_retry_of_a_pending_job_is_409_job_active(setup):
    _, client, _ = setup
    job_id = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    response = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 409
    assert response.json["error"] == {"code": "job_active",
                                       "message": f"job {job_id} is still pending"}


def test_retry_creates_a_job_of_the_same_type_and_scope(setup):
    # Given a cancelled batch job with a filter, a limit, image fields and force
    _, client, _ = setup
    original = client.post("/api/v1/download/batch", json={
        "database": "serpy_db", "collection": "hotels", "filter": {"name": {"$in": ["A"]}},
        "limit": 7, "force": True, "image_fields": ["images", "media.gallery"]}).json["job_id"]
    assert client.post(f"/api/v1/jobs/{original}/cancel").status_code == 200

    # When it is retried
    response = client.post(f"/api/v1/jobs/{original}/retry")

    # Then a new pending job with the same scope, force off, names the original
    assert response.status_code == 202
    body = response.json
    assert body["job_id"] != original and body["status"] == "pending"
    assert response.headers["Location"] == body["links"]["self"] == f"/api/v1/jobs/{body['job_id']}"
    job = client.get(response.headers["Location"]).json
    assert {k: job[k] for k in ("type", "database", "collection", "filter", "limit",
                                "image_fields", "force", "retry_of", "status")} == {
        "type": "batch", "database": "serpy_db", "collection": "hotels",
        "filter": {"name": {"$in": ["A"]}}, "limit": 7, "image_fields": ["images", "media.gallery"],
        "force": False, "retry_of": original, "status": "pending"}
    assert "retry_of" not in client.get(f"/api/v1/jobs/{original}").json
    # and its scan message is on the queue
    assert _depth(client, SCAN_QUEUE)["ready"] == 2


@pytest.mark.parametrize("raw", ["oid", "42"])
def test_retry_of_a_document_job_keeps_the_document(setup, raw):
    _, client, oid = setup
    raw = str(oid) if raw == "oid" else raw
    original = client.post(f"/api/v1/download/document/serpy_db/hotels/{raw}").json["job_id"]
    client.post(f"/api/v1/jobs/{original}/cancel")
    job = client.get(client.post(f"/api/v1/jobs/{original}/retry").headers["Location"]).json
    assert (job["type"], job["document_id"], job["retry_of"]) == ("document", raw, original)


def test_retry_of_a_change_stream_job_keeps_its_type_with_a_fresh_id(setup):
    # Given a finished change_stream job with the listener's deterministic id
    settings, client, oid = setup
    mongo = MongoClient(settings.mongodb_uri)
    red = redis.Redis.from_url(settings.redis_url)
    jobs = JobStore(mongo, settings.jobs_database)
    triggers = Triggers(settings, mongo, red, jobs, Enqueuer(build_broker(settings, client=red)))
    listener_id = "cs-deterministic-0001"
    triggers.change_stream_job("serpy_db", "hotels", oid, trigger="insert", job_id=listener_id)
    jobs.cancel(listener_id)

    # When it is retried
    new_id = client.post(f"/api/v1/jobs/{listener_id}/retry").json["job_id"]

    # Then the new job is a change_stream job of the same document, with a fresh id
    job = client.get(f"/api/v1/jobs/{new_id}").json
    assert (job["type"], job["document_id"], job["retry_of"]) == ("change_stream", str(oid), listener_id)
    assert len(new_id) == 32 and new_id != listener_id
    assert jobs.get(new_id)["source"] == jobs.get(listener_id)["source"]


def test_retry_is_idempotent_while_a_retry_is_active(setup):
    # §14: a double click makes one retry, not two jobs racing over the same documents.
    _, client, _ = setup
    original = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    client.post(f"/api/v1/jobs/{original}/cancel")

    first = client.post(f"/api/v1/jobs/{original}/retry")
    second = client.post(f"/api/v1/jobs/{original}/retry")

    assert first.status_code == 202
    assert second.status_code == 409
    assert second.json["error"]["code"] == "retry_active"
    assert second.json["error"]["job_id"] == first.json["job_id"]
    # Once that retry has ended, the job can be retried again (a new retry job)
    client.post(f"/api/v1/jobs/{first.json['job_id']}/cancel")
    third = client.post(f"/api/v1/jobs/{original}/retry")
    assert third.status_code == 202
    assert third.json["job_id"] not in (original, first.json["job_id"])


def test_concurrent_retries_create_one_job(setup):
    # Two requests at the same instant (several api processes): one retry, the other 409.
    settings, client, _ = setup
    original = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    client.post(f"/api/v1/jobs/{original}/cancel")
    clients = [api_client(settings) for _ in range(8)]  # as many api processes
    barrier = threading.Barrier(8, timeout=30)

    def retry(own):
        barrier.wait()
        return own.post(f"/api/v1/jobs/{original}/retry")

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(retry, clients))

    created = [r for r in responses if r.status_code == 202]
    assert len(created) == 1
    refused = [r for r in responses if r.status_code != 202]
    assert {r.status_code for r in refused} == {409}
    assert {r.json["error"]["job_id"] for r in refused} == {created[0].json["job_id"]}
    jobs, _ = JobStore(MongoClient(settings.mongodb_uri), settings.jobs_database).list(limit=50)
    assert sum(1 for job in jobs if job.get("retry_of") == original) == 1


def test_retry_when_the_source_is_gone_is_404(setup):
    settings, client, oid = setup
    doc_job = client.post(f"/api/v1/download/document/serpy_db/hotels/{oid}").json["job_id"]
    coll_job = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    for job_id in (doc_job, coll_job):
        client.post(f"/api/v1/jobs/{job_id}/cancel")
    source_db(settings).hotels.delete_one({"_id": oid})
    assert client.post(f"/api/v1/jobs/{doc_job}/retry").json["error"]["code"] == "document_not_found"
    source_db(settings).hotels.drop()
    response = client.post(f"/api/v1/jobs/{coll_job}/retry")
    assert (response.status_code, response.json["error"]["code"]) == (404, "collection_not_found")


# --- GET /queues ---------------------------------------------------------------------------

def test_queues_without_workers(setup):
    # Given two jobs enqueued by the api (whose broker records a heartbeat of its own)
    settings, client, _ = setup
    for _ in range(2):
        assert client.post("/api/v1/download/collection/serpy_db/hotels").status_code == 202
    red = redis.Redis.from_url(settings.redis_url)
    assert red.zcard(f"{NAMESPACE}:__heartbeats__") == 1

    # Then the scan queue holds two ready messages and no worker is counted
    assert _queues(client) == {"queues": [
        {"name": SCAN_QUEUE, "ready": 2, "delayed": 0, "dead": 0},
        {"name": DOWNLOAD_QUEUE, "ready": 0, "delayed": 0, "dead": 0},
    ], "workers": 0}


def test_queues_count_worker_processes_and_delayed_messages(setup, start_worker):
    settings, client, _ = setup
    start_worker(settings, processes=2)
    deadline = time.monotonic() + 10
    while _queues(client)["workers"] != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _queues(client)["workers"] == 2
    # A delayed message is counted while a worker holds it in memory until its ETA
    broker = build_broker(settings, producer=True)
    broker.enqueue(dramatiq.Message(queue_name=SCAN_QUEUE, actor_name=SCAN_ACTOR,
                                    args=("no-such-job",), kwargs={}, options={}), delay=60_000)
    time.sleep(1.5)  # the workers fetch delayed messages at once
    red = redis.Redis.from_url(settings.redis_url)
    assert red.llen(f"{NAMESPACE}:{SCAN_QUEUE}.DQ") == 0
    assert _depth(client, SCAN_QUEUE) == {"name": SCAN_QUEUE, "ready": 0, "delayed": 1, "dead": 0}


# --- POST /queues/{name}/redrive ----------------------------------------------------------

def test_redrive_of_a_queue_without_dead_letters(setup):
    _, client, _ = setup
    assert client.post(f"/api/v1/queues/{SCAN_QUEUE}/redrive").json == {"redriven": 0}


def test_a_dead_lettered_message_completes_after_redrive(setup, start_worker, image_server):
    # Given a job whose scan fails for good: its filter passes the decoder but the server
    # refuses it at query time ($mod by zero), and its message allows no retry
    settings, client, _ = setup
    db = source_db(settings)
    db.hotels.insert_one({"_id": "h-1", "name": "Ritz", "images": [image_server.url("/image/PNG/r")]})
    jobs = JobStore(MongoClient(settings.mongodb_uri), settings.jobs_database)
    job_id = jobs.create("collection", "serpy_db", "hotels", filter={"n": {"$mod": [0, 1]}})["_id"]
    broker = build_broker(settings, producer=True)
    broker.enqueue(dramatiq.Message(queue_name=SCAN_QUEUE, actor_name=SCAN_ACTOR, args=(job_id,),
                                    kwargs={}, options={"max_retries": 0}))
    start_worker(settings)
    # ... the exhausted message ends its job (contract §10: no job stays running), through
    # the exhausted notice that the Retries middleware sends to the same queue
    failed = wait_job(client, job_id, timeout_s=20)
    assert failed["status"] == "failed" and "retries exhausted" in failed["message"]
    deadline = time.monotonic() + 20
    while _depth(client, SCAN_QUEUE)["ready"] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _depth(client, SCAN_QUEUE) == {"name": SCAN_QUEUE, "ready": 0, "delayed": 0, "dead": 1}

    # When the cause is fixed and the queue redriven
    jobs.collection.update_one({"_id": job_id}, {"$set": {"filter_json": '{"name": "Ritz"}'}})
    assert client.post(f"/api/v1/queues/{SCAN_QUEUE}/redrive").json == {"redriven": 1}

    # Then the message runs again and is acked (a no-op for its ended job): nothing is dead,
    # nothing waits, nothing is in flight
    red = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        in_flight = sum(red.scard(key) for key in red.scan_iter(f"{NAMESPACE}:__acks__.*"))
        if _depth(client, SCAN_QUEUE)["ready"] == 0 and in_flight == 0:
            break
        time.sleep(0.1)
    assert _depth(client, SCAN_QUEUE) == {"name": SCAN_QUEUE, "ready": 0, "delayed": 0, "dead": 0}
    assert client.get(f"/api/v1/jobs/{job_id}").json["status"] == "failed"  # never revived
    # ... and the job itself is redone by a retry, which completes
    retried = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert retried.status_code == 202
    job = wait_job(client, retried.json["job_id"], timeout_s=30)
    assert job["status"] == "completed" and job["progress"]["images_downloaded"] == 1
    assert client.post(f"/api/v1/queues/{SCAN_QUEUE}/redrive").json == {"redriven": 0}
