"""The update rule where the document alone cannot say: its metadata.json, and the jobs.

workers/listener/decide.py compares a document with its last download as the write-back
records it (``urls_sha256`` and ``path``: no storage read, the same for events and for the
catch-up scan). Where the document carries no such record, :class:`Decider` looks further,
for events only (a scan would read the tree once per document on every start):

- a write-back older than ``urls_sha256``, or none at all although the document was inserted
  before (its insert job exists: it was replaced without its status field after a download,
  its download has not finished yet, or ``STATUS_FIELD`` is empty) → the folder's
  metadata.json, read through the storage (:class:`TreeReader`: at the write-back's ``path``,
  else at the folder the document names now; no listing of the collection's folders), is the
  last download. A folder being downloaded holds its plan's length and the records written so
  far: indexes not recorded yet count as unchanged.
- a write-back of a job that used a request's own ``image_fields`` (REST) → the document is
  compared under those fields, so that job's write-back, or an unrelated update, does not
  re-download the document by ``IMAGE_FIELDS`` (one read of that job, only when the default
  fields say "changed").

The catch-up scan applies the first point only to documents the rule already picked (an
insert whose job exists); documents with an older write-back are left to reconcile (README:
listener).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

from pymongo.errors import PyMongoError

from images_service.config.settings import Settings
from images_service.download.planning import document_key, folder_of
from images_service.download.urls import extract_image_urls, url_list_sha256
from images_service.errors import StorageUnavailable, Unavailable, UnsafePathError
from images_service.jobs.store import JobStore
from images_service.storage import layout
from images_service.storage.backend import Storage
from images_service.storage.metadata import key_identity, read_metadata
from workers.listener.decide import (
    INSERT,
    SCAN,
    UPDATE,
    Decision,
    LastDownload,
    decide,
    decide_scanned,
    status_of,
    written_back,
)

log = logging.getLogger(__name__)


def from_metadata(folder: str, meta: Mapping[str, Any]) -> LastDownload:
    """The last download as ``folder``'s metadata.json records it."""
    records = [r for r in meta.get("images") or [] if isinstance(r, Mapping)
               and isinstance(r.get("index"), int) and not isinstance(r.get("index"), bool)]
    total = (meta.get("summary") or {}).get("total")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        total = max((r["index"] for r in records), default=0)
    urls: list[str | None] = [None] * total
    for record in records:
        if 1 <= record["index"] <= total and isinstance(record.get("url"), str):
            urls[record["index"] - 1] = record["url"]
    return LastDownload(folder, urls=tuple(urls))


class TreeReader:
    """Reads a document's metadata.json through the storage (filesystem or S3)."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings

    def last_download(self, doc: Mapping[str, Any], database: str,
                      collection: str) -> LastDownload | None:
        """What the document's folder holds, or None when it has no folder (or it is not
        this document's). Raises Unavailable when the storage does not answer."""
        try:
            here = folder_of(doc, database, collection, self.settings)
            document_id = layout.document_id_str(doc["_id"])
        except UnsafePathError:
            return None
        candidates = [folder for folder in (self._written_path(doc, database, collection,
                                                               document_id), here) if folder]
        key = key_identity(document_key(doc["_id"]))
        for folder in dict.fromkeys(candidates):
            try:
                meta = read_metadata(self.storage, folder)
            except StorageUnavailable as exc:
                raise Unavailable(f"storage is unavailable: {exc}") from None
            if meta is None or meta.get("document_id") != document_id:
                continue
            recorded = meta.get("document_key")
            if recorded is not None and key_identity(recorded) != key:
                continue  # another document of the same folder name (ids are typed, §14)
            return from_metadata(folder, meta)
        return None

    def _written_path(self, doc: Mapping[str, Any], database: str, collection: str,
                      document_id: str) -> str | None:
        """The write-back's ``path`` when it names a folder of this document."""
        status = status_of(doc, self.settings)
        path = status.get("path") if status else None
        if not isinstance(path, str):
            return None
        parts = PurePosixPath(path).parts
        if len(parts) != 3 or parts[:2] != (database, collection) or not (
                parts[2] == document_id or parts[2].startswith(document_id + "-")):
            return None
        try:
            layout.check_segment(parts[2], "folder")
        except UnsafePathError:
            return None
        return path


class Decider:
    """The trigger rules with what they may need beyond the document (module docstring)."""

    def __init__(self, settings: Settings, tree: TreeReader | None, jobs: JobStore) -> None:
        self.settings = settings
        self.tree = tree
        self.jobs = jobs

    # -- events --------------------------------------------------------------------------------

    def event(self, doc: Mapping[str, Any] | None, operation: str, database: str,
              collection: str) -> Decision | None:
        """The job a change event's document needs (``operation``: update, replace, insert)."""
        decision = decide(doc, operation, database, collection, self.settings)
        if doc is None or operation == "insert" or not self.settings.watch_updates:
            return decision
        if decision is None:
            if self._old_write_back(doc):
                return self._with_tree(doc, operation, database, collection, decision)
            return None
        if decision.trigger == INSERT and self._exists(decision.job_id):
            return self._with_tree(doc, operation, database, collection, decision)
        if decision.trigger == UPDATE and self._same_for_its_request(doc, database, collection):
            return None
        return decision

    def redecide(self, database: str, collection: str) -> Callable[[Any], Decision | None]:
        """How the submitter decides again from a fresh read (a chain of ended jobs)."""
        return lambda fresh: self.event(fresh, "update", database, collection)

    # -- the catch-up scan ---------------------------------------------------------------------

    def scanned(self, docs: list[dict[str, Any]], database: str, collection: str,
                settled: Callable[[list[str]], set[str]]) -> list[tuple[dict[str, Any], Decision]]:
        """The scanned documents that need a job, with their decisions (the rest need none:
        no rule matched, or their job exists and needs nothing more)."""
        decisions = [(doc, decide_scanned(doc, database, collection, self.settings))
                     for doc in docs]
        done = settled([d.job_id for _, d in decisions if d is not None])
        wanted = []
        for doc, decision in decisions:
            if decision is None:
                continue
            if decision.job_id in done:
                if decision.trigger == INSERT and self.settings.watch_updates and \
                        self.settings.status_field:
                    # Inserted before, no write-back on it now: compare with its folder.
                    again = self._with_tree(doc, SCAN, database, collection, None)
                    if again is not None and again.trigger == UPDATE:
                        wanted.append((doc, again))
                continue
            if decision.trigger == UPDATE and self._same_for_its_request(doc, database,
                                                                         collection):
                continue
            wanted.append((doc, decision))
        return wanted

    # -- helpers -------------------------------------------------------------------------------

    def _old_write_back(self, doc: Mapping[str, Any]) -> bool:
        """Written back, but without ``urls_sha256`` (or without a status field at all)."""
        if not self.settings.status_field:
            return False  # nothing to go by but the insert job: see event()
        status = status_of(doc, self.settings)
        return bool(status and status.get("status") is not None) and \
            written_back(doc, self.settings) is None

    def _with_tree(self, doc: Mapping[str, Any], operation: str, database: str, collection: str,
                   otherwise: Decision | None) -> Decision | None:
        last = self.tree.last_download(doc, database, collection) if self.tree else None
        if last is None:
            return otherwise
        return decide(doc, operation, database, collection, self.settings, last=last)

    def _exists(self, job_id: str) -> bool:
        try:
            return self.jobs.collection.find_one({"_id": job_id}, {"_id": 1}) is not None
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None

    def _same_for_its_request(self, doc: Mapping[str, Any], database: str,
                              collection: str) -> bool:
        """The last download used a request's own ``image_fields`` and, by those fields, the
        document is what it downloaded."""
        status = status_of(doc, self.settings) or {}
        job_id = status.get("job_id")
        if not isinstance(job_id, str):
            return False
        try:
            job = self.jobs.collection.find_one({"_id": job_id}, {"image_fields": 1})
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        fields = (job or {}).get("image_fields")
        if not fields:
            return False
        try:
            path = folder_of(doc, database, collection, self.settings)
        except UnsafePathError:
            return False
        return path == status.get("path") and \
            url_list_sha256(extract_image_urls(doc, fields)) == status.get("urls_sha256")
