"""Deletes follow their documents (contract §15): real listener and worker, nx-27017, Redis,
the loopback image server, and the filesystem or a real SeaweedFS bucket."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import redis
from bson import json_util
from pymongo import MongoClient

from images_service.download.url_index import UrlIndex
from images_service.storage.factory import create_storage
from tests.support.listener import (
    image_doc,
    jobs_of,
    jobs_per_document,
    listener_settings,
    unique_db,
    wait_jobs,
    wait_until,
)
from workers.trash import trash_document

#: Contract §15: the folder is in the trash within 60 s of the delete.
TRASH_WITHIN_S = 60



def _coll(settings, database: str):
    return MongoClient(settings.mongodb_uri, tz_aware=True)[database].hotels


def _meta(store, folder: str) -> dict | None:
    raw = store.read_bytes(f"{folder}/metadata.json")
    return json.loads(raw) if raw is not None else None


def _worker_samples(worker, name: str) -> dict[str, float]:
    """The worker's samples of metric ``name`` (labels -> value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics",
                                timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key.startswith(name + "{"):
            samples[key[len(name):]] = float(value)
    return samples


def test_a_deleted_documents_folder_goes_to_the_trash_and_a_re_insert_is_a_new_document(
        make_settings, start_worker, start_listener, image_server, any_storage_env):
    database = unique_db("del")
    settings = listener_settings(make_settings, database, **any_storage_env)
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    storage = create_storage(settings)
    trash = storage.trash()
    start_worker(settings)
    listener = start_listener(settings).wait_leading().wait_scan_done()

    # Given two downloaded documents (an ObjectId and an int _id: nx-27017 names the latter
    # "7" in its delete event) and one that never had images
    first = {**image_doc(image_server, "ritz", 2), "name": "Hotel Ritz"}
    a = coll.insert_one(first).inserted_id
    coll.insert_one({"_id": 7, **image_doc(image_server, "seven", 1), "name": "Seven"})
    never = coll.insert_one({"name": "No images"}).inserted_id
    wait_jobs(settings, 2)
    folder_a, folder_7 = f"{database}/hotels/{a}-hotel-ritz", f"{database}/hotels/7-seven"
    for doc_id in (a, 7):
        wait_until(lambda d=doc_id: coll.find_one({"_id": d}).get("images_download"), 10,
                   "write-back")
    files_a = sorted(k[len(folder_a):] for k in storage.list(folder_a))

    # When the three are deleted
    deleted_at = datetime.now(UTC).replace(microsecond=0)
    for doc_id in (a, 7, never):
        coll.delete_one({"_id": doc_id})

    # Then both folders are in the trash within 60 s, files unchanged, with deleted_at
    for folder in (folder_a, folder_7):
        # (deleted_at is stamped once the whole folder has moved)
        wait_until(lambda f=folder: (_meta(trash, f) or {}).get("deleted_at"), TRASH_WITHIN_S,
                   f"{folder} in the trash")
        assert storage.list(folder) == []
    assert sorted(k[len(folder_a):] for k in trash.list(folder_a)) == files_a
    assert len([f for f in files_a if f.startswith("/original/")]) == 2
    stamp = datetime.fromisoformat(_meta(trash, folder_a)["deleted_at"].replace("Z", "+00:00"))
    assert deleted_at - timedelta(seconds=1) <= stamp <= datetime.now(UTC)
    # and the never-downloaded document left nothing anywhere
    assert [k for k in trash.list(f"{database}/hotels") if str(never) in k] == []
    assert listener.metrics()['images_listener_events_total{operation="delete"}'] == 3

    # When the first document is inserted again with the same _id
    coll.insert_one({"_id": a, **first})

    # Then it gets a job of its own (its trashed copy stays in the trash)
    jobs = wait_jobs(settings, 3)
    assert jobs_per_document(jobs) == {str(a): 2, "7": 1}
    wait_until(lambda: _meta(storage, folder_a), 30, "downloaded again")
    assert _meta(trash, folder_a)["deleted_at"]
    assert len([k for k in storage.list(folder_a) if "/original/" in k]) == 2
    assert len([k for k in trash.list(folder_a) if "/original/" in k]) == 2


def test_with_retention_0_the_trashed_folder_is_removed_at_once(
        make_settings, start_worker, start_listener, image_server):
    database = unique_db("del")
    settings = listener_settings(make_settings, database, TRASH_RETENTION_DAYS="0")
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    storage = create_storage(settings)
    worker = start_worker(settings)
    start_listener(settings).wait_leading().wait_scan_done()
    doc_id = coll.insert_one(image_doc(image_server, "Gone", 2)).inserted_id
    wait_jobs(settings, 1)
    folder = f"{database}/hotels/{doc_id}-gone"
    wait_until(lambda: _meta(storage, folder) and
               coll.find_one({"_id": doc_id}).get("images_download"), 10, "the download")

    coll.delete_one({"_id": doc_id})

    expected = {'{action="trashed"}': 1.0, '{action="expired"}': 1.0}
    wait_until(lambda: _worker_samples(worker, "images_trash_total") == expected,
               TRASH_WITHIN_S, "trashed and expired")
    assert storage.list(folder) == [] and storage.trash().list(folder) == []


def test_without_watch_deletes_the_folder_stays(make_settings, start_worker, start_listener,
                                                image_server):
    database = unique_db("del")
    settings = listener_settings(make_settings, database, WATCH_DELETES="false")
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    start_worker(settings)
    start_listener(settings).wait_leading().wait_scan_done()
    doc_id = coll.insert_one(image_doc(image_server, "Kept", 1)).inserted_id
    wait_jobs(settings, 1)
    folder = settings.storage_path / database / "hotels" / f"{doc_id}-kept"
    wait_until(lambda: (folder / "metadata.json").is_file(), 10, "the download")
    coll.delete_one({"_id": doc_id})
    # (the sentinel's job proves the delete event was handled)
    sentinel = coll.insert_one(image_doc(image_server, "sentinel")).inserted_id
    wait_until(lambda: any(j["document_id"] == str(sentinel) for j in jobs_of(settings)), 30,
               "the sentinel's job")
    wait_jobs(settings, 2)
    assert (folder / "metadata.json").is_file()
    assert not (settings.storage_path / ".trash").exists()


def test_trashing_is_idempotent_and_spares_a_document_that_exists_again(
        make_settings, image_server, tmp_path):
    """The worker's step alone (a replayed event, a redelivered message), on real servers."""
    from images_service.download import engine
    from images_service.fetching.fetcher import Fetcher

    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true"})
    storage = create_storage(settings)
    client = MongoClient(settings.mongodb_uri)
    coll = client["trash_db"][f"c_{settings.jobs_database}"]
    ctx = SimpleNamespace(settings=settings, mongo=client, storage=storage,
                          redis=redis.Redis.from_url(settings.redis_url),
                          urls=UrlIndex(client, settings.jobs_database))
    docs = [{"_id": 5, "name": "Five", "images": [image_server.url("/image/PNG/five")]},
            {"_id": "x", "name": "Ex", "images": [image_server.url("/image/PNG/ex")]}]
    with Fetcher(settings) as fetcher:
        for doc in docs:
            engine.download_document(doc, "trash_db", coll.name, settings, job_id="j",
                                     storage=storage, fetcher=fetcher)
    coll.insert_one(docs[1])  # "x" exists (again): its folder is its own
    five, ex = f"trash_db/{coll.name}/5-five", f"trash_db/{coll.name}/x-ex"

    # A typed delete of 5, twice (a redelivered message): trashed once, then nothing to do
    assert trash_document(ctx, "trash_db", coll.name, json_util.dumps(5)) == [five]
    assert trash_document(ctx, "trash_db", coll.name, json_util.dumps(5)) == []
    assert storage.trash().read_bytes(f"{five}/metadata.json") is not None
    # An untyped "5" (nx-27017's delete event of _id 5) finds nothing left either
    assert trash_document(ctx, "trash_db", coll.name, json_util.dumps("5"), False) == []
    # A typed "5" is another document than 5: never someone else's folder
    storage.trash().move_folder_to(five, storage)
    assert trash_document(ctx, "trash_db", coll.name, json_util.dumps("5")) == []
    assert storage.read_bytes(f"{five}/metadata.json") is not None
    # A document that exists again keeps its folder
    assert trash_document(ctx, "trash_db", coll.name, json_util.dumps("x")) == []
    assert storage.read_bytes(f"{ex}/metadata.json") is not None
