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

Update jobs (§15) follow the same chain: their version is the change's target (the new URL
list and folder), so any event that finds the document still differing from its last download
with that target — the change seen again, the write-back of a job that planned the old list —
lands on the same job while it is active; once it has ended, a document that differs again
(a change *back* to that list, or a job cancelled before it wrote back) is a new change. A
document whose list keeps flipping between two states would walk an ever longer chain, so the
chain's first job records its latest (``source.latest``) and the walk starts there.

A document deleted and inserted again with the same ``_id`` is a new insert (§15): the delete
is recorded on the first incarnation's insert job (``source.deletions``, one key per delete
event, its hashed id, so a replayed delete counts once), and an insert decision that meets such
a job takes the version ``deleted:<n>`` instead.

An enqueue that fails deletes the job again (images_service.jobs.triggers), so a Redis outage
never leaves a key without its job; if even that delete fails, the repair above applies.
Before every enqueue the leader lease is checked (:class:`LeaseLost`): a deposed leader
enqueues nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from pymongo.errors import PyMongoError

from images_service import metrics
from images_service.errors import Unavailable
from images_service.jobs.store import FINISHED, JobStore
from images_service.jobs.triggers import JobExists, Triggers
from images_service.logs import log_context
from images_service.queueing.messages import Enqueuer
from workers.listener.decide import FLAG, INSERT, UPDATE, Decision, decide, job_id_for
from workers.listener.lease import Lease

log = logging.getLogger(__name__)

ENQUEUED, DEDUPLICATED, REPAIRED = "enqueued", "deduplicated", "repaired"
#: Internal: the flag or update job of this version ended, the document asks again (submit).
SUPERSEDED = "superseded"
#: Internal: the insert job of an earlier life of this ``_id`` (deleted since).
REINSERTED = "reinserted"
#: Fields of a job read to tell what it still does for its document (top-level: nx-27017
#: returns dotted projections as flat keys).
JOB_STATE_FIELDS = {"status": 1, "listener": 1, "source": 1}
#: Rewrites followed for one document in one submit before giving up (pathological).
MAX_REWRITES = 20


class LeaseLost(Exception):
    """This process no longer holds the leader lease: it must not enqueue."""


def superseded(job: dict[str, Any], status_field: str) -> bool:
    """``job`` is a flag or update job that has ended, so a document still asking for it (flagged
    with its version, or still differing with its target) needs a new one (module docstring);
    without ``STATUS_FIELD`` a completed flag job is final."""
    trigger = (job.get("source") or {}).get("trigger")
    if trigger not in (FLAG, UPDATE) or job.get("status") not in FINISHED:
        return False
    return trigger == UPDATE or job["status"] != "completed" or bool(status_field)


def deletions(job: dict[str, Any]) -> int:
    """How many deletes of its document an insert job has seen since it was created."""
    source = job.get("source") or {}
    found = source.get("deletions") if source.get("trigger") == INSERT else None
    return len(found) if isinstance(found, dict) else 0


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

    def submit(self, database: str, collection: str, source_id: Any, decision: Decision,
               redecide: Callable[[Any], Decision | None] | None = None) -> str:
        """Make sure the decided job exists and is enqueued; returns what it took.

        ``redecide`` decides again from a fresh read of the document (default: the rules of
        decide.py for an update). Raises :class:`~images_service.errors.Unavailable` (Redis or
        MongoDB down: retry later, nothing half-done is lost) or :class:`LeaseLost`.
        """
        settings = self.triggers.settings
        redecide = redecide or (lambda fresh: decide(fresh, "update", database, collection,
                                                     settings))
        base = decision
        for _ in range(MAX_REWRITES):
            outcome, job = self._submit_once(database, collection, source_id, decision)
            if outcome == ENQUEUED and decision.job_id != base.job_id and \
                    decision.trigger != INSERT:
                self._record_latest(base.job_id, decision.job_id)
            if outcome == REINSERTED:
                version = f"deleted:{deletions(job)}"
                decision = Decision(INSERT, version, job_id_for(database, collection, source_id,
                                                                INSERT, version))
                continue
            if outcome != SUPERSEDED:
                return outcome
            # The flag or update job of this version has ended (completed: its write-back has
            # landed; cancelled or failed: maybe before any write-back), yet the document asks
            # for that version. Unless a fresh read says otherwise (not flagged any more, no
            # longer differing, or a late write-back changed the version), it is a new
            # request, whose version follows the ended job. Event and scan walk the same chain.
            fresh = self._reread(database, collection, source_id)
            again = redecide(fresh) if fresh is not None else None
            if again is None:
                metrics.LISTENER_DECISIONS.labels(DEDUPLICATED).inc()
                return DEDUPLICATED
            if again.job_id != base.job_id:
                base = decision = again
                continue
            latest = (job.get("source") or {}).get("latest") if decision is base else None
            if isinstance(latest, str) and latest != decision.job_id:
                # Straight to the chain's latest job (it exists: recorded after its creation).
                decision = Decision(decision.trigger, "latest", latest)
                continue
            version = f"after:{decision.job_id}"
            decision = Decision(again.trigger, version,
                                job_id_for(database, collection, fresh["_id"], again.trigger,
                                           version))
        raise Unavailable(f"document {source_id!r} rewritten more than {MAX_REWRITES} times")

    def _record_latest(self, base_id: str, job_id: str) -> None:
        """The chain starting at ``base_id`` has ``job_id`` as its latest job (a shortcut for
        the next walk: losing it only makes that walk longer)."""
        try:
            self.jobs.collection.update_one({"_id": base_id},
                                            {"$set": {"source.latest": job_id}})
        except PyMongoError as exc:
            log.warning("could not record job %s as the latest of %s: %s", job_id, base_id, exc)

    def record_delete(self, database: str, collection: str, source_ids: Iterable[Any],
                      event_id: str) -> None:
        """A delete event of the document (``source_ids``: its ``_id``, or every ``_id`` it may
        be when the event does not say the type): its insert job learns of it, so a re-insert
        gets a job of its own (module docstring). Idempotent per ``event_id``."""
        self._check_lease()
        ids = [job_id_for(database, collection, source_id, INSERT, None)
               for source_id in source_ids]
        # A key per delete event under source.deletions: setting it again changes nothing.
        # (nx-27017 quirk: $addToSet on a missing dotted field silently does nothing.)
        digest = hashlib.sha256(event_id.encode()).hexdigest()[:16]
        try:
            self.jobs.collection.update_many(
                {"_id": {"$in": ids}}, {"$set": {f"source.deletions.{digest}": True}})
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None

    def request_trash(self, database: str, collection: str, source_id_json: str,
                      typed: bool) -> None:
        """Enqueue the worker message that moves the deleted document's folders to the trash.

        Not de-duplicated: a replayed event sends it again, and the message is idempotent
        (workers/trash.py)."""
        self._check_lease()
        try:
            self.enqueuer.trash(database, collection, source_id_json, typed)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from None
        metrics.LISTENER_DECISIONS.labels("trash").inc()

    def _reread(self, database: str, collection: str, source_id: Any) -> Any:
        try:
            return self.triggers.mongo[database][collection].find_one({"_id": source_id})
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None

    def _submit_once(self, database: str, collection: str, source_id: Any,
                     decision: Decision) -> tuple[str, dict[str, Any]]:
        with log_context(job_id=decision.job_id, database=database, collection=collection):
            for _ in range(3):
                self._check_lease()
                try:
                    self.triggers.change_stream_job(database, collection, source_id,
                                                    trigger=decision.trigger,
                                                    job_id=decision.job_id)
                except JobExists:
                    outcome, job = self._existing(decision)
                    if outcome is not None:
                        return outcome, job
                    continue  # deleted meanwhile (a failed enqueue's clean-up): create again
                self.crash.hit("after_enqueue")
                self._unmarked[decision.job_id] = None
                metrics.LISTENER_DECISIONS.labels(ENQUEUED).inc()
                return ENQUEUED, {}
            raise Unavailable(f"job {decision.job_id} keeps vanishing; retry later")

    def _existing(self, decision: Decision) -> tuple[str | None, dict[str, Any]]:
        job_id = decision.job_id
        try:
            job = self.jobs.collection.find_one({"_id": job_id}, JOB_STATE_FIELDS)
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        if job is None:
            return None, {}
        if superseded(job, self.triggers.settings.status_field):
            return SUPERSEDED, job
        if decision.version is None and deletions(job):
            return REINSERTED, job
        if job.get("listener") or job.get("status") != "pending" or job_id in self._unmarked:
            metrics.LISTENER_DECISIONS.labels(DEDUPLICATED).inc()
            log.debug("job %s already exists", job_id)
            return DEDUPLICATED, job
        # Inserted but not known to be enqueued: a crash came between the two. Enqueue now.
        self._check_lease()
        try:
            self.enqueuer.scan(job_id)
        except redis.RedisError as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from None
        self._unmarked[job_id] = None
        metrics.LISTENER_DECISIONS.labels(REPAIRED).inc()
        log.warning("job %s existed without its enqueue mark: enqueued again", job_id)
        return REPAIRED, job

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

        Ended flag and update jobs are not settled: a document still asking for their version
        asks again (see :meth:`submit`); ended insert jobs are (a document is inserted once),
        unless a delete of the document was seen since (a re-insert).
        """
        ids = list(job_ids)
        if not ids:
            return set()
        self.flush_marks()
        status_field = self.triggers.settings.status_field
        try:
            found = self.jobs.collection.find({"_id": {"$in": ids}}, JOB_STATE_FIELDS)
            return {job["_id"] for job in found if not superseded(job, status_field) and
                    not deletions(job) and
                    (job.get("listener") or job.get("status") != "pending")}
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
