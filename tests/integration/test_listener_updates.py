"""Updates follow their documents (contract §15): real listener and worker, nx-27017, Redis,
the loopback image server, and the filesystem or a real SeaweedFS bucket.

No sleeps: the events of one collection are handled in order, so once the job of a later
"sentinel" insert exists, every earlier event (a write-back included) has been decided.
"""

from __future__ import annotations

import json

from pymongo import MongoClient

from images_service.download.urls import url_list_sha256
from images_service.storage.factory import create_storage
from tests.support.listener import (
    image_doc,
    jobs_of,
    listener_settings,
    unique_db,
    wait_jobs,
    wait_until,
)
from tests.support.pipeline import api_client, wait_job
from workers.listener.checkpoint import StateStore


def _coll(settings, database: str):
    return MongoClient(settings.mongodb_uri, tz_aware=True)[database].hotels


def _urls(image_server, name: str, count: int) -> list[str]:
    # Distinct bytes per image (seed), distinct paths (hits are counted per path).
    return [image_server.url(f"/image/JPEG/{name}-{i}?seed={i}") for i in range(count)]


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3].split("?")[0]


def _meta(storage, folder: str) -> dict | None:
    raw = storage.read_bytes(f"{folder}/metadata.json")
    return json.loads(raw) if raw is not None else None


def _job_count(settings, **match) -> int:
    return sum(1 for job in jobs_of(settings)
               if all(job.get(k) == v or (job.get("source") or {}).get(k) == v
                      for k, v in match.items()))


def _quiet(settings, coll, image_server, expected: int, name: str) -> list[dict]:
    """Insert a sentinel and wait for its job: every event before it has been decided; returns
    the finished jobs, which must then number exactly ``expected`` (the sentinel's included)."""
    sentinel = str(coll.insert_one(image_doc(image_server, name)).inserted_id)
    wait_until(lambda: any(j["document_id"] == sentinel for j in jobs_of(settings)), 30,
               f"the job of {name}")
    jobs = wait_jobs(settings, expected)
    assert len(jobs) == expected, sorted((j["document_id"], j["source"]) for j in jobs)
    return jobs


def test_push_reorder_and_rename_fetch_only_new_images_and_the_write_back_loops_never(
        make_settings, start_worker, start_listener, image_server, any_storage_env):
    database = unique_db("upd")
    settings = listener_settings(make_settings, database, **any_storage_env)
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    storage = create_storage(settings)
    start_worker(settings)
    start_listener(settings).wait_leading().wait_scan_done()

    # Given a downloaded document with 5 images
    urls = _urls(image_server, "h", 5)
    doc_id = coll.insert_one({"name": "Hotel", "images": urls}).inserted_id
    wait_jobs(settings, 1)
    status = wait_until(lambda: (coll.find_one({"_id": doc_id}).get("images_download") or {})
                        .get("urls_sha256") and coll.find_one({"_id": doc_id})["images_download"],
                        10, "the write-back")
    # (the write-back records the planned URL list's hash and the folder)
    folder = f"{database}/hotels/{doc_id}-hotel"
    assert (status["urls_sha256"], status["path"]) == (url_list_sha256(urls), folder)
    assert [image_server.hits(_path(u)) for u in urls] == [1] * 5

    # When a URL is pushed: one update job, and only the new image is fetched
    new = image_server.url("/image/PNG/h-new?seed=9")
    coll.update_one({"_id": doc_id}, {"$push": {"images": new}})
    wait_jobs(settings, 2)
    assert _job_count(settings, trigger="update") == 1
    assert [image_server.hits(_path(u)) for u in [*urls, new]] == [1] * 6
    assert [r["url"] for r in _meta(storage, folder)["images"]] == [*urls, new]

    # When the 6 images are reordered: a job, and no image request at all
    before = image_server.hits()
    reordered = [new, *reversed(urls)]
    coll.update_one({"_id": doc_id}, {"$set": {"images": reordered}})
    wait_jobs(settings, 3)
    assert _job_count(settings, trigger="update") == 2
    assert image_server.hits() == before
    meta = _meta(storage, folder)
    assert [(r["index"], r["url"], r["status"]) for r in meta["images"]] == \
        [(i, u, "skipped") for i, u in enumerate(reordered, start=1)]
    assert all(storage.exists(f"{folder}/{r['file']}") for r in meta["images"])

    # When the search value changes: the folder moves, nothing is fetched
    coll.update_one({"_id": doc_id}, {"$set": {"name": "Hotel Ritz"}})
    wait_jobs(settings, 4)
    moved = f"{database}/hotels/{doc_id}-hotel-ritz"
    wait_until(lambda: (coll.find_one({"_id": doc_id})["images_download"]["path"] == moved),
               10, "the write-back of the rename")
    assert storage.list(folder) == []
    assert len([k for k in storage.list(moved) if "/original/" in k]) == 6
    assert image_server.hits() == before

    # Then no write-back (nor anything else) made a job: exactly 4 + the sentinel
    jobs = _quiet(settings, coll, image_server, 5, "sentinel")
    assert sorted(j["source"]["trigger"] for j in jobs) == \
        ["insert", "insert", "update", "update", "update"]
    assert all(j["status"] == "completed" for j in jobs)


def test_unrelated_updates_and_replaces_start_nothing_and_request_fields_are_kept(
        make_settings, start_worker, start_listener, image_server):
    database = unique_db("upd")
    settings = listener_settings(make_settings, database, API_RATE_LIMIT="100000/minute")
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    start_worker(settings)
    start_listener(settings).wait_leading().wait_scan_done()
    urls = _urls(image_server, "u", 2)
    doc_id = coll.insert_one({"name": "Unrelated", "images": urls}).inserted_id
    wait_jobs(settings, 1)
    wait_until(lambda: coll.find_one({"_id": doc_id}).get("images_download"), 10, "write-back")

    # When other fields change, and the document is replaced by the same content without
    # its status field (a scraper's replace_one)
    coll.update_one({"_id": doc_id}, {"$set": {"rating": 5}})
    coll.update_one({"_id": doc_id}, {"$unset": {"rating": ""}})
    coll.replace_one({"_id": doc_id}, {"name": "Unrelated", "images": urls, "stars": 4})
    # And a document downloaded through the API with the request's own image fields
    gallery = _urls(image_server, "g", 2)
    other = coll.insert_one({"name": "Gallery", "gallery": gallery}).inserted_id
    client = api_client(settings)
    job = client.post(f"/api/v1/download/document/{database}/hotels/{other}",
                      json={"image_fields": ["gallery"]}).json
    assert wait_job(client, job["job_id"])["status"] == "completed"
    coll.update_one({"_id": other}, {"$set": {"rating": 3}})

    # Then nothing started (the sentinel's job is the second change_stream job), ...
    _quiet(settings, coll, image_server, 2, "sentinel")
    # ... while a replace that changes the URL list, without the status field, is an update
    coll.replace_one({"_id": doc_id}, {"name": "Unrelated", "images": [urls[1]]})
    wait_jobs(settings, 3)
    assert _job_count(settings, trigger="update", document_id=str(doc_id)) == 1
    assert [image_server.hits(_path(u)) for u in urls] == [1, 1]
    _quiet(settings, coll, image_server, 4, "sentinel2")


def test_an_update_made_while_the_listener_was_down_is_found_by_the_catch_up_scan(
        make_settings, start_worker, start_listener, image_server):
    database = unique_db("upd")
    settings = listener_settings(make_settings, database)
    coll = _coll(settings, database)
    coll.insert_one({"name": "seed"})
    shops = MongoClient(settings.mongodb_uri, tz_aware=True)[database].shops
    shops.insert_one({"name": "seed"})
    start_worker(settings)
    listener = start_listener(settings).wait_leading().wait_scan_done()
    a_urls, b_urls = _urls(image_server, "a", 2), _urls(image_server, "b", 2)
    c_urls = _urls(image_server, "c", 2)
    a = coll.insert_one({"name": "A", "images": a_urls}).inserted_id
    b = coll.insert_one({"name": "B", "images": b_urls}).inserted_id
    c = shops.insert_one({"name": "C", "images": c_urls}).inserted_id
    wait_jobs(settings, 3)
    for collection, doc_id in ((coll, a), (coll, b), (shops, c)):
        wait_until(lambda k=collection, d=doc_id: k.find_one({"_id": d}).get("images_download"),
                   10, "write-back")
    assert listener.stop() in (0, 143)
    # Given a listener that cannot replay the events of hotels (its checkpoint is gone: the
    # stream starts from now, only the scan can find what changed), while shops' checkpoint
    # is kept (the stream replays the event, and the scan sees the change too)
    state = StateStore(MongoClient(settings.mongodb_uri), settings.jobs_database)
    state.forget_token(f"{database}.hotels", state.max_epoch())

    # When, while it is down, a URL is pushed to a and c, and b is replaced (no status field)
    # by a shorter list
    new, new_c = (image_server.url(f"/image/GIF/{n}-new?seed=5") for n in ("a", "c"))
    coll.update_one({"_id": a}, {"$push": {"images": new}})
    coll.replace_one({"_id": b}, {"name": "B", "images": b_urls[:1]})
    shops.update_one({"_id": c}, {"$push": {"images": new_c}})
    start_listener(settings, name="again").wait_leading().wait_scan_done()

    # Then each change gets exactly one update job, which fetches only the new image
    wait_jobs(settings, 6)
    for doc_id in (a, b, c):
        assert _job_count(settings, trigger="update", document_id=str(doc_id)) == 1
    assert [image_server.hits(_path(u)) for u in [*a_urls, new, *b_urls, *c_urls, new_c]] == \
        [1] * 8
    # (the sentinel's job proves the replayed events and the write-backs are all decided)
    _quiet(settings, shops, image_server, 7, "sentinel")
