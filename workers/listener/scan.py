"""The catch-up scan: find documents that still need a job when the streams cannot say.

Run after the streams are open (so nothing falls between the scan and the stream) on every
start against a server that cannot vouch for its change history (nx-27017: stale or invalid
tokens are accepted silently, only ~1000 events are kept, writes before the first ``watch()``
are never captured), and on any server when a token is unusable, a stream is invalidated or
had to be reopened after an error, a collection appears, or ``--rescan`` asks for one.

Cost: one pass per collection in ``_id`` order, with one cursor read ``SCAN_BATCH`` documents
at a time, the trigger rules' filter evaluated by the server (workers/listener/decide.py:
the flag rule's ``$in``, "image fields present and no ``STATUS_FIELD.status``", and with
``WATCH_UPDATES`` "``STATUS_FIELD.urls_sha256`` present") and only the top-level fields a
decision needs projected; then one ``$in`` query on the jobs collection per batch to skip
documents whose job already exists. With ``WATCH_UPDATES`` every downloaded document leaves
the server (whether its URL list or folder changed is a hash computed in Python), without it
only flagged and never-downloaded ones do. Measured on nx-27017 (bench/listener_scan.py,
bench/README.md "Catch-up scan cost"): 100,000 downloaded documents, one pass: see there.
No index is created on the users' collections; on MongoDB an index on the flag field makes
the flagged half of the filter cheap, the other halves are a collection scan either way.

Progress (the namespaces left and the last ``_id`` done) is saved after every batch, so a
scan interrupted by a crash or a lost lease resumes from there where that is enough (see
workers/listener/loop.py), also over mixed ``_id`` types: a resumed pass reads the rest type
by type (images_service/jobs/id_order.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from typing import Any

from pymongo import MongoClient

from images_service import metrics
from images_service.config.settings import Settings
from images_service.jobs.id_order import scan_in_id_order
from workers.listener.decide import scan_filter, scan_projection
from workers.listener.enqueue import JobSubmitter
from workers.listener.tree import Decider

log = logging.getLogger(__name__)

#: Documents handled per scan step (one getMore of the scan's cursor) between stream polls.
SCAN_BATCH = 500

class CatchUpScan:
    """The scan in progress: a queue of namespaces, each with the last ``_id`` done."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self._cursor: Generator[dict[str, Any], None, None] | None = None
        self._cursor_item: dict[str, Any] | None = None
        self.items: list[dict[str, Any]] = list(state.get("items", []))
        self.reasons: list[str] = list(state.get("reasons", []))
        self.started_at: float = state.get("started_at") or time.time()
        self.documents = int(state.get("documents", 0))
        self.jobs = int(state.get("jobs", 0))

    @property
    def active(self) -> bool:
        return bool(self.items)

    def state(self) -> dict[str, Any] | None:
        if not self.items:
            return None
        return {"items": self.items, "reasons": self.reasons, "started_at": self.started_at,
                "documents": self.documents, "jobs": self.jobs}

    def add(self, namespaces: set[tuple[str, str]] | list[tuple[str, str]], reason: str) -> None:
        """Scan ``namespaces`` (again from the start if already queued: the new reason may
        concern documents the earlier pass has already gone by)."""
        if not namespaces:
            return
        metrics.LISTENER_RESCANS.labels(reason).inc()
        if reason not in self.reasons:
            self.reasons.append(reason)
        if not self.items:
            self.started_at, self.documents, self.jobs = time.time(), 0, 0
        for database, collection in sorted(namespaces):
            self.items = [i for i in self.items
                          if (i["database"], i["collection"]) != (database, collection)]
            self.items.append({"database": database, "collection": collection, "last_id": None,
                               "started": False})
        log.warning("catch-up scan of %d collection(s) queued: %s", len(namespaces), reason)

    def drop(self, database: str, collection: str) -> None:
        if self._cursor_item is not None and \
                (self._cursor_item["database"], self._cursor_item["collection"]) == \
                (database, collection):
            self.close()
        self.items = [i for i in self.items
                      if (i["database"], i["collection"]) != (database, collection)]

    def close(self) -> None:
        if self._cursor is not None:
            try:
                self._cursor.close()
            except Exception:  # a broken cursor is gone either way
                pass
        self._cursor = self._cursor_item = None

    def _open_cursor(self, client: MongoClient, settings: Settings,
                     item: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
        # One cursor per pass, read batch by batch: nx-27017 evaluates a filtered query over
        # the whole collection each time (its _id range is no index seek), so re-querying
        # from the last _id for every batch would cost a full pass per batch. After an error
        # or a restart the pass continues after the last _id done (one cursor per _id type).
        self.close()
        self._cursor = scan_in_id_order(
            client[item["database"]][item["collection"]], scan_filter(settings),
            scan_projection(settings), item["last_id"], batch_size=SCAN_BATCH)
        self._cursor_item = item
        return self._cursor

    def step(self, client: MongoClient, settings: Settings, submitter: JobSubmitter,
             decider: Decider) -> None:
        """Handle one batch of the current namespace; progress is in ``self.items[0]``.

        Submitting may raise (service unavailable, lease lost): the documents handled before
        are recorded in ``last_id``, the rest are read again (from there) next time.
        """
        item = self.items[0]
        database, collection = item["database"], item["collection"]
        item["started"] = True
        try:
            cursor = self._cursor if self._cursor_item is item else \
                self._open_cursor(client, settings, item)
            docs = []
            for doc in cursor:
                docs.append(doc)
                if len(docs) >= SCAN_BATCH:
                    break
            exhausted = len(docs) < SCAN_BATCH
            wanted = {id(doc): decision for doc, decision in
                      decider.scanned(docs, database, collection, submitter.settled)}
            redecide = decider.redecide(database, collection)
            for doc in docs:
                decision = wanted.get(id(doc))
                if decision is not None:
                    submitter.submit(database, collection, doc["_id"], decision, redecide)
                    self.jobs += 1
                item["last_id"] = doc["_id"]
                self.documents += 1
        except BaseException:
            self.close()  # continue from last_id next time
            raise
        if exhausted:
            self.close()
            self.items.pop(0)
            if not self.items:
                log.info("catch-up scan finished (%s): %d candidate documents, %d submitted, "
                         "%.1f s", ", ".join(self.reasons), self.documents, self.jobs,
                         time.time() - self.started_at)
                self.reasons = []
