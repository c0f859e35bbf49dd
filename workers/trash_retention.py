"""Trash retention (contract §15, ``TRASH_RETENTION_DAYS``): the service empties its own trash.

Trashed folders whose ``deleted_at`` is older than the retention are removed for good, counted
``images_trash_total{action="expired"}`` (images_service/storage/trash.py :func:`expire`). The
sweeper thread of every worker process calls :meth:`TrashRetention.tick` each minute; a Redis
key set with ``NX`` and an expiry of :data:`INTERVAL_S` elects one process of the fleet per
interval, as for the sweeper's other passes. With ticks a minute apart, the gap between two
passes is at most ``INTERVAL_S`` + 60 s, under the hour the contract allows after expiry.

Each removal takes the folder's fleet-wide lock (the downloads' and the trash actor's), so a
folder being trashed again at that moment is not cut in half. A pass reads the ``metadata.json``
of every trashed folder (the trash has no index): its cost grows with the trash, not the tree.
With ``TRASH_RETENTION_DAYS=0`` the trash actor removes a folder at once (workers/trash.py);
these passes then only catch what an interrupted actor left behind.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from images_service.download.folder_locks import RedisFolderLocks
from images_service.storage import trash
from workers.pipeline.context import PipelineContext

log = logging.getLogger(__name__)

#: Fleet-wide key electing the process that makes the pass, and how often (seconds): under an
#: hour, so that expiry + one pass stays within the hour (see the module docstring).
TICK_KEY = "isv:trash:retention"
INTERVAL_S = 3000.0


class TrashRetention:
    def __init__(self, ctx: PipelineContext, *, interval_s: float = INTERVAL_S) -> None:
        self.ctx = ctx
        self.interval_s = interval_s

    def tick(self) -> list[str] | None:
        """Remove the expired trash unless another process did within the interval; returns
        the keys removed (None when it was another process's turn)."""
        if not self.ctx.redis.set(TICK_KEY, str(time.time()), nx=True,
                                  px=max(1, int(self.interval_s * 1000))):
            return None
        return self.expire()

    def expire(self) -> list[str]:
        """One pass: the keys of the trashed folders removed."""
        retention = timedelta(days=self.ctx.settings.trash_retention_days)
        expired = trash.expire(self.ctx.storage, retention, lock=RedisFolderLocks(self.ctx.redis))
        if expired:
            log.info("removed %d trashed folder(s) older than %s day(s)", len(expired),
                     self.ctx.settings.trash_retention_days)
        return expired
