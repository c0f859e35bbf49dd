"""The whole pipeline with ``STORAGE_BACKEND=s3`` against a real SeaweedFS (contract §11).

Real worker subprocesses, Redis, nx-27017 and the loopback image server; the bucket is read
back with the test's own client. Every worker's ``STORAGE_PATH`` lies below a regular file, so
any write to the local tree would fail: the bucket must be the only place images go. After
each test the bucket holds exactly the layout (no temporary or marker key, no pending
multipart upload).
"""

from __future__ import annotations

import time

import pytest

from tests.support.pipeline import api_client, source_db, wait_job
from tests.support.s3_layout import (
    assert_only_layout,
    object_versions,
    read_json,
    unwritable_path,
)

pytestmark = pytest.mark.usefixtures("aws_credentials")


def s3_settings(make_settings, tmp_path, server, bucket, **env):
    return make_settings({
        "ALLOW_PRIVATE_NETWORKS": "true", "RETRY_BACKOFF_MIN_MS": "50",
        "RETRY_BACKOFF_MAX_MS": "1000", "API_RATE_LIMIT": "100000/minute",
        "STORAGE_BACKEND": "s3", "S3_BUCKET": bucket, "S3_ENDPOINT_URL": server.endpoint_url,
        "STORAGE_PATH": str(unwritable_path(tmp_path / "local")), **env,
    })


def insert(settings, docs, collection="hotels"):
    db = source_db(settings)
    db[collection].drop()
    db[collection].insert_many(docs)
    return db[collection]


def run_collection(client, body=None, collection="hotels", timeout_s=90):
    job_id = client.post(f"/api/v1/download/collection/serpy_db/{collection}",
                         json=body or {}).json["job_id"]
    return wait_job(client, job_id, timeout_s=timeout_s)


#: The paths of the collection test's images that download.
STORED = ("/image/JPEG/a1", "/image/PNG/a2", "/once/503/a4", "/image/GIF/b1", "/image/BMP/b2")


def hits(server, paths=STORED):
    return sum(server.hits(path) for path in paths)


def images_of(versions):
    return {k: v for k, v in versions.items() if "/original/" in k}


def test_collection_jobs_rerun_force_url_changes_and_rename(
        make_settings, start_worker, image_server, seaweedfs, s3_bucket, tmp_path):
    settings = s3_settings(make_settings, tmp_path, seaweedfs, s3_bucket)
    url = image_server.url
    hotels = insert(settings, [
        {"_id": "a", "name": "Hotel Ritz", "images": [
            url("/image/JPEG/a1"), url("/image/PNG/a2"), url("/status/404"),
            url("/once/503/a4?fmt=WEBP"), url("/html"), url("/truncated.jpg"),
            url("/bomb.png"), url("/redirect-loop")]},
        {"_id": "b", "images": [url("/image/GIF/b1"), url("/image/BMP/b2")]},
    ])
    start_worker(settings, threads=4)
    client = api_client(settings)

    # A collection job: images and metadata.json land in the bucket, errors keep their codes.
    job = run_collection(client)
    assert job["status"] == "completed"
    assert (job["progress"]["images_downloaded"], job["progress"]["images_failed"]) == (5, 5)
    assert sorted(e["code"] for e in job["errors"]) == sorted([
        "http_404", "not_an_image", "corrupt_image", "decompression_bomb",
        "too_many_redirects"])
    keys = assert_only_layout(seaweedfs, s3_bucket)
    assert keys == [
        "serpy_db/hotels/a-hotel-ritz/metadata.json",
        "serpy_db/hotels/a-hotel-ritz/original/img_001.jpg",
        "serpy_db/hotels/a-hotel-ritz/original/img_002.png",
        "serpy_db/hotels/a-hotel-ritz/original/img_004.webp",
        "serpy_db/hotels/b/metadata.json",
        "serpy_db/hotels/b/original/img_001.gif",
        "serpy_db/hotels/b/original/img_002.bmp",
    ]
    head = seaweedfs.client().head_object(Bucket=s3_bucket,
                                          Key="serpy_db/hotels/a-hotel-ritz/original/img_004.webp")
    meta = read_json(seaweedfs, s3_bucket, "serpy_db/hotels/a-hotel-ritz/metadata.json")
    assert head["ContentType"] == "image/webp"
    assert head["Metadata"]["sha256"] == meta["images"][3]["sha256"]
    assert hotels.find_one({"_id": "a"})["images_download"]["path"] == "serpy_db/hotels/a-hotel-ritz"

    # A re-run: no request to the image server, no image uploaded again (same ETag and
    # LastModified, which has a 1 s resolution), every stored image skipped.
    before = object_versions(seaweedfs, s3_bucket)
    image_server.reset()
    time.sleep(1.1)
    job = run_collection(client)
    assert job["progress"]["images_skipped"] == 5
    assert hits(image_server) == 0
    after = object_versions(seaweedfs, s3_bucket)
    assert images_of(after) == images_of(before)
    # Only metadata.json is written again: it records this run (job_id, "skipped").
    assert set(after) == set(before)

    # force: every image fetched and stored again.
    image_server.reset()
    job = run_collection(client, {"force": True})
    assert job["progress"]["images_downloaded"] == 5
    assert hits(image_server) == 6  # /once/503 answers 503 first again

    # A shorter URL list with a changed URL: stale objects go, the changed index is replaced.
    hotels.update_one({"_id": "b"}, {"$set": {"images": [url("/image/PNG/b1-new")]}})
    hotels.update_one({"_id": "a"}, {"$set": {"images": [url("/image/JPEG/a1")]}})
    image_server.reset()
    run_collection(client)
    assert image_server.hits() == 1 and image_server.hits("/image/PNG/b1-new") == 1
    assert assert_only_layout(seaweedfs, s3_bucket) == [
        "serpy_db/hotels/a-hotel-ritz/metadata.json",
        "serpy_db/hotels/a-hotel-ritz/original/img_001.jpg",
        "serpy_db/hotels/b/metadata.json",
        "serpy_db/hotels/b/original/img_001.png",
    ]

    # A new search value moves the folder: the image is kept (skipped, no request).
    hotels.update_one({"_id": "a"}, {"$set": {"name": "Ritz Madrid"}})
    image_server.reset()
    job = run_collection(client)
    assert job["progress"]["images_skipped"] == 2 and image_server.hits() == 0
    assert assert_only_layout(seaweedfs, s3_bucket) == [
        "serpy_db/hotels/a-ritz-madrid/metadata.json",
        "serpy_db/hotels/a-ritz-madrid/original/img_001.jpg",
        "serpy_db/hotels/b/metadata.json",
        "serpy_db/hotels/b/original/img_001.png",
    ]
    assert hotels.find_one({"_id": "a"})["images_download"]["path"] == "serpy_db/hotels/a-ritz-madrid"
    assert not (tmp_path / "local" / "not-a-directory").stat().st_size  # still an empty file


def test_folder_conflict_in_a_bucket(make_settings, start_worker, image_server, seaweedfs,
                                     s3_bucket, tmp_path):
    settings = s3_settings(make_settings, tmp_path, seaweedfs, s3_bucket)
    insert(settings, [
        {"_id": "hotel-ritz", "images": [image_server.url("/image/JPEG/owner")]},
        {"_id": "hotel", "name": "Ritz", "images": [image_server.url("/image/PNG/other")]},
    ])
    start_worker(settings)
    client = api_client(settings)
    first = wait_job(client, client.post(
        "/api/v1/download/document/serpy_db/hotels/hotel-ritz").json["job_id"])
    assert first["progress"]["images_downloaded"] == 1
    before = object_versions(seaweedfs, s3_bucket)

    second = wait_job(client, client.post(
        "/api/v1/download/document/serpy_db/hotels/hotel").json["job_id"])

    assert [e["code"] for e in second["errors"]] == ["folder_conflict"]
    assert image_server.hits("/image/PNG/other") == 0
    assert object_versions(seaweedfs, s3_bucket) == before  # the owner's objects untouched
    assert source_db(settings).hotels.find_one({"_id": "hotel"})["images_download"][
        "status"] == "failed"
    assert_only_layout(seaweedfs, s3_bucket)


def test_a_listener_insert_is_downloaded_into_the_bucket(
        make_settings, start_worker, start_listener, image_server, seaweedfs, s3_bucket,
        tmp_path):
    from tests.support.listener import unique_db, wait_jobs

    database = unique_db()
    settings = s3_settings(make_settings, tmp_path, seaweedfs, s3_bucket,
                           WATCH_NAMESPACES=f"{database}.*")
    places = source_db(settings, database).places
    places.insert_one({"_id": "seed"})  # the collection exists before the listener starts
    start_worker(settings)
    start_listener(settings).wait_leading().wait_scan_done()
    places.insert_one(
        {"_id": "p1", "name": "Plaza", "images": [image_server.url("/image/JPEG/p1")]})

    jobs = wait_jobs(settings, 1)

    assert [j["status"] for j in jobs] == ["completed"]
    assert assert_only_layout(seaweedfs, s3_bucket) == [
        f"{database}/places/p1-plaza/metadata.json",
        f"{database}/places/p1-plaza/original/img_001.jpg",
    ]
