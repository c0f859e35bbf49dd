"""Steps 2 and 3 of a job: first attempts of a few documents' images, then single retries.

``download_documents`` opens each document's folder (:class:`~images_service.download.
folder.DocumentFolder`: the unit of work), then runs the first attempt of every image
concurrently on the process's thread pool, each download holding a fleet-wide and a per-host
slot (images_service.download.caps). An image that failed in a retryable way continues as its
own delayed ``retry_image`` message, after an exponential backoff with jitter (or the server's
Retry-After, capped), up to ``MAX_RETRIES``. Images already stored are skipped without a
request (their missing or outdated derived images, contract §12, are made from the stored
original, also without a request).

Politeness (contract §17): before its request an image asks robots.txt (``RESPECT_ROBOTS_TXT``,
:mod:`images_service.download.robots`) and takes its slot, which the host's fleet-wide state may
refuse: a paused host, or a Crawl-delay longer than a thread should sleep. Such an image is not
failed and spends no retry: the same attempt comes back as a delayed ``retry_image`` message
when the wait is over (:class:`Outcome` ``defer_ms``; first attempts too). Its release tells the
host's state what the request said (success, failure, 429/503 with the pause it asks for).

Integrity (contract §14):

* **One bad thing fails one image.** An exception of any type while handling one image becomes
  that image's failure (the engine maps decode and store errors to §6 codes; anything else is
  a ``connection_error``, retried). Only what is truly the message's — MongoDB or Redis
  unreachable, the worker shutting down — escapes, and then every image that finished is
  recorded first (a failing download discards no other result).
* **Old messages never undo newer work.** A message whose job has ended, or whose plan is older
  than the one that last wrote the folder, changes nothing: the folder refuses it
  (:class:`~images_service.errors.StaleMessage`) at open, before a retry's request, and at the
  merge; it is counted in ``images_stale_messages_total``. A cancel records nothing either:
  images not started are simply not done.

Storage outages (contract §11): a failing store of one image is ``StorageUnavailable`` (a
retryable ``connection_error``) and takes the ``retry_image`` path. A failing document-level
step (folder move, claim, merge) raises out of the actor and Dramatiq's Retries sends the whole
message again; a replay finds its own downloads recorded (skipped, no request) and enqueues
each retry once, because retries are enqueued only after every document is recorded.
"""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from pymongo.errors import PyMongoError

from images_service import metrics
from images_service.download import engine, host_state
from images_service.download.caps import HostPaused, SlotWaitCancelled
from images_service.download.fetch_once import CLAIM_TTL_S, DONE
from images_service.download.folder import DocumentFolder
from images_service.download.folder_locks import RedisFolderLocks
from images_service.download.index_writer import Pending
from images_service.download.planning import ImageTask
from images_service.errors import DownloadError, FolderConflict, StaleMessage
from images_service.fetching.fetcher import DEADLINE_FACTOR
from images_service.jobs.store import FINISHED
from images_service.logs import log_context
from images_service.storage.metadata import DOWNLOADED
from workers.pipeline.context import PipelineContext, WorkerShuttingDown
from workers.pipeline.finish import Finisher
from workers.pipeline.plans import backoff_ms, plan_from_message

log = logging.getLogger(__name__)

#: Exceptions that belong to the message, not to one image: they end the attempt and, once the
#: finished images are recorded, the message (requeued on shutdown, retried otherwise).
MESSAGE_ERRORS = (WorkerShuttingDown, redis.exceptions.RedisError, PyMongoError)


@dataclass
class Outcome:
    record: dict[str, Any] | None = None  #: final record for metadata.json
    #: The downloaded image's URL index entry, being written: wait for it before the record
    #: goes into metadata.json (images_service/download/index_writer.py).
    indexed: Pending | None = None
    retry: DownloadError | None = None  #: a retryable failure with attempts left
    #: The host is paused (§17): try the same attempt again after this many milliseconds.
    defer_ms: int | None = None
    # None of these: the job stopped before the image started; nothing is recorded for it.


class Downloader:
    def __init__(self, ctx: PipelineContext, finisher: Finisher) -> None:
        self.ctx = ctx
        self.finisher = finisher

    def folder(self, job_id: str, data: dict[str, Any]) -> DocumentFolder:
        """The folder of one planned document, locked fleet-wide for this job."""
        locks = RedisFolderLocks(self.ctx.redis, live_key=self.ctx.progress.key(job_id))
        return DocumentFolder(self.ctx.storage, plan_from_message(data), job_id=job_id,
                              lock=locks, rules=self.ctx.content_rules)

    def download_documents(self, job_id: str, plans: list[dict[str, Any]]) -> None:
        timeline = self.ctx.timeline
        timeline.mark("message")
        with timeline.span("messages"):
            self._download_documents(job_id, plans)

    def download_inline(self, job_id: str, plans: list[dict[str, Any]],
                        job: dict[str, Any]) -> None:
        """A message's work done by the step that planned it (a change-stream job's scan,
        workers/pipeline/scan.py), with the job it has just read."""
        with self.ctx.timeline.span("messages"):
            self._download_documents(job_id, plans, job)

    def _download_documents(self, job_id: str, plans: list[dict[str, Any]],
                            job: dict[str, Any] | None = None) -> None:
        ctx = self.ctx
        if job is None:
            job = ctx.read_job(job_id)  # its status kept: stopped() below reads nothing
        if job is None or job["status"] in FINISHED:
            self.finisher.drop_stale(job_id, len(plans), "its job has ended")
            return
        if ctx.stopped(job_id):  # raises WorkerShuttingDown when the worker stops
            self.finisher.drop_stale(job_id, len(plans), "its job has ended")
            return
        force = bool(job.get("force"))
        # One query for the URL index's copies of the message's images (those already in
        # their place are skipped without looking at it).
        known = {} if force else ctx.fetch_once.known(
            [task.url for data in plans for task in plan_from_message(data).images])
        # Each document's images start as soon as its folder is open: the pool is not left
        # idle while the message's other folders open (issue 24's timeline). If opening one
        # raises (storage down), no further document is opened; the images already started
        # are recorded below and the message then raises (it is replayed, as before).
        work = []
        failure: BaseException | None = None
        for data in plans:
            try:
                with ctx.timeline.span("opening"):
                    opened = self._open(job, [data])
            except Exception as exc:  # noqa: BLE001 -- raised once the started ones are in
                failure = exc
                break
            for folder, data in opened:
                previous = folder.previous
                futures = [
                    (task, ctx.pool.submit(self.attempt, job_id, folder, task,
                                           previous.get(task.index), force, 1,
                                           folder.claimed_by_this_job, known.get(task.url)))
                    for task in folder.plan.images
                ]
                work.append((folder, data, futures))
        retries: list[tuple[dict[str, Any], ImageTask, DownloadError]] = []
        deferred: list[tuple[dict[str, Any], ImageTask, int]] = []
        finished = []
        timeline = ctx.timeline
        for folder, data, futures in work:
            done: list[dict[str, Any]] = []
            with timeline.span("awaiting"):  # the message boundary (workers/timeline.py)
                results = [(task, *_indexed(*_result(future))) for task, future in futures]
            for task, outcome, error in results:
                if error is not None:
                    failure = failure or error
                elif outcome.retry is not None:
                    retries.append((data, task, outcome.retry))
                elif outcome.defer_ms is not None:
                    deferred.append((data, task, outcome.defer_ms))
                elif outcome.record is not None:
                    done.append(outcome.record)
            # Each document's metadata.json as soon as its images are done ...
            with timeline.span("finishing"):
                if (document := self.finisher.merge(job, folder, data, done)) is not None:
                    finished.append(document)
        with log_context(job_id=job_id), timeline.span("finishing"):
            # ... the finished ones written back and counted together (two MongoDB round
            # trips for the message, not two per document).
            self.finisher.finish_documents(job, finished)
        if failure is not None:
            # Every image that finished is recorded; the others are the replay's (or, on a
            # shutdown, another worker's): retries are not enqueued, the replay does that.
            raise failure
        # Enqueued only once every document is recorded: if recording raises (storage or
        # Redis down), the replayed message finds its own downloads recorded and enqueues
        # each retry once.
        for data, task, error in retries:
            delay = backoff_ms(ctx.settings, 1, error.retry_after_s)
            ctx.enqueuer.retry(job_id, data, task.index, 2, delay)
        for data, task, delay in deferred:  # still the first attempt: no retry spent
            ctx.enqueuer.retry(job_id, data, task.index, 1, delay)

    def _open(self, job: dict[str, Any],
              plans: list[dict[str, Any]]) -> list[tuple[DocumentFolder, dict[str, Any]]]:
        """Open every document's folder; a conflicting or superseded one is finished here."""
        opened: list[tuple[DocumentFolder, dict[str, Any]]] = []
        for data in plans:
            folder = self.folder(job["_id"], data)
            with log_context(job_id=job["_id"], document_id=folder.plan.document_id):
                try:
                    folder.open()
                except FolderConflict as exc:
                    self.finisher.conflict(job, folder.plan, data, exc)
                    continue
                except StaleMessage as exc:
                    self.finisher.superseded(job, folder.plan, data, reason=exc.message)
                    continue
            opened.append((folder, data))
        return opened

    def retry_image(self, job_id: str, data: dict[str, Any], index: int, attempt: int) -> None:
        with self.ctx.timeline.span("messages"):
            self._retry_image(job_id, data, index, attempt)

    def _retry_image(self, job_id: str, data: dict[str, Any], index: int, attempt: int) -> None:
        ctx = self.ctx
        job = ctx.read_job(job_id)
        if job is None or job["status"] in FINISHED:
            self.finisher.drop_stale(job_id, 1, "its job has ended")
            return
        folder = self.folder(job_id, data)
        task = next(t for t in folder.plan.images if t.index == index)
        with log_context(job_id=job_id, document_id=folder.plan.document_id, url=task.url):
            try:
                folder.check_current()  # no request for a plan a newer one replaced
            except StaleMessage as exc:
                self.finisher.superseded(job, folder.plan, data, indexes=[index],
                                         reason=exc.message)
                return
            except FolderConflict as exc:
                self.finisher.conflict(job, folder.plan, data, exc)
                return
            entry = ctx.fetch_once.known([task.url]).get(task.url)
            outcome, error = _indexed(
                self.attempt(job_id, folder, task, None, True, attempt, False, entry), None)
            if error is not None:  # its URL index entry could not be written
                raise error
            if outcome.defer_ms is not None:  # the host is paused: the same attempt, later
                ctx.enqueuer.retry(job_id, data, index, attempt, outcome.defer_ms)
                return
            if outcome.retry is not None:
                delay = backoff_ms(ctx.settings, attempt, outcome.retry.retry_after_s)
                log.info("retrying image %d in %d ms (attempt %d failed: %s)", index, delay,
                         attempt, outcome.retry.code)
                ctx.enqueuer.retry(job_id, data, index, attempt + 1, delay)
                return
            if outcome.record is not None:
                self.finisher.record(job, folder, data, [outcome.record])

    def attempt(self, job_id: str, folder: DocumentFolder, task: ImageTask,
                previous: dict[str, Any] | None, force: bool, attempt: int,
                same_job: bool, known: dict[str, Any] | None = None) -> Outcome:
        """One attempt at one image, holding its slots; raises only MESSAGE_ERRORS.

        ``known`` is the URL index's entry of the image's URL, if any: a stored copy to copy
        instead of requesting it again (unless the job forces re-fetching).
        """
        with log_context(job_id=job_id, document_id=folder.plan.document_id, url=task.url), \
                self.ctx.timeline.span("attempts"):
            try:
                return self._attempt(job_id, folder, task, previous, force, attempt, same_job,
                                     known)
            except MESSAGE_ERRORS:
                raise
            except DownloadError as exc:
                return self._failed(task, exc, attempt)
            except Exception as exc:  # noqa: BLE001 -- §14: fails this image, not the message
                log.warning("image %d: unexpected %s: %s", task.index, type(exc).__name__,
                            exc)
                log.debug("image %d: unexpected error", task.index, exc_info=True)
                return self._failed(task, DownloadError("connection_error",
                                                        engine.unexpected(exc)), attempt)

    def _attempt(self, job_id: str, folder: DocumentFolder, task: ImageTask,
                 previous: dict[str, Any] | None, force: bool, attempt: int,
                 same_job: bool, known: dict[str, Any] | None) -> Outcome:
        ctx = self.ctx
        if previous is not None and not force:
            skipped = folder.skip_record(task, previous)
            if skipped is not None and same_job and previous.get("status") == DOWNLOADED:
                # A replay of this job's own message: the image was downloaded by it.
                skipped = dict(previous)
            elif skipped is not None:
                metrics.DOWNLOADS.labels("skipped").inc()
            if skipped is not None:  # no request; variants made from the original
                return Outcome(record=folder.backfill(skipped, ctx.settings))
        with ctx.timeline.span("status"):
            stopped = ctx.stopped(job_id)
        if stopped:
            return Outcome()  # cancelled before it started: not done, nothing recorded
        with ctx.timeline.span("claim"):
            copied, claim = self._copy_or_claim(job_id, folder, task, known)
        if copied is not None:
            return Outcome(record=copied)
        job_key = ctx.progress.key(job_id)
        handed = False
        try:
            outcome = self._download(job_id, folder, task, attempt)
            if outcome.record is not None and outcome.record.get("status") == DOWNLOADED:
                # Its index entry first, then the claim goes (a document waiting for the URL
                # copies it from the index): both on the index writer's thread.
                outcome.indexed = ctx.index_writer.add(
                    folder.key, outcome.record,
                    claim=(task.url, claim, job_key) if claim is not None else None)
                handed = True
            return outcome
        finally:
            if claim is not None and not handed:
                with ctx.timeline.span("release"):
                    ctx.fetch_once.release(task.url, claim, job_key=job_key, stored=False)

    def _copy_or_claim(self, job_id: str, folder: DocumentFolder, task: ImageTask,
                       known: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
        """A copy of an already stored image of this URL (contract §16: fetched once), else
        the claim to request it: (record, None) or (None, claim token, or None when waiting
        for another document's download left nothing to copy)."""
        fetch_once = self.ctx.fetch_once
        job_key = self.ctx.progress.key(job_id)
        copied = fetch_once.copy(folder, task, known)
        if copied is not None:
            return copied, None
        claim = fetch_once.claim(task.url, job_key)
        if claim is not None and claim != DONE:
            return None, claim
        if claim is None:
            # Another document is requesting this URL right now: wait for it (at most as long
            # as one download may take, and its claim lives), then copy what it stored.
            longest_s = DEADLINE_FACTOR * self.ctx.settings.download_timeout_s + CLAIM_TTL_S
            known = fetch_once.wait(task.url, timeout_s=longest_s,
                                    stop=lambda: self.ctx.stopped(job_id))
        else:  # a download of this job stored it since this message looked in the index
            known = fetch_once.known([task.url]).get(task.url)
        copied = fetch_once.copy(folder, task, known)
        if copied is not None:
            return copied, None
        # Nothing usable to copy (that download failed, or its copy is gone): request it.
        claim = fetch_once.claim(task.url)
        return None, claim if claim != DONE else None

    def _download(self, job_id: str, folder: DocumentFolder, task: ImageTask,
                  attempt: int) -> Outcome:
        ctx = self.ctx
        host = _host(task.url)
        token = None
        error: BaseException | None = None
        started = time.monotonic()
        try:
            if host:
                stop = lambda: ctx.stopped(job_id)  # noqa: E731
                try:
                    # §17: robots.txt first (no slot is taken for a disallowed image), then a
                    # slot, refused while the host is paused or within its Crawl-delay.
                    with ctx.timeline.span("slot_wait"):
                        crawl_ms = (ctx.robots.check(task.url, should_stop=stop)
                                    if ctx.robots else 0)
                        token = ctx.caps.acquire(host, should_stop=stop,
                                                 crawl_delay_ms=crawl_ms)
                except SlotWaitCancelled:
                    return Outcome()
                except HostPaused as paused:
                    metrics.DOWNLOADS.labels("deferred").inc()
                    return Outcome(defer_ms=_defer_ms(paused.wait_ms))
                metrics.SLOT_WAIT_SECONDS.observe(time.monotonic() - started)
            began = time.monotonic()
            with ctx.timeline.span("downloads"):
                record = engine.download_image(folder, task, ctx.fetcher, ctx.settings,
                                               previous=None, force=True, attempt=attempt)
            ctx.timeline.mark("download_end")
            metrics.DOWNLOAD_SECONDS.observe(time.monotonic() - began)
            metrics.DOWNLOADS.labels("downloaded").inc()
            metrics.DOWNLOAD_BYTES.inc(record.get("bytes") or 0)
            # The URL index's copy of this URL is written before the claim goes (by the
            # caller, through the index writer): a document waiting for this download finds
            # it there and copies it.
            return Outcome(record=record)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if token:
                release_slot(ctx, token, error, attempt)

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


def _indexed(outcome: Outcome, error: BaseException | None
             ) -> tuple[Outcome, BaseException | None]:
    """Once the outcome's URL index entry is written: the outcome, or the error of the write
    (then the image is not recorded: the message fails and is replayed, as when the download
    thread wrote the entry itself)."""
    if error is None and outcome.indexed is not None:
        try:
            outcome.indexed.wait()
        except BaseException as exc:  # noqa: BLE001 -- re-raised by the caller
            return Outcome(), exc
    return outcome, error


def _result(future: Future[Outcome]) -> tuple[Outcome, BaseException | None]:
    """A finished attempt's outcome, or the message-level exception it raised."""
    try:
        return future.result(), None
    except BaseException as exc:  # noqa: BLE001 -- re-raised by the caller once all are in
        return Outcome(), exc


def _defer_ms(wait_ms: int) -> int:
    """When a download waiting for a paused host comes back: after the pause, spread over up
    to a tenth of it (at most a second) so that its waiters do not all arrive at once."""
    return wait_ms + random.randint(0, min(1000, wait_ms // 10) + 10)


def _host(url: str) -> str:
    """The URL's host for the per-host cap ("" when it cannot be parsed: it fails anyway)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def release_slot(ctx: PipelineContext, token: str, error: BaseException | None,
                 attempt: int) -> None:
    """Give a download slot back with what the request said about its host (§17): a success
    rides on this thread's next acquire; a failure or a 429/503 is reported at once, a
    slow-down pausing the host for the ``attempt``'s backoff (or its Retry-After)."""
    outcome = host_state.outcome_of(error)
    pause = 0
    if outcome in (host_state.SLOW, host_state.SLOW_FAIL):
        pause = backoff_ms(ctx.settings, attempt, getattr(error, "retry_after_s", None))
    ctx.caps.release(token, defer=True, outcome=outcome, pause_ms=pause)
