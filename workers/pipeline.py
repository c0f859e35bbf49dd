"""The download pipeline behind the actors: scan a job's documents, download, finish.

Three steps, each a Dramatiq message (workers/actors.py) that may be delivered more than once:

1. ``scan``: page through the job's documents with one cursor (batches of ``SCAN_BATCH``),
   plan each document, count it once (progress.plan), and enqueue ``download_documents``
   messages of a few documents each. The last ``_id`` is saved after every batch, so a scan
   interrupted by a crash resumes where it was.
2. ``download_documents``: first attempt of every image of those documents, concurrently on a
   per-process thread pool, each download holding a fleet-wide and a per-host slot
   (images_service.caps). Results are merged into metadata.json under a Redis lock. An image
   that failed in a retryable way continues as its own delayed ``retry_image`` message.
3. ``retry_image``: one more attempt after an exponential backoff with jitter (or the
   server's Retry-After, capped), up to ``MAX_RETRIES``.

When the last image of a document is final, the document is finished: write-back on the
source document, its counts added to the job once (progress.finalize), and the job completed
when the scan is over and every planned document is finished. Replays are harmless: images
already on disk are skipped without a request, and every count is taken once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import urlsplit

import redis
from bson import json_util
from pymongo import ASCENDING, MongoClient

from images_service import engine, metrics
from images_service.caps import DownloadCaps, SlotWaitCancelled
from images_service.engine import DocumentPlan, ImageTask
from images_service.errors import DownloadError, UnsafePathError
from images_service.fetching.fetcher import Fetcher
from images_service.jobs import FINISHED, JobStore
from images_service.logs import log_context
from images_service.progress import ProgressTracker
from images_service.settings import Settings
from images_service.storage import layout
from images_service.storage.metadata import DOWNLOADED, FAILED, SKIPPED
from workers.messages import Enqueuer

log = logging.getLogger(__name__)

#: Documents read per scan batch (one cursor, this batch size).
SCAN_BATCH = 500
#: A download_documents message carries up to this many documents ...
DOCS_PER_MESSAGE = 8
#: ... or documents with up to about this many images in all.
IMAGES_PER_MESSAGE = 32
#: Job status is re-read from MongoDB at most this often per process (seconds): the bound on
#: how late a cancel is seen, well inside the contract's 5 s.
STATUS_CACHE_S = 1.0
#: metadata.json lock: held at most this long (seconds), waited for at most this long.
LOCK_TIMEOUT_S = 60


def plan_to_message(plan: DocumentPlan, source_id: Any) -> dict[str, Any]:
    return {
        "database": plan.database,
        "collection": plan.collection,
        "document_id": plan.document_id,
        "source_id": json_util.dumps(source_id),
        "search_field": plan.search_field,
        "search_value": plan.search_value,
        "relative_folder": plan.relative_folder,
        "previous_relative_folder": plan.previous_relative_folder,
        "images": [[task.index, task.url] for task in plan.images],
    }


def plan_from_message(data: dict[str, Any], settings: Settings) -> DocumentPlan:
    return DocumentPlan(
        database=data["database"],
        collection=data["collection"],
        document_id=data["document_id"],
        search_field=data["search_field"],
        search_value=data["search_value"],
        folder=layout.document_folder(settings.storage_path, data["relative_folder"]),
        relative_folder=data["relative_folder"],
        images=tuple(ImageTask(int(i), str(u)) for i, u in data["images"]),
        previous_relative_folder=data.get("previous_relative_folder"),
    )


def document_key(plan: DocumentPlan) -> str:
    return f"{plan.database}/{plan.collection}/{plan.document_id}"


def backoff_ms(settings: Settings, attempt: int, retry_after_s: float | None) -> int:
    """Delay before attempt ``attempt + 1``: Retry-After when given, else exponential with
    full jitter between RETRY_BACKOFF_MIN_MS and RETRY_BACKOFF_MAX_MS."""
    low, high = settings.retry_backoff_min_ms, settings.retry_backoff_max_ms
    if retry_after_s is not None:
        return int(min(max(retry_after_s * 1000, low), high))
    ceiling = min(high, low * 2 ** (attempt - 1))
    return int(random.uniform(max(low, ceiling / 2), max(low, ceiling)))


def download_threads(settings: Settings) -> int:
    """Download threads per worker process: its share of the fleet cap, 4 to 64."""
    share = -(-settings.max_concurrent_downloads // settings.worker_processes)
    return max(4, min(64, share + 2))


@dataclass
class Outcome:
    record: dict[str, Any] | None = None  # final record for metadata.json
    retry: DownloadError | None = None  # a retryable failure with attempts left


class DownloadPipeline:
    """Everything one worker process needs; built once per process (after the fork)."""

    def __init__(self, settings: Settings, *, mongo: MongoClient, redis_client: redis.Redis,
                 enqueuer: Enqueuer) -> None:
        self.settings = settings
        self.mongo = mongo
        self.redis = redis_client
        self.enqueuer = enqueuer
        self.jobs = JobStore(mongo, settings.jobs_database, retention_days=settings.job_retention_days)
        self.progress = ProgressTracker(redis_client)
        self.caps = DownloadCaps(redis_client, fleet_limit=settings.max_concurrent_downloads,
                                 host_limit=settings.max_concurrent_per_domain)
        self.fetcher = Fetcher(settings)
        # This process's share of the fleet-wide cap (the cap itself is enforced in Redis).
        # More threads would only poll Redis for slots they cannot get: measured, a pool of
        # the whole cap per process spent ~15% of the worker's time in slot polling.
        self.pool = ThreadPoolExecutor(download_threads(settings), thread_name_prefix="download")
        self._status: dict[str, tuple[str | None, float]] = {}
        self._status_lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.caps.close()
        self.fetcher.close()

    # --- job status ---------------------------------------------------------------------------

    def job_status(self, job_id: str) -> str | None:
        now = time.monotonic()
        with self._status_lock:
            cached = self._status.get(job_id)
        if cached and now - cached[1] < STATUS_CACHE_S:
            return cached[0]
        status = self.jobs.status(job_id)
        with self._status_lock:
            self._status[job_id] = (status, now)
            if len(self._status) > 10_000:
                self._status.clear()
        return status

    def stopped(self, job_id: str) -> bool:
        """The job was cancelled (or failed, or deleted): start no new download for it."""
        return self.job_status(job_id) in (None, "cancelled", "failed")

    # --- 1. scan ------------------------------------------------------------------------------

    def scan(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job["status"] in FINISHED:
            return
        self.jobs.mark_running(job_id)
        database, collection = job["database"], job["collection"]
        with log_context(job_id=job_id, database=database, collection=collection):
            if collection not in self.mongo[database].list_collection_names():
                self._finish(job, "failed", message=f"collection {database}.{collection} not found")
                return
            checkpoint_key = f"isv:job:{{{job_id}}}:scan_last_id"
            raw_last = self.redis.get(checkpoint_key)
            last_id = json_util.loads(raw_last) if raw_last else None
            scanned = int(self.redis.get(checkpoint_key + ":count") or 0)
            limit = job.get("limit")
            for batch in self._documents(job, last_id, scanned):
                if self.stopped(job_id):
                    log.info("job %s stopped: scan ends early", job_id)
                    return
                self._plan_and_enqueue(job, batch)
                scanned += len(batch)
                pipe = self.redis.pipeline()
                pipe.set(checkpoint_key, json_util.dumps(batch[-1]["_id"]), ex=14 * 24 * 3600)
                pipe.set(checkpoint_key + ":count", scanned, ex=14 * 24 * 3600)
                pipe.execute()
                if limit and scanned >= limit:
                    break
            progress = self.progress.mark_scan_done(job_id)
            self.jobs.record_progress(job_id, progress.as_job_progress())
            log.info("job %s: scan done, %d documents", job_id, progress.counters.get("documents_total", 0))
            if progress.complete():
                self._finish(job, "completed", progress=progress.as_job_progress())

    def _documents(self, job: dict[str, Any], last_id: Any, scanned: int) -> Iterator[list[dict[str, Any]]]:
        coll = self.mongo[job["database"]][job["collection"]]
        fields = job.get("image_fields") or list(self.settings.image_fields)
        projection = {f: 1 for f in fields}
        projection[self.settings.search_field] = 1
        if self.settings.status_field:
            projection[f"{self.settings.status_field}.path"] = 1
        if job["type"] in ("document", "change_stream"):
            doc = coll.find_one({"_id": json_util.loads(job["source"]["id"])}, projection)
            if doc is not None and last_id is None:
                yield [doc]
            return
        query: dict[str, Any] = json_util.loads(job.get("filter_json") or "{}")
        if last_id is not None:
            query = {"$and": [query, {"_id": {"$gt": last_id}}]} if query else {"_id": {"$gt": last_id}}
        limit = job.get("limit")
        remaining = (limit - scanned) if limit else 0
        if limit and remaining <= 0:
            return
        cursor = coll.find(query, projection, sort=[("_id", ASCENDING)], batch_size=SCAN_BATCH,
                           limit=remaining)
        batch: list[dict[str, Any]] = []
        for doc in cursor:
            batch.append(doc)
            if len(batch) >= SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def _plan_and_enqueue(self, job: dict[str, Any], docs: list[dict[str, Any]]) -> None:
        job_id = job["_id"]
        fields = job.get("image_fields")
        plans: list[tuple[DocumentPlan, Any]] = []
        for doc in docs:
            try:
                plans.append((engine.plan_document(doc, job["database"], job["collection"],
                                                   self.settings, fields), doc["_id"]))
            except UnsafePathError as exc:
                log.warning("job %s: document %r cannot be stored: %s", job_id, doc.get("_id"), exc)
                self.jobs.record_progress(job_id, {}, [{
                    "document_id": str(doc.get("_id")), "url": None,
                    "code": "invalid_request", "message": str(exc)}])
        self.progress.plan(job_id, [(document_key(p), len(p.images)) for p, _ in plans])
        message: list[dict[str, Any]] = []
        images = 0
        for plan, source_id in plans:
            message.append(plan_to_message(plan, source_id))
            images += len(plan.images)
            if len(message) >= DOCS_PER_MESSAGE or images >= IMAGES_PER_MESSAGE:
                self.enqueuer.documents(job_id, message)
                message, images = [], 0
        if message:
            self.enqueuer.documents(job_id, message)

    # --- 2. first attempts ----------------------------------------------------------------------

    def download_documents(self, job_id: str, plans: list[dict[str, Any]]) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        force = bool(job.get("force"))
        if self.stopped(job_id):
            log.info("job %s stopped: %d documents not started", job_id, len(plans))
            return
        work = []
        for data in plans:
            plan = plan_from_message(data, self.settings)
            with log_context(job_id=job_id, document_id=plan.document_id):
                engine.prepare_folder(plan, self.settings)
                current = engine.read_metadata(plan) or {}
                previous = engine.previous_records(plan, current)
                same_job = current.get("job_id") == job_id
                futures = [
                    (task, self.pool.submit(self._attempt, job_id, plan, task,
                                            previous.get(task.index), force, 1, same_job))
                    for task in plan.images
                ]
                work.append((plan, data, futures))
        for plan, data, futures in work:
            with log_context(job_id=job_id, document_id=plan.document_id):
                done: list[dict[str, Any]] = []
                for task, future in futures:
                    outcome = future.result()
                    if outcome.retry is not None:
                        delay = backoff_ms(self.settings, 1, outcome.retry.retry_after_s)
                        self.enqueuer.retry(job_id, data, task.index, 2, delay)
                    else:
                        done.append(outcome.record)
                self._record_and_maybe_finish(job, plan, data, done)

    # --- 3. retries -------------------------------------------------------------------------------

    def retry_image(self, job_id: str, data: dict[str, Any], index: int, attempt: int) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        plan = plan_from_message(data, self.settings)
        task = next(t for t in plan.images if t.index == index)
        with log_context(job_id=job_id, document_id=plan.document_id, url=task.url):
            outcome = self._attempt(job_id, plan, task, None, True, attempt, False)
            if outcome.retry is not None:
                delay = backoff_ms(self.settings, attempt, outcome.retry.retry_after_s)
                log.info("retrying image %d in %d ms (attempt %d failed: %s)", index, delay,
                         attempt, outcome.retry.code)
                self.enqueuer.retry(job_id, data, index, attempt + 1, delay)
                return
            self._record_and_maybe_finish(job, plan, data, [outcome.record])

    # --- one attempt ------------------------------------------------------------------------------

    def _attempt(self, job_id: str, plan: DocumentPlan, task: ImageTask,
                 previous: dict[str, Any] | None, force: bool, attempt: int,
                 same_job: bool) -> Outcome:
        with log_context(job_id=job_id, document_id=plan.document_id, url=task.url):
            if previous is not None and not force:
                skipped = engine.skip_record(plan, task, previous)
                if skipped is not None and same_job and previous.get("status") == DOWNLOADED:
                    # A replay of this job's own message: the image was downloaded by it.
                    return Outcome(record=dict(previous))
                if skipped is not None:
                    metrics.DOWNLOADS.labels("skipped").inc()
                    return Outcome(record=skipped)
            if self.stopped(job_id):
                return Outcome(record=engine.failed_record(
                    task, DownloadError("cancelled", "job cancelled before this image started"),
                    attempt - 1))
            host = (urlsplit(task.url).hostname or "").lower() if _parsable(task.url) else ""
            token = None
            started = time.monotonic()
            try:
                if host:
                    try:
                        token = self.caps.acquire(host, should_stop=lambda: self.stopped(job_id))
                    except SlotWaitCancelled:
                        return Outcome(record=engine.failed_record(
                            task, DownloadError("cancelled", "job cancelled while waiting"),
                            attempt - 1))
                    metrics.SLOT_WAIT_SECONDS.observe(time.monotonic() - started)
                began = time.monotonic()
                record = engine.download_image(plan, task, self.fetcher, self.settings,
                                               previous=None, force=True, attempt=attempt)
                metrics.DOWNLOAD_SECONDS.observe(time.monotonic() - began)
                metrics.DOWNLOADS.labels("downloaded").inc()
                metrics.DOWNLOAD_BYTES.inc(record.get("bytes") or 0)
                return Outcome(record=record)
            except DownloadError as exc:
                metrics.DOWNLOAD_ERRORS.labels(exc.code).inc()
                if exc.retryable and attempt <= self.settings.max_retries:
                    metrics.DOWNLOADS.labels("retried").inc()
                    return Outcome(retry=exc)
                log.info("image %d failed after %d attempt(s): %s %s", task.index, attempt,
                         exc.code, exc.message)
                metrics.DOWNLOADS.labels("failed").inc()
                return Outcome(record=engine.failed_record(task, exc, attempt))
            finally:
                if token:
                    self.caps.release(token)

    # --- finishing ---------------------------------------------------------------------------------

    def _lock(self, plan: DocumentPlan):
        return self.redis.lock(f"isv:lock:{plan.relative_folder}", timeout=LOCK_TIMEOUT_S,
                               blocking_timeout=LOCK_TIMEOUT_S)

    def _record_and_maybe_finish(self, job: dict[str, Any], plan: DocumentPlan,
                                 data: dict[str, Any], records: list[dict[str, Any]]) -> None:
        job_id = job["_id"]
        key = document_key(plan)
        if records or not plan.images:
            engine.record_images(plan, records, job_id=job_id, lock=self._lock(plan))
        if plan.images and not records:
            return
        all_done = self.progress.image_done(job_id, key, [r["index"] for r in records]) \
            if plan.images else True
        if all_done:
            self._finish_document(job, plan, data)

    def _finish_document(self, job: dict[str, Any], plan: DocumentPlan, data: dict[str, Any]) -> None:
        job_id = job["_id"]
        meta = engine.read_metadata(plan) or {"images": []}
        wanted = {t.index for t in plan.images}
        records = [r for r in meta.get("images", []) if r.get("index") in wanted]
        counts = {s: sum(1 for r in records if r.get("status") == s) for s in (DOWNLOADED, SKIPPED, FAILED)}
        status = "completed" if counts[FAILED] == 0 else ("partial" if counts[DOWNLOADED] + counts[SKIPPED] else "failed")
        self._write_back(job_id, plan, data, status, counts)
        first, progress = self.progress.finalize(job_id, document_key(plan), downloaded=counts[DOWNLOADED],
                                                 skipped=counts[SKIPPED], failed=counts[FAILED])
        errors = [{"document_id": plan.document_id, "url": r.get("url"),
                   "code": r.get("error", {}).get("code"), "message": r.get("error", {}).get("message")}
                  for r in records if r.get("status") == FAILED] if first else None
        self.jobs.record_progress(job_id, progress.as_job_progress(), errors)
        if first:
            metrics.DOCUMENTS.labels(status).inc()
        if progress.complete():
            self._finish(job, "completed", progress=progress.as_job_progress())

    def _write_back(self, job_id: str, plan: DocumentPlan, data: dict[str, Any], status: str,
                    counts: dict[str, int]) -> None:
        if not self.settings.status_field:
            return
        value = {
            "status": status,
            "job_id": job_id,
            "downloaded": counts[DOWNLOADED] + counts[SKIPPED],
            "failed": counts[FAILED],
            "path": plan.relative_folder,
            # Inside a whole subdocument, so the date keeps its type on nx-27017 too.
            "updated_at": datetime.now(timezone.utc),
        }
        source_id = json_util.loads(data["source_id"])
        self.mongo[plan.database][plan.collection].update_one(
            {"_id": source_id},
            {"$set": {self.settings.download_flag_field: False, self.settings.status_field: value}},
        )

    def _finish(self, job: dict[str, Any], status: str, *, progress: dict[str, int] | None = None,
                message: str | None = None) -> None:
        finished = self.jobs.finish(job["_id"], status, progress=progress, message=message)
        if finished is not None:
            metrics.JOBS.labels(job["type"], status).inc()
            log.info("job %s %s", job["_id"], status)


def _parsable(url: str) -> bool:
    try:
        urlsplit(url).hostname
        return True
    except ValueError:
        return False

