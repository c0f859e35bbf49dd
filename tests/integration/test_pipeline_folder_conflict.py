"""Two documents whose folder names coincide never share a folder (contract §10).

``_id`` ``"hotel-ritz"`` without a name and ``_id`` ``"hotel"`` named "Ritz" both map to
``serpy_db/hotels/hotel-ritz``. The folder belongs to the document its metadata.json names;
the later document's images fail with ``folder_conflict`` (not retried), its write-back says
``failed``, and the first document's files and metadata stay untouched.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from images_service.download import engine
from images_service.errors import FolderConflict
from tests.support.pipeline import api_client, source_db, wait_job


def _settings(make_settings):
    return make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "RETRY_BACKOFF_MIN_MS": "50",
                          "RETRY_BACKOFF_MAX_MS": "2000", "API_RATE_LIMIT": "100000/minute"})


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_later_document_with_the_same_folder_name_fails_with_folder_conflict(
        make_settings, start_worker, image_server):
    # Given "hotel-ritz" (no name) downloaded into serpy_db/hotels/hotel-ritz
    settings = _settings(make_settings)
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_many([
        {"_id": "hotel-ritz", "images": [image_server.url("/image/JPEG/first-1"),
                                         image_server.url("/image/PNG/first-2")]},
        {"_id": "hotel", "name": "Ritz", "images": [image_server.url("/image/WEBP/second-1")]},
    ])
    start_worker(settings)
    client = api_client(settings)
    first = wait_job(client, client.post(
        "/api/v1/download/document/serpy_db/hotels/hotel-ritz").json["job_id"])
    assert first["status"] == "completed" and first["progress"]["images_downloaded"] == 2
    folder = settings.storage_path / "serpy_db" / "hotels" / "hotel-ritz"
    before = _snapshot(folder)

    # When "hotel" named "Ritz" (same folder name) is downloaded
    second = wait_job(client, client.post(
        "/api/v1/download/document/serpy_db/hotels/hotel").json["job_id"])

    # Then its image fails with folder_conflict, once, and its write-back says failed
    assert second["status"] == "completed"
    assert second["progress"]["images_failed"] == 1
    assert second["progress"]["images_downloaded"] == 0
    assert [e["code"] for e in second["errors"]] == ["folder_conflict"]
    assert image_server.hits("/image/WEBP/second-1") == 0  # nothing fetched, nothing retried
    status = db.hotels.find_one({"_id": "hotel"})["images_download"]
    assert status["status"] == "failed" and status["failed"] == 1 and status["downloaded"] == 0
    # ... and the first document's files and metadata are untouched
    assert _snapshot(folder) == before
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["document_id"] == "hotel-ritz" and meta["job_id"] == first["job_id"]


def test_in_one_job_exactly_one_of_two_colliding_documents_owns_the_folder(
        make_settings, start_worker, image_server):
    settings = _settings(make_settings)
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_many([
        {"_id": "hotel-ritz", "images": [image_server.url(f"/image/JPEG/a-{k}?delay=0.05")
                                         for k in range(3)]},
        {"_id": "hotel", "name": "Ritz", "images": [image_server.url(f"/image/PNG/b-{k}?delay=0.05")
                                                    for k in range(3)]},
    ])
    start_worker(settings, threads=8)
    client = api_client(settings)
    job = wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"])

    assert job["status"] == "completed"
    assert job["progress"]["images_downloaded"] == 3 and job["progress"]["images_failed"] == 3
    folder = settings.storage_path / "serpy_db" / "hotels" / "hotel-ritz"
    meta = json.loads((folder / "metadata.json").read_text())
    owner = meta["document_id"]
    loser = "hotel" if owner == "hotel-ritz" else "hotel-ritz"
    assert {e["document_id"] for e in job["errors"]} == {loser}
    assert {e["code"] for e in job["errors"]} == {"folder_conflict"}
    # The owner's files are its own, intact (every recorded sha256 matches its file)
    # (each document's three images are one generated picture: two near-duplicates, §18)
    assert meta["summary"] == {
        "total": 3, "downloaded": 3, "failed": 0, "skipped": 0, "present": 3, "gone": 0,
        "placeholders": 0, "duplicates": 2}
    owner_prefix = "/image/JPEG/a-" if owner == "hotel-ritz" else "/image/PNG/b-"
    for record in meta["images"]:
        assert record["url"].split("?")[0].endswith(owner_prefix + str(record["index"] - 1))
        data = (folder / record["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert sorted(p.name for p in (folder / "original").iterdir()) == [
        r["file"].split("/")[1] for r in meta["images"]]
    assert db.hotels.find_one({"_id": loser})["images_download"]["status"] == "failed"
    assert db.hotels.find_one({"_id": owner})["images_download"]["status"] == "completed"


def test_engine_refuses_a_folder_owned_by_another_document(settings, fetcher, image_server):
    owner = {"_id": "hotel-ritz", "images": [image_server.url("/image/JPEG/x")]}
    meta = engine.download_document(owner, "serpy_db", "hotels", settings, job_id="j1",
                                    fetcher=fetcher)
    folder = settings.storage_path / "serpy_db" / "hotels" / "hotel-ritz"
    before = _snapshot(folder)
    other = {"_id": "hotel", "name": "Ritz", "images": [image_server.url("/image/PNG/y")]}
    with pytest.raises(FolderConflict) as caught:
        engine.download_document(other, "serpy_db", "hotels", settings, job_id="j2",
                                 fetcher=fetcher)
    assert caught.value.code == "folder_conflict" and not caught.value.retryable
    assert _snapshot(folder) == before and meta["document_id"] == "hotel-ritz"
