"""The sweeper: ends jobs that no message will ever finish (contract §10).

A job's work lives in its Dramatiq messages. When every one of them is gone (deleted from
Redis, lost with a Redis that restarted without persistence, dead-lettered while the notice
of exhaustion was lost), nothing would ever end the job: it would stay ``pending`` or
``running`` forever. The sweeper finds such jobs and ends them ``failed`` with the message
"no work left for this job", removing their Redis state like any other end.

A pass: the active jobs idle (no pipeline write, ``updated_at``) for ``idle_s`` are the
candidates; the broker's message hashes are read (ready, in-flight and delayed messages of
every queue: ``<namespace>:<queue>.msgs`` and ``<queue>.DQ.msgs``; dead-lettered ``.XQ``
ones are not work). Reading the messages costs a scan of the queues, which is why it is only
done when an idle candidate exists.

Never a live job (contract §14). A job with work left has a message in one of those hashes at
every instant (a message is sent before the one that sends it is acked; Dramatiq moves a due
delayed message into its queue before acking it from the delay queue), but the hashes are
read one after the other, not at one instant: a message moving from the delay queue to the
ready queue between the two reads is seen in neither. So a job is failed only when two passes
in a row, at least one interval apart, found no message of it: a *suspect* of one pass
(remembered in Redis, as the next pass may run in another process) is failed by the next.
Each pass also reads the delay queues before and after the ready queues, which closes the
common move on its own.

Every worker process runs :meth:`Sweeper.run` in a thread; a Redis key set with ``NX`` and
an expiry of one interval lets one process of the fleet make each pass.

The same thread starts the scheduled re-checks (workers/refresh_schedule.py, hourly), removes
the trash past its retention (workers/trash_retention.py, passes under an hour apart) and
sweeps the bucket's leftovers (``STORAGE_BACKEND=s3``): once an hour, one process of the
fleet aborts the multipart uploads started more than an hour ago and never completed (a
worker killed, or the store down, mid-upload: the next upload of the same key aborts those
too). One ``ListMultipartUploads`` request covers the bucket. On a server that does not
delete TTL-expired rows itself (nx-27017), each pass also deletes the expired jobs and job
documents (images_service/jobs/expiry.py). The filesystem
needs no such pass: its writers remove dead writers' temporary files folder by folder, and a
walk of the whole tree would cost a scan of every file.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Iterable

from images_service.jobs.expiry import purge_expired, server_expires_ttl
from images_service.queueing.broker import NAMESPACE
from images_service.queueing.messages import QUEUES
from workers.pipeline.context import PipelineContext
from workers.pipeline.finish import Finisher
from workers.refresh_schedule import RefreshScheduler
from workers.trash_retention import TrashRetention

log = logging.getLogger(__name__)

#: One pass per this many seconds, fleet-wide.
SWEEP_INTERVAL_S = 60.0
#: A job is a candidate after this many seconds without a pipeline write.
SWEEP_IDLE_S = 180.0
#: Fleet-wide key that elects the process making the current pass.
TICK_KEY = "isv:sweeper:tick"
#: Fleet-wide key that elects the process sweeping the bucket's leftovers, and how often.
STORAGE_TICK_KEY = "isv:sweeper:storage"
STORAGE_SWEEP_INTERVAL_S = 3600.0
#: Messages read per HSCAN call.
SCAN_COUNT = 500
#: Jobs found without a message by the last pass: failed by the next one if still so.
SUSPECTS_KEY = "isv:sweeper:suspects"
NO_WORK_MESSAGE = "no work left for this job (its messages are gone)"


class Sweeper:
    def __init__(self, ctx: PipelineContext, finisher: Finisher, *,
                 idle_s: float = SWEEP_IDLE_S, interval_s: float = SWEEP_INTERVAL_S,
                 namespace: str = NAMESPACE, queues: Iterable[str] = QUEUES) -> None:
        self.ctx = ctx
        self.finisher = finisher
        self.idle_s = idle_s
        self.interval_s = interval_s
        queues = list(queues)
        delayed = [f"{namespace}:{queue}.DQ.msgs" for queue in queues]
        # Delay queues read before and after the ready queues: a message moved meanwhile is
        # seen in one of the reads (it enters the ready queue before it leaves the delay one).
        self.message_hashes = [*delayed, *(f"{namespace}:{queue}.msgs" for queue in queues),
                               *delayed]

    def sweep(self) -> list[str]:
        """One pass; returns the ids of the jobs it ended."""
        candidates = {job["_id"]: job
                      for job in self.ctx.jobs.idle_active(time.time() - self.idle_s)}
        if not candidates:
            self.ctx.redis.delete(SUSPECTS_KEY)
            return []
        without = set(candidates) - self._jobs_with_messages(set(candidates))
        previous = {s.decode() for s in self.ctx.redis.smembers(SUSPECTS_KEY)}
        stranded = without & previous
        pipe = self.ctx.redis.pipeline()
        pipe.delete(SUSPECTS_KEY)
        if without - stranded:
            pipe.sadd(SUSPECTS_KEY, *sorted(without - stranded))
            pipe.pexpire(SUSPECTS_KEY, max(1, int(self.interval_s * 3000)))
        pipe.execute()
        for job_id in sorted(stranded):
            self.finisher.finish_job(candidates[job_id], "failed", message=NO_WORK_MESSAGE)
        return sorted(stranded)

    def _jobs_with_messages(self, wanted: set[str]) -> set[str]:
        found: set[str] = set()
        for key in self.message_hashes:
            for _, data in self.ctx.redis.hscan_iter(key, count=SCAN_COUNT):
                job_id = _message_job_id(data)
                if job_id in wanted:
                    found.add(job_id)
                    if found == wanted:
                        return found
        return found

    def tick(self) -> list[str]:
        """Make a pass unless another process made one within the interval."""
        if not self.ctx.redis.set(TICK_KEY, str(time.time()), nx=True,
                                  px=max(1, int(self.interval_s * 1000))):
            return []
        self.purge_expired()
        return self.sweep()

    def purge_expired(self) -> int | None:
        """Delete expired jobs and job documents where the server has no TTL monitor of its
        own (images_service/jobs/expiry.py); None where it has one (MongoDB)."""
        jobs = self.ctx.jobs  # its answer, when it has asked already (one buildInfo a process)
        if jobs.ttl_by_server is None:
            jobs.ttl_by_server = server_expires_ttl(self.ctx.mongo)
        if jobs.ttl_by_server:
            return None
        purged = sum(purge_expired(coll) for coll in (self.ctx.jobs.collection,
                                                      self.ctx.job_documents.collection))
        if purged:
            log.info("deleted %d expired jobs and job documents", purged)
        return purged

    def tick_storage(self, interval_s: float = STORAGE_SWEEP_INTERVAL_S) -> int | None:
        """Abort the bucket's stale multipart uploads, if no process did within the interval.

        Returns how many were aborted; None when there was nothing to do (filesystem, or
        another process's turn).
        """
        storage = self.ctx.storage
        if storage.name != "s3":
            return None
        if not self.ctx.redis.set(STORAGE_TICK_KEY, str(time.time()), nx=True,
                                  px=max(1, int(interval_s * 1000))):
            return None
        aborted = storage.sweep_leftovers()
        if aborted:
            log.info("aborted %d stale multipart uploads in the bucket", aborted)
        return aborted

    def run(self, stop: threading.Event) -> None:
        """Tick every interval until ``stop`` is set; errors are logged, never fatal."""
        refresh = RefreshScheduler(self.ctx)  # scheduled re-checks: its own hourly election
        retention = TrashRetention(self.ctx)  # expired trash: its own election
        while not stop.wait(self.interval_s):
            try:
                ended = self.tick()
                self.tick_storage()
                refresh.tick()
                retention.tick()
            except Exception:  # noqa: BLE001 -- a backing service hiccup: the next pass retries
                log.exception("sweeper pass failed")
                continue
            for job_id in ended:
                log.warning("job %s failed: %s", job_id, NO_WORK_MESSAGE,
                            extra={"job_id": job_id})


def _message_job_id(data: bytes) -> str | None:
    try:
        args = json.loads(data).get("args") or []
    except (ValueError, AttributeError):
        return None
    return args[0] if args and isinstance(args[0], str) else None


def start_sweeper(ctx: PipelineContext, finisher: Finisher,
                  stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=Sweeper(ctx, finisher).run, args=(stop,), daemon=True,
                              name="job-sweeper")
    thread.start()
    return thread
