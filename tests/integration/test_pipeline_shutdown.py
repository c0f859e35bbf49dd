"""SIGTERM during downloads (contract §10): in-flight downloads finish or their messages are
requeued and done by another worker; a shutdown never records an image as failed."""

from __future__ import annotations

import json
import time

from tests.support.pipeline import api_client, source_db, wait_job


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigterm_with_downloads_in_flight_loses_and_fails_nothing(make_settings, start_worker,
                                                                   image_server):
    # Given 8 documents of 2 slow images each (1.5 s per answer) and one worker downloading
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "RETRY_BACKOFF_MIN_MS": "50",
                              "RETRY_BACKOFF_MAX_MS": "200", "API_RATE_LIMIT": "100000/minute",
                              "MAX_CONCURRENT_PER_DOMAIN": "4"})
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_many([{"name": f"t{i}", "images": [
        image_server.url(f"/image/JPEG/{i}-{k}?delay=1.5") for k in range(2)]} for i in range(8)])
    first = start_worker(settings, threads=2, name="first")
    client = api_client(settings)
    job_id = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    _wait(lambda: len(image_server.requests) >= 3, 30, "downloads in flight")

    # When the worker is sent SIGTERM while those downloads are in flight
    started = time.monotonic()
    code = first.stop()
    assert code == 0 and time.monotonic() - started < 30, first.log.read_text()[-3000:]
    log = first.log.read_text()
    assert "Failed to process message" not in log, log[-3000:]  # nothing raised or retried

    # Then a second worker completes the job with every image downloaded at the first attempt
    start_worker(settings, threads=2, name="second")
    job = wait_job(client, job_id, timeout_s=90)
    assert job["status"] == "completed", job
    assert job["progress"]["images_failed"] == 0 and job["errors"] == []
    assert job["progress"]["images_downloaded"] + job["progress"]["images_skipped"] == 16
    metas = [json.loads(p.read_text()) for p in settings.storage_path.rglob("metadata.json")]
    assert len(metas) == 8
    records = [r for meta in metas for r in meta["images"]]
    assert [(r["status"], r["attempts"]) for r in records] == [("downloaded", 1)] * 16
