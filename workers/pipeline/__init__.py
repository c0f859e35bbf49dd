"""The download pipeline behind the actors: scan a job's documents, download, finish.

Three steps, each a Dramatiq message (workers/actors.py) that may be delivered more than once:

1. ``scan`` (:mod:`.scan`): plan the job's documents and enqueue ``download_documents``
   (a change-stream job's one document is downloaded by the scan's own message instead; a
   reconcile job's step, :mod:`.reconcile`, compares the collection with its tree and
   enqueues the documents that need a download);
2. ``download_documents`` (:mod:`.download`): first attempts, concurrently, under the caps;
3. ``retry_image`` (:mod:`.download`): one more attempt after a backoff.

:mod:`.finish` records results and finishes documents and jobs; :mod:`.context` holds what
the steps share in one worker process; :mod:`.plans` is the message payload. Replays are
harmless: images already stored are skipped without a request, and every count is taken once.
"""

from __future__ import annotations

from typing import Any

import redis
from pymongo import MongoClient

from images_service.config.settings import Settings
from images_service.queueing.messages import Enqueuer
from workers.pipeline.context import PipelineContext
from workers.pipeline.download import Downloader
from workers.pipeline.finish import Finisher
from workers.pipeline.reconcile import Reconciler
from workers.pipeline.refresh import Refresher
from workers.pipeline.scan import Scanner


class DownloadPipeline:
    """The three steps over one :class:`PipelineContext`; built once per worker process."""

    def __init__(self, settings: Settings, *, mongo: MongoClient, redis_client: redis.Redis,
                 enqueuer: Enqueuer) -> None:
        self.ctx = PipelineContext(settings, mongo=mongo, redis_client=redis_client,
                                   enqueuer=enqueuer)
        self.finisher = Finisher(self.ctx)
        self.downloader = Downloader(self.ctx, self.finisher)
        # A change-stream job's one document is downloaded by its scan's message (scan.py).
        self.scanner = Scanner(self.ctx, self.finisher,
                               download_inline=self.downloader.download_inline)
        self.refresher = Refresher(self.ctx, self.finisher, self.downloader)
        self.reconciler = Reconciler(self.ctx, self.finisher)

    @property
    def redis(self) -> redis.Redis:
        return self.ctx.redis

    def close(self) -> None:
        self.ctx.close()

    def scan(self, job_id: str) -> None:
        """A job's first step: its scan, or for a reconcile job the whole comparison."""
        # Read once, and moved to running by the same command (issue 24: round trips).
        job = self.ctx.start_job(job_id)
        if job is not None and job.get("type") == "reconcile":
            self.reconciler.reconcile(job_id, job)
        else:
            self.scanner.scan(job_id, job)

    def download_documents(self, job_id: str, plans: list[dict[str, Any]]) -> None:
        self.downloader.download_documents(job_id, plans)

    def retry_image(self, job_id: str, plan: dict[str, Any], index: int, attempt: int) -> None:
        self.downloader.retry_image(job_id, plan, index, attempt)
