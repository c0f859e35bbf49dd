"""Starting jobs: the service functions behind the REST triggers and the listener (contract §4, §7).

Each function validates names, checks the collection (and document) exist, creates the job
and enqueues its first message. A filter is checked against the allow-list
(images_service.jobs.filters), then judged by the server with a bounded probe query, so a job is
only created for a filter its scan can run. Nothing is left half-created: Redis is probed
before the job is inserted, and a job whose message could not be enqueued is deleted again;
either backing service failing surfaces as :class:`~images_service.errors.Unavailable` (503).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Mapping, Protocol, Sequence

import redis
from bson import ObjectId, json_util
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from images_service import metrics
from images_service.config.settings import FIELD_PATH_RE, Settings
from images_service.errors import (
    Conflict,
    InvalidFilter,
    InvalidRequest,
    NotFound,
    Unavailable,
    UnsafePathError,
)
from images_service.jobs.filters import check_filter
from images_service.jobs.store import ACTIVE, JobStore
from images_service.storage import layout

log = logging.getLogger(__name__)

MAX_LIMIT = 100_000
#: The server judges a filter with one ``find(filter).limit(1)`` bounded by this (milliseconds).
FILTER_PROBE_MS = 2000


class JobExists(Exception):
    """A job with the requested deterministic ``job_id`` exists (the listener's de-duplication)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} already exists")
        self.job_id = job_id


def retry_job_id(job_id: str, number: int) -> str:
    """The id of the ``number``-th retry of ``job_id`` (deterministic: see retry_job)."""
    return hashlib.sha256(f"retry\0{job_id}\0{number}".encode()).hexdigest()[:32]


class EnqueuesScans(Protocol):
    def scan(self, job_id: str) -> None: ...


def check_names(database: str, collection: str) -> None:
    try:
        layout.check_database(database)
        layout.check_collection(collection)
    except UnsafePathError as exc:
        raise InvalidRequest(str(exc)) from None


def check_document_id(raw: str) -> None:
    try:
        layout.check_segment(raw, "document id")
    except UnsafePathError as exc:
        raise InvalidRequest(str(exc)) from None


def document_id_candidates(raw: str) -> list[Any]:
    """ObjectId when 24 hex digits, then the string, then the integer (contract §7)."""
    candidates: list[Any] = []
    if len(raw) == 24 and ObjectId.is_valid(raw):
        candidates.append(ObjectId(raw))
    candidates.append(raw)
    try:
        number = int(raw)
    except ValueError:
        pass
    else:
        if str(number) == raw.strip() and -(2**63) <= number < 2**63:
            candidates.append(number)
    return candidates


def check_limit(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return value


def check_force(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest("force must be true or false")
    return value


def check_older_than_days(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 36500:
        raise InvalidRequest("older_than_days must be a number of days from 0 to 36500")
    return value


def check_dry_run(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest("dry_run must be true or false")
    return value


def check_image_fields(value: Any) -> list[str] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or not value or len(value) > 50
            or not all(isinstance(v, str) and FIELD_PATH_RE.match(v) for v in value)):
        raise InvalidRequest("image_fields must be a non-empty list of dotted field paths")
    return value


class Triggers:
    """Creates jobs and enqueues their first message."""

    def __init__(self, settings: Settings, mongo: MongoClient, redis_client: redis.Redis,
                 jobs: JobStore, enqueuer: EnqueuesScans) -> None:
        self.settings = settings
        self.mongo = mongo
        self.redis = redis_client
        self.jobs = jobs
        self.enqueuer = enqueuer
        self._indexes_ready = False

    def _ensure_collection(self, database: str, collection: str) -> None:
        try:
            names = self.mongo[database].list_collection_names()
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        if collection not in names:
            raise NotFound(f"collection {database}.{collection} not found",
                           code="collection_not_found")

    def _start(self, job_type: str, database: str, collection: str, **fields: Any) -> dict[str, Any]:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from None
        try:
            if not self._indexes_ready:
                self.jobs.ensure_indexes()
                self._indexes_ready = True
            job = self.jobs.create(job_type, database, collection, **fields)
        except DuplicateKeyError:
            # Only callers that pass a deterministic job_id (the listener) can get here.
            raise JobExists(str(fields.get("job_id"))) from None
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        try:
            self.enqueuer.scan(job["_id"])
        except redis.RedisError as exc:
            try:
                self.jobs.delete(job["_id"])
            except PyMongoError:
                log.error("job %s could not be enqueued nor deleted", job["_id"])
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from None
        metrics.JOBS.labels(job_type, "created").inc()
        log.info("job %s created (%s %s.%s)", job["_id"], job_type, database, collection,
                 extra={"job_id": job["_id"]})
        return job

    def collection_job(self, database: str, collection: str, *, filter: Mapping[str, Any] | None = None,
                       limit: int | None = None, force: bool = False,
                       image_fields: Sequence[str] | None = None,
                       job_type: str = "collection") -> dict[str, Any]:
        check_names(database, collection)
        query = check_filter(filter) if filter is not None else None
        self._ensure_collection(database, collection)
        if query:
            self._probe_filter(database, collection, query)
        return self._start(job_type, database, collection, filter=filter, limit=limit,
                           force=force, image_fields=list(image_fields) if image_fields else None)

    def refresh_job(self, database: str, collection: str, *,
                    filter: Mapping[str, Any] | None = None, limit: int | None = None,
                    older_than_days: float | None = None, spread: bool = False,
                    job_id: str | None = None) -> dict[str, Any]:
        """A refresh job (contract §16): re-check the stored images of the collection's
        documents (matching ``filter``, at most ``limit``) not checked for ``older_than_days``
        (all of them without it). ``spread`` and ``job_id``: the scheduler's."""
        check_names(database, collection)
        query = check_filter(filter) if filter is not None else None
        self._ensure_collection(database, collection)
        if query:
            self._probe_filter(database, collection, query)
        return self._start("refresh", database, collection, filter=filter, limit=limit,
                           older_than_days=older_than_days, spread=spread, job_id=job_id)

    def reconcile_job(self, database: str, collection: str, *,
                      dry_run: bool = False) -> dict[str, Any]:
        """A reconcile job (contract §15): compare the collection with its tree and make good
        what the listener missed (workers/pipeline/reconcile.py); ``dry_run`` only reports."""
        check_names(database, collection)
        self._ensure_collection(database, collection)
        return self._start("reconcile", database, collection, dry_run=dry_run)

    def _probe_filter(self, database: str, collection: str, query: dict[str, Any]) -> None:
        """Let the server judge what the allow-list cannot (e.g. ``$mod`` by 0): a query it
        refuses is 400 ``invalid_filter``; a server that does not answer is 503."""
        try:
            list(self.mongo[database][collection].find(query, {"_id": 1}).limit(1)
                 .max_time_ms(FILTER_PROBE_MS))
        except OperationFailure as exc:
            if exc.code == 50:  # MaxTimeMSExpired: a slow query is not an invalid one
                return
            reason = (exc.details or {}).get("errmsg") or str(exc)
            raise InvalidFilter(f"the database refused the filter: {reason}") from None
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None

    def find_document_id(self, database: str, collection: str, raw_id: str) -> Any:
        """The ``_id`` of the document named by ``raw_id`` (contract §7 lookup order)."""
        coll = self.mongo[database][collection]
        try:
            for candidate in document_id_candidates(raw_id):
                found = coll.find_one({"_id": candidate}, {"_id": 1})
                if found is not None:
                    return found["_id"]
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        raise NotFound(f"document {raw_id} not found in {database}.{collection}",
                       code="document_not_found")

    def document_job(self, database: str, collection: str, raw_id: str, *, force: bool = False,
                     image_fields: Sequence[str] | None = None) -> dict[str, Any]:
        check_names(database, collection)
        check_document_id(raw_id)
        self._ensure_collection(database, collection)
        source_id = self.find_document_id(database, collection, raw_id)
        return self._start("document", database, collection,
                           document_id=layout.document_id_str(source_id),
                           source={"id": json_util.dumps(source_id)}, force=force,
                           image_fields=list(image_fields) if image_fields else None)

    def change_stream_job(self, database: str, collection: str, source_id: Any, *,
                          trigger: str, job_id: str | None = None) -> dict[str, Any]:
        """A job for one document found by the listener (no collection check: it exists).

        With a deterministic ``job_id`` the creation is idempotent: a second call raises
        :class:`JobExists` and enqueues nothing (workers/listener/enqueue.py repairs a job
        that was created but never enqueued).
        """
        return self._start("change_stream", database, collection,
                           document_id=layout.document_id_str(source_id),
                           source={"id": json_util.dumps(source_id), "trigger": trigger},
                           job_id=job_id)

    def retry_job(self, job_id: str) -> dict[str, Any]:
        """A new job of the same type and scope as finished job ``job_id`` (contract §13).

        The new job has ``force`` false: images already stored are skipped, so in effect only
        failed and missing ones are fetched again. A ``change_stream`` job stays a
        ``change_stream`` job (what started it is still what it is about).

        Idempotent (§14): while a retry of ``job_id`` is pending or running, another one is
        409 ``retry_active`` naming it. Two requests at the same instant cannot both create
        one: the n-th retry's id is a hash of (``job_id``, n), so the second insert collides
        on the unique ``_id`` (a hash never equal to the listener's, which hash the change).
        """
        try:
            job = self.jobs.get(job_id)
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        if job is None:
            raise NotFound(f"job {job_id} not found", code="job_not_found")
        if job["status"] in ACTIVE:
            raise Conflict(f"job {job_id} is still {job['status']}", code="job_active")
        database, collection = job["database"], job["collection"]
        self._ensure_collection(database, collection)
        scope: dict[str, Any] = {"image_fields": job.get("image_fields"), "retry_of": job_id}
        if "source" in job:  # document and change_stream jobs: the same document
            self._ensure_document(database, collection, json_util.loads(job["source"]["id"]))
            scope.update(document_id=job["document_id"], source=job["source"])
        if "filter_json" in job:
            scope["filter"] = json.loads(job["filter_json"])
        if job.get("limit") is not None:
            scope["limit"] = job["limit"]
        if job["type"] == "reconcile":
            scope["dry_run"] = bool(job.get("dry_run"))
        try:
            retries = self.jobs.retries_of(job_id)
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        number = len(retries)
        for _ in range(8):  # retries of the series deleted by retention free their numbers
            active = next((r for r in retries if r["status"] in ACTIVE), None)
            if active is not None:
                raise Conflict(f"retry {active['_id']} of job {job_id} is still "
                               f"{active['status']}", code="retry_active",
                               details={"job_id": active["_id"]})
            number += 1
            try:
                return self._start(job["type"], database, collection,
                                   job_id=retry_job_id(job_id, number), **scope)
            except JobExists as exc:
                existing = self.jobs.get(exc.job_id)
                retries = [existing] if existing is not None else []
        raise Unavailable(f"could not number a new retry of job {job_id}")

    def _ensure_document(self, database: str, collection: str, source_id: Any) -> None:
        try:
            found = self.mongo[database][collection].find_one({"_id": source_id}, {"_id": 1})
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        if found is None:
            raise NotFound(f"document {layout.document_id_str(source_id)} not found in "
                           f"{database}.{collection}", code="document_not_found")
