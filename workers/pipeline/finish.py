"""Finishing: record images in metadata.json, finish a document (write-back), end the job.

When the last image of a document is final, the document is finished: its status is
written back on the source document (contract §4), its counts are added to the job once
(progress.finalize) and the job is completed when its scan is over and every planned
document is finished. Every step is idempotent, so a replayed message changes nothing.
Whichever way a job ends, its Redis state is removed with it (:meth:`Finisher.finish_job`).

Two ways a document finishes without its own records (contract §14):

* **superseded** — a newer plan (another job, or a later scan) wrote the folder, so this
  message's work is stale: nothing is written; while this job is still running, the document
  still counts as done (its images as skipped: the newer job has them) so the job completes.
* **write-back refused** — MongoDB refused this document's update (a validator, the 16 MB
  limit, a ``STATUS_FIELD`` path under a scalar): the document counts as done with a job
  error ``writeback_failed``; the other documents of the bulk write are written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from bson import json_util
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from images_service import metrics
from images_service.content.candidates import document_hashes
from images_service.download import engine
from images_service.download.folder import DocumentFolder
from images_service.download.planning import DocumentPlan
from images_service.download.urls import url_list_sha256
from images_service.errors import FolderConflict, StaleMessage
from images_service.jobs.documents import JobDocument
from images_service.logs import log_context
from images_service.storage.metadata import DOWNLOADED, FAILED, SKIPPED
from workers.pipeline.context import PipelineContext
from workers.pipeline.plans import document_key

log = logging.getLogger(__name__)


def document_status(counts: dict[str, int]) -> str:
    """Write-back status (contract §10): completed, partial or failed."""
    if counts[FAILED] == 0:
        return "completed"
    return "partial" if counts[DOWNLOADED] + counts[SKIPPED] else "failed"


@dataclass(frozen=True)
class Finished:
    """A document whose images are all final, with their records; ``forced_status``
    replaces the write-back status its records give (a folder conflict: ``failed``).
    A ``superseded`` document is only counted (its images as skipped), never written back."""

    plan: DocumentPlan
    data: dict[str, Any]
    records: list[dict[str, Any]]
    forced_status: str | None = None
    superseded: bool = False
    #: A refresh job's document (§16): its images were counted as they were re-checked, and
    #: its write-back keeps the last download's status and adds ``refreshed_at``.
    refreshed: bool = False

    @cached_property
    def counts(self) -> dict[str, int]:
        if self.superseded:
            return {DOWNLOADED: 0, SKIPPED: len(self.plan.images), FAILED: 0}
        if self.refreshed:
            return {DOWNLOADED: 0, SKIPPED: 0, FAILED: 0}
        return {s: sum(1 for r in self.records if r.get("status") == s)
                for s in (DOWNLOADED, SKIPPED, FAILED)}

    @property
    def status(self) -> str:
        return self.forced_status or document_status(self.counts)


class Finisher:
    def __init__(self, ctx: PipelineContext) -> None:
        self.ctx = ctx

    def record(self, job: dict[str, Any], folder: DocumentFolder, data: dict[str, Any],
               records: list[dict[str, Any]]) -> None:
        """Merge final image records; finish the document when none of its images is left."""
        done = self.merge(job, folder, data, records)
        self.finish_documents(job, [done] if done is not None else [])

    def merge(self, job: dict[str, Any], folder: DocumentFolder, data: dict[str, Any],
              records: list[dict[str, Any]]) -> Finished | None:
        """Merge one document's records into its metadata.json; the document when it is now
        finished (to pass to :meth:`finish_documents`), else None."""
        with log_context(job_id=job["_id"], document_id=folder.plan.document_id):
            return self._merge(job, folder, data, records)

    def _merge(self, job: dict[str, Any], folder: DocumentFolder, data: dict[str, Any],
               records: list[dict[str, Any]]) -> Finished | None:
        job_id = job["_id"]
        plan = folder.plan
        merged = None
        if records or not plan.images:
            try:
                merged = folder.merge(records)
            except FolderConflict as exc:  # the folder was taken since this job claimed it
                self.conflict(job, plan, data, exc)
                return None
            except StaleMessage as exc:  # a newer plan wrote the folder, or the job ended
                self.superseded(job, plan, data, indexes=[r["index"] for r in records],
                                reason=exc.message)
                return None
        if plan.images and not records:
            return None
        all_done = self.ctx.progress.image_done(
            job_id, document_key(plan), [(r["index"], r["status"]) for r in records]) \
            if plan.images else True
        if not all_done:
            return None
        # The metadata this merge wrote holds every image's final record when one message
        # recorded them all (the common case): no second read. Otherwise other messages
        # recorded some, maybe after this merge: they are read again from metadata.json.
        final = _records_of(merged, plan) if merged is not None else None
        if final is None:
            final = self._stored_records(folder)
        return Finished(plan, data, final)

    def drop_stale(self, job_id: str, documents: int, reason: str) -> None:
        """A message of an ended job: nothing is done for it (§14), only counted."""
        metrics.STALE_MESSAGES.inc(documents)
        self.ctx.progress.forget(job_id)  # whatever state is left goes with the job
        log.info("job %s: dropping a message of %d document(s): %s", job_id, documents, reason,
                 extra={"job_id": job_id})

    def superseded(self, job: dict[str, Any], plan: DocumentPlan, data: dict[str, Any], *,
                   indexes: list[int] | None = None, reason: str = "") -> None:
        """This message's work on the document is stale: nothing is written or removed. While
        the job runs, the given images (all by default) count as done, and the document, once
        all its images are, as done with its images skipped (a newer plan has them)."""
        metrics.STALE_MESSAGES.inc()
        log.info("job %s: document %s: stale message dropped: %s", job["_id"], plan.document_id,
                 reason)
        wanted = [t.index for t in plan.images] if indexes is None else indexes
        if plan.images and not self.ctx.progress.image_done(
                job["_id"], document_key(plan), [(index, SKIPPED) for index in wanted]):
            return
        self.finish_documents(job, [Finished(plan, data, [], superseded=True)])

    def conflict(self, job: dict[str, Any], plan: DocumentPlan, data: dict[str, Any],
                 error: FolderConflict) -> None:
        """The folder belongs to another document: every image of this one fails with
        ``folder_conflict`` and its write-back says ``failed``; the folder is not touched."""
        log.warning("job %s: document %s: %s", job["_id"], plan.document_id, error.message)
        records = [engine.failed_record(task, error, 0) for task in plan.images]
        if plan.images:
            self.ctx.progress.image_done(job["_id"], document_key(plan),
                                         [(task.index, FAILED) for task in plan.images])
        self.finish_documents(job, [Finished(plan, data, records, forced_status="failed")])

    def _stored_records(self, folder: DocumentFolder) -> list[dict[str, Any]]:
        meta = folder.read() or {"images": []}
        wanted = {t.index for t in folder.plan.images}
        return [r for r in meta.get("images", []) if r.get("index") in wanted]

    def finish_documents(self, job: dict[str, Any], finished: list[Finished]) -> None:
        """Write back and count documents whose images are all final.

        In this order, so a job is never completed before its write-backs (a replay repeats
        what is missing, once): the write-backs (one bulk write per collection), each
        document's counts added to the job once (Redis), then the job's progress and errors
        in MongoDB (one update for them all), and the job's end when it is complete. One
        message's documents thus cost two MongoDB round trips, not two per document.
        """
        if not finished:
            return
        job_id = job["_id"]
        refused = self.write_back(job_id, finished)
        self.ctx.job_documents.record(job_document_rows(job_id, finished))
        errors: list[dict[str, Any]] = []
        latest = None
        for done in finished:
            first, progress = self.ctx.progress.finalize(job_id, document_key(done.plan))
            if progress is None:
                log.info("job %s already ended: document %s not counted", job_id,
                         done.plan.document_id)
                continue
            latest = progress
            if first and id(done) in refused:
                errors.append(refused[id(done)])
            if first and not done.superseded:
                errors += [{"document_id": done.plan.document_id, "url": r.get("url"),
                            "code": r.get("error", {}).get("code"),
                            "message": r.get("error", {}).get("message")}
                           for r in done.records if r.get("status") == FAILED]
                metrics.DOCUMENTS.labels(done.status).inc()
        if latest is None:
            return
        # Counters only grow ($max), so the latest totals cover every document above. The
        # job's last message records them with the job's end: one write (issue 24: a
        # change-stream job's cost is its round trips); a job that had already ended another
        # way gets them on their own, as any other message's.
        if latest.complete() and self.finish_job(job, "completed",
                                                 progress=latest.as_job_progress(),
                                                 errors=errors):
            return
        self.ctx.jobs.record_progress(job_id, latest.as_job_progress(), errors)

    def write_back(self, job_id: str, finished: list[Finished]) -> dict[int, dict[str, Any]]:
        """Each document's status on itself (contract §4): one bulk write per collection.

        Returns, by ``id()`` of the Finished, a job error for each document whose update
        MongoDB refused (``writeback_failed``, §14): unordered, so the others are written. Any
        other failure (MongoDB unreachable) raises: the message is retried and the
        write-backs, being idempotent, redone.
        """
        settings = self.ctx.settings
        if not settings.status_field:
            return {}
        by_collection: dict[tuple[str, str], list[tuple[Finished, UpdateOne]]] = {}
        for done in finished:
            if done.superseded:
                continue  # the newer plan's job writes this document back
            plan = done.plan
            if done.refreshed:
                update = _refreshed_write_back(done, settings.status_field)
                if update is not None:
                    by_collection.setdefault((plan.database, plan.collection), []).append(
                        (done, update))
                continue
            value = {
                "status": done.status,
                "job_id": job_id,
                # The contract's "downloaded": images present (fetched now or already stored),
                # metadata.json's summary.present; fetched/skipped split it as summary does.
                "downloaded": done.counts[DOWNLOADED] + done.counts[SKIPPED],
                "failed": done.counts[FAILED],
                "fetched": done.counts[DOWNLOADED],
                "skipped": done.counts[SKIPPED],
                "path": plan.relative_folder,
                "urls_sha256": url_list_sha256(plan.urls),  # the list as planned (§15)
                # Inside a whole subdocument, so the date keeps its type on nx-27017 too.
                "updated_at": datetime.now(timezone.utc),
            }
            source_id = json_util.loads(done.data["source_id"])
            by_collection.setdefault((plan.database, plan.collection), []).append((done, UpdateOne(
                {"_id": source_id},
                {"$set": {settings.download_flag_field: False, settings.status_field: value}},
            )))
        errors: dict[int, dict[str, Any]] = {}
        for (database, collection), pairs in by_collection.items():
            try:
                self.ctx.mongo[database][collection].bulk_write([u for _, u in pairs],
                                                                ordered=False)
            except BulkWriteError as exc:
                if exc.details.get("writeConcernErrors"):
                    raise  # not a refusal of one document: retry the message
                for item in exc.details.get("writeErrors", []):
                    done = pairs[item["index"]][0]
                    metrics.WRITEBACK_FAILURES.inc()
                    log.warning("job %s: write-back of document %s refused: %s", job_id,
                                done.plan.document_id, item.get("errmsg"))
                    errors[id(done)] = {
                        "document_id": done.plan.document_id, "url": None,
                        "code": "writeback_failed",
                        "message": f"MongoDB refused the write-back: "
                                   f"{item.get('errmsg') or item.get('code')}"}
        return errors

    def finish_job(self, job: dict[str, Any], status: str, *,
                   progress: dict[str, int] | None = None, message: str | None = None,
                   errors: list[dict[str, Any]] | None = None) -> bool:
        """End the job (at most once) and remove its Redis state, which also goes when the
        job had already ended some other way (a cancel, a failure): contract §10. True when
        this call ended it (``progress`` and ``errors`` then written with the end)."""
        finished = self.ctx.jobs.finish(job["_id"], status, progress=progress, message=message,
                                        errors=errors)
        self.ctx.progress.forget(job["_id"])
        if finished is None:
            return False
        self.ctx.timeline.mark(f"job_{status}")
        metrics.JOBS.labels(job["type"], status).inc()
        if message:
            log.warning("job %s %s: %s", job["_id"], status, message)
        else:
            log.info("job %s %s", job["_id"], status)
        return True


def job_document_rows(job_id: str, finished: list[Finished]) -> list[JobDocument]:
    """The job's rows of its finished documents: what the console lists (jobs/documents.py)."""
    return [JobDocument(job_id=job_id, document_id=done.plan.document_id,
                        source_id=done.data["source_id"], folder=done.plan.relative_folder,
                        status=done.status,
                        downloaded=done.counts[DOWNLOADED] + done.counts[SKIPPED],
                        failed=done.counts[FAILED],
                        # What the placeholder search counts (contract §18).
                        database=done.plan.database, collection=done.plan.collection,
                        hashes=tuple(document_hashes(done.records)))
            for done in finished if not done.superseded and not done.refreshed]


def _refreshed_write_back(done: Finished, status_field: str) -> UpdateOne | None:
    """A refreshed document's write-back (§16): the last download's status, counts and path
    kept, ``refreshed_at`` added; the flag is left alone. None without an earlier one."""
    status = json_util.loads(done.data["status_json"]) if done.data.get("status_json") else None
    if not isinstance(status, dict):
        return None
    # The whole subdocument is written, so its dates keep their type on nx-27017 too.
    value = {**status, "refreshed_at": datetime.now(timezone.utc)}
    return UpdateOne({"_id": json_util.loads(done.data["source_id"])},
                     {"$set": {status_field: value}})


def _records_of(metadata: dict[str, Any], plan: DocumentPlan) -> list[dict[str, Any]] | None:
    """The records of ``plan``'s images in ``metadata`` when it has a final one for each."""
    by_index = {r.get("index"): r for r in metadata.get("images", [])}
    records = []
    for task in plan.images:
        record = by_index.get(task.index)
        if record is None or record.get("url") != task.url:
            return None
        records.append(record)
    return records
