"""Redis does not grow with finished jobs (contract §10): a job's state goes when it ends."""

from __future__ import annotations

import time

import redis

from images_service.download.fetch_once import STORED_TTL_S
from images_service.queueing.broker import NAMESPACE
from images_service.queueing.messages import QUEUES
from tests.support.backends import CLAIM_KEY
from tests.support.pipeline import api_client, source_db, wait_job

#: What may stay in Redis once every job ended: the broker's queues, fleet-wide download
#: caps, the sweeper's election key, the api's rate-limit counters, the test session's claim.
FLEET_KEY_PREFIXES = (f"{NAMESPACE}:", "isv:caps:", "isv:sweeper:", "LIMITS", CLAIM_KEY)
# A stored URL's fetch claim stays behind a few minutes (fetch_once.STORED_TTL_S): per URL,
# not per job, and always expiring.
FETCH_CLAIM_PREFIX = "isv:fetch:"


def _wait_queues_empty(client: redis.Redis, timeout_s: float = 60) -> None:
    # Ready, in-flight and delayed messages all live in these hashes until acked.
    keys = [f"{NAMESPACE}:{q}{suffix}.msgs" for q in QUEUES for suffix in ("", ".DQ")]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(client.hlen(k) for k in keys) == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the broker's queues did not drain")


def test_no_key_of_an_ended_job_remains(make_settings, start_worker, image_server):
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "RETRY_BACKOFF_MIN_MS": "50",
                              "RETRY_BACKOFF_MAX_MS": "200", "API_RATE_LIMIT": "100000/minute",
                              "MAX_CONCURRENT_PER_DOMAIN": "2"})
    db = source_db(settings)
    for name in ("hotels", "gone", "slow"):
        db[name].drop()
    ids = db.hotels.insert_many([{"name": f"h{i}", "images": [image_server.url(f"/image/PNG/{i}")]}
                                 for i in range(30)]).inserted_ids
    db.gone.insert_one({"name": "g"})
    db.slow.insert_many([{"name": f"s{i}", "images": [
        image_server.url(f"/image/JPEG/{i}-{k}?delay=0.3") for k in range(2)]} for i in range(20)])
    client = api_client(settings)

    # Given a job whose collection is dropped before a worker scans it (it will fail) ...
    failed = client.post("/api/v1/download/collection/serpy_db/gone").json["job_id"]
    db.gone.drop()
    # ... 30 jobs that complete ...
    completed = [client.post(f"/api/v1/download/document/serpy_db/hotels/{i}").json["job_id"]
                 for i in ids]
    start_worker(settings, threads=4)
    for job_id in completed:
        assert wait_job(client, job_id)["status"] == "completed"
    assert wait_job(client, failed)["status"] == "failed"
    # ... and one cancelled from the API while its downloads run
    cancelled = client.post("/api/v1/download/collection/serpy_db/slow").json["job_id"]
    wait_job(client, cancelled, until=lambda j: j["progress"]["images_downloaded"] >= 2)
    assert client.post(f"/api/v1/jobs/{cancelled}/cancel").json["status"] == "cancelled"

    # When every message has been processed (the cancelled job's are no-ops)
    red = redis.Redis.from_url(settings.redis_url)
    _wait_queues_empty(red)

    # Then no key names any of the jobs, and only fleet-wide keys remain
    keys = [k.decode() for k in red.scan_iter(count=1000)]
    ended = [failed, cancelled, *completed]
    assert [k for k in keys if any(job_id in k for job_id in ended)] == []
    assert [k for k in keys if not k.startswith((*FLEET_KEY_PREFIXES, FETCH_CLAIM_PREFIX))] == []
    claims = [k for k in keys if k.startswith(FETCH_CLAIM_PREFIX)]
    assert all(0 < red.ttl(k) <= STORED_TTL_S for k in claims), "a fetch claim that never expires"
