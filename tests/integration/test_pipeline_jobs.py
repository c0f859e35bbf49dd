"""REST-triggered jobs end to end: real worker, Redis, nx-27017 and a loopback image server."""

from __future__ import annotations

import json

from tests.support.pipeline import api_client, source_db, wait_job


def _settings(make_settings, **env):
    return make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "RETRY_BACKOFF_MIN_MS": "50",
                          "RETRY_BACKOFF_MAX_MS": "2000", "API_RATE_LIMIT": "100000/minute", **env})


def test_collection_job_completes_with_exact_counters(make_settings, start_worker, image_server):
    # Given 12 hotels with 3 images each, one of them a 404
    settings = _settings(make_settings)
    db = source_db(settings)
    db.hotels.drop()
    docs = []
    for i in range(12):
        images = [image_server.url(f"/image/JPEG/{i}-a"), image_server.url(f"/image/PNG/{i}-b")]
        images.append(image_server.url("/status/404") if i == 0 else image_server.url(f"/image/WEBP/{i}-c"))
        docs.append({"name": f"Hotel {i}", "images": images, "download_images": True})
    ids = db.hotels.insert_many(docs).inserted_ids
    worker = start_worker(settings)
    client = api_client(settings)

    # When the collection is triggered
    response = client.post("/api/v1/download/collection/serpy_db/hotels", json={})
    assert response.status_code == 202
    job_id = response.json["job_id"]
    assert response.headers["Location"] == f"/api/v1/jobs/{job_id}"

    # Then the job completes with counters that add up
    job = wait_job(client, job_id)
    assert job["status"] == "completed", job
    assert job["progress"] == {"documents_total": 12, "documents_done": 12, "images_total": 36,
                               "images_downloaded": 35, "images_skipped": 0, "images_failed": 1}
    missing = image_server.url("/status/404")
    assert job["errors"] == [{"document_id": str(ids[0]), "url": missing, "code": "http_404",
                              "message": f"HTTP 404 Not Found from {missing}"}]
    assert image_server.hits("/status/404") == 1  # 404 is not retried
    # metadata.json and files in the contract layout
    folder = settings.storage_path / "serpy_db" / "hotels" / f"{ids[3]}-hotel-3"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["summary"] == {
        "total": 3, "downloaded": 3, "failed": 0, "skipped": 0, "present": 3, "gone": 0,
        "placeholders": 0, "duplicates": 0}
    assert sorted(p.name for p in (folder / "original").iterdir()) == ["img_001.jpg", "img_002.png", "img_003.webp"]
    assert (folder / "processed").is_dir()
    # write-back on the source documents
    doc0 = db.hotels.find_one({"_id": ids[0]})
    assert doc0["download_images"] == False  # noqa: E712 (nx-27017 stores booleans as 0/1)
    assert doc0["images_download"]["status"] == "partial"
    assert doc0["images_download"]["job_id"] == job_id
    assert doc0["images_download"]["downloaded"] == 2 and doc0["images_download"]["failed"] == 1
    assert doc0["images_download"]["path"] == f"serpy_db/hotels/{ids[0]}-hotel-0"
    assert db.hotels.find_one({"_id": ids[5]})["images_download"]["status"] == "completed"

    # Lines of work carry the job id
    work_lines = [line for line in worker.log.read_text().splitlines() if "workers.pipeline" in line]
    assert work_lines and all(f"job_id={job_id}" in line for line in work_lines)

    # And a second run skips everything without a request
    before = len(image_server.requests)
    job2 = wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"])
    assert job2["progress"]["images_skipped"] == 35
    assert job2["progress"]["images_failed"] == 1
    assert len(image_server.requests) - before == 1  # only the failed image is tried again
    # and metadata.json and the write-back say the same thing about the re-run: 3 images
    # present, none fetched this time, all 3 skipped
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["summary"] == {
        "total": 3, "downloaded": 0, "failed": 0, "skipped": 3, "present": 3, "gone": 0,
        "placeholders": 0, "duplicates": 0}
    written = db.hotels.find_one({"_id": ids[3]})["images_download"]
    assert (written["downloaded"], written["fetched"], written["skipped"], written["failed"]) == (
        meta["summary"]["present"], meta["summary"]["downloaded"], meta["summary"]["skipped"],
        meta["summary"]["failed"])
