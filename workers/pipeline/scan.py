"""Step 1 of a job: page through its documents, plan each, enqueue ``download_documents``.

One cursor over the collection (or filter, or the one document), batches of ``SCAN_BATCH``;
each document is counted once (progress.plan) and sent in messages of a few documents each.
The last ``_id`` is saved after every batch (in the job's progress hash, removed when the
job ends), so a scan interrupted by a crash resumes where it was, also over mixed ``_id``
types (images_service/jobs/id_order.py).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from bson import json_util

from images_service.download import engine
from images_service.download.engine import DocumentPlan
from images_service.errors import InvalidFilter, UnsafePathError
from images_service.jobs.filters import decode_filter_json
from images_service.jobs.id_order import scan_in_id_order
from images_service.jobs.projection import top_level_projection
from images_service.jobs.store import FINISHED
from images_service.logs import log_context
from workers.pipeline.context import PipelineContext
from workers.pipeline.finish import Finisher
from workers.pipeline.plans import document_key, plan_to_message

log = logging.getLogger(__name__)

#: Documents read per scan batch (one cursor, this batch size).
SCAN_BATCH = 500
#: A download_documents message carries up to this many documents ...
DOCS_PER_MESSAGE = 8
#: ... or documents with up to about this many images in all.
IMAGES_PER_MESSAGE = 32


class Scanner:
    def __init__(self, ctx: PipelineContext, finisher: Finisher) -> None:
        self.ctx = ctx
        self.finisher = finisher

    def scan(self, job_id: str) -> None:
        timeline = self.ctx.timeline
        timeline.mark("scan_start")
        with timeline.span("scan"):
            self._scan(job_id)
        timeline.mark("scan_end")

    def _scan(self, job_id: str) -> None:
        ctx = self.ctx
        job = ctx.jobs.get(job_id)
        if job is None or job["status"] in FINISHED:
            ctx.progress.forget(job_id)  # a replayed scan of an ended job: state goes with it
            return
        ctx.jobs.mark_running(job_id)
        database, collection = job["database"], job["collection"]
        with log_context(job_id=job_id, database=database, collection=collection):
            if collection not in ctx.mongo[database].list_collection_names():
                self.finisher.finish_job(job, "failed",
                                         message=f"collection {database}.{collection} not found")
                return
            # The job's Redis state is created here, on a job just seen active, and nowhere
            # else: a message of an ended job recreates nothing (images_service.jobs.progress).
            ctx.progress.start(job_id)
            raw_last, scanned = ctx.progress.checkpoint(job_id)
            last_id = json_util.loads(raw_last) if raw_last else None
            limit = job.get("limit")
            try:
                for batch in self._documents(job, last_id, scanned):
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
            progress = ctx.progress.mark_scan_done(job_id)
            ctx.timeline.mark("scan_done")
            if progress is None:
                log.info("job %s ended during its scan", job_id)
                return
            ctx.jobs.record_progress(job_id, progress.as_job_progress())
            log.info("job %s: scan done, %d documents", job_id,
                     progress.counters.get("documents_total", 0))
            if progress.complete():
                self.finisher.finish_job(job, "completed", progress=progress.as_job_progress())

    def _documents(self, job: dict[str, Any], last_id: Any,
                   scanned: int) -> Iterator[list[dict[str, Any]]]:
        settings = self.ctx.settings
        coll = self.ctx.mongo[job["database"]][job["collection"]]
        fields = job.get("image_fields") or list(settings.image_fields)
        # Whole top-level fields: nx-27017 returns a dotted projection as a flat key
        # (images_service/jobs/projection.py); the planner walks the dotted paths itself.
        # A refresh writes the whole status back (refreshed_at added): it needs all of it.
        status = settings.status_field if job["type"] == "refresh" else (
            f"{settings.status_field}.path" if settings.status_field else "")
        projection = top_level_projection([*fields, settings.search_field, status])
        if job["type"] in ("document", "change_stream"):
            doc = coll.find_one({"_id": json_util.loads(job["source"]["id"])}, projection)
            if doc is not None and last_id is None:
                yield [doc]
            return
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

    def _plan_and_enqueue(self, job: dict[str, Any], docs: list[dict[str, Any]]) -> None:
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
        send = ctx.enqueuer.refresh if job["type"] == "refresh" else ctx.enqueuer.documents
        statuses = {id(doc["_id"]): doc for doc in docs}
        message: list[dict[str, Any]] = []
        images = 0
        for plan, source_id in plans:
            data = plan_to_message(plan, source_id)
            if job["type"] == "refresh":
                data["status_json"] = _status_json(statuses.get(id(source_id)), ctx.settings)
            message.append(data)
            images += len(plan.images)
            if len(message) >= DOCS_PER_MESSAGE or images >= IMAGES_PER_MESSAGE:
                send(job_id, message)
                message, images = [], 0
        if message:
            send(job_id, message)


def _status_json(doc: dict[str, Any] | None, settings: Any) -> str | None:
    """The document's write-back value as Extended JSON (a refresh rewrites it, §16)."""
    if doc is None or not settings.status_field:
        return None
    value: Any = doc
    for part in settings.status_field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return json_util.dumps(value) if isinstance(value, dict) else None
