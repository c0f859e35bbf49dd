"""A refresh job's step (contract §16): re-check the stored images of a few documents.

``refresh_documents`` gets the plans a refresh job's scan made (like a download scan: filter,
limit) and, for each document, opens its folder, picks the images that are due — downloaded
(or skipped), still named at their index, and not checked for ``older_than_days`` (all of
them without it; a scheduled job spreads the due time per URL, so that images downloaded on
one day are not all re-checked on one day) — and re-checks each at its source with a
conditional GET (:mod:`images_service.download.recheck`), holding the same download slots
as a download. Each URL is checked once per run, whatever the number of documents naming it:
the first document to reach it claims it in the job's Redis state, the others wait for its
result and apply it to their own copy (a changed image is copied from the first one's new
file, server-side). The results are merged into metadata.json and the URL index; the
document's write-back keeps its status, counts and path and gains ``refreshed_at``.

Outcomes counted in the job's progress: ``images_not_modified`` (a 304, or the same bytes),
``images_changed``, ``images_missing``, ``images_gone``, ``images_failed`` (a check that
failed for good: the image stays as it was, never ``failed``), and ``images_skipped`` for
the images that were not due. A retryable failure (timeout, 5xx) continues as a delayed
``refresh_image`` message, exactly as a download's retry.
"""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from images_service import metrics
from images_service.download import recheck
from images_service.download.caps import HostPaused, SlotWaitCancelled
from images_service.download.folder import DocumentFolder
from images_service.download.url_index import url_key
from images_service.errors import DownloadError, FolderConflict, StaleMessage
from images_service.fetching.fetcher import DEADLINE_FACTOR
from images_service.jobs.store import FINISHED
from images_service.logs import log_context
from images_service.storage.metadata import DOWNLOADED, SKIPPED, matches
from workers.pipeline.context import PipelineContext
from workers.pipeline.download import MESSAGE_ERRORS, Downloader, _defer_ms, release_slot
from workers.pipeline.finish import Finished, Finisher
from workers.pipeline.plans import backoff_ms, document_key

log = logging.getLogger(__name__)

DAY_S = 86_400.0
#: A scheduled refresh spreads due times over this fraction of the period, per URL.
SPREAD = 0.25
#: How often a document waiting for another's check of the same URL looks again (seconds).
POLL_S = 0.05
#: Outcomes of a check as counted in the job's progress (unchanged bytes: not modified).
COUNTED = {recheck.NOT_MODIFIED: "not_modified", recheck.UNCHANGED: "not_modified",
           recheck.CHANGED: "changed", recheck.MISSING: "missing", recheck.GONE: "gone"}


class Refresher:
    def __init__(self, ctx: PipelineContext, finisher: Finisher, downloader: Downloader) -> None:
        self.ctx = ctx
        self.finisher = finisher
        self.downloader = downloader

    def refresh_documents(self, job_id: str, plans: list[dict[str, Any]]) -> None:
        job = self._live_job(job_id, len(plans))
        if job is None:
            return
        self._refresh(job, plans, only=None, attempt=1)

    def refresh_image(self, job_id: str, data: dict[str, Any], index: int, attempt: int) -> None:
        job = self._live_job(job_id, 1)
        if job is None:
            return
        self._refresh(job, [data], only=index, attempt=attempt)

    def _live_job(self, job_id: str, documents: int) -> dict[str, Any] | None:
        job = self.ctx.read_job(job_id)
        if job is None or job["status"] in FINISHED or self.ctx.stopped(job_id):
            self.finisher.drop_stale(job_id, documents, "its job has ended")
            return None
        return job

    def _refresh(self, job: dict[str, Any], plans: list[dict[str, Any]], *, only: int | None,
                 attempt: int) -> None:
        ctx = self.ctx
        job_id = job["_id"]
        work = []
        for data in plans:
            folder = self.downloader.folder(job_id, data)
            with log_context(job_id=job_id, document_id=folder.plan.document_id):
                try:
                    folder.open()
                except (FolderConflict, StaleMessage) as exc:
                    self.finisher.superseded(job, folder.plan, data, reason=exc.message)
                    continue
            due, skipped = self._due(job, folder, only)
            futures = [(record, ctx.pool.submit(self._check, job_id, folder, record, attempt))
                       for record in due]
            work.append((folder, data, futures, skipped))
        finished: list[Finished] = []
        retries = []
        deferred = []
        failure: BaseException | None = None
        for folder, data, futures, skipped in work:
            outcomes = [(index, SKIPPED) for index in skipped]
            records = []
            for record, future in futures:
                try:
                    outcome, new = future.result()
                except MESSAGE_ERRORS as exc:
                    failure = failure or exc
                    continue
                if outcome == "retry":
                    retries.append((data, record["index"], new))
                    continue
                if outcome == "defer":
                    deferred.append((data, record["index"], new))
                    continue
                outcomes.append((record["index"], outcome))
                if outcome != "failed":
                    records.append(new)
            if records:
                try:
                    merged = folder.merge(records)
                except (FolderConflict, StaleMessage) as exc:
                    self.finisher.superseded(job, folder.plan, data, reason=exc.message)
                    continue
                ctx.urls.record(folder.key, [r for r in merged["images"]
                                             if r["index"] in {n["index"] for n in records}])
            if outcomes and ctx.progress.image_done(job_id, document_key(folder.plan),
                                                    outcomes):
                finished.append(Finished(folder.plan, data, [], refreshed=True))
            elif not folder.plan.images:
                finished.append(Finished(folder.plan, data, [], refreshed=True))
        with log_context(job_id=job_id):
            self.finisher.finish_documents(job, finished)
        if failure is not None:
            raise failure
        for data, index, error in retries:
            delay = backoff_ms(ctx.settings, attempt, error.retry_after_s)
            ctx.enqueuer.refresh_retry(job_id, data, index, attempt + 1, delay)
        for data, index, delay in deferred:
            ctx.enqueuer.refresh_retry(job_id, data, index, attempt, delay)

    def _due(self, job: dict[str, Any], folder: DocumentFolder,
             only: int | None) -> tuple[list[dict[str, Any]], list[int]]:
        """The records to re-check now, and the indexes of the plan's other images."""
        previous = folder.previous
        days = job.get("older_than_days")
        now = time.time()
        due, skipped = [], []
        for task in folder.plan.images:
            if only is not None and task.index != only:
                continue
            record = previous.get(task.index)
            if record is None or record.get("status") not in (DOWNLOADED, SKIPPED) or \
                    not matches(record, folder.plan.urls):
                skipped.append(task.index)  # nothing stored to re-check
                continue
            if days is not None and only is None:
                age_s = now - _epoch(record.get("checked_at"))
                wait_s = float(days) * DAY_S * (1 + (SPREAD * _fraction(task.url)
                                                     if job.get("spread") else 0))
                if age_s < wait_s:
                    skipped.append(task.index)
                    continue
            due.append(record)
        return due, skipped

    def _check(self, job_id: str, folder: DocumentFolder, record: dict[str, Any],
               attempt: int) -> tuple[str, Any]:
        """One image re-checked (or its URL's result of this run applied); raises only
        MESSAGE_ERRORS. Returns (counted outcome, new record), ("failed", None) or
        ("retry", error)."""
        ctx = self.ctx
        key = url_key(record["url"])
        stale_after_s = DEADLINE_FACTOR * ctx.settings.download_timeout_s + 60
        with log_context(job_id=job_id, document_id=folder.plan.document_id, url=record["url"]):
            try:
                while True:
                    state, result = ctx.progress.check_url(job_id, key,
                                                           stale_after_s=stale_after_s)
                    if state == "done":
                        outcome, new = recheck.apply_shared(folder, record, json.loads(result),
                                                            ctx.settings)
                        return COUNTED[outcome], new
                    if state == "mine":
                        break
                    if state == "ended" or ctx.stopped(job_id):
                        return "failed", None
                    time.sleep(POLL_S)
                try:
                    outcome, new = self._fetch(job_id, folder, record)
                except BaseException:
                    ctx.progress.url_checked(job_id, key, None)
                    raise
                ctx.progress.url_checked(job_id, key, json.dumps(
                    recheck.shared_result(outcome, new, folder.key)))
                metrics.REFRESH.labels(outcome).inc()
                return COUNTED[outcome], new
            except MESSAGE_ERRORS:
                raise
            except HostPaused as paused:  # later, the same attempt (§17: no retry spent)
                return "defer", _defer_ms(paused.wait_ms)
            except DownloadError as exc:
                metrics.DOWNLOAD_ERRORS.labels(exc.code).inc()
                if exc.retryable and attempt <= ctx.settings.max_retries:
                    return "retry", exc
                metrics.REFRESH.labels("failed").inc()
                log.info("re-check of image %s failed: %s %s", record["index"], exc.code,
                         exc.message)
                return "failed", None
            except Exception as exc:  # noqa: BLE001 -- §14: one image, never the message
                log.warning("re-check of image %s: unexpected %s: %s", record["index"],
                            type(exc).__name__, exc)
                metrics.REFRESH.labels("failed").inc()
                return "failed", None

    def _fetch(self, job_id: str, folder: DocumentFolder,
               record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The conditional GET, under every politeness rule of a download (§17: robots.txt,
        the fleet's and the host's slots, pauses, Crawl-delay); raises HostPaused when the
        host is paused (the caller re-checks later, spending no attempt)."""
        ctx = self.ctx
        host = (urlsplit(record["url"]).hostname or "").lower()
        token = None
        error: BaseException | None = None
        try:
            if host:
                stop = lambda: ctx.stopped(job_id)  # noqa: E731
                try:
                    crawl_ms = (ctx.robots.check(record["url"], should_stop=stop)
                                if ctx.robots else 0)
                    token = ctx.caps.acquire(host, should_stop=stop, crawl_delay_ms=crawl_ms)
                except SlotWaitCancelled:
                    raise DownloadError("timeout", "job stopped while waiting for a slot") \
                        from None
            return recheck.recheck(folder, record, ctx.fetcher, ctx.settings,
                                   now=datetime.now(timezone.utc))
        except BaseException as exc:
            error = exc
            raise
        finally:
            if token:
                release_slot(ctx, token, error, 1)


def _epoch(value: Any) -> float:
    """An ISO time of a record as epoch seconds; 0 (long ago) when missing."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return 0.0


def _fraction(url: str) -> float:
    """A stable number in [0, 1) for ``url``: where in the spread its due time falls."""
    return random.Random(url_key(url)).random()
