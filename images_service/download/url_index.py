"""The URL index (contract §16): one record per image URL, in ``JOBS_DATABASE.urls``.

It is the service's crawl database: for every URL it has stored, one stored copy's key (so
another document naming the same URL gets a copy instead of a second request), the sha256,
size and format of that copy, the response's validators (``etag``, ``last_modified``) and when
the source was last checked (``checked_at``), and the source's status when it went missing
(``source``). Re-checks (:mod:`workers.pipeline.refresh`) read and update it; the trash and
purge remove the entries of the folders they take away; reconcile repairs it.

The index is a hint, never the truth: the tree (metadata.json and the files) is. A copy is made
only after the stored object is checked to be the recorded one (size and sha256), so a stale
entry costs a request, never a wrong image.

Documents: ``_id`` (a hash of the URL: URLs may be longer than an index key should be), ``url``,
``copy`` (key of the stored original), ``folder`` (the copy's folder key, indexed for removal),
``database``/``collection`` (of the copy), ``sha256``, ``bytes``, ``format``, ``width``,
``height``, ``content_type``, ``etag``, ``last_modified``, ``phash`` and ``placeholder`` (what
the image shows, contract §18: a copy carries them, as ``blank`` cannot be told again without
decoding), ``checked_at`` (epoch seconds), ``source``, ``updated_at``. Times are epoch seconds
(nx-27017 turns ``$set`` dates into strings: see images_service/jobs/store.py).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ASCENDING, MongoClient, ReplaceOne

#: Record fields copied from an image's metadata record into its index entry.
RECORD_FIELDS = ("sha256", "bytes", "format", "width", "height", "content_type", "http_status",
                 "etag", "last_modified", "phash", "placeholder")


def url_key(url: str) -> str:
    """The entry's ``_id``: a hash of the URL."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class UrlIndex:
    """Repository of the URL index; every method is one MongoDB round trip (the download
    threads' writes are batched by :mod:`images_service.download.index_writer`)."""

    def __init__(self, client: MongoClient, database: str) -> None:
        self.collection = client[database]["urls"]
        self._indexes_ready = False

    def ensure_indexes(self) -> None:
        if self._indexes_ready:
            return
        self.collection.create_index([("folder", ASCENDING)])
        self.collection.create_index([("database", ASCENDING), ("collection", ASCENDING),
                                      ("checked_at", ASCENDING)])
        self._indexes_ready = True

    def lookup(self, urls: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The entries of ``urls`` that exist, by URL."""
        keys = {url_key(url): url for url in urls}
        if not keys:
            return {}
        found = self.collection.find({"_id": {"$in": list(keys)}})
        return {entry["url"]: entry for entry in found if entry.get("url") in keys.values()}

    def record(self, folder: str, records: Iterable[Mapping[str, Any]]) -> None:
        """Make the downloaded images of ``folder`` the index's copies of their URLs."""
        self.record_many([(folder, record) for record in records])

    def record_many(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """:meth:`record` for (folder, record) pairs of any folders, in one round trip."""
        now = time.time()
        writes = []
        for folder, record in items:
            database, collection = folder.split("/")[:2]
            entry: dict[str, Any] = {
                "_id": url_key(record["url"]),
                "url": record["url"],
                "copy": f"{folder}/{record['file']}",
                "folder": folder,
                "database": database,
                "collection": collection,
                "checked_at": _epoch(record.get("checked_at")) or now,
                "updated_at": now,
            }
            entry.update({name: record[name] for name in RECORD_FIELDS if name in record})
            if isinstance(record.get("source"), Mapping):
                entry["source"] = dict(record["source"])
            writes.append(ReplaceOne({"_id": entry["_id"]}, entry, upsert=True))
        if writes:
            self.ensure_indexes()
            self.collection.bulk_write(writes, ordered=False)

    def forget_folders(self, folders: Iterable[str]) -> int:
        """Remove the entries whose copy lives in one of ``folders`` (trashed, purged)."""
        names = list(folders)
        if not names:
            return 0
        return self.collection.delete_many({"folder": {"$in": names}}).deleted_count


def _epoch(value: Any) -> float | None:
    """An ISO 8601 time of a record as epoch seconds (None when absent or unreadable)."""
    if not isinstance(value, str):
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
