"""The Storage interface, the same tests on both backends: a directory and a real SeaweedFS.

Each test ends by looking at the store itself (the directory tree, or every key and pending
upload of the bucket): nothing but the contract's layout may be left (§5, §11).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from images_service.errors import StorageUnavailable
from images_service.storage import files
from images_service.storage.backend import Storage
from images_service.storage.filesystem import FilesystemStorage
from images_service.storage.s3 import S3Storage

FOLDER = "serpy_db/hotels/507f1f77bcf86cd799439011-hotel-ritz"
IMAGE = f"{FOLDER}/original/img_001.jpg"
META = f"{FOLDER}/metadata.json"
PREFIX = "imgs/"  # S3_PREFIX of the s3 backend: must never show in a key


@dataclass
class Backend:
    storage: Storage
    raw_state: Callable[[], list[str]]  #: what the store really holds, sorted
    make_leftover: Callable[[str], Any]  #: (key): what a writer killed mid-write of key leaves


def _tree(root: Path) -> list[str]:
    """Every file (hidden ones too) and every empty directory under ``root``."""
    found = []
    for directory, subdirs, names in os.walk(root):
        rel = os.path.relpath(directory, root)
        found += [os.path.normpath(os.path.join(rel, n)) for n in names]
        if not subdirs and not names and rel != ".":
            found.append(rel + "/")
    return sorted(found)


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "filesystem":
        root = tmp_path / "images"

        def fs_leftover(key: str) -> None:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / ".tmp-deadbeef.part").write_bytes(b"partial")

        storage = FilesystemStorage(root)
        yield Backend(storage, lambda: _tree(root), fs_leftover)
        return
    server = request.getfixturevalue("seaweedfs")
    bucket = request.getfixturevalue("s3_bucket")
    request.getfixturevalue("aws_credentials")
    client = server.client()

    def s3_state() -> list[str]:
        pending = [f"pending:{u['Key']}" for u in server.pending_uploads(bucket)]
        return sorted(server.all_keys(bucket) + pending)

    def s3_leftover(key: str) -> None:
        upload = client.create_multipart_upload(Bucket=bucket, Key=PREFIX + key)
        client.upload_part(Bucket=bucket, Key=PREFIX + key, UploadId=upload["UploadId"],
                           PartNumber=1, Body=b"partial")

    storage = S3Storage(bucket, prefix=PREFIX, endpoint_url=server.endpoint_url,
                        temp_root=tmp_path / "tmp")
    yield Backend(storage, s3_state, s3_leftover)
    storage.close()


def _state_of(backend: Backend, *keys: str) -> list[str]:
    """What the store should hold for ``keys``: with S3_PREFIX on s3, and the layout's
    empty folders on the filesystem."""
    if isinstance(backend.storage, S3Storage):
        return sorted(PREFIX + key for key in keys)
    folders = {key.rsplit("/", 2)[0] for key in keys if "/original/" in key}
    empty = [f"{folder}/processed/" for folder in folders
             if not any(key.startswith(f"{folder}/processed/") for key in keys)]
    return sorted(list(keys) + empty)


def _download(storage: Storage, folder: str, data: bytes) -> Path:
    """A body as the fetcher leaves it: a hidden temporary file in local_temp_dir."""
    path = storage.local_temp_dir(folder) / ".tmp-0123456789abcdef.part"
    path.write_bytes(data)
    return path


def _put_image(storage: Storage, key: str, data: bytes, folder: str = FOLDER) -> None:
    storage.ensure_folder(folder)
    local = _download(storage, folder, data)
    sha256 = hashlib.sha256(data).hexdigest()
    storage.put_file(key, local, content_type="image/jpeg", sha256=sha256)


def test_put_file_moves_the_body_into_place_and_reads_back(backend: Backend) -> None:
    storage, data = backend.storage, os.urandom(50_000)
    sha256 = hashlib.sha256(data).hexdigest()
    local = _download(storage, FOLDER, data)
    storage.put_file(IMAGE, local, content_type="image/jpeg", sha256=sha256)

    assert not local.exists()  # consumed: renamed, or uploaded and deleted
    assert storage.read_bytes(IMAGE) == data
    with storage.open(IMAGE) as stream:
        assert stream.read(1000) + stream.read() == data
    stat = storage.stat(IMAGE)
    assert stat is not None and stat.size_bytes == len(data)
    assert stat.sha256 == (None if storage.name == "filesystem" else sha256)
    assert storage.exists(IMAGE) and storage.list(FOLDER) == [IMAGE] == storage.list()
    assert backend.raw_state() == _state_of(backend, IMAGE)


def test_put_bytes_replaces_the_whole_object(backend: Backend) -> None:
    backend.storage.put_bytes(META, b'{"v": 1}')
    backend.storage.put_bytes(META, b'{"v": 2, "longer": true}')
    assert backend.storage.read_bytes(META) == b'{"v": 2, "longer": true}'
    assert backend.raw_state() == _state_of(backend, META)


def test_missing_objects_are_none_or_file_not_found(backend: Backend) -> None:
    storage = backend.storage
    assert storage.read_bytes(META) is None and storage.stat(IMAGE) is None
    assert not storage.exists(IMAGE) and storage.list(FOLDER) == []
    with pytest.raises(FileNotFoundError):
        storage.open(IMAGE)
    storage.delete([IMAGE, META])  # absent keys are ignored
    storage.put_bytes(META, b"{}")
    assert storage.stat(FOLDER) is None  # a folder is not an object


def test_list_matches_whole_folder_segments(backend: Backend) -> None:
    storage = backend.storage
    storage.put_bytes("db/coll/a/metadata.json", b"{}")
    storage.put_bytes("db/coll/ab/metadata.json", b"{}")
    storage.put_bytes("db/coll/a/processed/thumb/img_001.webp", b"w")
    assert storage.list("db/coll/a") == storage.list("db/coll/a/") == [
        "db/coll/a/metadata.json", "db/coll/a/processed/thumb/img_001.webp"]
    assert storage.list("db") == sorted(storage.list("db/coll/a") + ["db/coll/ab/metadata.json"])


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/key", "a//b", "a/./b", "a/.tmp-x",
                                 "a\\b", "a/b\x00", ""])
def test_unsafe_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError):
        backend.storage.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        backend.storage.stat(key)


def test_delete_and_delete_prefix(backend: Backend) -> None:
    storage = backend.storage
    _put_image(storage, IMAGE, b"one")
    _put_image(storage, f"{FOLDER}/original/img_002.png", b"two")
    storage.put_bytes(f"{FOLDER}/processed/thumb/img_001.webp", b"thumb")
    storage.put_bytes(META, b"{}")

    storage.delete([f"{FOLDER}/processed/thumb/img_001.webp", IMAGE])
    assert storage.list(FOLDER) == [META, f"{FOLDER}/original/img_002.png"]
    # An emptied variant folder goes, the layout's processed/ stays (filesystem).
    assert backend.raw_state() == _state_of(backend, META, f"{FOLDER}/original/img_002.png")
    with pytest.raises(ValueError):
        storage.delete_prefix("")
    assert storage.delete_prefix(FOLDER) == 2
    assert storage.list() == [] and storage.delete_prefix(FOLDER) == 0
    assert [k for k in backend.raw_state() if FOLDER in k] == []


def test_move_folder_takes_every_file_along(backend: Backend) -> None:
    storage, new = backend.storage, "serpy_db/hotels/507f1f77bcf86cd799439011-ritz-madrid"
    _put_image(storage, IMAGE, b"jpeg bytes")
    storage.put_bytes(f"{FOLDER}/processed/thumb/img_001.webp", b"webp bytes")
    storage.put_bytes(META, b'{"document_id": "507f1f77bcf86cd799439011"}')

    assert storage.move_folder(FOLDER, new) is True
    assert storage.list(FOLDER) == []
    assert storage.list(new) == [f"{new}/metadata.json", f"{new}/original/img_001.jpg",
                                 f"{new}/processed/thumb/img_001.webp"]
    assert storage.read_bytes(f"{new}/original/img_001.jpg") == b"jpeg bytes"
    assert storage.read_bytes(f"{new}/metadata.json").startswith(b'{"document_id"')
    assert backend.raw_state() == _state_of(backend, *storage.list(new))
    assert storage.move_folder(FOLDER, new) is False  # nothing left to move


def test_move_folder_refuses_a_target_holding_other_files(backend: Backend) -> None:
    storage, other = backend.storage, "serpy_db/hotels/hotel-ritz"
    _put_image(storage, IMAGE, b"mine")
    _put_image(storage, f"{other}/original/img_007.jpg", b"theirs", folder=other)
    with pytest.raises(FileExistsError):
        storage.move_folder(FOLDER, other)
    assert storage.read_bytes(IMAGE) == b"mine"
    assert storage.list(other) == [f"{other}/original/img_007.jpg"]


def test_move_folder_into_an_empty_layout(backend: Backend) -> None:
    storage, new = backend.storage, "serpy_db/hotels/renamed"
    _put_image(storage, IMAGE, b"x")
    storage.ensure_folder(new)  # e.g. prepared before the move was decided
    assert storage.move_folder(FOLDER, new) is True
    assert storage.list(new) == [f"{new}/original/img_001.jpg"]


def test_sweep_leftovers_removes_only_what_dead_writers_left(backend: Backend) -> None:
    storage = backend.storage
    _put_image(storage, IMAGE, b"kept")
    backend.make_leftover(f"{FOLDER}/original/img_002.jpg")
    assert backend.raw_state() != _state_of(backend, IMAGE)
    # A live writer's files are younger than the default age: they stay.
    assert storage.sweep_leftovers(FOLDER) == 0
    assert backend.raw_state() != _state_of(backend, IMAGE)
    time.sleep(0.05)
    assert storage.sweep_leftovers(FOLDER, older_than_s=0) == 1
    assert backend.raw_state() == _state_of(backend, IMAGE)
    assert storage.read_bytes(IMAGE) == b"kept"


def test_local_temp_dir(backend: Backend, tmp_path: Path) -> None:
    storage = backend.storage
    directory = storage.local_temp_dir(FOLDER)
    if storage.name == "filesystem":
        assert directory == tmp_path / "images" / FOLDER / "original"
    else:
        # Private to this process, outside STORAGE_PATH, and gone when the storage closes.
        assert directory.parent == tmp_path / "tmp"
        assert directory.name.startswith(f"images-service-{os.getpid()}-")  # and unpredictable
        assert directory.stat().st_mode & 0o777 == 0o700
        storage.close()
        assert not directory.exists()


def test_check_is_ok(backend: Backend) -> None:
    assert backend.storage.check() == "ok"


def test_a_failing_disk_is_a_retryable_storage_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.write_bytes(b"")  # STORAGE_PATH is a file: nothing can be created under it
    storage = FilesystemStorage(root)
    with pytest.raises(StorageUnavailable) as info:
        storage.put_bytes(META, b"{}")
    assert info.value.code == "connection_error" and info.value.retryable
    body = tmp_path / "body.part"
    body.write_bytes(b"image")
    with pytest.raises(StorageUnavailable):
        storage.put_file(IMAGE, body, content_type="image/jpeg", sha256="0" * 64)
    assert body.exists()  # left to the caller
    assert storage.check().startswith(f"error: STORAGE_PATH {str(root)!r} is not writable")


def _die_mid_write(directory: Path, name_out: Path) -> None:
    _fd, path = files.temp_file(directory)
    name_out.write_text(path.name)
    os._exit(0)  # killed mid-write: no cleanup runs


def test_the_next_writer_removes_what_a_dead_writer_of_this_host_left(tmp_path: Path) -> None:
    # Given a worker process that died while its body was streaming into original/
    storage = FilesystemStorage(tmp_path / "images")
    directory = storage.local_temp_dir(FOLDER)
    dead = multiprocessing.get_context("fork").Process(
        target=_die_mid_write, args=(directory, tmp_path / "name"))
    dead.start()
    dead.join(10)
    left = directory / (tmp_path / "name").read_text()
    assert left.exists() and str(dead.pid) in left.name
    _fd, live = files.temp_file(directory)  # a live writer's body (this process)
    os.close(_fd)

    # When the next writer of the folder on this host prepares it (the document-level step)
    storage.ensure_folder(FOLDER)
    assert storage.local_temp_dir(FOLDER) == directory

    # Then the dead writer's file is gone at once (not after an hour), the live one stays
    assert not left.exists() and live.exists()
    os.unlink(live)
    storage.ensure_folder(FOLDER)
    assert sorted(os.listdir(directory)) == []
