"""Jobs in ``JOBS_DATABASE.jobs``: creation, state transitions, progress, listing (contract §6).

A job's state moves pending -> running -> completed | failed | cancelled, each transition a
conditional update so that no two processes can both make it, and a finished job never comes
back to life. ``updated_at`` (epoch seconds) is touched by every write of the pipeline: the
sweeper (workers/sweeper.py) looks only at active jobs idle for a while. Every job carries a
retention expiry from its creation (``retention.expire_at``: created + retention + a margin,
so that even a job that never ends leaves the collection), reset to finished + retention
when it ends. Progress counters only grow; writers send the totals they know with ``$max``,
so updates are idempotent and may arrive in any order.

Embedded-server quirks handled here (EMBEDDED_MONGO.md, plus one measured for this module):
- a date written by a top-level ``$set`` reads back as a string: times are stored as epoch
  seconds (numbers) and formatted by :func:`iso`; the TTL date lives in a whole subdocument
  (``retention.expire_at``), whose dates keep their type;
- subdocuments pushed with ``$push``/``$each``/``$slice`` read back as JSON strings: decoded on
  read (:func:`_decode_errors`), which is a no-op on MongoDB;
- references are strings (job ids are uuid hex), never ObjectIds.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.collection import Collection

from images_service.jobs.expiry import ensure_retention_index
from images_service.jobs.outcome import outcome  # noqa: F401 -- part of the job's API form

JOB_TYPES = ("collection", "document", "batch", "change_stream", "refresh", "reconcile")
JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
ACTIVE = ("pending", "running")
FINISHED = ("completed", "failed", "cancelled")
PROGRESS_FIELDS = (
    "documents_total", "documents_done", "images_total",
    "images_downloaded", "images_skipped", "images_failed",
)  # fmt: skip
#: Progress a refresh job adds (contract §16); other jobs do not show them.
REFRESH_FIELDS = ("images_not_modified", "images_changed", "images_missing", "images_gone")
ALL_PROGRESS_FIELDS = (*PROGRESS_FIELDS, *REFRESH_FIELDS)
#: A reconcile job's ``result`` (contract §15): counts, then up to 100 example paths.
RESULT_FIELDS = ("trashed", "downloaded", "removed_files", "examples")
#: The job keeps the last this many errors ...
MAX_ERRORS = 100
#: ... each one's ``url`` and ``message`` cut to this many characters (§14): a document may
#: name a URL of any length, and a job document must stay far below MongoDB's 16 MB.
MAX_ERROR_TEXT_CHARS = 2048
#: An active job expires this long after the retention counted from its creation: far
#: longer than any job runs (the sweeper ends a job within minutes of its work stopping).
ACTIVE_RETENTION_MARGIN = timedelta(days=7)


def now_ts() -> float:
    return time.time()


def iso(value: Any) -> str | None:
    """ISO 8601 UTC with a ``Z`` from epoch seconds, a datetime or a stored date string."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    elif isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_job_id() -> str:
    return uuid.uuid4().hex


def _decode_errors(errors: list[Any]) -> list[dict[str, Any]]:
    # nx-27017 quirk: pushed subdocuments come back as JSON strings.
    return [json.loads(e) if isinstance(e, str) else e for e in errors or []]


class JobStore:
    """Repository of jobs; every method is one or two MongoDB round trips."""

    def __init__(self, client: MongoClient, database: str, *, retention_days: int = 30,
                 ttl_by_server: bool | None = None) -> None:
        self.collection: Collection = client[database]["jobs"]
        self.retention = timedelta(days=retention_days)
        #: Does the server delete expired jobs itself (None: ask it; images_service.jobs.expiry)?
        self.ttl_by_server = ttl_by_server

    def ensure_indexes(self) -> None:
        self.collection.create_index([("created_at", DESCENDING)])
        self.collection.create_index([("status", ASCENDING), ("created_at", DESCENDING)])
        self.collection.create_index([("type", ASCENDING), ("created_at", DESCENDING)])
        self.ttl_by_server = ensure_retention_index(self.collection, self.ttl_by_server)
        self.collection.create_index([("retry_of", ASCENDING), ("created_at", DESCENDING)])

    # --- creation and reads -------------------------------------------------------------

    def create(
        self,
        job_type: str,
        database: str,
        collection: str,
        *,
        document_id: str | None = None,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        force: bool = False,
        image_fields: list[str] | None = None,
        job_id: str | None = None,
        source: Mapping[str, Any] | None = None,
        retry_of: str | None = None,
        older_than_days: float | None = None,
        spread: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        if job_type not in JOB_TYPES:
            raise ValueError(f"unknown job type {job_type!r}")
        job_id = job_id or new_job_id()
        created = now_ts()
        doc: dict[str, Any] = {
            "_id": job_id,
            "type": job_type,
            "status": "pending",
            "database": database,
            "collection": collection,
            "force": bool(force),
            "image_fields": list(image_fields) if image_fields else None,
            "created_at": created,
            "updated_at": created,
            "started_at": None,
            "finished_at": None,
            "progress": {name: 0 for name in
                         (ALL_PROGRESS_FIELDS if job_type == "refresh" else PROGRESS_FIELDS)},
            "errors": [],
            # A whole subdocument keeps its date type on nx-27017 (TTL needs a date).
            "retention": {"expire_at": datetime.now(timezone.utc) + self.retention
                          + ACTIVE_RETENTION_MARGIN},
        }
        if document_id is not None:
            doc["document_id"] = document_id
        if job_type == "batch" or filter is not None:
            # Stored as JSON text: operators such as $gt are not legal field names in a
            # stored document, and the filter is given back exactly as the caller wrote it.
            doc["filter_json"] = json.dumps(filter or {})
        if limit is not None:
            doc["limit"] = limit
        if source:
            doc["source"] = dict(source)
        if retry_of is not None:
            doc["retry_of"] = retry_of
        if older_than_days is not None:
            doc["older_than_days"] = older_than_days
        if spread:
            doc["spread"] = True  # a scheduled refresh: due times spread per URL (§16)
        if job_type == "reconcile":
            doc["dry_run"] = bool(dry_run)  # §15: report what it would do, change nothing
        self.collection.insert_one(doc)
        return doc

    def delete(self, job_id: str) -> None:
        self.collection.delete_one({"_id": job_id})

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": job_id})

    def retries_of(self, job_id: str) -> list[dict[str, Any]]:
        """The retries of ``job_id`` (``retry_of``), newest first: id, status, creation."""
        return list(self.collection.find({"retry_of": job_id},
                                         {"status": 1, "created_at": 1})
                    .sort("created_at", DESCENDING))

    def status(self, job_id: str) -> str | None:
        doc = self.collection.find_one({"_id": job_id}, {"status": 1})
        return doc["status"] if doc else None

    def list(
        self, *, status: str | None = None, job_type: str | None = None, limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        query: dict[str, Any] = {}
        if status:
            query["status"] = status
        if job_type:
            query["type"] = job_type
        total = self.collection.count_documents(query)
        cursor = self.collection.find(query).sort("created_at", DESCENDING).skip(offset).limit(limit)
        return list(cursor), total

    # --- transitions ----------------------------------------------------------------------

    def start(self, job_id: str) -> dict[str, Any] | None:
        """pending -> running, returning the job as it is after the move (one command: the
        first step's read and its move together); None when it was not pending."""
        return self.collection.find_one_and_update(
            {"_id": job_id, "status": "pending"},
            {"$set": {"status": "running", "started_at": now_ts(), "updated_at": now_ts()}},
            return_document=ReturnDocument.AFTER,
        )

    def finish(self, job_id: str, status: str, *, progress: Mapping[str, int] | None = None,
               message: str | None = None,
               errors: list[Mapping[str, Any]] | None = None) -> dict[str, Any] | None:
        """pending/running -> ``status`` (completed, failed or cancelled), at most once, with
        the last ``progress`` and ``errors`` (as :meth:`record_progress`) in the same write.

        Returns the job as it is after the move, or None when it had already finished (then
        nothing was written: the caller records the progress on its own if it must).
        """
        assert status in FINISHED
        update: dict[str, Any] = {
            "$set": {
                "status": status,
                "finished_at": now_ts(),
                "updated_at": now_ts(),
                # A whole subdocument keeps its date type on nx-27017 (TTL needs a date).
                "retention": {"expire_at": datetime.now(timezone.utc) + self.retention},
            }
        }
        if progress:
            update["$max"] = {f"progress.{k}": int(v) for k, v in progress.items()}
        if message:
            update["$set"]["failure"] = message
        if errors:
            update["$push"] = _errors_push(errors)
        return self.collection.find_one_and_update(
            {"_id": job_id, "status": {"$in": list(ACTIVE)}}, update,
            return_document=ReturnDocument.AFTER,
        )

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        return self.finish(job_id, "cancelled")

    def idle_active(self, idle_since_ts: float) -> list[dict[str, Any]]:
        """Pending and running jobs with no write since ``idle_since_ts`` (epoch seconds)."""
        # The idle test is made here rather than in the query: active jobs are few, and a job
        # written before ``updated_at`` existed falls back to its creation time.
        active = self.collection.find({"status": {"$in": list(ACTIVE)}},
                                      {"type": 1, "status": 1, "created_at": 1, "updated_at": 1})
        return [job for job in active
                if float(job.get("updated_at") or job.get("created_at") or 0) < idle_since_ts]

    # --- progress ---------------------------------------------------------------------------

    def record_result(self, job_id: str, result: Mapping[str, Any]) -> None:
        """A reconcile job's ``result`` (contract §15), replaced whole as its counts grow."""
        # A whole subdocument: its list and numbers read back as written on nx-27017 too.
        self.collection.update_one({"_id": job_id},
                                   {"$set": {"result": dict(result), "updated_at": now_ts()}})

    def record_progress(self, job_id: str, progress: Mapping[str, int],
                        errors: list[Mapping[str, Any]] | None = None) -> None:
        """Raise counters to the given totals and append errors (last MAX_ERRORS kept)."""
        update: dict[str, Any] = {"$max": {f"progress.{k}": int(v) for k, v in progress.items()},
                                  "$set": {"updated_at": now_ts()}}
        if errors:
            update["$push"] = _errors_push(errors)
        self.collection.update_one({"_id": job_id}, update)


def _errors_push(errors: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``$push`` of job errors keeping the last MAX_ERRORS."""
    return {"errors": {"$each": [_bounded(e) for e in errors[-MAX_ERRORS:]],
                       "$slice": -MAX_ERRORS}}


def _bounded(error: Mapping[str, Any]) -> dict[str, Any]:
    """A job error with its free texts cut to MAX_ERROR_TEXT_CHARS."""
    out = dict(error)
    for name in ("url", "message", "document_id"):
        if isinstance(out.get(name), str) and len(out[name]) > MAX_ERROR_TEXT_CHARS:
            out[name] = out[name][:MAX_ERROR_TEXT_CHARS]
    return out


def job_to_api(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The job as the API returns it (contract §6)."""
    out: dict[str, Any] = {
        "job_id": doc["_id"],
        "type": doc["type"],
        "status": doc["status"],
        "database": doc["database"],
        "collection": doc["collection"],
    }
    if "document_id" in doc:
        out["document_id"] = doc["document_id"]
    if "filter_json" in doc:
        out["filter"] = json.loads(doc["filter_json"])
    if "limit" in doc:
        out["limit"] = doc["limit"]
    out["force"] = bool(doc.get("force"))
    if doc.get("image_fields"):
        out["image_fields"] = list(doc["image_fields"])
    out["created_at"] = iso(doc.get("created_at"))
    out["started_at"] = iso(doc.get("started_at"))
    out["finished_at"] = iso(doc.get("finished_at"))
    progress = doc.get("progress") or {}
    fields = ALL_PROGRESS_FIELDS if doc["type"] == "refresh" else PROGRESS_FIELDS
    out["progress"] = {name: int(progress.get(name, 0)) for name in fields}
    if "older_than_days" in doc:
        out["older_than_days"] = doc["older_than_days"]
    out["errors"] = _decode_errors(doc.get("errors", []))[-MAX_ERRORS:]
    if doc.get("failure"):
        out["message"] = doc["failure"]
    if doc.get("retry_of"):
        out["retry_of"] = doc["retry_of"]
    if doc["type"] == "reconcile":
        out["dry_run"] = bool(doc.get("dry_run"))
        result = doc.get("result")
        if isinstance(result, str):  # defensive: a subdocument read back as JSON text
            result = json.loads(result)
        if result is not None:
            out["result"] = {name: (list(result.get(name) or []) if name == "examples"
                                    else int(result.get(name) or 0)) for name in RESULT_FIELDS}
    return out
