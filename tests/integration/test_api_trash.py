"""The trash API (contract §15) on both storage backends: list, restore (409 into an occupied
folder), purge (nothing left, trash included, also for a document deleted from MongoDB).

Real api app (test client), nx-27017, Redis, the loopback image server, and the filesystem or
a real SeaweedFS bucket. Documents are downloaded by the engine and trashed as the trash actor
does (images_service/storage/trash.py); the listener's part is tested in
test_listener_deletes.py.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime

import pytest

from images_service.dev.embedded import free_port
from images_service.download import engine
from images_service.download.url_index import UrlIndex
from images_service.fetching.fetcher import Fetcher
from images_service.storage import trash
from images_service.storage.filesystem import FilesystemStorage
from tests.integration.test_metrics import scrape, value
from tests.support.pipeline import KEY, source_db
from tests.support.processes import kill_group, service_command, spawn, wait_http_json
from tests.support.trash import meta as _meta

TRASH = "/api/v1/trash/serpy_db/hotels"
DOCS = "/api/v1/documents/serpy_db/hotels"


def _error(response) -> tuple[int, str]:
    return response.status_code, response.json["error"]["code"]


def _indexed(urls: UrlIndex, folder: str) -> int:
    return urls.collection.count_documents({"folder": folder})


def test_the_trash_lists_and_restores_a_deleted_documents_folder(trash_stack):
    settings, client, storage, urls = trash_stack
    folder = "serpy_db/hotels/h1-hotel-ritz"
    files = sorted(storage.list(folder))
    assert len(files) == 5  # two originals, two thumbnails, metadata.json
    assert client.get(TRASH).json == {"items": []}

    # Given h1 deleted (its folder trashed, as the trash actor does: the index forgets it)
    source_db(settings).hotels.delete_one({"_id": "h1"})
    trash.trash_folder(storage, folder, now=datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    urls.forget_folders([folder])

    # Then the trash lists it
    response = client.get(TRASH)
    assert response.status_code == 200
    assert response.json == {"items": [{"folder": "h1-hotel-ritz", "document_id": "h1",
                                        "deleted_at": "2026-12-01T10:00:00Z", "images": 2}]}

    # When it is restored: back in the tree, files unchanged, no deleted_at, indexed again
    response = client.post(f"{TRASH}/h1-hotel-ritz/restore")
    assert (response.status_code, response.json) == (200, {"restored": "h1-hotel-ritz"})
    assert sorted(storage.list(folder)) == files
    assert "deleted_at" not in _meta(storage, folder)
    assert storage.trash().list(folder) == []
    assert client.get(TRASH).json == {"items": []}
    assert _indexed(urls, folder) == 2
    assert client.get(f"{DOCS}/h1").status_code == 404  # the api reads documents from MongoDB

    # And a second restore finds nothing in the trash
    assert _error(client.post(f"{TRASH}/h1-hotel-ritz/restore")) == (404, "not_in_trash")


def test_restore_into_an_occupied_folder_is_409_and_changes_nothing(trash_stack):
    settings, client, storage, _ = trash_stack
    folder = "serpy_db/hotels/h2-sea-view"
    trash.trash_folder(storage, folder)
    trashed = sorted(storage.trash().list(folder))
    # Given the folder written again since (the document re-inserted and downloaded)
    storage.put_bytes(f"{folder}/metadata.json",
                      json.dumps({"document_id": "h2", "images": []}).encode())

    assert _error(client.post(f"{TRASH}/h2-sea-view/restore")) == (409, "folder_conflict")

    assert storage.list(folder) == [f"{folder}/metadata.json"]
    assert sorted(storage.trash().list(folder)) == trashed
    assert [item["folder"] for item in client.get(TRASH).json["items"]] == ["h2-sea-view"]


def test_purge_leaves_nothing_of_the_document_trash_included(trash_stack):
    settings, client, storage, urls = trash_stack
    folder = "serpy_db/hotels/h1-hotel-ritz"
    # Given h1 deleted (trashed), re-inserted and downloaded again: a copy in each place
    trash.trash_folder(storage, folder)
    with Fetcher(settings) as fetcher:
        doc = {"_id": "h1", "name": "Hotel Ritz", "images": [_meta(storage.trash(), folder)[
            "images"][0]["url"]]}
        engine.download_document(doc, "serpy_db", "hotels", settings, job_id="j2",
                                 storage=storage, fetcher=fetcher)
    urls.record(folder, _meta(storage, folder)["images"])
    expected = len(storage.list(folder)) + len(storage.trash().list(folder))
    others = sorted(storage.list("serpy_db/hotels/h2-sea-view"))

    response = client.delete(f"{DOCS}/h1/images")

    assert (response.status_code, response.json) == (200, {"removed": expected})
    assert storage.list(folder) == [] and storage.trash().list("") == []
    assert _indexed(urls, folder) == 0
    # Only h1 went: h2's folder and index entries stay
    assert sorted(storage.list("")) == others
    assert _indexed(urls, "serpy_db/hotels/h2-sea-view") == 2
    assert _error(client.delete(f"{DOCS}/h1/images")) == (404, "document_not_found")


def test_purge_of_a_document_already_deleted_from_mongodb(trash_stack):
    settings, client, storage, _ = trash_stack
    folder = "serpy_db/hotels/h2-sea-view"
    source_db(settings).hotels.delete_one({"_id": "h2"})
    trash.trash_folder(storage, folder)
    trashed = len(storage.trash().list(folder))

    response = client.delete(f"{DOCS}/h2/images")

    assert (response.status_code, response.json) == (200, {"removed": trashed})
    assert storage.trash().list("") == []
    assert client.get(TRASH).json == {"items": []}
    # a document that never had images (nor exists) is 404
    assert _error(client.delete(f"{DOCS}/h9/images")) == (404, "document_not_found")


@pytest.mark.parametrize("any_storage_env", ["filesystem"], indirect=True)
@pytest.mark.parametrize("method, path", [
    ("get", "/api/v1/trash/bad$db/hotels"),
    ("get", "/api/v1/trash/serpy_db/.hidden"),
    ("post", "/api/v1/trash/serpy_db/hotels/.trash/restore"),
    ("post", "/api/v1/trash/serpy_db/hotels/%20h1/restore"),
    ("post", "/api/v1/trash/bad$db/hotels/h1/restore"),
    ("delete", "/api/v1/documents/serpy_db/hotels/.h1/images"),
    ("delete", "/api/v1/documents/serpy_db/bad%00coll/h1/images"),
])
def test_bad_names_are_400_before_any_lookup(trash_stack, method, path):
    _, client, storage, _ = trash_stack
    before = sorted(storage.list(""))
    response = getattr(client, method)(path)
    assert _error(response) == (400, "invalid_request"), path
    assert sorted(storage.list("")) == before


@pytest.mark.parametrize("any_storage_env", ["filesystem"], indirect=True)
def test_the_trash_endpoints_need_the_api_key(trash_stack):
    _, client, storage, _ = trash_stack
    for method, path in (("get", TRASH), ("post", f"{TRASH}/h1-hotel-ritz/restore"),
                         ("delete", f"{DOCS}/h1/images")):
        response = getattr(client, method)(path, headers={"X-API-Key": "wrong"})
        assert _error(response) == (401, "unauthorized"), path
    assert len(storage.list("serpy_db/hotels/h1-hotel-ritz")) == 5


def test_restore_and_purge_are_counted_by_the_api_under_gunicorn(mongo_uri, redis_url, tmp_path):
    # The api's own processes count the actions, exported from gunicorn's multiprocess files
    storage = FilesystemStorage(tmp_path / "images")
    for name in ("h1", "h2"):
        storage.put_bytes(f"serpy_db/hotels/{name}/metadata.json",
                          json.dumps({"document_id": name, "images": []}).encode())
        trash.trash_folder(storage, f"serpy_db/hotels/{name}")
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    env = {"MONGODB_URI": mongo_uri, "REDIS_URL": redis_url, "API_KEY": KEY,
           "STORAGE_PATH": str(tmp_path / "images"), "API_WORKERS": "2"}
    proc = spawn(service_command("api", "--host", "127.0.0.1", "--port", str(port)), env,
                 tmp_path, tmp_path / "api.log")
    try:
        wait_http_json(f"{base}/health", proc=proc)
        assert _call("POST", f"{base}/trash/serpy_db/hotels/h1/restore") == 200
        assert _call("DELETE", f"{base}/documents/serpy_db/hotels/h2/images") == 200
        families = scrape(f"{base}/metrics")
        assert value(families, "images_trash_total", action="restored") == 1
        assert value(families, "images_trash_total", action="purged") == 1
    finally:
        kill_group(proc)


def _call(method: str, url: str) -> int:
    request = urllib.request.Request(url, method=method, headers={"X-API-Key": KEY})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status
