"""A document's last download as its metadata.json tells it (workers/listener/tree.py)."""

from __future__ import annotations

import json
from pathlib import Path

from images_service.config.settings import load_settings
from images_service.storage.filesystem import FilesystemStorage
from workers.listener.decide import LastDownload
from workers.listener.tree import TreeReader, from_metadata

SETTINGS = load_settings({})


def _meta(document_id: str, urls: list[str | None], total: int | None = None, **extra) -> dict:
    images = [{"index": i, "url": u, "status": "downloaded"}
              for i, u in enumerate(urls, start=1) if u is not None]
    return {"database": "db", "collection": "hotels", "document_id": document_id,
            "images": images, "summary": {"total": len(urls) if total is None else total},
            **extra}


def test_the_records_by_index_with_the_plans_length():
    running = from_metadata("db/hotels/1-h", _meta("1", ["u1", None, "u3"]))
    assert running == LastDownload("db/hotels/1-h", urls=("u1", None, "u3"))
    assert not running.differs(["u1", "u2", "u3"], "db/hotels/1-h")  # index 2 unknown yet
    assert running.differs(["u1", "u2", "u4"], "db/hotels/1-h")
    assert running.differs(["u1", "u2"], "db/hotels/1-h")
    assert running.differs(["u1", "u2", "u3"], "db/hotels/1-other")
    # without a summary the highest index gives the length
    assert from_metadata("f", {"images": [{"index": 2, "url": "b"}]}).urls == (None, "b")


def test_the_reader_finds_the_written_back_folder_or_the_current_one(tmp_path: Path):
    storage = FilesystemStorage(tmp_path)
    old = "db/hotels/1-old-name"
    storage.put_bytes(f"{old}/metadata.json",
                      json.dumps(_meta("1", ["u1"], document_key={"$numberInt": "1"})).encode())
    reader = TreeReader(storage, SETTINGS)
    doc = {"_id": 1, "name": "New Name", "images": ["u1"]}
    # No write-back path: the folder the document names now has nothing
    assert reader.last_download(doc, "db", "hotels") is None
    # The write-back names the old folder: found there (so a rename is a change)
    with_path = {**doc, "images_download": {"status": "completed", "path": old}}
    assert reader.last_download(with_path, "db", "hotels") == LastDownload(old, urls=("u1",))
    # A path outside the document's own folders is never followed
    assert reader.last_download({**doc, "images_download": {"path": "db/hotels/2-x"}},
                                "db", "hotels") is None
    # The same folder name of another typed _id ("1" is not 1) is not this document's
    assert reader.last_download({**with_path, "_id": "1"}, "db", "hotels") is None
