"""Documents end to end: layout, metadata.json, idempotency, stale files, concurrent writers."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from images_service.config.settings import Settings
from images_service.download import engine
from images_service.errors import DownloadError, StorageUnavailable, UnsafePathError
from images_service.fetching.fetcher import Fetcher
from images_service.storage.backend import Storage
from images_service.storage.factory import create_storage
from tests.support.image_server import ImageServer

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
OID = ObjectId("507f1f77bcf86cd799439011")
from tests.support.engine import download_one


def make_doc(server: ImageServer, *paths: str, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": OID, "name": "Hotel Ritz Madrid",
                           "images": [server.url(p) for p in paths]}
    doc.update(overrides)
    return doc


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run(doc: dict[str, Any], settings: Settings, fetcher: Fetcher, **kwargs: Any) -> dict:
    return engine.download_document(doc, "serpy_db", "hotels", settings, job_id="job-1",
                                    fetcher=fetcher, **kwargs)


# --- layout and metadata ---------------------------------------------------------------------


def test_layout_and_metadata(settings: Settings, fetcher: Fetcher,
                             image_server: ImageServer) -> None:
    doc = make_doc(image_server, "/image/JPEG", "/image/PNG", "/status/404")
    doc["images"] = ["ftp://ignored", None, *doc["images"], doc["images"][0]]
    meta = run(doc, settings, fetcher)

    folder = settings.storage_path / "serpy_db/hotels/507f1f77bcf86cd799439011-hotel-ritz-madrid"
    assert tree(settings.storage_path / "serpy_db/hotels") == {
        folder.name, f"{folder.name}/original", f"{folder.name}/processed",
        f"{folder.name}/metadata.json", f"{folder.name}/original/img_001.jpg",
        f"{folder.name}/original/img_002.png",
    }
    assert json.loads((folder / "metadata.json").read_text("utf-8")) == meta
    assert list(meta) == ["schema_version", "database", "collection", "document_id",
                          "document_key", "search_field", "search_value", "job_id",
                          "planned_at_ms", "updated_at", "images", "summary"]
    assert meta["schema_version"] == 1
    assert meta["document_key"] == {"$oid": "507f1f77bcf86cd799439011"}
    assert isinstance(meta["planned_at_ms"], int) and meta["planned_at_ms"] > 0
    assert (meta["database"], meta["collection"]) == ("serpy_db", "hotels")
    assert meta["document_id"] == "507f1f77bcf86cd799439011"
    assert (meta["search_field"], meta["search_value"]) == ("name", "Hotel Ritz Madrid")
    assert meta["job_id"] == "job-1" and ISO_Z.match(meta["updated_at"])
    ok, png, failed = meta["images"]
    assert list(ok) == ["index", "url", "status", "file", "sha256", "bytes", "format", "width",
                        "height", "content_type", "http_status", "attempts", "downloaded_at",
                        "phash", "checked_at"]
    assert (ok["index"], ok["status"], ok["file"], ok["http_status"], ok["attempts"]) == (
        1, "downloaded", "original/img_001.jpg", 200, 1)
    assert ISO_Z.match(ok["downloaded_at"])
    assert png["file"] == "original/img_002.png"
    assert re.fullmatch("[0-9a-f]{16}", ok["phash"]) and re.fullmatch("[0-9a-f]{16}", png["phash"])
    assert failed == {"index": 3, "url": image_server.url("/status/404"), "status": "failed",
                      "attempts": 1,
                      "error": {"code": "http_404", "message": failed["error"]["message"]}}
    assert meta["summary"] == {
        "total": 3, "downloaded": 2, "failed": 1, "skipped": 0, "present": 2, "gone": 0,
        "placeholders": 0, "duplicates": 0}


@pytest.mark.parametrize(
    ("overrides", "folder", "search_value"),
    [
        ({"name": "Café Crème — Brûlée!"}, "42-cafe-creme-brulee", "Café Crème — Brûlée!"),
        ({"name": "!!! ???"}, "42", "!!! ???"),
        ({"name": ""}, "42", ""),
        ({"name": None}, "42", None),
        ({}, "42", None),
        ({"name": "x" * 63 + " tail"}, "42-" + "x" * 63, "x" * 63 + " tail"),
    ],
)
def test_folder_names_from_the_search_field(settings: Settings, fetcher: Fetcher,
                                            image_server: ImageServer, overrides: dict,
                                            folder: str, search_value: Any) -> None:
    doc = {"_id": 42, "images": [image_server.url("/image/GIF")], **overrides}
    meta = run(doc, settings, fetcher)
    assert (settings.storage_path / "serpy_db/hotels" / folder / "original/img_001.gif").exists()
    assert meta["document_id"] == "42" and meta["search_value"] == search_value


def test_a_document_without_image_urls_gets_an_empty_layout(settings: Settings,
                                                            fetcher: Fetcher) -> None:
    meta = run({"_id": "a", "images": ["not a url"]}, settings, fetcher)
    assert meta["images"] == [] and meta["summary"]["total"] == 0
    assert tree(settings.storage_path / "serpy_db/hotels/a") == {
        "original", "processed", "metadata.json"}


@pytest.mark.parametrize(
    ("database", "collection", "doc_id"),
    [("..", "hotels", 1), ("serpy_db", "..", 1), ("serpy_db", "../etc", 1),
     ("a/b", "hotels", 1), ("serpy_db", "hotels", "../../etc"), ("serpy_db", "hotels", ".."),
     ("serpy_db", "hotels", "a/b"), ("serpy_db", "hotels", "a\\b"),
     ("serpy_db", "hotels", ".ssh"), ("serpy_db", "hotels", "x\x00y")],
)
def test_path_traversal_is_refused(settings: Settings, fetcher: Fetcher, database: str,
                                   collection: str, doc_id: Any, tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError):
        engine.download_document({"_id": doc_id, "images": []}, database, collection, settings,
                                 job_id="j", fetcher=fetcher)
    assert not settings.storage_path.exists()


# --- idempotency ---------------------------------------------------------------------------------


def test_a_rerun_skips_without_any_request(settings: Settings, fetcher: Fetcher,
                                           image_server: ImageServer) -> None:
    doc = make_doc(image_server, "/image/JPEG", "/image/WEBP", "/image/PNG")
    first = run(doc, settings, fetcher)
    files = [settings.storage_path / "serpy_db/hotels" / first_folder(first) / r["file"]
             for r in first["images"]]
    inodes = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files]
    image_server.reset()

    second = run(doc, settings, fetcher)

    assert image_server.hits() == 0
    assert [r["status"] for r in second["images"]] == ["skipped"] * 3
    assert second["summary"] == {
        "total": 3, "downloaded": 0, "failed": 0, "skipped": 3, "present": 3, "gone": 0,
        "placeholders": 0, "duplicates": 0}
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files] == inodes
    for before, after in zip(first["images"], second["images"]):
        assert {**before, "status": "skipped"} == after
    # and a third run still skips (a skipped record counts as present)
    assert run(doc, settings, fetcher)["summary"]["skipped"] == 3


def first_folder(meta: dict) -> str:
    return f"{meta['document_id']}-hotel-ritz-madrid"


def test_a_rerun_retries_only_failed_images(settings: Settings, fetcher: Fetcher,
                                            image_server: ImageServer) -> None:
    doc = make_doc(image_server, "/image/JPEG", "/once/503/a?fmt=PNG")
    assert [r["status"] for r in run(doc, settings, fetcher)["images"]] == ["downloaded", "failed"]
    image_server_hits_before = image_server.hits("/image/JPEG")
    meta = run(doc, settings, fetcher)
    assert [r["status"] for r in meta["images"]] == ["skipped", "downloaded"]
    assert image_server.hits("/image/JPEG") == image_server_hits_before
    assert image_server.hits("/once/503/a") == 2


def test_force_refetches_everything(settings: Settings, fetcher: Fetcher,
                                    image_server: ImageServer) -> None:
    doc = make_doc(image_server, "/image/JPEG", "/image/GIF")
    run(doc, settings, fetcher)
    image_server.reset()
    meta = run(doc, settings, fetcher, force=True)
    assert image_server.hits() == 2
    assert [r["status"] for r in meta["images"]] == ["downloaded", "downloaded"]


def test_a_file_changed_on_disk_is_fetched_again(settings: Settings, fetcher: Fetcher,
                                                 image_server: ImageServer) -> None:
    doc = make_doc(image_server, "/image/JPEG", "/image/PNG")
    meta = run(doc, settings, fetcher)
    folder = settings.storage_path / "serpy_db/hotels" / first_folder(meta)
    target = folder / "original/img_002.png"
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF  # same size, different content
    target.write_bytes(bytes(data))
    (folder / "original/img_001.jpg").unlink()
    image_server.reset()
    meta = run(doc, settings, fetcher)
    assert [r["status"] for r in meta["images"]] == ["downloaded", "downloaded"]
    assert image_server.hits() == 2


# --- changed URL lists and stale files ------------------------------------------------------------


def test_fewer_urls_remove_stale_files_and_records(settings: Settings, fetcher: Fetcher,
                                                   image_server: ImageServer) -> None:
    doc = make_doc(image_server, "/image/JPEG", "/image/PNG", "/image/GIF")
    meta = run(doc, settings, fetcher)
    folder = settings.storage_path / "serpy_db/hotels" / first_folder(meta)
    doc["images"] = doc["images"][:1]
    meta = run(doc, settings, fetcher)
    assert [r["index"] for r in meta["images"]] == [1]
    assert meta["summary"] == {
        "total": 1, "downloaded": 0, "failed": 0, "skipped": 1, "present": 1, "gone": 0,
        "placeholders": 0, "duplicates": 0}
    assert sorted(os.listdir(folder / "original")) == ["img_001.jpg"]


def test_a_changed_url_at_an_index_replaces_the_file(settings: Settings, fetcher: Fetcher,
                                                     image_server: ImageServer) -> None:
    doc = make_doc(image_server, "/image/PNG", "/image/GIF")
    meta = run(doc, settings, fetcher)
    folder = settings.storage_path / "serpy_db/hotels" / first_folder(meta)
    doc["images"] = [image_server.url("/image/JPEG"), doc["images"][1]]  # index 1 now a JPEG
    meta = run(doc, settings, fetcher)
    assert [r["status"] for r in meta["images"]] == ["downloaded", "skipped"]
    assert sorted(os.listdir(folder / "original")) == ["img_001.jpg", "img_002.gif"]


def test_a_failed_forced_refetch_removes_the_old_file(settings: Settings, fetcher: Fetcher,
                                                      image_server: ImageServer) -> None:
    image_server.add_route("/flip", lambda req, q: req.respond(404, b"gone"))
    doc = make_doc(image_server, "/image/PNG/flip")
    meta = run(doc, settings, fetcher)
    folder = settings.storage_path / "serpy_db/hotels" / first_folder(meta)
    image_server.add_route("/image/PNG/flip", lambda req, q: req.respond(404, b"gone"))
    meta = run(doc, settings, fetcher, force=True)
    assert meta["images"][0]["status"] == "failed"
    assert os.listdir(folder / "original") == []  # metadata and files agree


def test_a_new_search_value_moves_the_folder(settings: Settings, fetcher: Fetcher,
                                             image_server: ImageServer) -> None:
    doc = make_doc(image_server, "/image/JPEG")
    meta = run(doc, settings, fetcher)
    old = f"serpy_db/hotels/{first_folder(meta)}"
    image_server.reset()
    doc.update(name="Ritz Madrid (renovated)", images_download={"path": old})
    meta = run(doc, settings, fetcher)
    assert image_server.hits() == 0 and meta["images"][0]["status"] == "skipped"
    assert sorted(os.listdir(settings.storage_path / "serpy_db/hotels")) == [
        "507f1f77bcf86cd799439011-ritz-madrid-renovated"]


# --- atomicity and concurrent writers ----------------------------------------------------------


def test_no_temporary_files_are_left_after_failures(settings: Settings, fetcher: Fetcher,
                                                    image_server: ImageServer) -> None:
    doc = make_doc(image_server, "/image/JPEG", "/truncated.jpg", "/html", "/lying-length/long",
                   "/status/500", "/bomb.png", "/redirect-loop", "/image/BMP")
    meta = run(doc, settings, fetcher)
    folder = settings.storage_path / "serpy_db/hotels" / first_folder(meta)
    assert tree(folder) == {"original", "processed", "metadata.json", "original/img_001.jpg",
                            "original/img_008.bmp"}
    codes = [r.get("error", {}).get("code") for r in meta["images"]]
    assert codes == [None, "corrupt_image", "not_an_image", "connection_error", "http_500",
                     "decompression_bomb", "too_many_redirects", None]


def _plan_with(settings: Settings, count: int) -> engine.DocumentPlan:
    doc = {"_id": "concurrent", "images": [f"https://cdn.test/{i}.jpg" for i in range(count)]}
    return engine.plan_document(doc, "serpy_db", "hotels", settings)


def _fake_record(task: engine.ImageTask) -> dict[str, Any]:
    return engine.failed_record(task, DownloadError("http_500", "x", http_status=500), 1)


def test_concurrent_record_images_never_lose_an_entry(settings: Settings,
                                                      storage: Storage) -> None:
    plan = _plan_with(settings, 64)
    engine.DocumentFolder(storage, plan, job_id="j").open()
    barrier = threading.Barrier(16)

    def writer(tasks: list[engine.ImageTask]) -> None:
        barrier.wait()
        for task in tasks:
            engine.DocumentFolder(storage, plan, job_id="j").merge([_fake_record(task)])

    threads = [threading.Thread(target=writer, args=(list(plan.images[n::16]),))
               for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    meta = engine.DocumentFolder(storage, plan, job_id="j").read()
    assert meta is not None
    assert [r["index"] for r in meta["images"]] == list(range(1, 65))
    assert meta["summary"] == {
        "total": 64, "downloaded": 0, "failed": 64, "skipped": 0, "present": 0, "gone": 0,
        "placeholders": 0, "duplicates": 0}
    assert tree(settings.storage_path / plan.relative_folder) == {"original", "processed", "metadata.json"}


def _process_writer(settings: Settings, plan: engine.DocumentPlan, start: int) -> None:
    with create_storage(settings) as storage:
        for task in plan.images[start::4]:
            engine.DocumentFolder(storage, plan, job_id=f"p{start}").merge([_fake_record(task)])


def test_concurrent_processes_never_lose_an_entry(settings: Settings, storage: Storage) -> None:
    plan = _plan_with(settings, 32)
    engine.DocumentFolder(storage, plan, job_id="j").open()
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_process_writer, args=(settings, plan, n))
                 for n in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(30)
        assert p.exitcode == 0
    meta = engine.DocumentFolder(storage, plan, job_id="j").read()
    assert meta is not None and [r["index"] for r in meta["images"]] == list(range(1, 33))


class _AlwaysBeaten:
    """The real filesystem backend with another writer that gets in before every write."""

    def __init__(self, storage: Storage, plan: engine.DocumentPlan) -> None:
        self._storage, self._plan, self.writes = storage, plan, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def put_bytes_if(self, key: str, data: bytes, *, version: str | None, **kw: Any) -> Any:
        self.writes += 1
        # Its own lock: it stands for another process, which the in-process lock does not hold.
        rival = engine.DocumentFolder(self._storage, self._plan, job_id=f"rival-{self.writes}",
                                      lock=lambda folder: contextlib.nullcontext())
        rival.merge([_fake_record(self._plan.images[self.writes % len(self._plan.images)])])
        return self._storage.put_bytes_if(key, data, version=version, **kw)


def test_a_merge_that_keeps_losing_waits_longer_each_round_then_gives_up(
        settings: Settings, storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a writer that loses every version race (another process writes in between)
    from images_service.download import folder

    plan = _plan_with(settings, 4)
    engine.DocumentFolder(storage, plan, job_id="j").open()
    beaten = _AlwaysBeaten(storage, plan)
    waits_s: list[float] = []
    monkeypatch.setattr(folder.time, "sleep", waits_s.append)
    monkeypatch.setattr(folder.random, "uniform", lambda low, high: high)
    # When it merges: it gives up, retryably, after the last round, without a last wait
    with pytest.raises(StorageUnavailable, match="kept changing"):
        engine.DocumentFolder(beaten, plan, job_id="j").merge([_fake_record(plan.images[0])])
    assert beaten.writes == folder.MAX_MERGE_ROUNDS
    # Then it waited between rounds, a random time whose bound doubles up to the cap
    bounds_ms = [min(folder.MERGE_BACKOFF_MS * 2 ** n, folder.MERGE_BACKOFF_CAP_MS)
                 for n in range(1, folder.MAX_MERGE_ROUNDS)]
    assert [round(w * 1000, 6) for w in waits_s] == bounds_ms
    assert bounds_ms[0] < bounds_ms[2] and bounds_ms[-1] == folder.MERGE_BACKOFF_CAP_MS


def test_readers_never_see_a_partial_metadata_file(settings: Settings,
                                                    storage: Storage) -> None:
    plan = _plan_with(settings, 60)
    engine.DocumentFolder(storage, plan, job_id="j").open()
    done = threading.Event()
    seen: list[int] = []
    path = settings.storage_path / plan.relative_folder / "metadata.json"

    def reader() -> None:
        while not done.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            seen.append(len(json.loads(data)["images"]))  # raises on a partial file

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for task in plan.images:
            engine.DocumentFolder(storage, plan, job_id="j").merge([_fake_record(task)])
    finally:
        done.set()
        thread.join()
    assert seen == sorted(seen)


def test_images_of_one_document_recorded_in_parallel(settings: Settings, fetcher: Fetcher,
                                                     storage: Storage,
                                                     image_server: ImageServer) -> None:
    # The actors' pattern: each image is downloaded and recorded on its own thread.
    doc = make_doc(image_server, *[f"/image/JPEG/{n}?seed={n}" for n in range(12)], "/status/410")
    plan = engine.plan_document(doc, "serpy_db", "hotels", settings)
    engine.DocumentFolder(storage, plan, job_id="j").open()

    def one(task: engine.ImageTask) -> None:
        try:
            record = download_one(plan, task, fetcher, storage, settings)
        except DownloadError as e:
            record = engine.failed_record(task, e, 1)
        engine.DocumentFolder(storage, plan, job_id="j").merge([record])

    threads = [threading.Thread(target=one, args=(task,)) for task in plan.images]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    meta = engine.DocumentFolder(storage, plan, job_id="j").read()
    assert meta is not None
    assert meta["summary"] == {
        "total": 13, "downloaded": 12, "failed": 1, "skipped": 0, "present": 12, "gone": 0,
        "placeholders": 0, "duplicates": 0}
    assert sorted(os.listdir(settings.storage_path / plan.relative_folder / "original")) == [
        f"img_{n:03d}.jpg" for n in range(1, 13)]
