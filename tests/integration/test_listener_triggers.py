"""The listener's triggers end to end: real listener and worker, Redis, nx-27017, images.

Ordering trick used instead of sleeps: events of one collection are handled in order, so once
the job of a later "sentinel" insert exists, every earlier event has been decided.
"""

from __future__ import annotations

from pymongo import MongoClient

from tests.support.listener import (
    image_doc,
    jobs_of,
    jobs_per_document,
    listener_settings,
    metadata_exists,
    unique_db,
    wait_jobs,
    wait_until,
)

#: The ``start_listener`` fixture.


def _client(settings) -> MongoClient:
    return MongoClient(settings.mongodb_uri, tz_aware=True)


def test_inserts_flags_and_replaces_make_one_job_each_and_write_back_makes_none(
        make_settings, start_worker, start_listener, image_server):
    database = unique_db()
    settings = listener_settings(make_settings, database)
    coll = _client(settings)[database].hotels
    coll.insert_one({"name": "seed"})  # the collection exists before the listener starts
    start_worker(settings)
    listener = start_listener(settings).wait_leading().wait_scan_done()

    # Given an inserted document with images, one without, and one with images and the flag
    a = coll.insert_one(image_doc(image_server, "a", 2)).inserted_id
    b = coll.insert_one({"name": "b"}).inserted_id
    e = coll.insert_one(image_doc(image_server, "e", 1, download_images=True)).inserted_id
    # When b gets images and the flag by an update
    coll.update_one({"_id": b}, {"$set": {"images": [image_server.url("/image/PNG/b")],
                                           "download_images": True}})
    jobs = wait_jobs(settings, 3)
    # Then a (insert), e (insert + flag: ONE job) and b (flag) are downloaded
    assert jobs_per_document(jobs) == {str(a): 1, str(b): 1, str(e): 1}
    assert {j["document_id"]: j["source"]["trigger"] for j in jobs} == {
        str(a): "insert", str(b): "flag", str(e): "flag"}
    assert all(j["status"] == "completed" for j in jobs)
    for doc_id in (a, b, e):
        assert metadata_exists(settings, database, "hotels", doc_id)
        wait_until(lambda d=doc_id: (coll.find_one({"_id": d}).get("images_download") or {})
                   .get("status") == "completed", 10, f"write-back of {doc_id}")

    # When other fields change, and a and e are replaced by flagged versions of themselves
    # (without the status field: e's new version looks like its first one)
    coll.update_one({"_id": a}, {"$set": {"rating": 5}})
    coll.update_one({"_id": e}, {"$set": {"note": "x"}})
    coll.replace_one({"_id": a}, {**image_doc(image_server, "a", 2), "download_images": True})
    coll.replace_one({"_id": e}, {**image_doc(image_server, "e", 1), "download_images": True})
    sentinel = coll.insert_one(image_doc(image_server, "sentinel")).inserted_id
    jobs = wait_jobs(settings, 6)

    # Then only the replaces (nx-27017: they arrive as updates) and the sentinel made jobs;
    # the write-backs of the first three jobs (flag false + status) made none
    counts = jobs_per_document(jobs)
    assert counts == {str(a): 2, str(b): 1, str(e): 2, str(sentinel): 1}, counts
    assert sorted(j["source"]["trigger"] for j in jobs if j["document_id"] == str(a)) == \
        ["flag", "insert"]

    # And a document flagged again after its download finished is downloaded again
    wait_until(lambda: coll.find_one({"_id": b})["download_images"] == False, 10,  # noqa: E712
               "flag cleared by the write-back")
    coll.update_one({"_id": b}, {"$set": {"download_images": True}})
    sentinel2 = coll.insert_one(image_doc(image_server, "sentinel2")).inserted_id
    jobs = wait_jobs(settings, 8)
    counts = jobs_per_document(jobs)
    assert counts[str(b)] == 2 and counts[str(sentinel2)] == 1 and len(jobs) == 8, counts

    # And the listener's metrics tell the story (contract §9 names)
    samples = listener.metrics()
    assert samples['images_listener_events_total{operation="insert"}'] == 5
    assert samples['images_listener_events_total{operation="update"}'] >= 8
    assert samples['images_listener_decisions_total{outcome="enqueued"}'] == 8
    assert samples['images_listener_decisions_total{outcome="ignored"}'] >= 4
    assert samples["images_listener_leader"] == 1
    assert samples['images_listener_rescans_total{reason="start"}'] == 1
    assert 0 <= samples["images_listener_lag_seconds"] < 5
    assert 0 <= samples["images_listener_checkpoint_age_seconds"] < 5


def test_several_databases_and_collections_created_later(make_settings, start_worker,
                                                        start_listener, image_server):
    first, second = unique_db(), unique_db()
    settings = listener_settings(make_settings, first,
                                 WATCH_NAMESPACES=f"{first}.*,{second}.items")
    client = _client(settings)
    start_worker(settings)
    listener = start_listener(settings).wait_leading()

    # When collections appear after the listener started, in two databases
    x = client[first].brand_new.insert_one(image_doc(image_server, "x")).inserted_id
    y = client[second].items.insert_one(image_doc(image_server, "y")).inserted_id
    client[second].other.insert_one(image_doc(image_server, "not-watched"))

    # Then both watched ones are picked up within seconds (documents written before the
    # stream existed come from the new collection's scan); the unwatched one is not
    jobs = wait_jobs(settings, 2, timeout_s=30)
    assert jobs_per_document(jobs) == {str(x): 1, str(y): 1}
    z = client[first].brand_new.insert_one(image_doc(image_server, "z")).inserted_id
    jobs = wait_jobs(settings, 3)
    assert jobs_per_document(jobs) == {str(x): 1, str(y): 1, str(z): 1}
    assert "new stream" in listener.text()
    assert len(jobs_of(settings)) == 3
