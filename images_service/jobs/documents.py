"""The documents a job finished, in ``JOBS_DATABASE.job_documents`` (contract §14 "Surface").

The console lists a job's documents from here, never by querying a source collection: one
row per finished document of a job, written by the pipeline when the document is finished
(workers/pipeline/finish.py), read a page at a time through the index ``(job_id, sort_key)``.

A row: ``job_id``, ``document_id`` (the string of paths and ``metadata.json``), ``source_id``
(the ``_id`` as Extended JSON, its type kept), ``folder`` (the folder key, relative to the
image root), ``status`` (completed, partial or failed, as written back), ``downloaded``,
``failed``, ``finished_at`` (epoch seconds), ``sort_key`` (:func:`natural_key`: ``item2``
before ``item10``), ``retention.expire_at`` (TTL), and for the search for placeholder candidates
(contract §18, :mod:`images_service.content.candidates`) ``database``, ``collection`` and
``hashes``: ``[{"phash", "file"}]``, the distinct perceptual hashes of the document's stored
images that are neither ``tiny`` nor ``blank`` nor a near-duplicate, each with the first file
that has it. That search reads the newest rows of one collection through the index
``(database, collection, finished_at)``.

Writes are idempotent: one bulk write of upserts per call, each row keyed by its job and the
document's canonical Extended JSON ``_id`` (documents whose ids differ only in type are two
rows), so a replayed message rewrites the same rows.

Embedded-server quirks (README, "Embedded server caveats"): the TTL date lives in a whole
subdocument (``retention``), whose dates keep their type; other times are epoch seconds;
references are strings.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo import ASCENDING, DESCENDING, MongoClient, UpdateOne
from pymongo.collection import Collection

from images_service.jobs.expiry import ensure_retention_index
from images_service.jobs.store import ACTIVE_RETENTION_MARGIN, now_ts

COLLECTION = "job_documents"
#: A page of the console's job view waits at most this long for its rows (milliseconds).
PAGE_MAX_TIME_MS = 2000
#: Digit runs longer than this sort among themselves by their first digits only.
MAX_DIGITS = 999
_RUNS = re.compile(r"(\d+)")


def natural_key(document_id: str) -> str:
    """A string whose plain (binary) order is the natural order of ``document_id``.

    Each run of digits becomes its length (3 digits) and its value without leading zeros,
    so ``item2`` < ``item10`` < ``item010a``; text between the runs is kept as it is.
    """
    parts = []
    for i, part in enumerate(_RUNS.split(document_id)):
        if i % 2:  # a digit run
            digits = part.lstrip("0") or "0"
            parts.append(f"{min(len(digits), MAX_DIGITS):03d}{digits}")
        else:
            parts.append(part)
    return "".join(parts)


@dataclass(frozen=True)
class JobDocument:
    """One finished document of a job, as the pipeline knows it when the document ends."""

    job_id: str
    document_id: str
    source_id: str  #: the ``_id`` as Extended JSON (what the pipeline's messages carry)
    folder: str
    status: str
    downloaded: int
    failed: int
    database: str = ""
    collection: str = ""
    #: ``({"phash": …, "file": …}, …)``: see the module docstring.
    hashes: tuple[dict[str, str], ...] = ()

    @property
    def document_key(self) -> str:
        """The ``_id`` in canonical Extended JSON: ``5`` and ``"5"`` are two documents."""
        return json_util.dumps(json_util.loads(self.source_id), json_options=CANONICAL_JSON_OPTIONS)

    @property
    def row_id(self) -> str:
        digest = hashlib.sha256(f"{self.job_id}\n{self.document_key}".encode()).hexdigest()
        return digest[:40]


class JobDocuments:
    """Repository of the rows; indexes are made once per process, on the first write."""

    def __init__(self, client: MongoClient, database: str, *, retention_days: int = 30,
                 ttl_by_server: bool | None = None) -> None:
        self.collection: Collection = client[database][COLLECTION]
        # A row outlives its job's retention counted from its own end (the job ends later).
        self.retention = timedelta(days=retention_days) + ACTIVE_RETENTION_MARGIN
        #: Does the server delete expired rows itself (None: ask it; images_service.jobs.expiry)?
        self.ttl_by_server = ttl_by_server
        self._indexes_ready = False

    def ensure_indexes(self) -> None:
        self.collection.create_index([("job_id", ASCENDING), ("sort_key", ASCENDING)])
        self.ttl_by_server = ensure_retention_index(self.collection, self.ttl_by_server)
        self.collection.create_index([("database", ASCENDING), ("collection", ASCENDING),
                                      ("finished_at", ASCENDING)])
        self._indexes_ready = True

    def record(self, documents: Iterable[JobDocument]) -> None:
        """Upsert one row per document: one bulk write, harmless to repeat."""
        finished_at = now_ts()
        expire_at = datetime.now(UTC) + self.retention
        updates = []
        for doc in documents:
            updates.append(UpdateOne({"_id": doc.row_id}, {"$set": {
                "job_id": doc.job_id,
                "document_id": doc.document_id,
                "source_id": doc.source_id,
                "folder": doc.folder,
                "status": doc.status,
                "downloaded": int(doc.downloaded),
                "failed": int(doc.failed),
                "finished_at": finished_at,
                "sort_key": natural_key(doc.document_id) + "\x01" + doc.document_key,
                "database": doc.database,
                "collection": doc.collection,
                "hashes": [dict(h) for h in doc.hashes],
                # A whole subdocument keeps its date type on nx-27017 (TTL needs a date).
                "retention": {"expire_at": expire_at},
            }}, upsert=True))
        if not updates:
            return
        if not self._indexes_ready:
            self.ensure_indexes()
        self.collection.bulk_write(updates, ordered=False)

    def page(self, job_id: str, *, skip: int, limit: int,
             max_time_ms: int = PAGE_MAX_TIME_MS) -> list[dict[str, Any]]:
        """Rows of ``job_id`` in natural order of their document ids, one page."""
        cursor = (self.collection.find({"job_id": job_id})
                  .sort([("job_id", ASCENDING), ("sort_key", ASCENDING)])
                  .skip(skip).limit(limit).max_time_ms(max_time_ms))
        return list(cursor)

    def newest_of_collection(self, database: str, collection: str, *, limit: int,
                             max_time_ms: int = PAGE_MAX_TIME_MS) -> list[dict[str, Any]]:
        """The newest ``limit`` rows of documents of ``database.collection`` (any job), with
        their folder, document id and hashes only."""
        cursor = (self.collection.find({"database": database, "collection": collection},
                                       {"_id": 0, "folder": 1, "document_id": 1, "hashes": 1})
                  # Equality on the index's first two fields: it serves this sort too.
                  .sort("finished_at", DESCENDING)
                  .limit(limit).max_time_ms(max_time_ms))
        return list(cursor)
