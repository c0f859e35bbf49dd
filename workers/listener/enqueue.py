"""Turn a decision into exactly one enqueued job: the listener's de-duplication.

The idempotency key is the job's ``_id`` (workers/listener/decide.py: a hash of namespace,
``_id``, trigger and document version), inserted into ``JOBS_DATABASE.jobs`` whose unique
``_id`` index makes "already done" atomic; it lives as long as the job (``JOB_RETENTION_DAYS``
after it finishes), far longer than any replay window (a checkpoint is at most seconds old).

Creating a job is three steps: insert the job, enqueue its scan message, mark the job
``listener.enqueued_at`` (marks are written in one batch right before each checkpoint). A
crash may stop between any two, and the event (or the scan's document) is then handled
again, because the checkpoint only moves after the job is enqueued:

- job inserted, nothing enqueued → the insert collides, the job has no mark and is still
  ``pending``: enqueued now ("repaired");
- enqueued, not marked → the same repair enqueues a second message for the same job; the
  worker's steps are idempotent (a second scan plans the same document, images already on
  disk are skipped), so one job still does the work once;
- marked → "deduplicated": nothing to do.

The mark only saves that second message: a mark that is lost (MongoDB down at the flush)
costs at most one harmless duplicate message, never a job.

A flag job that has *ended* never swallows a new flag (contract §10). One that *completed*
wrote its status back (flag false, status = that job) before finishing, so a document still
flagged with that old version was rewritten afterwards (e.g. replaced without the status
field); one that was *cancelled* or *failed* may have ended before any write-back, so the
document flagged again (or still flagged) carries the same version as the job. Either way it
is a new request: the version then continues as ``after:<ended job>``
(:meth:`JobSubmitter.submit`), the same chain for events and scans, so it still makes exactly
one job, and a replay finds that job. An active (pending or running) job still de-duplicates.
Without ``STATUS_FIELD`` a completed job is final (no write-back clears the flag, so nothing
tells a new flag from the old one: README, listener caveats).

An enqueue that fails deletes the job again (images_service.jobs.triggers), so a Redis outage
never leaves a key without its job; if even that delete fails, the repair above applies.
Before every enqueue the leader lease is checked (:class:`LeaseLost`): a deposed leader
enqueues nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import redis
from pymongo.errors import PyMongoError

from images_service import metrics
from images_service.errors import Unavailable
from images_service.jobs.store import FINISHED, JobStore
from images_service.jobs.triggers import JobExists, Triggers
from images_service.logs import log_context
from images_service.queueing.messages import Enqueuer
from workers.listener.decide import FLAG, Decision, decide, job_id_for
from workers.listener.lease import Lease

log = logging.getLogger(__name__)

ENQUEUED, DEDUPLICATED, REPAIRED = "enqueued", "deduplicated", "repaired"
#: Internal: the flag job of this version ended, the document asks again (see submit).
SUPERSEDED = "superseded"
#: Fields of a job read to tell what it still does for its document (top-level: nx-27017
#: returns dotted projections as flat keys).
JOB_STATE_FIELDS = {"status": 1, "listener": 1, "source": 1}
#: Rewrites followed for one document in one submit before giving up (pathological).
MAX_REWRITES = 20


class LeaseLost(Exception):
    """This process no longer holds the leader lease: it must not enqueue."""


def superseded(job: dict[str, Any], status_field: str) -> bool:
    """``job`` is a flag job that has ended, so a document flagged with its version needs a
    new one (module docstring); without ``STATUS_FIELD`` a completed one is final."""
    if (job.get("source") or {}).get("trigger") != FLAG or job.get("status") not in FINISHED:
        return False
    return job["status"] != "completed" or bool(status_field)


class CrashPoints:
    """Test-only fault injection: exit at once, like SIGKILL, the Nth time a point is passed.

    Built from ``IMAGES_SERVICE_LISTENER_CRASH_AT`` (``point:N``) by workers/listener.py;
    without it :meth:`hit` does nothing. Points: ``after_enqueue`` (message enqueued, job
    not marked, checkpoint not saved), ``before_checkpoint`` (jobs done, token not saved).
    """

    def __init__(self, spec: str | None = None) -> None:
        name, _, count = (spec or "").partition(":")
        self.name = name or None
        self.at = int(count or 1)
        self.seen = 0

    def hit(self, name: str) -> None:
        if name != self.name:
            return
        self.seen += 1
        if self.seen >= self.at:
            sys.stderr.write(f"listener: crash point {name} #{self.seen}: exiting abruptly\n")
            sys.stderr.flush()
            os._exit(137)


class JobSubmitter:
    def __init__(self, triggers: Triggers, jobs: JobStore, enqueuer: Enqueuer, lease: Lease,
                 crash: CrashPoints | None = None) -> None:
        self.triggers = triggers
        self.jobs = jobs
        self.enqueuer = enqueuer
        self.lease = lease
        self.crash = crash or CrashPoints()
        #: Jobs this process enqueued whose mark is not written yet (a set, in order).
        self._unmarked: dict[str, None] = {}

    def _check_lease(self) -> None:
        if not self.lease.valid():
            metrics.LISTENER_DECISIONS.labels("fenced").inc()
            raise LeaseLost("the leader lease is not held")

    def submit(self, database: str, collection: str, source_id: Any, decision: Decision) -> str:
        """Make sure the decided job exists and is enqueued; returns what it took.

        Raises :class:`~images_service.errors.Unavailable` (Redis or MongoDB down: retry
        later, nothing half-done is lost) or :class:`LeaseLost`.
        """
        base = decision
        for _ in range(MAX_REWRITES):
            outcome = self._submit_once(database, collection, source_id, decision)
            if outcome != SUPERSEDED:
                return outcome
            # The flag job of this version has ended (completed: its write-back has landed;
            # cancelled or failed: maybe before any write-back), yet the document is flagged
            # with that version. Unless a fresh read says otherwise (not flagged any more, or
            # a late write-back changed the version), it is a new request, whose version
            # follows the ended job. Event and scan walk the same chain.
            fresh = self._reread(database, collection, source_id)
            again = decide(fresh, "update", database, collection, self.triggers.settings)
            if again is None:
                metrics.LISTENER_DECISIONS.labels(DEDUPLICATED).inc()
                return DEDUPLICATED
            if again.job_id != base.job_id:
                base = decision = again
                continue
            version = f"after:{decision.job_id}"
            decision = Decision(FLAG, version,
                                job_id_for(database, collection, fresh["_id"], FLAG, version))
        raise Unavailable(f"document {source_id!r} rewritten more than {MAX_REWRITES} times")

    def _reread(self, database: str, collection: str, source_id: Any) -> Any:
        try:
            return self.triggers.mongo[database][collection].find_one({"_id": source_id})
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None

    def _submit_once(self, database: str, collection: str, source_id: Any,
                     decision: Decision) -> str:
        with log_context(job_id=decision.job_id, database=database, collection=collection):
            for _ in range(3):
                self._check_lease()
                try:
                    self.triggers.change_stream_job(database, collection, source_id,
                                                    trigger=decision.trigger,
                                                    job_id=decision.job_id)
                except JobExists:
                    outcome = self._existing(decision)
                    if outcome is not None:
                        return outcome
                    continue  # deleted meanwhile (a failed enqueue's clean-up): create again
                self.crash.hit("after_enqueue")
                self._unmarked[decision.job_id] = None
                metrics.LISTENER_DECISIONS.labels(ENQUEUED).inc()
                return ENQUEUED
            raise Unavailable(f"job {decision.job_id} keeps vanishing; retry later")

    def _existing(self, decision: Decision) -> str | None:
        job_id = decision.job_id
        try:
            job = self.jobs.collection.find_one({"_id": job_id}, JOB_STATE_FIELDS)
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        if job is None:
            return None
        if superseded(job, self.triggers.settings.status_field):
            return SUPERSEDED
        if job.get("listener") or job.get("status") != "pending" or job_id in self._unmarked:
            metrics.LISTENER_DECISIONS.labels(DEDUPLICATED).inc()
            log.debug("job %s already exists", job_id)
            return DEDUPLICATED
        # Inserted but not known to be enqueued: a crash came between the two. Enqueue now.
        self._check_lease()
        try:
            self.enqueuer.scan(job_id)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from None
        self._unmarked[job_id] = None
        metrics.LISTENER_DECISIONS.labels(REPAIRED).inc()
        log.warning("job %s existed without its enqueue mark: enqueued again", job_id)
        return REPAIRED

    def flush_marks(self) -> bool:
        """Mark the jobs enqueued since the last flush (one update; call before checkpoints).

        False when MongoDB did not answer (the marks are dropped: see the module docstring).
        """
        if not self._unmarked:
            return True
        ids, self._unmarked = list(self._unmarked), {}
        try:
            self.jobs.collection.update_many(
                {"_id": {"$in": ids}},
                # A whole subdocument: keeps its types on nx-27017 too.
                {"$set": {"listener": {"epoch": self.lease.epoch, "enqueued_at": time.time()}}},
            )
        except PyMongoError as exc:
            # The jobs are enqueued; without the mark a replay enqueues them once more, which
            # is harmless (see the module docstring).
            log.warning("%d enqueued jobs not marked: %s", len(ids), exc)
            return False
        return True

    def settled(self, job_ids: Iterable[str]) -> set[str]:
        """Those of ``job_ids`` that exist and need nothing more (one query, for scans).

        Ended flag jobs are not settled: a document still flagged with their version asks
        again (see :meth:`submit`); ended insert jobs are (a document is inserted once).
        """
        ids = list(job_ids)
        if not ids:
            return set()
        self.flush_marks()
        status_field = self.triggers.settings.status_field
        try:
            found = self.jobs.collection.find({"_id": {"$in": ids}}, JOB_STATE_FIELDS)
            return {job["_id"] for job in found if not superseded(job, status_field) and
                    (job.get("listener") or job.get("status") != "pending")}
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
