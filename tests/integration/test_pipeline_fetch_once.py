"""Contract §16, fetched once across documents: a URL named by many documents costs one
request; the others are copies of the stored one (server-side), recorded ``copied_from``."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.support.pipeline import api_client, source_db, wait_job


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_a_url_named_by_five_documents_is_requested_once(make_settings, start_worker,
                                                         image_server, backend, request):
    env = {"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
           "PROCESSED_VARIANTS": "thumb:32x32:fit:webp:80"}
    if backend == "s3":
        server = request.getfixturevalue("seaweedfs")
        env.update(STORAGE_BACKEND="s3", S3_BUCKET=request.getfixturevalue("s3_bucket"),
                   S3_ENDPOINT_URL=server.endpoint_url)
        request.getfixturevalue("aws_credentials")
    settings = make_settings(env)
    shared = image_server.url("/image/JPEG/shared-logo?delay=0.3")
    docs = [{"_id": f"d{n}", "name": f"Hotel {n}",
             "images": [image_server.url(f"/image/PNG/own-{n}"), shared]} for n in range(5)]
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_many(docs)
    # Two processes, several threads: the five documents are downloaded at the same time.
    start_worker(settings, processes=2, threads=4)
    client = api_client(settings)

    job = wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels")
                   .json["job_id"])

    assert job["status"] == "completed" and job["progress"]["images_failed"] == 0
    assert image_server.hits("/image/JPEG/shared-logo") == 1
    records = [_metadata(settings, backend, f"serpy_db/hotels/d{n}-hotel-{n}")["images"][1]
               for n in range(5)]
    assert {r["status"] for r in records} == {"downloaded"}
    assert len({r["sha256"] for r in records}) == 1
    copied = [r for r in records if "copied_from" in r]
    assert len(copied) == 4
    (original,) = [r for r in records if "copied_from" not in r]
    assert {r["copied_from"] for r in copied} <= {
        f"serpy_db/hotels/d{n}-hotel-{n}/original/img_002.jpg" for n in range(5)}
    assert all(r["processed"]["thumb"]["file"] == "processed/thumb/img_002.webp"
               for r in records)
    assert original["attempts"] == 1 and all(r["attempts"] == 0 for r in copied)
    for n in range(5):  # every copy is the bytes recorded
        data = _file(settings, backend, f"serpy_db/hotels/d{n}-hotel-{n}/original/img_002.jpg")
        assert hashlib.sha256(data).hexdigest() == records[n]["sha256"]


def _metadata(settings, backend, folder):
    return json.loads(_file(settings, backend, f"{folder}/metadata.json"))


def _file(settings, backend, key):
    if backend == "filesystem":
        return (settings.storage_path / key).read_bytes()
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}))
    return client.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()
