"""Steps 2 and 3 of a job: first attempts of a few documents' images, then single retries.

``download_documents`` runs the first attempt of every image of its documents concurrently
on the process's thread pool, each download holding a fleet-wide and a per-host slot
(images_service.download.caps). An image that failed in a retryable way continues as its own delayed
``retry_image`` message, after an exponential backoff with jitter (or the server's
Retry-After, capped), up to ``MAX_RETRIES``. Images already stored are skipped without a
request (their missing or outdated derived images, contract §12, are made from the stored
original, also without a request).

Storage outages (contract §11): a failing ``put_file`` or ``stat`` of one image is a
``StorageUnavailable`` (a retryable ``connection_error``) and takes the same ``retry_image``
path as a connection error. A failing document-level step (folder move, claim, metadata.json
merge) raises out of the actor, and Dramatiq's Retries sends the whole message again. That
replay is harmless because a message records its finished images *before* it enqueues the
retries of the others: a replay finds its own downloads recorded (skipped, no request) and
enqueues each retry once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from images_service import metrics
from images_service.download import engine, variants
from images_service.download.caps import SlotWaitCancelled
from images_service.download.engine import DocumentPlan, ImageTask
from images_service.errors import DownloadError, FolderConflict
from images_service.logs import log_context
from images_service.storage.metadata import DOWNLOADED
from workers.pipeline.context import PipelineContext
from workers.pipeline.finish import Finisher
from workers.pipeline.plans import backoff_ms, plan_from_message

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    record: dict[str, Any] | None = None  #: final record for metadata.json
    retry: DownloadError | None = None  #: a retryable failure with attempts left


class Downloader:
    def __init__(self, ctx: PipelineContext, finisher: Finisher) -> None:
        self.ctx = ctx
        self.finisher = finisher

    def download_documents(self, job_id: str, plans: list[dict[str, Any]]) -> None:
        ctx = self.ctx
        job = ctx.jobs.get(job_id)
        if job is None:
            return
        force = bool(job.get("force"))
        if ctx.stopped(job_id):
            log.info("job %s stopped: %d documents not started", job_id, len(plans))
            return
        # Document-level steps first, for every document: if one raises (storage down), the
        # message is replayed before any download started.
        claimed = []
        for data in plans:
            plan = plan_from_message(data)
            with log_context(job_id=job_id, document_id=plan.document_id):
                engine.prepare_folder(plan, ctx.storage)
                try:
                    current = engine.claim_folder(plan, ctx.storage, job_id=job_id,
                                                  lock=self.finisher.lock(plan))
                except FolderConflict as exc:
                    self.finisher.conflict(job, plan, data, exc)
                    continue
                claimed.append((plan, data, current))
        work = []
        for plan, data, current in claimed:
            previous = engine.previous_records(current)
            same_job = current.get("job_id") == job_id
            futures = [
                (task, ctx.pool.submit(self.attempt, job_id, plan, task,
                                       previous.get(task.index), force, 1, same_job))
                for task in plan.images
            ]
            work.append((plan, data, futures))
        retries: list[tuple[dict[str, Any], ImageTask, DownloadError]] = []
        finished = []
        for plan, data, futures in work:
            done: list[dict[str, Any]] = []
            for task, future in futures:
                outcome = future.result()
                if outcome.retry is not None:
                    retries.append((data, task, outcome.retry))
                else:
                    done.append(outcome.record)
            # Each document's metadata.json as soon as its images are done ...
            if (document := self.finisher.merge(job, plan, data, done)) is not None:
                finished.append(document)
        with log_context(job_id=job_id):
            # ... the finished ones written back and counted together (two MongoDB round
            # trips for the message, not two per document).
            self.finisher.finish_documents(job, finished)
        # Enqueued only once every document is recorded: if recording raises (storage or
        # Redis down), the replayed message finds its own downloads recorded and enqueues
        # each retry once.
        for data, task, error in retries:
            delay = backoff_ms(ctx.settings, 1, error.retry_after_s)
            ctx.enqueuer.retry(job_id, data, task.index, 2, delay)

    def retry_image(self, job_id: str, data: dict[str, Any], index: int, attempt: int) -> None:
        ctx = self.ctx
        job = ctx.jobs.get(job_id)
        if job is None:
            return
        plan = plan_from_message(data)
        task = next(t for t in plan.images if t.index == index)
        with log_context(job_id=job_id, document_id=plan.document_id, url=task.url):
            outcome = self.attempt(job_id, plan, task, None, True, attempt, False)
            if outcome.retry is not None:
                delay = backoff_ms(ctx.settings, attempt, outcome.retry.retry_after_s)
                log.info("retrying image %d in %d ms (attempt %d failed: %s)", index, delay,
                         attempt, outcome.retry.code)
                ctx.enqueuer.retry(job_id, data, index, attempt + 1, delay)
                return
            self.finisher.record(job, plan, data, [outcome.record])

    def attempt(self, job_id: str, plan: DocumentPlan, task: ImageTask,
                previous: dict[str, Any] | None, force: bool, attempt: int,
                same_job: bool) -> Outcome:
        """One attempt at one image, holding its slots; never raises DownloadError."""
        ctx = self.ctx
        with log_context(job_id=job_id, document_id=plan.document_id, url=task.url):
            try:
                if previous is not None and not force:
                    skipped = engine.skip_record(plan, task, previous, ctx.storage)
                    if skipped is not None and same_job and previous.get("status") == DOWNLOADED:
                        # A replay of this job's own message: the image was downloaded by it.
                        skipped = dict(previous)
                    elif skipped is not None:
                        metrics.DOWNLOADS.labels("skipped").inc()
                    if skipped is not None:  # no request; variants made from the original
                        return Outcome(record=variants.backfill(
                            ctx.storage, plan.relative_folder, skipped, ctx.settings))
            except DownloadError as exc:  # the storage could not tell (StorageUnavailable)
                return self._failed(task, exc, attempt)
            if ctx.stopped(job_id):
                return Outcome(record=engine.failed_record(
                    task, DownloadError("cancelled", "job cancelled before this image started"),
                    attempt - 1))
            host = (urlsplit(task.url).hostname or "").lower() if _parsable(task.url) else ""
            token = None
            started = time.monotonic()
            try:
                if host:
                    try:
                        token = ctx.caps.acquire(host, should_stop=lambda: ctx.stopped(job_id))
                    except SlotWaitCancelled:
                        return Outcome(record=engine.failed_record(
                            task, DownloadError("cancelled", "job cancelled while waiting"),
                            attempt - 1))
                    metrics.SLOT_WAIT_SECONDS.observe(time.monotonic() - started)
                began = time.monotonic()
                record = engine.download_image(plan, task, ctx.fetcher, ctx.storage,
                                               ctx.settings, previous=None, force=True,
                                               attempt=attempt)
                metrics.DOWNLOAD_SECONDS.observe(time.monotonic() - began)
                metrics.DOWNLOADS.labels("downloaded").inc()
                metrics.DOWNLOAD_BYTES.inc(record.get("bytes") or 0)
                return Outcome(record=record)
            except DownloadError as exc:
                return self._failed(task, exc, attempt)
            finally:
                if token:
                    ctx.caps.release(token, defer=True)

    def _failed(self, task: ImageTask, exc: DownloadError, attempt: int) -> Outcome:
        """A failed attempt: retried while retryable with attempts left, else final."""
        metrics.DOWNLOAD_ERRORS.labels(exc.code).inc()
        if exc.retryable and attempt <= self.ctx.settings.max_retries:
            metrics.DOWNLOADS.labels("retried").inc()
            return Outcome(retry=exc)
        log.info("image %d failed after %d attempt(s): %s %s", task.index, attempt,
                 exc.code, exc.message)
        metrics.DOWNLOADS.labels("failed").inc()
        return Outcome(record=engine.failed_record(task, exc, attempt))


def _parsable(url: str) -> bool:
    try:
        urlsplit(url).hostname
        return True
    except ValueError:
        return False
