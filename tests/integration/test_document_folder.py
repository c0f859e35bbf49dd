"""The document folder as one unit of work (contract §14) on both storage backends.

The version check: a metadata.json merge that outlived its lock, or raced another writer, is
detected and redone, never overwriting newer records; the conditional write underneath it;
a claim or merge from an older plan changes nothing.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest

from images_service.download import engine
from images_service.download.folder import DocumentFolder
from images_service.errors import DownloadError, FolderConflict, StaleMessage
from images_service.fetching.fetcher import Fetcher
from images_service.storage.backend import Storage
from tests.support.engine import make_settings


@pytest.fixture
def storage(any_storage: Storage) -> Storage:
    return any_storage


def plan_of(tmp_path: Path, urls: list[str], **doc):
    settings = make_settings(tmp_path)
    return engine.plan_document({"_id": "doc", "name": "Doc", "images": urls, **doc},
                                "db", "coll", settings)


def failed(plan, index: int) -> dict:
    task = plan.images[index - 1]
    return engine.failed_record(task, DownloadError("http_500", "x", http_status=500), 1)


def test_conditional_write_refuses_a_changed_object(storage: Storage) -> None:
    key = "db/coll/doc/metadata.json"
    assert storage.put_bytes_if(key, b"one", version=None)
    assert not storage.put_bytes_if(key, b"two", version=None)  # exists already
    first = storage.read_versioned(key)
    assert first.data == b"one" and first.version is not None
    storage.put_bytes(key, b"three")  # another writer
    assert not storage.put_bytes_if(key, b"four", version=first.version)
    assert storage.read_bytes(key) == b"three"
    current = storage.read_versioned(key)
    written = storage.put_bytes_if(key, b"five", version=current.version)
    assert storage.read_bytes(key) == b"five"
    # The write says the version a read would give, and a next write may compare against it
    assert written is not None and written.data == b"five"
    assert written.version == storage.read_versioned(key).version != current.version
    assert storage.put_bytes_if(key, b"six", version=written.version)


def test_a_merge_that_outlived_its_lock_is_redone(storage: Storage, tmp_path: Path) -> None:
    plan = plan_of(tmp_path, [f"https://cdn.test/{n}.jpg" for n in range(3)])
    DocumentFolder(storage, plan, job_id="j").open()
    # Writer A's lock has expired (no exclusion at all); writer B merges between A's read of
    # metadata.json and A's write.
    a = DocumentFolder(storage, plan, job_id="j", lock=lambda folder: nullcontext())
    b = DocumentFolder(storage, plan, job_id="j")
    write = storage.put_bytes_if
    raced = []

    def racing(key: str, data: bytes, **kwargs):
        if not raced:
            raced.append(key)
            b.merge([failed(plan, 2)])
        return write(key, data, **kwargs)

    storage.put_bytes_if = racing  # type: ignore[method-assign]
    try:
        a.merge([failed(plan, 1)])
    finally:
        del storage.put_bytes_if

    # Then neither record is lost: A's first write was refused and its merge made again
    assert raced
    meta = DocumentFolder(storage, plan, job_id="j").read()
    assert [r["index"] for r in meta["images"]] == [1, 2]


class _Reads:
    """Counts the reads of metadata.json that a folder makes (the backend's own method)."""

    def __init__(self, storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        read = storage.read_versioned

        def counted(key: str):
            self.count += 1
            return read(key)

        monkeypatch.setattr(storage, "read_versioned", counted)


def test_a_merge_after_its_own_claim_does_not_read_the_file_again(
        storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a folder that claimed metadata.json (one read, one write)
    plan = plan_of(tmp_path, [f"https://cdn.test/{n}.jpg" for n in range(3)])
    folder = DocumentFolder(storage, plan, job_id="j")
    reads = _Reads(storage, monkeypatch)
    folder.open()
    assert reads.count == 1
    # When it merges twice: its own last write stands for the file (S3: no GET)
    folder.merge([failed(plan, 1)])
    folder.merge([failed(plan, 3)])
    assert reads.count == 1
    meta = DocumentFolder(storage, plan, job_id="j").read()
    assert [r["index"] for r in meta["images"]] == [1, 3]


def test_a_merge_whose_own_copy_is_behind_reads_the_file_and_keeps_both(
        storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a folder that claimed metadata.json, then another writer's merge
    from images_service.download import folder as folder_module

    plan = plan_of(tmp_path, [f"https://cdn.test/{n}.jpg" for n in range(3)])
    folder = DocumentFolder(storage, plan, job_id="j")
    folder.open()
    DocumentFolder(storage, plan, job_id="j").merge([failed(plan, 2)])
    waits: list[float] = []
    monkeypatch.setattr(folder_module.time, "sleep", waits.append)
    conflicts = folder_module.metrics.METADATA_CONFLICTS._value.get()
    reads = _Reads(storage, monkeypatch)
    # When the first folder merges: its copy's version is refused, the file is read
    folder.merge([failed(plan, 1)])
    assert reads.count == 1
    # Then no record is lost, and a stale copy is no race: no conflict, no wait
    meta = DocumentFolder(storage, plan, job_id="j").read()
    assert [r["index"] for r in meta["images"]] == [1, 2]
    assert waits == [] and folder_module.metrics.METADATA_CONFLICTS._value.get() == conflicts


def test_a_claim_reads_the_file_even_after_a_write_of_its_own(
        storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a folder that wrote metadata.json, then a newer plan's claim of it
    plan = plan_of(tmp_path, ["https://cdn.test/a.jpg"])
    folder = DocumentFolder(storage, plan, job_id="j")
    folder.open()
    folder.merge([failed(plan, 1)])
    newer = type(plan)(**{**plan.__dict__, "planned_at_ms": plan.planned_at_ms + 1})
    DocumentFolder(storage, newer, job_id="new").open()
    # When the first folder claims again (a replay): it reads the file and finds the newer plan
    with pytest.raises(StaleMessage):
        folder.open()


def test_an_older_plan_neither_claims_nor_merges(storage: Storage, tmp_path: Path) -> None:
    older = plan_of(tmp_path, ["https://cdn.test/a.jpg"])
    newer = plan_of(tmp_path, ["https://cdn.test/b.jpg", "https://cdn.test/a.jpg"])
    assert newer.planned_at_ms >= older.planned_at_ms
    newer = type(newer)(**{**newer.__dict__, "planned_at_ms": older.planned_at_ms + 1})
    DocumentFolder(storage, newer, job_id="new").open()
    DocumentFolder(storage, newer, job_id="new").merge([failed(newer, 1), failed(newer, 2)])
    before = DocumentFolder(storage, newer, job_id="new").read()

    with pytest.raises(StaleMessage):
        DocumentFolder(storage, older, job_id="old").open()
    with pytest.raises(StaleMessage):
        DocumentFolder(storage, older, job_id="old").merge([failed(older, 1)])
    with pytest.raises(StaleMessage):
        DocumentFolder(storage, older, job_id="old").check_current()

    assert DocumentFolder(storage, newer, job_id="new").read() == before


def test_a_newer_plan_takes_the_folder_over_at_its_claim(storage: Storage,
                                                         tmp_path: Path) -> None:
    first = plan_of(tmp_path, ["https://cdn.test/a.jpg"])
    DocumentFolder(storage, first, job_id="first").merge([failed(first, 1)])
    second = type(first)(**{**first.__dict__, "planned_at_ms": first.planned_at_ms + 5})

    meta = DocumentFolder(storage, second, job_id="second").open()

    # The claim records the newer plan before any image is stored, keeping the records
    assert (meta["job_id"], meta["planned_at_ms"]) == ("second", second.planned_at_ms)
    assert [r["index"] for r in meta["images"]] == [1]
    with pytest.raises(StaleMessage):
        DocumentFolder(storage, first, job_id="first").merge([failed(first, 1)])


@pytest.mark.parametrize("other_id", [5, "5"])
def test_ids_of_other_types_are_other_documents(storage: Storage, tmp_path: Path,
                                                other_id) -> None:
    settings = make_settings(tmp_path)
    mine = engine.plan_document({"_id": 5 if other_id == "5" else "5", "images": []},
                                "db", "coll", settings)
    theirs = engine.plan_document({"_id": other_id, "images": []}, "db", "coll", settings)
    assert mine.relative_folder == theirs.relative_folder == "db/coll/5"
    DocumentFolder(storage, mine, job_id="j").open()
    with pytest.raises(FolderConflict):
        DocumentFolder(storage, theirs, job_id="k").open()


# --- moved URLs are not fetched again (§15) --------------------------------------------------

def _download(storage: Storage, settings, doc: dict, job_id: str) -> dict:
    with Fetcher(settings) as fetcher:
        return engine.download_document(doc, "db", "coll", settings, job_id=job_id,
                                        storage=storage, fetcher=fetcher)


def _file_sha(storage: Storage, key: str) -> str:
    return storage.sha256_of(key)


@pytest.mark.parametrize("variants", ["", "thumb:32x32:fit:webp:80"])
def test_a_reordered_list_costs_no_request(storage: Storage, tmp_path: Path, image_server,
                                           variants: str) -> None:
    settings = make_settings(tmp_path, PROCESSED_VARIANTS=variants)
    urls = [image_server.url(f"/image/{fmt}/move-{n}") for n, fmt in
            enumerate(["JPEG", "PNG", "WEBP", "GIF", "JPEG"])]
    urls.append(image_server.url("/image/GIF/move-pixel?w=1&h=1"))  # a tiny placeholder (§18)
    first = _download(storage, settings, {"_id": "r", "name": "R", "images": urls}, "j1")
    assert [r["status"] for r in first["images"]] == ["downloaded"] * 6
    sha_of_url = {r["url"]: r["sha256"] for r in first["images"]}
    shows_of_url = {r["url"]: (r["phash"], r.get("placeholder")) for r in first["images"]}
    assert shows_of_url[urls[5]][1] == "tiny"
    image_server.reset()

    # When the list is reordered (the last first, the rest shifted) and downloaded again
    reordered = [urls[4], urls[5], urls[0], urls[3], urls[1], urls[2]]
    second = _download(storage, settings, {"_id": "r", "name": "R", "images": reordered}, "j2")

    # Then no request was made and every index holds its URL's bytes, variants included, and
    # what the image shows (§18)
    assert image_server.hits() == 0
    assert [r["status"] for r in second["images"]] == ["skipped"] * 6
    for record in second["images"]:
        assert record["url"] == reordered[record["index"] - 1]
        assert record["sha256"] == sha_of_url[record["url"]]
        assert (record["phash"], record.get("placeholder")) == shows_of_url[record["url"]]
        assert _file_sha(storage, f"db/coll/r-r/{record['file']}") == record["sha256"]
        for entry in (record.get("processed") or {}).values():
            assert _file_sha(storage, f"db/coll/r-r/{entry['file']}") == entry["sha256"]
    named = {f"db/coll/r-r/{r['file']}" for r in second["images"]}
    named |= {f"db/coll/r-r/{e['file']}" for r in second["images"]
              for e in (r.get("processed") or {}).values()}
    assert set(storage.list("db/coll/r-r")) == named | {"db/coll/r-r/metadata.json"}


def test_a_new_url_first_costs_one_request(storage: Storage, tmp_path: Path,
                                           image_server) -> None:
    settings = make_settings(tmp_path)
    urls = [image_server.url(f"/image/JPEG/shift-{n}") for n in range(3)]
    _download(storage, settings, {"_id": "s", "images": urls}, "j1")
    image_server.reset()
    new = image_server.url("/image/PNG/shift-new")
    meta = _download(storage, settings, {"_id": "s", "images": [new, *urls]}, "j2")
    assert image_server.hits() == 1 and image_server.hits("/image/PNG/shift-new") == 1
    assert [r["status"] for r in meta["images"]] == ["downloaded", "skipped", "skipped",
                                                     "skipped"]
    assert sorted(k.rsplit("/", 1)[1] for k in storage.list("db/coll/s/original")) == [
        "img_001.png", "img_002.jpg", "img_003.jpg", "img_004.jpg"]
