"""Finishing: record images in metadata.json, finish a document (write-back), end the job.

When the last image of a document is final, the document is finished: its status is
written back on the source document (contract §4), its counts are added to the job once
(progress.finalize) and the job is completed when its scan is over and every planned
document is finished. Every step is idempotent, so a replayed message changes nothing.
Whichever way a job ends, its Redis state is removed with it (:meth:`Finisher.finish_job`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from bson import json_util

from images_service import engine, metrics
from images_service.engine import DocumentPlan
from images_service.errors import FolderConflict
from images_service.storage.metadata import DOWNLOADED, FAILED, SKIPPED
from workers.pipeline.context import PipelineContext
from workers.pipeline.plans import document_key

log = logging.getLogger(__name__)

#: metadata.json lock: held at most this long (seconds), waited for at most this long.
LOCK_TIMEOUT_S = 60


def document_status(counts: dict[str, int]) -> str:
    """Write-back status (contract §10): completed, partial or failed."""
    if counts[FAILED] == 0:
        return "completed"
    return "partial" if counts[DOWNLOADED] + counts[SKIPPED] else "failed"


class Finisher:
    def __init__(self, ctx: PipelineContext) -> None:
        self.ctx = ctx

    def lock(self, plan: DocumentPlan):
        """The Redis lock that serialises writers of one document folder, fleet-wide."""
        return self.ctx.redis.lock(f"isv:lock:{plan.relative_folder}", timeout=LOCK_TIMEOUT_S,
                                   blocking_timeout=LOCK_TIMEOUT_S)

    def record(self, job: dict[str, Any], plan: DocumentPlan, data: dict[str, Any],
               records: list[dict[str, Any]]) -> None:
        """Merge final image records; finish the document when none of its images is left."""
        job_id = job["_id"]
        if records or not plan.images:
            try:
                engine.record_images(plan, self.ctx.storage, records, job_id=job_id,
                                     lock=self.lock(plan))
            except FolderConflict as exc:  # the folder was taken since this job claimed it
                self.conflict(job, plan, data, exc)
                return
        if plan.images and not records:
            return
        all_done = self.ctx.progress.image_done(job_id, document_key(plan),
                                                [r["index"] for r in records]) \
            if plan.images else True
        if all_done:
            self.finish_document(job, plan, data)

    def conflict(self, job: dict[str, Any], plan: DocumentPlan, data: dict[str, Any],
                 error: FolderConflict) -> None:
        """The folder belongs to another document: every image of this one fails with
        ``folder_conflict`` and its write-back says ``failed``; the folder is not touched."""
        log.warning("job %s: document %s: %s", job["_id"], plan.document_id, error.message)
        records = [engine.failed_record(task, error, 0) for task in plan.images]
        if plan.images:
            self.ctx.progress.image_done(job["_id"], document_key(plan),
                                         [task.index for task in plan.images])
        self.finish_document(job, plan, data, records=records, status="failed")

    def finish_document(self, job: dict[str, Any], plan: DocumentPlan, data: dict[str, Any],
                        *, records: list[dict[str, Any]] | None = None,
                        status: str | None = None) -> None:
        """Write back and count a document whose images are all final.

        ``records`` are its final records when they are not in its metadata.json (a folder
        conflict); by default they are read from there. ``status`` overrides the write-back
        status computed from them.
        """
        job_id = job["_id"]
        if records is None:
            meta = engine.read_metadata(plan, self.ctx.storage) or {"images": []}
            wanted = {t.index for t in plan.images}
            records = [r for r in meta.get("images", []) if r.get("index") in wanted]
        counts = {s: sum(1 for r in records if r.get("status") == s)
                  for s in (DOWNLOADED, SKIPPED, FAILED)}
        if status is None:
            status = document_status(counts)
        self.write_back(job_id, plan, data, status, counts)
        first, progress = self.ctx.progress.finalize(
            job_id, document_key(plan), downloaded=counts[DOWNLOADED],
            skipped=counts[SKIPPED], failed=counts[FAILED])
        if progress is None:
            log.info("job %s already ended: document %s not counted", job_id, plan.document_id)
            return
        errors = [{"document_id": plan.document_id, "url": r.get("url"),
                   "code": r.get("error", {}).get("code"),
                   "message": r.get("error", {}).get("message")}
                  for r in records if r.get("status") == FAILED] if first else None
        self.ctx.jobs.record_progress(job_id, progress.as_job_progress(), errors)
        if first:
            metrics.DOCUMENTS.labels(status).inc()
        if progress.complete():
            self.finish_job(job, "completed", progress=progress.as_job_progress())

    def write_back(self, job_id: str, plan: DocumentPlan, data: dict[str, Any], status: str,
                   counts: dict[str, int]) -> None:
        settings = self.ctx.settings
        if not settings.status_field:
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
        self.ctx.mongo[plan.database][plan.collection].update_one(
            {"_id": source_id},
            {"$set": {settings.download_flag_field: False, settings.status_field: value}},
        )

    def finish_job(self, job: dict[str, Any], status: str, *,
                   progress: dict[str, int] | None = None, message: str | None = None) -> None:
        """End the job (at most once) and remove its Redis state, which also goes when the
        job had already ended some other way (a cancel, a failure): contract §10."""
        finished = self.ctx.jobs.finish(job["_id"], status, progress=progress, message=message)
        self.ctx.progress.forget(job["_id"])
        if finished is not None:
            metrics.JOBS.labels(job["type"], status).inc()
            if message:
                log.warning("job %s %s: %s", job["_id"], status, message)
            else:
                log.info("job %s %s", job["_id"], status)
