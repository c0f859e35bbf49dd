"""Change streams of the watched namespaces: capability check, discovery, one polled source each.

Two ways to watch, chosen by :func:`detect_capabilities`:

- **per collection** (always correct; the only way on nx-27017, whose ``db.watch()`` and
  ``client.watch()`` silently return nothing): one ``coll.watch()`` per watched collection,
  collections re-listed every few seconds to pick up new ones;
- **per database** (the better path on a real replica set or sharded cluster): one
  ``db.watch()`` per ``db.*`` entry, which also covers collections created later, with a
  server-side ``$match`` that drops updates not setting the flag when ``WATCH_UPDATES`` is
  off (``updateDescription.updatedFields``; nx-27017 quirk: any ``$match`` beyond
  ``operationType``/``ns`` drops every event there, so this is never sent to it). With
  ``WATCH_UPDATES`` every update passes: whether it changed the URL list or the folder is
  only known after re-reading the document.

Delete events always pass: with ``WATCH_DELETES`` they send the folder to the trash, and in
any case they tell a later insert of the same ``_id`` that it is a new document (§15).

Every source is polled with ``try_next()``: nx-27017 quirk, ``max_await_time_ms`` is ignored
and an idle ``for event in stream`` busy-spins; the caller sleeps when a round finds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson.timestamp import Timestamp
from pymongo import MongoClient
from pymongo.change_stream import ChangeStream

from images_service.config.settings import Settings
from workers.listener.decide import FLAG_VALUES

log = logging.getLogger(__name__)

#: Events that the listener acts on.
DOCUMENT_OPERATIONS = ("insert", "update", "replace", "delete")
#: Events after which a stream has ended or its collection is gone.
STREAM_END_OPERATIONS = ("drop", "rename", "dropDatabase", "invalidate")
#: A getMore waits at most this long on MongoDB (milliseconds); ignored by nx-27017.
MAX_AWAIT_MS = 50
#: Events fetched per getMore.
BATCH_SIZE = 200
#: The service's own collections in JOBS_DATABASE, never watched.
OWN_COLLECTIONS = ("jobs", "listener_state")
#: MongoDB error codes meaning the resume point is gone (ChangeStreamHistoryLost,
#: InvalidResumeToken, ChangeStreamFatalError).
HISTORY_LOST_CODES = frozenset({286, 260, 280})


@dataclass(frozen=True)
class Capabilities:
    """What the server can do for us (decided once per leadership term)."""

    #: ``db.watch()`` works and sees collections created later (replica set / mongos).
    database_streams: bool
    #: A resume from a token the server no longer has fails loudly (ChangeStreamHistoryLost)
    #: instead of silently skipping or starting from now, so no scan is needed on start.
    vouches_for_history: bool
    #: ``$match`` on ``updateDescription.updatedFields`` works.
    server_side_filter: bool


def detect_capabilities(hello: Mapping[str, Any]) -> Capabilities:
    """From the ``hello`` reply: only a replica set member or mongos runs change streams with
    MongoDB's guarantees. nx-27017 reports a standalone server (and a real standalone
    MongoDB has no change streams at all), so it gets the portable path."""
    real = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
    return Capabilities(database_streams=real, vouches_for_history=real, server_side_filter=real)


def is_watched(settings: Settings, database: str, collection: str) -> bool:
    if collection.startswith("system."):
        return False
    if database == settings.jobs_database and collection in OWN_COLLECTIONS:
        return False
    return any(ns.matches(database, collection) for ns in settings.watch_namespaces)


def watched_collections(client: MongoClient, settings: Settings) -> set[tuple[str, str]]:
    """Every existing collection that ``WATCH_NAMESPACES`` names (one listing per database).

    Collections that do not exist yet are not watched (nx-27017 quirk: ``watch()`` on a
    missing collection creates it); they are picked up when a later listing shows them.
    """
    found: set[tuple[str, str]] = set()
    for database in sorted({ns.database for ns in settings.watch_namespaces}):
        # Views have no change streams (and nothing to download from on their own).
        for collection in client[database].list_collection_names(filter={"type": "collection"}):
            if is_watched(settings, database, collection):
                found.add((database, collection))
    return found


def stream_keys(settings: Settings, caps: Capabilities,
                collections: set[tuple[str, str]]) -> dict[str, tuple[str, str | None]]:
    """Stream key -> (database, collection or None for a database-level stream)."""
    keys: dict[str, tuple[str, str | None]] = {}
    whole = {ns.database for ns in settings.watch_namespaces if ns.collection == "*"}
    if caps.database_streams:
        for database in whole:
            keys[f"{database}.*"] = (database, None)
    for database, collection in collections:
        if caps.database_streams and database in whole:
            continue
        keys[f"{database}.{collection}"] = (database, collection)
    return keys


def pipeline(settings: Settings, caps: Capabilities) -> list[dict[str, Any]]:
    """Server-side filter: the operations we handle plus the ones that end a stream."""
    flag = settings.download_flag_field
    if caps.server_side_filter and not settings.watch_updates and "." not in flag:
        # MongoDB only: without WATCH_UPDATES an update that does not set the flag cannot
        # trigger (inserts and replaces are decided from the document). Dotted flags may be
        # set through a parent field, so they are filtered in Python only.
        match: dict[str, Any] = {"$or": [
            {"operationType": {"$in": ["insert", "replace", "delete",
                                       *STREAM_END_OPERATIONS]}},
            {"operationType": "update",
             f"updateDescription.updatedFields.{flag}": {"$in": FLAG_VALUES}},
        ]}
    else:
        # nx-27017: a $match on operationType ($in of strings) is the most it filters right.
        match = {"operationType": {"$in": [*DOCUMENT_OPERATIONS, *STREAM_END_OPERATIONS]}}
    return [{"$match": match}]


def nx_token_position(token: Mapping[str, Any] | None) -> int | None:
    """The changelog row of an nx-27017 resume token (``{"_data": "nx:<row>"}``), else None.

    nx-27017 quirk workaround: it accepts any token silently; an unrecognised one starts the
    stream at "now" and one *ahead* of its changelog (the database was dropped and recreated,
    or restored from an older copy) skips every event until the changelog catches up. Only
    used where the server cannot vouch for its history; MongoDB rejects such tokens itself.
    """
    data = token.get("_data") if isinstance(token, Mapping) else None
    if isinstance(data, str) and data.startswith("nx:") and data[3:].isdigit():
        return int(data[3:])
    return None


def event_lag_s(event: Mapping[str, Any], now: datetime | None = None) -> float | None:
    """Now minus the event's time. MongoDB's ``clusterTime`` is a BSON Timestamp (seconds
    resolution; ``wallTime`` is a datetime on 6.0+); nx-27017's is a datetime, and it is the
    time the event was *read*, so the lag there only shows the listener's own delay."""
    now = now or datetime.now(UTC)
    wall = event.get("wallTime")
    cluster = event.get("clusterTime")
    if isinstance(cluster, Timestamp) and not isinstance(wall, datetime):
        return max(0.0, now.timestamp() - cluster.time)
    moment = wall if isinstance(wall, datetime) else cluster
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, (now - moment).total_seconds())
    return None


@dataclass
class Source:
    """One change stream and its watermark.

    ``token`` is the resume token after which every event of this stream has been handled
    (turned into an enqueued job or decided to need none): events are handled one at a time,
    in order, so the token of the last handled event is a contiguous watermark. After an
    empty ``try_next`` (every event returned so far handled) the stream's own
    ``resume_token`` is taken, so a quiet stream's checkpoint moves on too.
    """

    key: str
    database: str
    collection: str | None
    token: dict[str, Any] | None = None
    saved_token: dict[str, Any] | None = None
    unsaved_events: int = 0
    stream: ChangeStream | None = None
    pending: dict[str, Any] | None = None  # fetched, not yet handled (retried after an error)
    reopen_after: float = 0.0  # monotonic time before which a broken stream is not reopened
    failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def _watch(self, client: MongoClient, settings: Settings, caps: Capabilities,
               token: dict[str, Any] | None) -> ChangeStream:
        target = client[self.database] if self.collection is None \
            else client[self.database][self.collection]
        kwargs: dict[str, Any] = {"pipeline": pipeline(settings, caps),
                                  "max_await_time_ms": MAX_AWAIT_MS, "batch_size": BATCH_SIZE}
        if token is not None:
            kwargs["resume_after"] = token
        return target.watch(**kwargs)

    def open(self, client: MongoClient, settings: Settings, caps: Capabilities) -> bool:
        """Open the stream after ``token`` (or from now); False when the token was unusable
        and the stream starts from now instead (the caller must scan what it covers).

        MongoDB refuses an unusable token with an error (handled by the caller); for a server
        that cannot vouch for its history the token is checked here (:func:`nx_token_position`).
        """
        self.close()
        usable = True
        if self.token is not None and not caps.vouches_for_history:
            position = nx_token_position(self.token)
            probe = self._watch(client, settings, caps, None)
            try:
                now = nx_token_position(probe.resume_token)
            finally:
                probe.close()
            if position is None or (now is not None and position > now):
                log.error("stream %s: checkpoint %r is unusable (the server is at %r): "
                          "starting from now", self.key, self.token, probe.resume_token)
                self.token, usable = None, False
        self.stream = self._watch(client, settings, caps, self.token)
        return usable

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.close()
            except Exception:  # closing a broken cursor may fail: it is gone either way
                pass
        self.stream = None
        self.pending = None

    def next_event(self) -> dict[str, Any] | None:
        """The event to handle next (the pending one first), or None when quiet."""
        if self.pending is not None:
            return self.pending
        assert self.stream is not None
        event = self.stream.try_next()
        if event is None:
            quiet = self.stream.resume_token
            if quiet is not None and quiet != self.token:
                self.token = dict(quiet)
            return None
        self.pending = event
        return event

    def handled(self, event: Mapping[str, Any]) -> None:
        """``event`` is turned into a job (or needs none): the watermark moves past it."""
        self.pending = None
        self.token = dict(event["_id"])
        self.unsaved_events += 1

    @property
    def dirty(self) -> bool:
        return self.token is not None and self.token != self.saved_token
