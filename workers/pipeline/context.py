"""What every step of the pipeline shares in one worker process: clients, caps, pool, status.

Built once per process, after the fork (pymongo requires it), by
:class:`workers.services.PipelineMiddleware`. The image tree is reached only through
``storage`` (filesystem or S3, contract §11), built here once, with a connection pool sized
for the download threads.

Shutdown (SIGTERM, contract §10): :meth:`PipelineContext.begin_shutdown` is called before
Dramatiq stops its worker threads. From then on no new download or scan batch starts:
:meth:`~PipelineContext.stopped` raises :class:`WorkerShuttingDown`, which the actors turn
into a requeue of their message (workers/failures.py), so no image is recorded as failed and
no attempt is counted. Downloads already in flight finish on the pool, which is closed only
after Dramatiq has joined its worker threads (:meth:`~PipelineContext.close`).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from pymongo import MongoClient

from images_service.config.settings import Settings
from images_service.content.document import ContentRules
from images_service.download.caps import DownloadCaps
from images_service.download.fetch_once import FetchOnce
from images_service.download.index_writer import IndexWriter
from images_service.download.robots import RobotsPolicy
from images_service.download.url_index import UrlIndex
from images_service.fetching.fetcher import Fetcher
from images_service.jobs.documents import JobDocuments
from images_service.jobs.progress import ProgressTracker
from images_service.jobs.store import FINISHED, JobStore
from images_service.queueing.messages import Enqueuer
from images_service.storage.backend import Storage
from images_service.storage.factory import create_storage
from workers.pipeline.plans import backoff_ms, download_threads
from workers.timeline import OFF, NullTimeline, Timeline

log = logging.getLogger(__name__)

#: Job status is re-read from MongoDB at most this often per process (seconds): the bound on
#: how late a cancel is seen, well inside the contract's 5 s.
STATUS_CACHE_S = 1.0


class WorkerShuttingDown(Exception):
    """The worker process is stopping: leave this message's remaining work to another worker."""


class PipelineContext:
    """Clients and per-process resources of the pipeline's steps."""

    def __init__(self, settings: Settings, *, mongo: MongoClient, redis_client: redis.Redis,
                 enqueuer: Enqueuer) -> None:
        self.settings = settings
        self.mongo = mongo
        self.redis = redis_client
        self.enqueuer = enqueuer
        self.jobs = JobStore(mongo, settings.jobs_database,
                             retention_days=settings.job_retention_days)
        self.progress = ProgressTracker(redis_client)
        self.job_documents = JobDocuments(mongo, settings.jobs_database,
                                          retention_days=settings.job_retention_days)
        self.caps = DownloadCaps(redis_client, fleet_limit=settings.max_concurrent_downloads,
                                 host_limit=settings.max_concurrent_per_domain,
                                 breaker_failures=settings.host_breaker_failures)
        self.fetcher = Fetcher(settings)
        self.urls = UrlIndex(mongo, settings.jobs_database)
        #: What an image shows (contract §18): the rules every folder's records are marked by.
        self.content_rules = ContentRules.from_settings(settings)
        self.fetch_once = FetchOnce(redis_client, self.urls, settings)
        #: The download threads' index entries, written in batches by one thread, which
        #: then releases their URLs' fetch claims (claim: (url, token, job state key)).
        self.index_writer = IndexWriter(self.urls, release=lambda claims: (
            self.fetch_once.release_many([(*claim, written) for claim, written in claims])))
        # robots.txt (contract §17), consulted before each image's request when enabled.
        self.robots: RobotsPolicy | None = None
        if settings.respect_robots_txt:
            self.robots = RobotsPolicy(
                redis_client, self.fetcher, self.caps, product_token=settings.robots_token,
                retry_backoff_min_ms=settings.retry_backoff_min_ms,
                pause_ms=lambda retry_after_s: backoff_ms(settings, 1, retry_after_s))
        # This process's share of the fleet-wide cap (the cap itself is enforced in Redis).
        threads = download_threads(settings)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="download")
        # Every download thread may upload at once, plus the actor threads' metadata writes.
        self.storage: Storage = create_storage(
            settings, max_pool_connections=threads + settings.worker_threads)
        #: The benchmark's timeline (WORKER_TIMELINE_DIR); a no-op unless it is set.
        self.timeline: NullTimeline = (Timeline(settings.worker_timeline_dir)
                                       if settings.worker_timeline_dir else OFF)
        self._status: dict[str, tuple[str | None, float]] = {}
        self._status_lock = threading.Lock()
        self._shutting_down = threading.Event()

    def begin_shutdown(self) -> None:
        """Start no new work; in-flight downloads go on (see the module docstring)."""
        self._shutting_down.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down.is_set()

    def close(self) -> None:
        """Release the pool, caps and fetcher; only once no message is being processed."""
        self._shutting_down.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.index_writer.close()
        self.caps.close()
        self.fetch_once.close()
        self.fetcher.close()
        self.storage.close()

    def job_status(self, job_id: str) -> str | None:
        now = time.monotonic()
        with self._status_lock:
            cached = self._status.get(job_id)
        if cached and now - cached[1] < STATUS_CACHE_S:
            return cached[0]
        return self._remember(job_id, self.jobs.status(job_id), now)

    def read_job(self, job_id: str) -> dict[str, Any] | None:
        """The whole job, its status kept for :meth:`job_status` (a step that reads its job
        then asks :meth:`stopped` costs one MongoDB read, not two)."""
        job = self.jobs.get(job_id)
        self._remember(job_id, job["status"] if job is not None else None, time.monotonic())
        return job

    def start_job(self, job_id: str) -> dict[str, Any] | None:
        """The job for its first step, moved pending -> running in the same command when it
        was pending (:meth:`read_job` otherwise: a replay, or a job that has ended)."""
        job = self.jobs.start(job_id)
        if job is None:
            return self.read_job(job_id)
        self._remember(job_id, job["status"], time.monotonic())
        return job

    def _remember(self, job_id: str, status: str | None, now: float) -> str | None:
        if status is None or status in FINISHED:
            # Whichever way it ended (a cancel from the API, a failure), the job's Redis state
            # goes when a step first sees it ended; later writes recreate nothing.
            self.progress.forget(job_id)
        with self._status_lock:
            self._status[job_id] = (status, now)
            if len(self._status) > 10_000:
                self._status.clear()
        return status

    def stopped(self, job_id: str) -> bool:
        """The job was cancelled (or failed, or deleted): start no new download for it.

        Raises WorkerShuttingDown once the process is stopping: every step asks this before
        it starts a download or a scan batch, so that is where new work is refused.
        """
        if self._shutting_down.is_set():
            raise WorkerShuttingDown("the worker is shutting down")
        return self.job_status(job_id) in (None, "cancelled", "failed")
