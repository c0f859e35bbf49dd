"""Scheduled re-checks (contract §16, ``REFRESH_AFTER_DAYS``): the service starts them itself.

Once an hour, one worker process of the fleet (a Redis key set with ``NX`` elects it, as for
the sweeper's passes) looks in the URL index for collections whose stored images were last
checked more than ``REFRESH_AFTER_DAYS`` ago, and starts a ``refresh`` job for each that has
no refresh job pending or running — at most one per collection at a time. The job re-checks
images not checked for that long, *spread*: an image is due between 1 and 1.25 times the
period after its last check, at a point fixed by a hash of its URL, so the images a bulk
download stored on one day are re-checked over several days, not all on one.

Two processes racing (two sweepers whose election overlapped) cannot start two jobs for one
collection: the job's id is a hash of the collection and the hour, so the second insert
collides on the unique ``_id``; a job still active from an earlier hour is seen first.
"""

from __future__ import annotations

import hashlib
import logging
import time

from images_service.jobs.store import ACTIVE
from images_service.jobs.triggers import JobExists, Triggers
from workers.pipeline.context import PipelineContext

log = logging.getLogger(__name__)

#: Fleet-wide key electing the process that looks for due collections, and how often.
TICK_KEY = "isv:refresh:tick"
INTERVAL_S = 3600.0
DAY_S = 86_400.0


def scheduled_job_id(database: str, collection: str, hour: int) -> str:
    return hashlib.sha256(f"refresh\0{database}\0{collection}\0{hour}".encode()).hexdigest()[:32]


class RefreshScheduler:
    def __init__(self, ctx: PipelineContext, *, interval_s: float = INTERVAL_S) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self.triggers = Triggers(ctx.settings, ctx.mongo, ctx.redis, ctx.jobs, ctx.enqueuer)

    def tick(self) -> list[str]:
        """Start the due collections' refresh jobs, unless another process did this interval."""
        if not self.ctx.settings.refresh_after_days:
            return []
        if not self.ctx.redis.set(TICK_KEY, str(time.time()), nx=True,
                                  px=max(1, int(self.interval_s * 1000))):
            return []
        return self.start_due()

    def start_due(self) -> list[str]:
        """One pass: the ids of the refresh jobs started."""
        days = self.ctx.settings.refresh_after_days
        cutoff = time.time() - days * DAY_S
        index = self.ctx.urls.collection
        started = []
        # Two distinct() calls rather than a $group on two keys (nx-27017 groups compound keys
        # wrongly); the (database, collection, checked_at) index serves both.
        for database in index.distinct("database", {"checked_at": {"$lt": cutoff}}):
            for collection in index.distinct("collection", {"database": database,
                                                            "checked_at": {"$lt": cutoff}}):
                job_id = self._start(database, collection, days)
                if job_id:
                    started.append(job_id)
        return started

    def _start(self, database: str, collection: str, days: int) -> str | None:
        active = self.ctx.jobs.collection.find_one(
            {"type": "refresh", "database": database, "collection": collection,
             "status": {"$in": list(ACTIVE)}}, {"_id": 1})
        if active is not None:
            return None
        hour = int(time.time() // 3600)
        try:
            job = self.triggers.refresh_job(database, collection, older_than_days=days,
                                            spread=True,
                                            job_id=scheduled_job_id(database, collection, hour))
        except JobExists:
            return None  # another process started it this hour
        except Exception as exc:  # noqa: BLE001 -- one collection (gone, say) never stops the rest
            log.warning("scheduled refresh of %s.%s not started: %s", database, collection, exc)
            return None
        log.info("scheduled refresh of %s.%s: job %s", database, collection, job["_id"],
                 extra={"job_id": job["_id"]})
        return job["_id"]
