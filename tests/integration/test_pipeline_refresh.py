"""Contract §16 on the real pipeline: refresh jobs re-check stored images with conditional
requests, against an origin that sends ETag / Last-Modified and answers 304.

The pipeline runs in this process (tests/support/pipeline.py Rig), driven step by step, on
the test servers: nx-27017, Redis, the filesystem or SeaweedFS, a loopback origin.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from images_service.queueing.messages import REFRESH_ACTOR, REFRESH_RETRY_ACTOR
from tests.support.origin import ValidatingOrigin
from tests.support.pipeline import Rig, source_db


@pytest.fixture(params=["filesystem", "s3"])
def rig(request, make_settings, image_server):
    env = {"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
           "PROCESSED_VARIANTS": "thumb:32x32:fit:webp:80", "GONE_AFTER_MISSES": "2",
           "GONE_MIN_INTERVAL_HOURS": "0", "MAX_RETRIES": "0"}
    if request.param == "s3":
        server = request.getfixturevalue("seaweedfs")
        env.update(STORAGE_BACKEND="s3", S3_BUCKET=request.getfixturevalue("s3_bucket"),
                   S3_ENDPOINT_URL=server.endpoint_url)
        request.getfixturevalue("aws_credentials")
    settings = make_settings(env)
    source_db(settings).hotels.drop()
    r = Rig(settings, image_server)
    r.backend = request.param
    yield r
    r.close()


@pytest.fixture
def origin(image_server):
    return ValidatingOrigin(image_server)


def download(rig: Rig, document_id: str) -> str:
    job_id, plans = rig.document_job(document_id)
    rig.pipeline.download_documents(job_id, plans)
    assert rig.job(job_id)["status"] == "completed"
    return job_id


def refresh(rig: Rig, body: dict | None = None) -> dict:
    """A refresh job of the collection, run to its end (retries as they come)."""
    response = rig.client.post("/api/v1/refresh/serpy_db/hotels", json=body or {})
    assert response.status_code == 202, response.json
    job_id = response.json["job_id"]
    rig.pipeline.scan(job_id)
    for args in rig.messages(REFRESH_ACTOR, job_id):
        rig.pipeline.refresher.refresh_documents(*args)
    for args in rig.messages(REFRESH_RETRY_ACTOR, job_id):
        rig.pipeline.refresher.refresh_image(*args)
    return rig.job(job_id)


def read(rig: Rig, key: str) -> bytes:
    store = rig.pipeline.ctx.storage
    return store.read_bytes(key)


def metadata(rig: Rig, folder: str) -> dict:
    return json.loads(read(rig, f"serpy_db/hotels/{folder}/metadata.json"))


def test_a_304_recheck_reads_no_body_and_moves_only_checked_at(rig, origin):
    urls = [origin.add("a", "JPEG", seed=1), origin.add("b", "PNG", seed=2)]
    rig.db.hotels.insert_one({"_id": "h", "name": "H", "images": urls})
    download(rig, "h")
    before = metadata(rig, "h-h")
    assert all("etag" in r and "last_modified" in r and "checked_at" in r
               for r in before["images"])
    sent = origin.body_bytes

    job = refresh(rig)

    assert job["status"] == "completed" and job["type"] == "refresh"
    assert job["progress"]["images_not_modified"] == 2
    assert (origin.conditional, origin.not_modified) == (2, 2)
    assert origin.body_bytes == sent  # no body transferred
    after = metadata(rig, "h-h")
    for old, new in zip(before["images"], after["images"]):
        assert {k: v for k, v in old.items() if k != "checked_at"} == \
            {k: v for k, v in new.items() if k != "checked_at"}
    status = rig.db.hotels.find_one({"_id": "h"})["images_download"]
    assert status["status"] == "completed" and status["downloaded"] == 2
    assert status["path"] == "serpy_db/hotels/h-h" and "refreshed_at" in status


def test_a_changed_image_replaces_file_and_variants_and_keeps_previous(rig, origin):
    url = origin.add("c", "JPEG", seed=3)
    rig.db.hotels.insert_one({"_id": "c", "name": "C", "images": [url]})
    download(rig, "c")
    (old,) = metadata(rig, "c-c")["images"]
    origin.change("c")

    job = refresh(rig)

    assert job["progress"]["images_changed"] == 1
    (new,) = metadata(rig, "c-c")["images"]
    data = read(rig, f"serpy_db/hotels/c-c/{new['file']}")
    assert hashlib.sha256(data).hexdigest() == new["sha256"] != old["sha256"]
    assert data == origin.body("c")
    assert new["previous"][0]["sha256"] == old["sha256"]
    thumb = read(rig, f"serpy_db/hotels/c-c/{new['processed']['thumb']['file']}")
    assert hashlib.sha256(thumb).hexdigest() == new["processed"]["thumb"]["sha256"] != \
        old["processed"]["thumb"]["sha256"]


def test_404_twice_is_gone_410_at_once_and_a_success_clears_it(rig, origin):
    missing, removed = origin.add("m", seed=4), origin.add("g", seed=5)
    rig.db.hotels.insert_one({"_id": "s", "name": "S", "images": [missing, removed]})
    download(rig, "s")
    origin.fail("m", 404)
    origin.fail("g", 410)

    first = refresh(rig)
    meta = metadata(rig, "s-s")
    assert (first["progress"]["images_missing"], first["progress"]["images_gone"]) == (1, 1)
    assert meta["images"][0]["source"]["status"] == "missing"
    assert meta["images"][1]["source"]["status"] == "gone"
    assert meta["images"][0]["status"] == "downloaded"  # the file is kept
    assert meta["summary"]["gone"] == 1

    second = refresh(rig)
    meta = metadata(rig, "s-s")
    assert second["progress"]["images_gone"] == 2
    assert meta["images"][0]["source"]["misses"] == 2 and meta["summary"]["gone"] == 2

    origin.heal("m")
    refresh(rig)
    meta = metadata(rig, "s-s")
    assert "source" not in meta["images"][0] and meta["summary"]["gone"] == 1


def test_a_500_keeps_everything_and_counts_failed(rig, origin):
    url = origin.add("e", seed=6)
    rig.db.hotels.insert_one({"_id": "e", "name": "E", "images": [url]})
    download(rig, "e")
    before = metadata(rig, "e-e")
    origin.fail("e", 500)

    job = refresh(rig)

    assert job["status"] == "completed" and job["progress"]["images_failed"] == 1
    after = metadata(rig, "e-e")
    assert after["images"] == before["images"]


def test_two_documents_naming_one_url_cause_one_request(rig, origin):
    url = origin.add("shared", seed=7)
    rig.db.hotels.insert_many([{"_id": "p", "name": "P", "images": [url]},
                               {"_id": "q", "name": "Q", "images": [url]}])
    download(rig, "p")
    download(rig, "q")
    requests = origin.requests
    origin.change("shared")

    job = refresh(rig)

    assert origin.requests - requests == 1
    assert job["progress"]["images_changed"] == 2
    p, q = metadata(rig, "p-p")["images"][0], metadata(rig, "q-q")["images"][0]
    assert p["sha256"] == q["sha256"] == hashlib.sha256(origin.body("shared")).hexdigest()


# --- scheduled re-checks (REFRESH_AFTER_DAYS) ------------------------------------------------

def test_the_scheduler_starts_one_job_per_due_collection_and_never_two(make_settings):
    import threading
    import time

    from workers.refresh_schedule import RefreshScheduler

    settings = make_settings({"REFRESH_AFTER_DAYS": "30"})
    db = source_db(settings)
    for name in ("hotels", "restaurants", "fresh"):
        db[name].drop()
        db[name].insert_one({"_id": 1})
    rig = Rig(settings, None)
    try:
        index = rig.pipeline.ctx.urls
        old = time.time() - 31 * 86_400
        index.collection.insert_many([
            {"_id": "u1", "url": "http://a/1", "database": "serpy_db", "collection": "hotels",
             "checked_at": old},
            {"_id": "u2", "url": "http://a/2", "database": "serpy_db", "collection": "hotels",
             "checked_at": old},
            {"_id": "u3", "url": "http://a/3", "database": "serpy_db",
             "collection": "restaurants", "checked_at": old},
            {"_id": "u4", "url": "http://a/4", "database": "serpy_db", "collection": "fresh",
             "checked_at": time.time()},
        ])
        # Two processes' schedulers racing (their elections overlapped)
        schedulers = [RefreshScheduler(rig.pipeline.ctx) for _ in range(2)]
        results: list[list[str]] = []
        barrier = threading.Barrier(2)

        def run(scheduler):
            barrier.wait()
            results.append(scheduler.start_due())

        threads = [threading.Thread(target=run, args=(s,)) for s in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        jobs = list(rig.pipeline.ctx.jobs.collection.find({"type": "refresh"}))
        assert sorted(j["collection"] for j in jobs) == ["hotels", "restaurants"]
        assert all(j["older_than_days"] == 30 and j["spread"] for j in jobs)
        assert sorted(job_id for result in results for job_id in result) == \
            sorted(j["_id"] for j in jobs)
        # While they are active, a later pass starts nothing more
        assert schedulers[0].start_due() == []
        assert rig.pipeline.ctx.jobs.collection.count_documents({"type": "refresh"}) == 2
    finally:
        rig.close()
