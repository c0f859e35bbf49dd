"""The trash (contract §15) on both storage backends: trash, list, restore, purge, expire."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from images_service.download import engine
from images_service.errors import Conflict, NotFound
from images_service.fetching.fetcher import Fetcher
from images_service.storage import folders, trash
from images_service.storage.backend import Storage
from tests.support.engine import make_settings


@pytest.fixture
def storage(any_storage: Storage) -> Storage:
    return any_storage


@pytest.fixture
def downloaded(storage: Storage, tmp_path: Path, image_server):
    """Document ``h1`` ("Hotel") downloaded with two images and a thumbnail each."""
    settings = make_settings(tmp_path, PROCESSED_VARIANTS="thumb:32x32:fit:webp:80")
    doc = {"_id": "h1", "name": "Hotel", "images": [image_server.url("/image/JPEG/t1"),
                                                    image_server.url("/image/PNG/t2")]}
    with Fetcher(settings) as fetcher:
        meta = engine.download_document(doc, "db", "coll", settings, job_id="j",
                                        storage=storage, fetcher=fetcher)
    assert meta["summary"]["downloaded"] == 2
    return "db/coll/h1-hotel", sorted(storage.list("db/coll/h1-hotel"))


def test_a_trashed_folder_keeps_its_files_and_gains_deleted_at(storage, downloaded) -> None:
    folder, files = downloaded
    now = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)

    assert trash.trash_folder(storage, folder, now=now)

    assert storage.list(folder) == [] and storage.list("db/coll") == []
    bin_ = storage.trash()
    assert sorted(bin_.list(folder)) == files
    meta = json.loads(bin_.read_bytes(f"{folder}/metadata.json"))
    assert meta["deleted_at"] == "2026-12-01T10:00:00Z"
    (item,) = trash.items(storage, "db", "coll")
    assert (item.folder, item.document_id, item.deleted_at, item.images) == (
        "h1-hotel", "h1", "2026-12-01T10:00:00Z", 2)
    assert not trash.trash_folder(storage, folder)  # nothing left to trash


def test_restore_brings_it_back_and_refuses_an_occupied_folder(storage, downloaded) -> None:
    folder, files = downloaded
    trash.trash_folder(storage, folder)
    trash.restore(storage, folder)
    assert sorted(storage.list(folder)) == files
    assert "deleted_at" not in json.loads(storage.read_bytes(f"{folder}/metadata.json"))
    assert list(trash.items(storage, "db", "coll")) == []
    with pytest.raises(NotFound) as missing:
        trash.restore(storage, folder)
    assert missing.value.code == "not_in_trash"
    # Trashed again, then the folder exists again (downloaded since): 409, both kept
    trash.trash_folder(storage, folder)
    storage.put_bytes(f"{folder}/metadata.json", b'{"document_id": "h1"}')
    with pytest.raises(Conflict) as taken:
        trash.restore(storage, folder)
    assert taken.value.code == "folder_conflict"
    assert len(list(trash.items(storage, "db", "coll"))) == 1


def test_a_folder_trashed_again_replaces_the_older_copy(storage, downloaded) -> None:
    folder, files = downloaded
    trash.trash_folder(storage, folder)
    storage.put_bytes(f"{folder}/metadata.json",
                      json.dumps({"document_id": "h1", "images": []}).encode())
    trash.trash_folder(storage, folder)
    assert storage.trash().list(folder) == [f"{folder}/metadata.json"]


def test_purge_removes_the_folder_and_every_trashed_copy(storage, downloaded) -> None:
    folder, files = downloaded
    trash.trash_folder(storage, folder)
    storage.put_bytes(f"{folder}/metadata.json", b'{"document_id": "h1"}')

    removed = trash.purge(storage, "db", "coll", "h1")

    assert removed == len(files) + 1
    assert storage.list("") == [] and storage.trash().list("") == []
    with pytest.raises(NotFound) as nothing:
        trash.purge(storage, "db", "coll", "h1")
    assert nothing.value.code == "document_not_found"


def test_folders_of_a_document_are_confirmed_by_their_metadata(storage) -> None:
    # "hotel-ritz" may be the folder of id "hotel-ritz" or of id "hotel" named "Ritz"
    storage.put_bytes("db/coll/hotel-ritz/metadata.json", b'{"document_id": "hotel-ritz"}')
    storage.put_bytes("db/coll/hotel/metadata.json", b'{"document_id": "hotel"}')
    assert folders.of_document(storage, "db", "coll", "hotel") == ["db/coll/hotel"]
    assert folders.of_document(storage, "db", "coll", "hotel-ritz") == ["db/coll/hotel-ritz"]
    assert folders.of_document(storage, "db", "coll", "hot") == []


def test_expire_removes_only_what_the_retention_has_passed(storage, downloaded) -> None:
    folder, _ = downloaded
    now = datetime(2026, 12, 10, tzinfo=timezone.utc)
    trash.trash_folder(storage, folder, now=now - timedelta(days=8))
    storage.put_bytes("db/coll/h2/metadata.json", b'{"document_id": "h2", "images": []}')
    trash.trash_folder(storage, "db/coll/h2", now=now - timedelta(days=6))

    expired = trash.expire(storage, timedelta(days=7), now=now)

    assert expired == [folder]
    assert [item.folder for item in trash.items(storage, "db", "coll")] == ["h2"]
