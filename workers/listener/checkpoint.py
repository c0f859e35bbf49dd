"""The listener's state in ``JOBS_DATABASE.listener_state``: resume tokens, scan progress.

Documents (``_id``):

- ``token:<db>.<coll>`` (or ``token:<db>.*`` for a database-level stream): the resume token
  after which every event of that stream has been handled, ``epoch`` of the writer and
  ``saved_at`` (epoch seconds);
- ``scan``: the catch-up scan in progress (namespaces left, last ``_id`` of the current one),
  as Extended JSON text (it holds ``_id`` values of any type, and whole-JSON text avoids
  nx-27017's quirks with arrays of subdocuments);
- ``rescan_request``: written by ``images-service listener --rescan``, consumed by the leader;
- ``leader``: the epoch and start time of the current leader (informational, and the largest
  epoch ever seen, should Redis lose its counter).

Fencing: every write of the leader is conditional on ``epoch <= mine`` and upserts; when a
newer leader has written (or fenced) the document, the filter misses, the upsert collides on
``_id`` and :class:`Fenced` is raised. A new leader first raises the epoch of every document
to its own and records itself in ``leader`` (:meth:`StateStore.fence`), so a deposed leader
can overwrite nothing afterwards; a document it creates is checked against ``leader`` and
removed again. (The lease check right before each write comes first; this is the backstop.)
"""

from __future__ import annotations

import time
from typing import Any

from bson import json_util
from pymongo import DESCENDING, MongoClient
from pymongo.errors import DuplicateKeyError

STATE_COLLECTION = "listener_state"


class Fenced(Exception):
    """A listener with a newer epoch owns the state: this one must stop writing."""


class StateStore:
    def __init__(self, client: MongoClient, database: str) -> None:
        self.collection = client[database][STATE_COLLECTION]

    # --- fenced writes ----------------------------------------------------------------------

    def _write(self, key: str, epoch: int, fields: dict[str, Any]) -> None:
        try:
            result = self.collection.update_one(
                {"_id": key, "epoch": {"$lte": epoch}},
                {"$set": {**fields, "epoch": epoch, "saved_at": time.time()}},
                upsert=True,
            )
        except DuplicateKeyError:
            raise Fenced(f"{key} belongs to a newer leader than epoch {epoch}") from None
        if result.upserted_id is not None and key != "leader":
            # A document that did not exist cannot carry a newer epoch: ask the leader record.
            leader = self.collection.find_one({"_id": "leader"}, {"epoch": 1})
            if leader and int(leader.get("epoch", 0)) > epoch:
                self.collection.delete_one({"_id": key, "epoch": epoch})
                raise Fenced(f"epoch {leader['epoch']} leads, not {epoch}")

    def max_epoch(self) -> int:
        doc = self.collection.find_one({"epoch": {"$gt": 0}}, {"epoch": 1},
                                       sort=[("epoch", DESCENDING)])
        return int(doc["epoch"]) if doc else 0

    def fence(self, epoch: int) -> None:
        """Claim every state document for ``epoch`` (call once on becoming leader)."""
        self.collection.update_many({"epoch": {"$lt": epoch}}, {"$set": {"epoch": epoch}})
        self._write("leader", epoch, {"since": time.time()})

    # --- resume tokens ----------------------------------------------------------------------

    def load_tokens(self) -> dict[str, dict[str, Any]]:
        """Stream key -> saved resume token."""
        tokens = {}
        for doc in self.collection.find({"_id": {"$regex": "^token:"}}):
            if isinstance(doc.get("token"), dict):
                tokens[doc["_id"][len("token:"):]] = doc["token"]
        return tokens

    def save_token(self, stream_key: str, token: dict[str, Any], epoch: int) -> None:
        self._write(f"token:{stream_key}", epoch, {"token": token})

    def forget_token(self, stream_key: str, epoch: int) -> None:
        """The collection is gone (dropped/renamed): its token would resume nothing."""
        self.collection.delete_one({"_id": f"token:{stream_key}", "epoch": {"$lte": epoch}})

    # --- catch-up scan ---------------------------------------------------------------------

    def load_scan(self) -> dict[str, Any] | None:
        doc = self.collection.find_one({"_id": "scan"})
        if not doc or not doc.get("state_json"):
            return None
        return json_util.loads(doc["state_json"])

    def save_scan(self, state: dict[str, Any] | None, epoch: int) -> None:
        """Persist the scan's progress (``None``: no scan in progress)."""
        self._write("scan", epoch, {"state_json": json_util.dumps(state) if state else ""})

    # --- on-demand rescans -------------------------------------------------------------------

    def request_rescan(self) -> None:
        self.collection.update_one({"_id": "rescan_request"},
                                   {"$set": {"requested_at": time.time()}}, upsert=True)

    def take_rescan_request(self) -> bool:
        return self.collection.find_one_and_delete({"_id": "rescan_request"}) is not None
