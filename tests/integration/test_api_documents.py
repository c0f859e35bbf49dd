"""Document endpoints (contract §13): a document's metadata.json and the files it lists.

A real job (worker subprocess, loopback image server, nx-27017, Redis) stores the files;
the api serves them from the storage interface, on the filesystem and on SeaweedFS (S3).
"""

from __future__ import annotations

import hashlib
import json

import pytest
from bson import ObjectId

from images_service.storage.factory import create_storage
from tests.support.pipeline import api_client, source_db, wait_job

BASE = "/api/v1/documents/serpy_db/hotels"


def _settings(make_settings, **env):
    return make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                          **env})


@pytest.fixture
def downloaded(make_settings, start_worker, image_server):
    """A hotel downloaded by a real job: a BMP larger than a stream chunk, a PNG whose
    server claims text/html, and a 404; plus a hotel never downloaded."""
    settings = _settings(make_settings)
    db = source_db(settings)
    db.hotels.drop()
    oid = db.hotels.insert_one({"name": "Hotel Ritz", "images": [
        image_server.url("/image/BMP/a?w=200&h=200"),
        image_server.url("/image/PNG/b?ct=text/html"),
        image_server.url("/status/404"),
    ]}).inserted_id
    db.hotels.insert_one({"_id": 42, "name": "Never downloaded", "images": []})
    start_worker(settings)
    client = api_client(settings)
    job_id = client.post(f"/api/v1/download/document/serpy_db/hotels/{oid}").json["job_id"]
    assert wait_job(client, job_id)["status"] == "completed"
    return settings, client, oid


def test_metadata_and_files_are_served_as_stored(downloaded):
    settings, client, oid = downloaded
    folder = settings.storage_path / "serpy_db" / "hotels" / f"{oid}-hotel-ritz"

    # metadata.json, byte for byte
    response = client.get(f"{BASE}/{oid}")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.data == (folder / "metadata.json").read_bytes()
    records = {r["index"]: r for r in response.json["images"]}
    assert [records[i]["status"] for i in (1, 2, 3)] == ["downloaded", "downloaded", "failed"]

    # the BMP, streamed in chunks, with its ETag and caching
    bmp = records[1]
    response = client.get(f"{BASE}/{oid}/files/original/img_001.bmp", buffered=False)
    assert response.status_code == 200 and response.is_streamed, (records, response.data)
    chunks = list(response.response)
    response.close()
    body = b"".join(chunks)
    assert len(chunks) > 1 and len(body) == bmp["bytes"] > 64 * 1024
    assert hashlib.sha256(body).hexdigest() == bmp["sha256"]
    assert body == (folder / "original" / "img_001.bmp").read_bytes()
    assert response.headers["Content-Type"] == "image/bmp"
    assert response.headers["ETag"] == f'"{bmp["sha256"]}"'
    assert response.headers["Cache-Control"] == "private, max-age=3600"
    assert response.headers["X-Content-Type-Options"] == "nosniff"

    # the PNG is served as what Pillow found, not as what its server claimed
    png = client.get(f"{BASE}/{oid}/files/original/img_002.png")
    assert records[2]["content_type"] == "text/html"
    assert (png.status_code, png.headers["Content-Type"]) == (200, "image/png")
    assert png.data == (folder / "original" / "img_002.png").read_bytes()

    # 304 on a matching If-None-Match (also weak, in a list, or *), never a body
    etag = f'"{bmp["sha256"]}"'
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = client.get(f"{BASE}/{oid}/files/original/img_001.bmp",
                              headers={"If-None-Match": header})
        assert (response.status_code, response.data) == (304, b""), header
        assert response.headers["ETag"] == etag
        assert response.headers["Cache-Control"] == "private, max-age=3600"
    response = client.get(f"{BASE}/{oid}/files/original/img_001.bmp",
                          headers={"If-None-Match": '"stale"'})
    assert response.status_code == 200 and response.data == body


def _error(response) -> tuple[int, str]:
    return response.status_code, response.json["error"]["code"]


def test_anything_metadata_does_not_list_is_file_not_found(downloaded):
    settings, client, oid = downloaded
    folder = settings.storage_path / "serpy_db" / "hotels" / f"{oid}-hotel-ritz"
    # Given a file present in the folder but not listed, and a secret outside the tree
    (folder / "original" / "img_009.jpg").write_bytes(b"not listed")
    (settings.storage_path / "secret.txt").write_text("secret")

    for file in [
        "metadata.json",                      # exists, but is not an image file
        "original/img_009.jpg",               # exists in storage, not listed
        "original/img_003.jpg",               # the failed image: no file
        "original/img_001.jpg",               # wrong extension
        "original/../metadata.json",
        "../../../secret.txt",
        "%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "original/%2e%2e/metadata.json",
        "/etc/passwd",
        "//etc/passwd",
        str(folder / "original" / "img_001.bmp"),  # the absolute path of a listed file
        "original/img_001.bmp/",
        "",
    ]:
        response = client.get(f"{BASE}/{oid}/files/{file}")
        assert _error(response) == (404, "file_not_found"), file

    # Not downloaded, unknown and bad ids
    assert _error(client.get(f"{BASE}/42")) == (404, "document_not_found")
    assert _error(client.get(f"{BASE}/42/files/original/img_001.jpg")) == (404, "document_not_found")
    assert _error(client.get(f"{BASE}/{ObjectId()}")) == (404, "document_not_found")
    for path in [f"/api/v1/documents/serpy_db/hot$els/{oid}", f"/api/v1/documents/a%20b/hotels/{oid}",
                 f"{BASE}/..", f"{BASE}/%2e%2e/files/x", f"{BASE}/.hidden"]:
        assert _error(client.get(path)) == (400, "invalid_request"), path
    # and the key is needed
    assert _error(client.get(f"{BASE}/{oid}", headers={"X-API-Key": "wrong-key-0000"})) == (
        401, "unauthorized")


def _store(storage, folder: str, document_id: str, files: dict[str, bytes]) -> dict:
    """Write a document's files and metadata.json through the storage interface, as the
    pipeline does (what a download would have recorded)."""
    images = []
    for index, (name, data) in enumerate(files.items(), start=1):
        storage.put_bytes(f"{folder}/{name}", data, content_type="image/png")
        images.append({"index": index, "url": f"https://example.com/{index}.png",
                       "status": "downloaded", "file": name, "format": "PNG",
                       "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    meta = {"schema_version": 1, "database": "serpy_db", "collection": "hotels",
            "document_id": document_id, "images": images}
    storage.put_bytes(f"{folder}/metadata.json", json.dumps(meta).encode())
    return meta


def test_the_folder_comes_from_the_write_back_path_and_must_name_the_document(make_settings):
    settings = _settings(make_settings)
    db = source_db(settings)
    db.hotels.drop()
    storage = create_storage(settings)
    # Given a hotel renamed since its download: its files are still in the folder that the
    # write-back path names, not in the folder its new name would give
    db.hotels.insert_one({"_id": "h1", "name": "New Name",
                          "images_download": {"path": "serpy_db/hotels/h1-old-name"}})
    _store(storage, "serpy_db/hotels/h1-old-name", "h1", {"original/img_001.png": b"old"})
    # and a hotel "h2" whose computed folder holds the metadata of another document
    db.hotels.insert_one({"_id": "h2", "name": "Twin"})
    _store(storage, "serpy_db/hotels/h2-twin", "someone-else", {"original/img_001.png": b"x"})
    client = api_client(settings)

    assert client.get(f"{BASE}/h1").json["document_id"] == "h1"
    assert client.get(f"{BASE}/h1/files/original/img_001.png").data == b"old"
    assert _error(client.get(f"{BASE}/h2")) == (404, "document_not_found")
    assert _error(client.get(f"{BASE}/h2/files/original/img_001.png")) == (404, "document_not_found")

    # A write-back path that names another document's folder is not followed
    db.hotels.update_one({"_id": "h1"}, {"$set": {"images_download": {"path": "serpy_db/hotels/h2-twin"}}})
    assert _error(client.get(f"{BASE}/h1")) == (404, "document_not_found")


def test_files_are_served_from_an_s3_bucket(make_settings, seaweedfs, s3_bucket, aws_credentials):
    # Given a document's files and metadata.json in a bucket (written through the storage
    # interface: the pipeline writes through the same one)
    settings = _settings(make_settings, STORAGE_BACKEND="s3", S3_BUCKET=s3_bucket,
                         S3_ENDPOINT_URL=seaweedfs.endpoint_url, S3_PREFIX="tree/")
    db = source_db(settings)
    db.hotels.drop()
    oid = db.hotels.insert_one({"name": "Sea View"}).inserted_id
    data = bytes(range(256)) * 400  # 100 KiB: more than one chunk
    with create_storage(settings) as storage:
        meta = _store(storage, f"serpy_db/hotels/{oid}-sea-view", str(oid),
                      {"original/img_001.png": data})
    client = api_client(settings)

    # Then the api serves them with the same headers as from the filesystem
    assert client.get(f"{BASE}/{oid}").json == meta
    response = client.get(f"{BASE}/{oid}/files/original/img_001.png")
    assert (response.status_code, response.data, response.headers["Content-Type"]) == (
        200, data, "image/png")
    sha = hashlib.sha256(data).hexdigest()
    assert response.headers["ETag"] == f'"{sha}"'
    assert client.get(f"{BASE}/{oid}/files/original/img_001.png",
                      headers={"If-None-Match": f'"{sha}"'}).status_code == 304
    assert _error(client.get(f"{BASE}/{oid}/files/original/img_002.png")) == (404, "file_not_found")
    assert seaweedfs.all_keys(s3_bucket) == [f"tree/serpy_db/hotels/{oid}-sea-view/metadata.json",
                                             f"tree/serpy_db/hotels/{oid}-sea-view/original/img_001.png"]
