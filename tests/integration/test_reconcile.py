"""Reconcile (contract §15): the tree made to follow its collection again, on real servers.

The pipeline runs in this process (tests.support.pipeline.Rig: nx-27017, Redis, the loopback
image server, the filesystem or a real SeaweedFS bucket), driven step by step, with no
listener running: every change made here is one "made while the listener was down". The
reconcile step's clock is moved forward instead of sleeping to age files past the hour.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from images_service import metrics
from images_service.queueing.messages import DOCUMENTS_ACTOR
from images_service.storage.factory import create_storage
from tests.support.pipeline import Rig

HOUR_S = 3600.0



@pytest.fixture
def rig(make_settings, image_server, any_storage_env):
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              **any_storage_env})
    rig = Rig(settings, image_server)
    rig.db.hotels.drop()
    rig.storage = create_storage(settings)
    yield rig
    rig.storage.close()
    rig.close()


def _images(rig: Rig, name: str, count: int) -> list[str]:
    return [rig.server.url(f"/image/JPEG/{name}-{i}") for i in range(count)]


def _drain(rig: Rig, job_id: str) -> dict:
    """Hand the job's download messages to the pipeline until there are none; the job."""
    while True:
        messages = rig.take_messages(DOCUMENTS_ACTOR, job_id)
        if not messages:
            return rig.job(job_id)
        for args, _eta in messages:
            rig.pipeline.download_documents(job_id, args[1])


def _download_all(rig: Rig) -> None:
    job_id = rig.client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    rig.pipeline.scan(job_id)
    assert _drain(rig, job_id)["status"] == "completed"


def _reconcile(rig: Rig, *, dry_run: bool = False, ahead_s: float = 0.0) -> dict:
    """POST a reconcile, run its step with the clock ``ahead_s`` ahead, run its downloads."""
    response = rig.client.post("/api/v1/reconcile/serpy_db/hotels",
                               json={"dry_run": True} if dry_run else {})
    assert response.status_code == 202, response.json
    job_id = response.json["job_id"]
    assert response.headers["Location"] == f"/api/v1/jobs/{job_id}"
    assert rig.job(job_id)["type"] == "reconcile" and rig.job(job_id)["status"] == "pending"
    rig.pipeline.reconciler.clock = lambda: time.time() + ahead_s
    rig.pipeline.scan(job_id)
    if dry_run:
        assert rig.take_messages(DOCUMENTS_ACTOR, job_id) == []
        return rig.job(job_id)
    return _drain(rig, job_id)


def _tree(rig: Rig) -> dict[str, bytes | None]:
    keys = rig.storage.list("serpy_db/hotels") + rig.storage.trash().list("serpy_db/hotels")
    return {key: rig.storage.read_bytes(key) for key in keys}


def _meta(rig: Rig, folder: str) -> dict | None:
    raw = rig.storage.read_bytes(f"serpy_db/hotels/{folder}/metadata.json")
    return json.loads(raw) if raw is not None else None


def test_reconcile_makes_good_what_the_listener_missed(rig) -> None:
    hotels = rig.db.hotels
    # Given four downloaded documents (one with an int _id)
    hotels.insert_many([
        {"_id": "gone", "name": "Gone", "images": _images(rig, "gone", 2)},
        {"_id": "changed", "name": "Changed", "images": _images(rig, "changed", 1)},
        {"_id": "renamed", "name": "Old Name", "images": _images(rig, "renamed", 2)},
        {"_id": 5, "name": "Five", "images": _images(rig, "five", 1)},
    ])
    _download_all(rig)
    # When, with no listener running, one is deleted, one gains a URL, one is renamed, the
    # int 5 is replaced by a string "5" (another document: ids are typed, §14), a document
    # is inserted, and a write left stray files in a folder
    hotels.delete_one({"_id": "gone"})
    hotels.update_one({"_id": "changed"}, {"$push": {"images": rig.server.url("/image/PNG/new")}})
    hotels.update_one({"_id": "renamed"}, {"$set": {"name": "New Name"}})
    hotels.delete_one({"_id": 5})
    hotels.insert_one({"_id": "5", "name": "Five", "images": _images(rig, "five-str", 1)})
    hotels.insert_one({"_id": "fresh", "name": "Fresh", "images": _images(rig, "fresh", 2)})
    hotels.insert_one({"_id": "plain", "name": "No images"})
    stray = ["serpy_db/hotels/changed-changed/original/img_009.jpg",
             "serpy_db/hotels/changed-changed/processed/thumb/img_001.webp"]
    for key in stray:
        rig.storage.put_bytes(key, b"left over", content_type="image/jpeg")
    before = _tree(rig)
    requests_before = len(rig.server.requests)
    counted = _reconcile_metrics()

    # Then a dry run two hours on changes nothing and says what it would do
    dry = _reconcile(rig, dry_run=True, ahead_s=2 * HOUR_S)
    assert dry["status"] == "completed" and dry["dry_run"] is True
    expected = {"trashed": 2, "downloaded": 4, "removed_files": 2}
    assert {k: dry["result"][k] for k in expected} == expected
    assert set(dry["result"]["examples"]) == {
        "serpy_db/hotels/gone-gone", "serpy_db/hotels/5-five", *stray,
        "serpy_db/hotels/changed-changed", "serpy_db/hotels/renamed-new-name",
        "serpy_db/hotels/fresh-fresh"}  # (5-five: trashed, then downloaded for "5")
    assert _tree(rig) == before and len(rig.server.requests) == requests_before
    assert dry["progress"]["documents_total"] == 0
    assert _reconcile_metrics() == counted  # a dry run does nothing to count

    # When it runs for real
    job = _reconcile(rig, ahead_s=2 * HOUR_S)

    # Then it did what the dry run said, and its downloads are done
    assert job["status"] == "completed" and job["dry_run"] is False
    assert {k: job["result"][k] for k in expected} == expected
    assert job["progress"]["documents_total"] == 4 and job["progress"]["documents_done"] == 4
    assert {k: v - counted[k] for k, v in _reconcile_metrics().items()} == expected
    trash = rig.storage.trash()
    for folder in ("gone-gone", "5-five"):
        meta = json.loads(trash.read_bytes(f"serpy_db/hotels/{folder}/metadata.json"))
        assert meta["deleted_at"]
    assert [r["url"] for r in _meta(rig, "changed-changed")["images"]][-1].endswith("/PNG/new")
    assert len(_meta(rig, "changed-changed")["images"]) == 2
    assert not any(rig.storage.exists(key) for key in stray)
    assert _meta(rig, "renamed-old-name") is None
    renamed = _meta(rig, "renamed-new-name")
    assert [r["status"] for r in renamed["images"]] == ["skipped", "skipped"]  # moved, kept
    assert _meta(rig, "fresh-fresh")["summary"]["downloaded"] == 2
    five = _meta(rig, "5-five")
    assert five["document_key"] == "5" and five["summary"]["downloaded"] == 1
    assert rig.db.hotels.find_one({"_id": "fresh"})["images_download"]["status"] == "completed"

    # And a second reconcile finds nothing left to do
    again = _reconcile(rig, ahead_s=2 * HOUR_S)
    assert again["result"] == {"trashed": 0, "downloaded": 0, "removed_files": 0,
                               "examples": []}


def test_a_file_no_metadata_names_is_removed_only_once_older_than_an_hour(rig) -> None:
    rig.db.hotels.insert_one({"_id": "h", "name": "H", "images": _images(rig, "h", 1)})
    _download_all(rig)
    # A leftover of an interrupted write (a temporary name) and an image no record names,
    # and a folder that never got its metadata.json
    young = ["serpy_db/hotels/h-h/original/img_002.jpg",
             "serpy_db/hotels/h-h/original/.tmp-host.1-99-abc",
             "serpy_db/hotels/x-never/original/img_001.jpg"]
    _put_files(rig, young)

    # Written just now: a write may be in flight, nothing is removed
    kept = _reconcile(rig)
    assert kept["result"]["removed_files"] == 0
    assert all(_stored(rig, key) for key in young)

    # Older than an hour: removed, and counted
    removed = _reconcile(rig, ahead_s=HOUR_S + 60)
    assert removed["result"]["removed_files"] == 3
    assert sorted(removed["result"]["examples"]) == sorted(young)
    assert not any(_stored(rig, key) for key in young)
    assert _meta(rig, "h-h")["summary"]["downloaded"] == 1  # the named files stay


def test_examples_are_at_most_100(rig) -> None:
    rig.db.hotels.insert_one({"_id": "h", "name": "H", "images": _images(rig, "h", 1)})
    _download_all(rig)
    _put_files(rig, [f"serpy_db/hotels/h-h/original/img_{i:03d}.jpg" for i in range(2, 122)])

    job = _reconcile(rig, dry_run=True, ahead_s=2 * HOUR_S)

    assert job["result"]["removed_files"] == 120
    assert len(job["result"]["examples"]) == 100


def test_a_cancelled_reconcile_does_nothing(rig) -> None:
    rig.db.hotels.insert_one({"_id": "h", "name": "H", "images": _images(rig, "h", 1)})
    _download_all(rig)
    rig.db.hotels.delete_one({"_id": "h"})
    job_id = rig.client.post("/api/v1/reconcile/serpy_db/hotels").json["job_id"]
    assert rig.client.post(f"/api/v1/jobs/{job_id}/cancel").json["status"] == "cancelled"

    rig.pipeline.scan(job_id)

    assert _meta(rig, "h-h") is not None and rig.job(job_id)["status"] == "cancelled"
    assert "result" not in rig.job(job_id)


def test_a_reconcile_of_an_unknown_collection_is_404_and_dry_run_is_checked(rig) -> None:
    assert rig.client.post("/api/v1/reconcile/serpy_db/nowhere").status_code == 404
    bad = rig.client.post("/api/v1/reconcile/serpy_db/hotels", json={"dry_run": "yes"})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_request"


def _reconcile_metrics() -> dict[str, float]:
    """images_reconcile_total{action} of this process (the pipeline runs here)."""
    return {action: metrics.RECONCILE.labels(action)._value.get()
            for action in ("trashed", "downloaded", "removed_files")}


def _put_files(rig: Rig, keys: list[str]) -> None:
    """Files as an interrupted writer leaves them (temporary names too)."""
    storage = rig.storage
    if storage.name == "filesystem":
        for key in keys:
            path = Path(rig.settings.storage_path) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"left over")
        return
    for key in keys:
        storage._client.put_object(Bucket=storage.bucket, Key=storage.prefix + key,
                                   Body=b"left over")


def _stored(rig: Rig, key: str) -> bool:
    storage = rig.storage
    if storage.name == "filesystem":
        return (Path(rig.settings.storage_path) / key).exists()
    listed = storage._client.list_objects_v2(Bucket=storage.bucket, Prefix=storage.prefix + key)
    return bool(listed.get("Contents"))


def test_a_redelivered_step_counts_nothing_twice(rig) -> None:
    """A worker killed after (part of) the step: the message runs again from its start."""
    rig.db.hotels.insert_many([{"_id": f"h{i}", "name": "H", "images": _images(rig, f"h{i}", 1)}
                               for i in range(2)])
    _download_all(rig)
    rig.db.hotels.delete_one({"_id": "h0"})
    rig.db.hotels.insert_one({"_id": "new", "name": "New", "images": _images(rig, "new", 1)})
    _put_files(rig, ["serpy_db/hotels/h1-h/original/img_007.jpg"])
    rig.pipeline.reconciler.clock = lambda: time.time() + 2 * HOUR_S
    expected = {"trashed": 1, "downloaded": 1, "removed_files": 1}

    # A real run's step, delivered twice before its downloads ran
    job_id = rig.client.post("/api/v1/reconcile/serpy_db/hotels").json["job_id"]
    rig.pipeline.scan(job_id)
    rig.pipeline.scan(job_id)
    job = rig.job(job_id)
    assert {k: job["result"][k] for k in expected} == expected
    assert len(rig.messages(DOCUMENTS_ACTOR, job_id)) == 1
    assert _drain(rig, job_id)["status"] == "completed"

    # A dry run whose worker died in pass 1 (its marks say so), delivered again
    rig.db.hotels.delete_one({"_id": "h1"})
    job_id = rig.client.post("/api/v1/reconcile/serpy_db/hotels",
                             json={"dry_run": True}).json["job_id"]
    rig.pipeline.scan(job_id)
    once = rig.job(job_id)["result"]
    assert once["trashed"] == 1
    job_id = rig.client.post("/api/v1/reconcile/serpy_db/hotels",
                             json={"dry_run": True}).json["job_id"]
    key = rig.pipeline.ctx.progress.key(job_id)
    original = rig.pipeline.reconciler._judge_documents

    def die(*args, **kwargs):
        raise KeyboardInterrupt("the worker dies")

    rig.pipeline.reconciler._judge_documents = die  # dies in pass 2 ...
    with pytest.raises(KeyboardInterrupt):
        rig.pipeline.scan(job_id)
    rig.redis.hdel(key, "rc:tree_done")  # ... or, as if, in pass 1
    rig.pipeline.reconciler._judge_documents = original
    rig.pipeline.scan(job_id)
    assert rig.job(job_id)["result"] == once
