"""Contract §14 (integrity) on the real pipeline: stale messages, hostile files, refused
write-backs, typed ids.

The pipeline runs in this process on the real servers (nx-27017, Redis, the filesystem, a
loopback image server); messages are taken from the broker's Redis hashes and handed to the
pipeline's steps in the order each story needs, so that "a retry fires after a newer job" is
deterministic instead of a race with a worker's timing.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from images_service import metrics
from images_service.download import host_state
from images_service.queueing.messages import (
    DOCUMENTS_ACTOR,
    RETRY_ACTOR,
)
from tests.support.pipeline import Rig, source_db
from workers.pipeline.context import WorkerShuttingDown


@pytest.fixture
def rig(make_settings, image_server):
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              "RETRY_BACKOFF_MIN_MS": "50", "RETRY_BACKOFF_MAX_MS": "500"})
    source_db(settings).hotels.drop()
    r = Rig(settings, image_server)
    yield r
    r.close()


def snapshot(root: Path) -> dict[str, str]:
    """Every file of the tree with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def stale_count() -> float:
    return metrics.STALE_MESSAGES._value.get()


# --- old messages never undo newer work ------------------------------------------------------

def _wait_until_not_paused(rig, host: str, timeout_s: float = 10.0) -> None:
    """Until ``host``'s politeness pause (contract §17) is over, on Redis' clock."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        until_ms = float(host_state.read_state(rig.redis, host).get("until") or 0)
        seconds, micros = rig.redis.time()
        if seconds * 1000 + micros // 1000 >= until_ms:
            return
        time.sleep(0.01)
    raise AssertionError(f"{host} still paused after {timeout_s} s")


def test_a_cancelled_jobs_retry_after_a_newer_job_changes_nothing(rig, make_image_server):
    # Given job J1 whose image 2 waits for a delayed retry, cancelled (the 503 comes from a
    # host of its own: its §17 pause delays no other image of the document)
    failing = make_image_server("127.0.0.2")
    urls = [rig.server.url("/image/JPEG/1"), failing.url("/once/503/integrity-a"),
            rig.server.url("/image/GIF/3")]
    rig.db.hotels.insert_one({"_id": "d1", "name": "D", "images": urls})
    j1, plans1 = rig.document_job("d1")
    rig.pipeline.download_documents(j1, plans1)
    (retry,) = rig.messages(RETRY_ACTOR, j1)
    assert rig.client.post(f"/api/v1/jobs/{j1}/cancel").status_code == 200
    # and job J2 that downloaded the document since (once the 503's pause is over)
    _wait_until_not_paused(rig, "127.0.0.2")
    j2, plans2 = rig.document_job("d1")
    rig.pipeline.download_documents(j2, plans2)
    assert rig.job(j2)["status"] == "completed"
    before = snapshot(rig.settings.storage_path)
    hits, stale = rig.server.hits() + failing.hits(), stale_count()

    # When J1's retry fires
    rig.pipeline.retry_image(*retry)

    # Then no file and no record changed, no request was made, and it was counted
    assert snapshot(rig.settings.storage_path) == before
    meta = json.loads((rig.settings.storage_path / "serpy_db/hotels/d1-d/metadata.json")
                      .read_text())
    assert meta["job_id"] == j2
    assert [r["status"] for r in meta["images"]] == ["skipped", "downloaded", "skipped"]
    assert rig.server.hits() + failing.hits() == hits
    assert stale_count() == stale + 1


def test_a_redriven_message_of_an_ended_job_changes_nothing(rig):
    # Given a completed job J1 and a newer job J2 with a longer URL list
    rig.db.hotels.insert_one({"_id": "d2", "name": "D",
                              "images": [rig.server.url("/image/PNG/a")]})
    j1, plans1 = rig.document_job("d2")
    rig.pipeline.download_documents(j1, plans1)
    rig.db.hotels.update_one({"_id": "d2"}, {"$push": {"images": rig.server.url("/image/PNG/b")}})
    j2, plans2 = rig.document_job("d2")
    rig.pipeline.download_documents(j2, plans2)
    before = snapshot(rig.settings.storage_path)
    stale = stale_count()

    # When J1's message is delivered again (a dead letter redriven, a duplicate)
    rig.pipeline.download_documents(j1, plans1)

    # Then J2's second image is not pruned and metadata.json still says J2
    assert snapshot(rig.settings.storage_path) == before
    assert stale_count() == stale + 1


def test_an_older_plan_of_a_running_job_is_stale_and_the_job_still_completes(rig):
    # Given a collection job J1 that planned the document with two URLs ...
    a, b, c = (rig.server.url(f"/image/JPEG/{n}") for n in "abc")
    rig.db.hotels.insert_one({"_id": "d3", "name": "D", "images": [a, b]})
    j1 = rig.client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    rig.pipeline.scan(j1)
    (args,) = rig.messages(DOCUMENTS_ACTOR, j1)
    # ... then the document changed and job J2 downloaded its new list
    rig.db.hotels.update_one({"_id": "d3"}, {"$set": {"images": [c, a, b]}})
    j2, plans2 = rig.document_job("d3")
    rig.pipeline.download_documents(j2, plans2)
    before = snapshot(rig.settings.storage_path)

    # When J1's older message is processed
    rig.pipeline.download_documents(*args)

    # Then nothing changed, and J1 still completes (the document counted, its images skipped)
    assert snapshot(rig.settings.storage_path) == before
    job = rig.job(j1)
    assert job["status"] == "completed"
    assert (job["progress"]["documents_done"], job["progress"]["images_skipped"]) == (1, 2)
    doc = rig.db.hotels.find_one({"_id": "d3"})
    assert doc["images_download"]["job_id"] == j2


# --- one bad thing fails one image -----------------------------------------------------------

def hostile_jpeg() -> bytes:
    """A JPEG with a JFIF DPI and a garbage EXIF block: Pillow's getexif() raises SyntaxError."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(buf, "JPEG", dpi=(72, 72))
    data = buf.getvalue()
    payload = b"Exif\x00\x00" + b"garbage!" * 8
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    end_of_app0 = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:end_of_app0] + app1 + data[end_of_app0:]


def test_a_hostile_file_fails_at_most_its_image(make_settings, image_server):
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              "PROCESSED_VARIANTS": "thumb:32x32:fit:webp:80"})
    source_db(settings).hotels.drop()
    rig = Rig(settings, image_server)
    try:
        image_server.set_response("/hostile.jpg", body=hostile_jpeg(),
                                  headers={"Content-Type": "image/jpeg"})
        # Given one message with a document naming the hostile file and a good document
        rig.db.hotels.insert_many([
            {"_id": "bad", "name": "Bad", "images": [image_server.url("/hostile.jpg"),
                                                     image_server.url("/image/PNG/ok1")]},
            {"_id": "good", "name": "Good", "images": [image_server.url("/image/JPEG/ok2")]},
        ])
        job_id = rig.client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
        rig.pipeline.scan(job_id)
        (args,) = rig.messages(DOCUMENTS_ACTOR, job_id)
        assert len(args[1]) == 2

        # When the message is processed (it raised on every delivery before)
        rig.pipeline.download_documents(*args)

        # Then both documents are recorded and the job completes
        job = rig.job(job_id)
        assert job["status"] == "completed" and job["progress"]["documents_done"] == 2
        root = settings.storage_path / "serpy_db/hotels"
        bad = json.loads((root / "bad-bad/metadata.json").read_text())
        good = json.loads((root / "good-good/metadata.json").read_text())
        assert [r["status"] for r in good["images"]] == ["downloaded"]
        hostile, ok = bad["images"]
        assert ok["status"] == "downloaded"
        assert hostile["status"] == "downloaded" or hostile["error"]["code"] == "corrupt_image"
    finally:
        rig.close()


# --- a refused write-back fails one document -------------------------------------------------

def test_a_refused_write_back_fails_one_document_and_the_job_completes(rig):
    # Given a source collection where a second write-back with the same job id is refused
    # (nx-27017 reproduces one per-document refusal: a unique index violation)
    rig.db.hotels.insert_many([
        {"_id": "w1", "name": "W1", "images": [rig.server.url("/image/JPEG/w1")]},
        {"_id": "w2", "name": "W2", "images": [rig.server.url("/image/JPEG/w2")]},
    ])
    rig.db.hotels.create_index("images_download.job_id", unique=True, sparse=True)
    job_id = rig.client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    rig.pipeline.scan(job_id)
    (args,) = rig.messages(DOCUMENTS_ACTOR, job_id)

    # When the message finishes both documents (it raised BulkWriteError on every replay)
    rig.pipeline.download_documents(*args)

    # Then the job completes, one document written back, the other a writeback_failed error
    job = rig.job(job_id)
    assert job["status"] == "completed" and job["progress"]["documents_done"] == 2
    written = [d["_id"] for d in rig.db.hotels.find({"images_download.job_id": job_id})]
    assert len(written) == 1
    (error,) = job["errors"]
    assert error["code"] == "writeback_failed"
    assert error["document_id"] in {"w1", "w2"} - set(written)


def test_job_errors_cut_long_urls_and_messages(rig):
    long_url = rig.server.url("/status/404?" + "x" * 5000)
    rig.db.hotels.insert_one({"_id": "long", "name": "L", "images": [long_url]})
    job_id, plans = rig.document_job("long")
    rig.pipeline.download_documents(job_id, plans)
    (error,) = rig.job(job_id)["errors"]
    assert error["code"] == "http_404"
    assert len(error["url"]) == 2048 and long_url.startswith(error["url"])


# --- ids are typed ---------------------------------------------------------------------------

def test_ids_differing_only_in_type_never_share_a_folder(rig):
    # Given the document with _id 5 downloaded (then deleted: nx-27017, unlike MongoDB, cannot
    # hold 5 and "5" at once)
    rig.db.hotels.insert_one({"_id": 5, "images": [rig.server.url("/image/JPEG/five")]})
    j1, plans = rig.document_job("5")
    rig.pipeline.download_documents(j1, plans)
    folder = rig.settings.storage_path / "serpy_db/hotels/5"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["document_key"] == {"$numberInt": "5"}
    before = snapshot(folder)
    rig.db.hotels.delete_one({"_id": 5})

    # When the document with _id "5" (same folder name) is downloaded
    rig.db.hotels.insert_one({"_id": "5", "images": [rig.server.url("/image/PNG/string")]})
    j2, plans = rig.document_job("5")
    rig.pipeline.download_documents(j2, plans)

    # Then its images fail folder_conflict, its write-back says failed, the folder is untouched
    assert snapshot(folder) == before
    job = rig.job(j2)
    assert [e["code"] for e in job["errors"]] == ["folder_conflict"]
    assert rig.db.hotels.find_one({"_id": "5"})["images_download"]["status"] == "failed"


# --- a failing download in a message discards no other result --------------------------------

def test_a_message_that_stops_records_every_image_that_finished(make_settings, image_server):
    # Given a worker process with 4 download threads and a document of 6 images, the first 4
    # slow: they hold every thread while the last 2 wait
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              "MAX_CONCURRENT_DOWNLOADS": "4", "WORKER_PROCESSES": "2"})
    source_db(settings).hotels.drop()
    rig = Rig(settings, image_server)
    try:
        urls = [image_server.url(f"/image/JPEG/slow{n}?delay=0.6") for n in range(4)]
        urls += [image_server.url(f"/image/PNG/fast{n}") for n in range(2)]
        rig.db.hotels.insert_one({"_id": "six", "name": "S", "images": urls})
        job_id, plans = rig.document_job("six")
        assert rig.pipeline.ctx.pool._max_workers == 4

        # When the worker begins its shutdown while the slow ones are in flight (the server
        # has received all four requests)
        def shut_down_once_in_flight() -> None:
            deadline = time.monotonic() + 30
            while image_server.hits() < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            rig.pipeline.ctx.begin_shutdown()

        stopper = threading.Thread(target=shut_down_once_in_flight)
        stopper.start()
        with pytest.raises(WorkerShuttingDown):
            rig.pipeline.download_documents(job_id, plans)
        stopper.join()

        # Then the 4 images that finished are recorded (the message is requeued for the rest)
        meta = json.loads((settings.storage_path / "serpy_db/hotels/six-s/metadata.json")
                          .read_text())
        assert [(r["index"], r["status"]) for r in meta["images"]] == [
            (n, "downloaded") for n in range(1, 5)]
    finally:
        rig.close()


def test_a_folder_that_cannot_be_opened_mid_message_keeps_what_started_and_counts_once(rig):
    # Given one message of two documents whose second folder cannot be made (a file stands
    # where the folder goes: the store refuses it, like a store that went down mid-message)
    urls = {d: [rig.server.url(f"/image/PNG/{d}-{n}") for n in (1, 2)] for d in ("a1", "b2")}
    rig.db.hotels.insert_many([{"_id": "a1", "name": "A", "images": urls["a1"]},
                               {"_id": "b2", "name": "B", "images": urls["b2"]}])
    job_id = rig.client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    rig.pipeline.scan(job_id)
    ((_, plans),) = [(args[0], args[1]) for args in rig.messages(DOCUMENTS_ACTOR, job_id)]
    assert [p["document_id"] for p in plans] == ["a1", "b2"]
    blocker = rig.settings.storage_path / "serpy_db/hotels/b2-b"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a folder")

    # When the message runs, it raises (Dramatiq would retry it) ...
    with pytest.raises(Exception):  # noqa: B017 -- whatever the store raised
        rig.pipeline.download_documents(job_id, plans)

    # ... but the first document's images had started as soon as its folder was open: they
    # are recorded; nothing of the second document was requested
    meta = json.loads((rig.settings.storage_path / "serpy_db/hotels/a1-a/metadata.json")
                      .read_text())
    assert [(r["index"], r["status"]) for r in meta["images"]] == [(1, "downloaded"),
                                                                   (2, "downloaded")]
    assert rig.server.hits() == 2

    # When the store is back and the message is replayed
    blocker.unlink()
    rig.pipeline.download_documents(job_id, plans)

    # Then only the second document's images are requested, and every count is taken once
    assert rig.server.hits() == 4
    job = rig.job(job_id)
    assert job["status"] == "completed"
    assert job["progress"]["images_downloaded"] == 4
    assert job["progress"]["documents_done"] == 2
