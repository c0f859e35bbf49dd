"""The trash service's own rules: names checked before any lookup, newest deletion first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from images_service.errors import InvalidRequest
from images_service.storage import trash
from images_service.storage.filesystem import FilesystemStorage
from images_service.trash_admin import TrashAdmin


@pytest.fixture
def admin(tmp_path: Path) -> TrashAdmin:
    # A client that is never used by these tests: no lock is taken before a name is checked.
    return TrashAdmin(FilesystemStorage(tmp_path / "images"),
                      redis.Redis(host="127.0.0.1", port=1))


@pytest.mark.parametrize("database, collection, other", [
    ("bad$db", "hotels", "h1"), ("db", ".hidden", "h1"), ("db", "hotels", ".."),
    ("db", "hotels", ".trash"), ("db", "hotels", "a/b"), ("db", "hotels", " h1"),
    ("db", "hotels", ""),
])
def test_bad_names_are_invalid_requests(admin, database, collection, other):
    with pytest.raises(InvalidRequest):
        admin.restore(database, collection, other)
    with pytest.raises(InvalidRequest):
        admin.purge(database, collection, other)
    with pytest.raises(InvalidRequest):
        admin.preview(database, collection, other)


def test_items_are_listed_newest_deletion_first(admin):
    storage = admin.storage
    now = datetime(2026, 12, 7, tzinfo=UTC)
    for name, days in (("b", 3), ("a", 1), ("c", 1), ("d", 2)):
        storage.put_bytes(f"db/coll/{name}/metadata.json", b'{"document_id": "x", "images": []}')
        trash.trash_folder(storage, f"db/coll/{name}", now=now - timedelta(days=days))
    assert [item.folder for item in admin.items("db", "coll")] == ["a", "c", "d", "b"]
    assert admin.collections() == [("db", "coll")]
