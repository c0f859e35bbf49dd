"""Step 1 of a job: page through its documents, plan each, enqueue ``download_documents``.

One cursor over the collection (or filter, or the one document), batches of ``SCAN_BATCH``;
each document is counted once (progress.plan) and sent in messages of a few documents each.
The last ``_id`` is saved after every batch (in the job's progress hash, removed when the
job ends), so a scan interrupted by a crash resumes where it was, also over mixed ``_id``
types (images_service/jobs/id_order.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from bson import json_util

from images_service.download import engine
from images_service.download.engine import DocumentPlan
from images_service.errors import InvalidFilter, UnsafePathError
from images_service.jobs.filters import decode_filter_json
from images_service.jobs.id_order import scan_in_id_order
from images_service.jobs.progress import Progress
from images_service.jobs.projection import top_level_projection
from images_service.jobs.store import FINISHED
from images_service.logs import log_context
from workers.pipeline.context import PipelineContext
from workers.pipeline.finish import Finisher
from workers.pipeline.plans import document_key, plan_to_message

log = logging.getLogger(__name__)

#: Job types about one document (read with one ``find_one``).
SINGLE_DOCUMENT = ("document", "change_stream")
#: Documents read per scan batch (one cursor, this batch size).
SCAN_BATCH = 500
#: A download_documents message carries up to this many documents ...
DOCS_PER_MESSAGE = 8
#: ... or documents with up to about this many images in all.
IMAGES_PER_MESSAGE = 32


#: Runs one ``download_documents`` message's work in this thread: (job id, message, job).
DownloadInline = Callable[[str, list[dict[str, Any]], dict[str, Any]], None]


class Scanner:
    def __init__(self, ctx: PipelineContext, finisher: Finisher,
                 download_inline: DownloadInline | None = None) -> None:
        self.ctx = ctx
        self.finisher = finisher
        self.download_inline = download_inline

    def scan(self, job_id: str, job: dict[str, Any] | None) -> None:
        """The job's scan; ``job`` as the caller just read it, already moved pending -> running
        by that read (PipelineContext.start_job), or None when it is gone."""
        timeline = self.ctx.timeline
        timeline.mark("scan_start")
        with timeline.span("scan"):
            self._scan(job_id, job)
        timeline.mark("scan_end")

    def _scan(self, job_id: str, job: dict[str, Any] | None) -> None:
        ctx = self.ctx
        if job is None or job["status"] in FINISHED:
            ctx.progress.forget(job_id)  # a replayed scan of an ended job: state goes with it
            return
        database, collection = job["database"], job["collection"]
        with log_context(job_id=job_id, database=database, collection=collection):
            # A one-document job whose document is there needs no listing to know its
            # collection exists (one MongoDB command less per change-stream job: issue 24).
            single = self._single_document(job) if job["type"] in SINGLE_DOCUMENT else None
            if single is None and collection not in ctx.mongo[database].list_collection_names():
                self.finisher.finish_job(job, "failed",
                                         message=f"collection {database}.{collection} not found")
                return
            if job["type"] == "change_stream" and self.download_inline is not None:
                self._scan_and_download(job, single)
                return
            # The job's Redis state is created here, on a job just seen active, and nowhere
            # else: a message of an ended job recreates nothing (images_service.jobs.progress).
            ctx.progress.start(job_id)
            raw_last, scanned = ctx.progress.checkpoint(job_id)
            last_id = json_util.loads(raw_last) if raw_last else None
            limit = job.get("limit")
            try:
                for batch in self._documents(job, last_id, scanned, single):
                    if ctx.stopped(job_id):
                        log.info("job %s stopped: scan ends early", job_id)
                        return
                    self._plan_and_enqueue(job, batch)
                    scanned += len(batch)
                    if not ctx.progress.save_checkpoint(
                            job_id, json_util.dumps(batch[-1]["_id"]), scanned):
                        log.info("job %s ended during its scan", job_id)
                        return
                    if limit and scanned >= limit:
                        break
            except InvalidFilter as exc:  # a stored filter edited since the trigger checked it
                self.finisher.finish_job(job, "failed", message=f"invalid filter: {exc.message}")
                return
            progress = self._scan_done(job_id)
            if progress is None:
                return
            ctx.jobs.record_progress(job_id, progress.as_job_progress())
            log.info("job %s: scan done, %d documents", job_id,
                     progress.counters.get("documents_total", 0))
            if progress.complete():
                self.finisher.finish_job(job, "completed", progress=progress.as_job_progress())

    def _projection(self, job: dict[str, Any]) -> dict[str, Any]:
        settings = self.ctx.settings
        fields = job.get("image_fields") or list(settings.image_fields)
        # Whole top-level fields: nx-27017 returns a dotted projection as a flat key
        # (images_service/jobs/projection.py); the planner walks the dotted paths itself.
        # A refresh writes the whole status back (refreshed_at added): it needs all of it.
        status = settings.status_field if job["type"] == "refresh" else (
            f"{settings.status_field}.path" if settings.status_field else "")
        return top_level_projection([*fields, settings.search_field, status])

    def _single_document(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The one document of a document or change-stream job, or None when it is gone."""
        coll = self.ctx.mongo[job["database"]][job["collection"]]
        return coll.find_one({"_id": json_util.loads(job["source"]["id"])},
                             self._projection(job))

    def _documents(self, job: dict[str, Any], last_id: Any, scanned: int,
                   single: dict[str, Any] | None = None) -> Iterator[list[dict[str, Any]]]:
        if job["type"] in SINGLE_DOCUMENT:  # ``single``: read by _scan (None: it is gone)
            if single is not None and last_id is None:
                yield [single]
            return
        coll = self.ctx.mongo[job["database"]][job["collection"]]
        projection = self._projection(job)
        query: dict[str, Any] = decode_filter_json(job.get("filter_json"))
        limit = job.get("limit")
        remaining = (limit - scanned) if limit else 0
        if limit and remaining <= 0:
            return
        # Resumes after last_id across _id types (images_service/jobs/id_order.py).
        docs = scan_in_id_order(coll, query, projection, last_id, batch_size=SCAN_BATCH,
                                limit=remaining)
        batch: list[dict[str, Any]] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) >= SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def _scan_and_download(self, job: dict[str, Any], doc: dict[str, Any] | None) -> None:
        """A change-stream job in one message: its document (None: gone) planned, then
        downloaded here.

        Every insert the listener sees is such a job, so its fixed cost is what limits the
        rate of inserts the service keeps up with (issue 24, docs/throughput.md "The listener
        path"): no second message (its enqueue, its wait in the queue, its delivery and ack, a
        second read of the job; the read that delivered the job also moved it to running, and
        the totals go with its end). The order keeps every rule of the two-message path: the
        totals are known (scan done) before the document is finished, so its finish ends the
        job, in the same write as its progress. A replay (crash, shutdown, a raised storage
        error) starts again from the top: the planning is counted once per document and images
        already stored are skipped without a request.
        """
        ctx = self.ctx
        job_id = job["_id"]
        ctx.progress.start(job_id)
        if ctx.stopped(job_id):  # the status read with the job (raises on shutdown)
            return
        messages = self._plan(job, [doc]) if doc is not None else []
        progress = self._scan_done(job_id)
        if progress is None:
            return
        # The totals go with the job's end, one write: until then the API shows them live
        # from Redis (images_service.jobs.progress.with_live_progress).
        if progress.complete():  # no document, or one without images
            self.finisher.finish_job(job, "completed", progress=progress.as_job_progress())
            return
        assert self.download_inline is not None
        for message in messages:
            self.download_inline(job_id, message, job)

    def _scan_done(self, job_id: str) -> Progress | None:
        """The job's totals are final; None when the job ended meanwhile."""
        progress = self.ctx.progress.mark_scan_done(job_id)
        self.ctx.timeline.mark("scan_done")
        if progress is None:
            log.info("job %s ended during its scan", job_id)
        return progress

    def _plan_and_enqueue(self, job: dict[str, Any], docs: list[dict[str, Any]]) -> None:
        send = self.ctx.enqueuer.refresh if job["type"] == "refresh" else \
            self.ctx.enqueuer.documents
        for message in self._plan(job, docs):
            send(job["_id"], message)

    def _plan(self, job: dict[str, Any], docs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Plan ``docs``, count them once towards the job's totals, and group them into
        ``download_documents`` messages (each a list of document plans)."""
        ctx = self.ctx
        job_id = job["_id"]
        fields = job.get("image_fields")
        plans: list[tuple[DocumentPlan, Any]] = []
        for doc in docs:
            try:
                plans.append((engine.plan_document(doc, job["database"], job["collection"],
                                                   ctx.settings, fields), doc["_id"]))
            except UnsafePathError as exc:
                log.warning("job %s: document %r cannot be stored: %s", job_id, doc.get("_id"), exc)
                ctx.jobs.record_progress(job_id, {}, [{
                    "document_id": str(doc.get("_id")), "url": None,
                    "code": "invalid_request", "message": str(exc)}])
        ctx.progress.plan(job_id, [(document_key(p), len(p.images)) for p, _ in plans])
        statuses = {id(doc["_id"]): doc for doc in docs}
        messages: list[list[dict[str, Any]]] = []
        message: list[dict[str, Any]] = []
        images = 0
        for plan, source_id in plans:
            data = plan_to_message(plan, source_id)
            if job["type"] == "refresh":
                data["status_json"] = _status_json(statuses.get(id(source_id)), ctx.settings)
            message.append(data)
            images += len(plan.images)
            if len(message) >= DOCS_PER_MESSAGE or images >= IMAGES_PER_MESSAGE:
                messages.append(message)
                message, images = [], 0
        if message:
            messages.append(message)
        return messages


def _status_json(doc: dict[str, Any] | None, settings: Any) -> str | None:
    """The document's write-back value as Extended JSON (a refresh rewrites it, §16)."""
    if doc is None or not settings.status_field:
        return None
    value: Any = doc
    for part in settings.status_field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return json_util.dumps(value) if isinstance(value, dict) else None
