"""Pipeline behaviour under load and faults: caps, retries, cancel, a worker killed mid-job."""

from __future__ import annotations

import json
import time

from tests.support.pipeline import api_client, source_db, wait_job


def _settings(make_settings, **env):
    return make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "RETRY_BACKOFF_MIN_MS": "50",
                          "RETRY_BACKOFF_MAX_MS": "3000", "API_RATE_LIMIT": "100000/minute", **env})


def _insert(settings, docs, collection="hotels"):
    db = source_db(settings)
    db[collection].drop()
    return db[collection].insert_many(docs).inserted_ids


def _all_files(root):
    return [p for p in root.rglob("*") if p.is_file()]


def test_per_host_cap_holds_across_two_worker_processes(make_settings, start_worker, image_server):
    # Two hosts (127.0.0.1 and localhost reach the same server under different names)
    settings = _settings(make_settings, MAX_CONCURRENT_PER_DOMAIN="3", MAX_CONCURRENT_DOWNLOADS="20")
    docs = [{"name": f"h{i}", "images": [image_server.url(f"/image/JPEG/{i}-{k}?delay=0.1", host=h)
                                         for k in range(3) for h in ("127.0.0.1", "localhost")]}
            for i in range(10)]
    _insert(settings, docs)
    start_worker(settings, processes=2, threads=8)
    client = api_client(settings)
    job = wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"])
    assert job["progress"]["images_downloaded"] == 60
    for host in ("127.0.0.1", "localhost"):
        assert 1 < image_server.max_concurrency(host) <= 3


def test_fleet_cap_holds_across_two_worker_processes(make_settings, start_worker, image_server):
    settings = _settings(make_settings, MAX_CONCURRENT_PER_DOMAIN="50", MAX_CONCURRENT_DOWNLOADS="4")
    docs = [{"name": f"h{i}", "images": [image_server.url(f"/image/PNG/{i}-{k}?delay=0.1")
                                         for k in range(4)]} for i in range(10)]
    _insert(settings, docs)
    start_worker(settings, processes=2, threads=8)
    client = api_client(settings)
    job = wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"])
    assert job["progress"]["images_downloaded"] == 40
    assert 1 < image_server.max_concurrency("127.0.0.1") <= 4


def test_retry_after_is_honoured_and_retries_are_bounded(make_settings, start_worker, image_server):
    settings = _settings(make_settings, MAX_RETRIES="2")
    ids = _insert(settings, [{"name": "r", "images": [
        image_server.url("/once/429/a?retry_after=1"),   # 429 + Retry-After: 1, then an image
        image_server.url("/status/503"),                  # always 503: retried, then failed
        image_server.url("/status/404"),                  # not retried
    ]}])
    start_worker(settings)
    client = api_client(settings)
    started = time.monotonic()
    job = wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"])
    assert time.monotonic() - started >= 1.0  # the Retry-After second was waited for
    assert job["progress"]["images_downloaded"] == 1 and job["progress"]["images_failed"] == 2
    assert image_server.hits("/once/429/a") == 2
    assert image_server.hits("/status/503") == 3  # first attempt + MAX_RETRIES
    assert image_server.hits("/status/404") == 1
    meta = json.loads(next(settings.storage_path.rglob("metadata.json")).read_text())
    by_index = {r["index"]: r for r in meta["images"]}
    assert by_index[1]["status"] == "downloaded" and by_index[1]["attempts"] == 2
    assert by_index[2]["error"]["code"] == "http_503" and by_index[2]["attempts"] == 3
    assert by_index[3]["error"]["code"] == "http_404" and by_index[3]["attempts"] == 1
    assert source_db(settings).hotels.find_one({"_id": ids[0]})["images_download"]["status"] == "partial"


def test_cancel_stops_new_downloads_and_job_stays_cancelled(make_settings, start_worker, image_server):
    settings = _settings(make_settings, MAX_CONCURRENT_PER_DOMAIN="2")
    docs = [{"name": f"c{i}", "images": [image_server.url(f"/image/JPEG/{i}-{k}?delay=0.2")
                                         for k in range(2)]} for i in range(40)]
    _insert(settings, docs)
    start_worker(settings, threads=4)
    client = api_client(settings)
    job_id = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    wait_job(client, job_id, until=lambda j: j["progress"]["images_downloaded"] >= 4)
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").json["status"] == "cancelled"
    time.sleep(2.5)  # in-flight downloads finish; the cancel is seen within ~1 s
    seen = image_server.hits()
    time.sleep(3)
    assert image_server.hits() == seen, "new downloads started after the cancel"
    assert seen < 80
    job = client.get(f"/api/v1/jobs/{job_id}").json
    assert job["status"] == "cancelled"


def test_worker_killed_mid_job_another_worker_finishes(make_settings, start_worker, image_server):
    settings = _settings(make_settings, MAX_CONCURRENT_PER_DOMAIN="4")
    docs = [{"name": f"k{i}", "images": [image_server.url(f"/image/JPEG/{i}-{k}?delay=0.15")
                                         for k in range(3)]} for i in range(30)]
    _insert(settings, docs)
    first = start_worker(settings, threads=4, name="first")
    client = api_client(settings)
    job_id = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    wait_job(client, job_id, until=lambda j: j["progress"]["documents_done"] >= 3)
    first.kill()  # SIGKILL the whole worker process group mid-job
    start_worker(settings, threads=8, name="second")
    job = wait_job(client, job_id, timeout_s=120)
    assert job["status"] == "completed"
    progress = dict(job["progress"])
    downloaded, skipped = progress.pop("images_downloaded"), progress.pop("images_skipped")
    assert progress == {"documents_total": 30, "documents_done": 30, "images_total": 90,
                        "images_failed": 0}
    # Every image counted once: fetched by one of the workers, or found on disk by the second
    # (written by the first before it died). The first had finished >= 3 documents (9 images)
    # and progress only moves forward; each download needed at least one request.
    assert downloaded + skipped == 90
    assert 9 <= downloaded <= image_server.hits()
    files = _all_files(settings.storage_path)
    images = [f for f in files if f.parent.name == "original"]
    assert len(images) == 90 and all(f.name.startswith("img_") for f in images)
    assert len([f for f in files if f.name == "metadata.json"]) == 30
    assert len(files) == 120, "no temporary or partial files may remain"
    for meta_file in settings.storage_path.rglob("metadata.json"):
        assert json.loads(meta_file.read_text())["summary"]["failed"] == 0
