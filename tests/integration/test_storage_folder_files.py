"""What reconcile sees of the tree (contract §15), on both backends: each folder of a
collection with every file in it and its age, temporary leftovers included, streamed."""

from __future__ import annotations

import time
from pathlib import Path

from images_service.storage.backend import Storage
from images_service.storage.filesystem import FilesystemStorage


def _leftover(storage: Storage, key: str) -> None:
    """A temporary file as an interrupted writer leaves it."""
    if isinstance(storage, FilesystemStorage):
        path = Path(storage.root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    else:
        storage._client.put_object(Bucket=storage.bucket, Key=storage.prefix + key, Body=b"p")


def test_folder_files_lists_every_file_of_each_folder_with_its_time(any_storage) -> None:
    storage = any_storage
    started = time.time()
    storage.put_bytes("db/c/a-x/metadata.json", b"{}")
    storage.put_bytes("db/c/a-x/original/img_001.jpg", b"1")
    storage.put_bytes("db/c/a-x/processed/thumb/img_001.webp", b"2")
    storage.put_bytes("db/c/a/metadata.json", b"{}")  # sorts after "a-x" ('-' < '/')
    storage.put_bytes("db/c2/b/metadata.json", b"{}")  # another collection
    _leftover(storage, "db/c/a/original/.tmp-host.1-2-abc")
    storage.trash().put_bytes("db/c/gone/metadata.json", b"{}")  # never part of the tree

    found = {name: sorted(f.key for f in files) for name, files in storage.folder_files("db/c")}

    assert found == {
        "a-x": ["db/c/a-x/metadata.json", "db/c/a-x/original/img_001.jpg",
                "db/c/a-x/processed/thumb/img_001.webp"],
        "a": ["db/c/a/metadata.json", "db/c/a/original/.tmp-host.1-2-abc"]}
    # Resumed after a folder where the listing's order is stable (S3), from the start elsewhere
    listed = [name for name, _ in storage.folder_files("db/c")]
    for first in range(len(listed)):
        resumed = [name for name, _ in storage.folder_files("db/c", after=listed[first])]
        assert resumed == (listed[first + 1:] if storage.folders_sorted else listed)
    assert storage.folders_sorted == (not isinstance(storage, FilesystemStorage))
    times = [f.modified_s for _, files in storage.folder_files("db/c") for f in files]
    assert all(started - 5 <= t <= time.time() + 5 for t in times)

    storage.delete_files(["db/c/a/original/.tmp-host.1-2-abc", "db/c/a-x/original/img_001.jpg",
                          "db/c/a-x/original/img_404.jpg"])  # absent: ignored
    found = {name: sorted(f.key for f in files) for name, files in storage.folder_files("db/c")}
    assert found == {"a-x": ["db/c/a-x/metadata.json", "db/c/a-x/processed/thumb/img_001.webp"],
                     "a": ["db/c/a/metadata.json"]}
    assert list(storage.folder_files("db/none")) == []
