"""One term of leadership: open the streams, catch up, turn events into jobs, checkpoint.

Single-threaded on purpose: every event is handled to the end (document re-read, decision,
job enqueued or ignored) before the next one of its stream, so the resume token of the last
handled event is a contiguous watermark and checkpointing it can never skip work. Catch-up
scan batches are interleaved with stream polling, so a long scan never lets a stream fall
behind (nx-27017 keeps only ~1000 events per collection behind the slowest open stream).

Faults: a backing service that is down makes the current event (or scan batch) wait, with
exponential backoff, and be retried; nothing moves past it, so nothing is lost. A broken
stream is reopened from its in-memory watermark, counted in ``images_listener_reconnects``;
where the server cannot vouch for the history in between, its collections are scanned.
The term ends when the lease is lost (nothing is enqueued or checkpointed after that) or the
process is asked to stop (a final checkpoint is saved first).

Over 300 lines on purpose: the term is one state machine (start, poll, handle, reopen,
discover, scan, checkpoint) whose steps share its fields; splitting it would scatter the
ordering rules that make the checkpoint a contiguous watermark.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from bson import json_util
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from images_service import metrics
from images_service.config.settings import Settings
from images_service.errors import Unavailable, UnsafePathError
from images_service.jobs.triggers import document_id_candidates
from images_service.logs import log_context
from images_service.storage import layout
from workers.listener.checkpoint import Fenced, StateStore
from workers.listener.enqueue import CrashPoints, JobSubmitter, LeaseLost
from workers.listener.lease import Lease
from workers.listener.scan import CatchUpScan
from workers.listener.stream import (
    HISTORY_LOST_CODES,
    STREAM_END_OPERATIONS,
    Capabilities,
    Source,
    detect_capabilities,
    event_lag_s,
    is_watched,
    stream_keys,
    watched_collections,
)
from workers.listener.tree import Decider

log = logging.getLogger(__name__)

#: The checkpoint is saved at least this often (seconds) while anything changed ...
CHECKPOINT_INTERVAL_S = 1.0
#: ... or as soon as a stream has handled this many events since its last save.
CHECKPOINT_EVENTS = 200
#: Collections are re-listed this often (seconds): new ones are picked up within this delay.
DISCOVERY_INTERVAL_S = 2.0
#: Events handled per stream before the others (and the scan) get a turn.
EVENTS_PER_TURN = 100
#: Sleep between polling rounds that found nothing (seconds); longer after a quiet while.
IDLE_SLEEP_S, QUIET_SLEEP_S, QUIET_AFTER_S = 0.02, 0.1, 5.0
#: Backoff while a backing service is unavailable (seconds).
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0


@dataclass
class ListenerServices:
    settings: Settings
    mongo: MongoClient
    state: StateStore
    submitter: JobSubmitter
    lease: Lease
    crash: CrashPoints
    decider: Decider


class LeaderTerm:
    def __init__(self, services: ListenerServices, stop: threading.Event) -> None:
        self.s = services
        self.settings = services.settings
        self.stop = stop
        self.epoch = services.lease.epoch
        self.sources: dict[str, Source] = {}
        self.collections: set[tuple[str, str]] = set()
        self.scan = CatchUpScan()
        self.caps = Capabilities(False, False, False)
        self.failures = 0
        self.last_checkpoint = time.monotonic()
        self.last_saved_wall = time.time()
        self.last_discovery = time.monotonic()
        self.last_activity = time.monotonic()
        self.scan_dirty = False

    # --- the term ---------------------------------------------------------------------------

    def run(self) -> str:
        """Lead until the lease is lost or ``stop`` is set; returns why the term ended."""
        try:
            self._start()
            while not self.stop.is_set():
                if not self.s.lease.valid():
                    log.warning("leader lease lost (epoch %d): stepping down", self.epoch)
                    return "lease_lost"
                try:
                    busy = self._poll_sources()
                    if self.scan.active and not self.stop.is_set():
                        self._scan_step()
                        busy = True
                    self._checkpoint()
                    if time.monotonic() - self.last_discovery >= DISCOVERY_INTERVAL_S and \
                            not self.stop.is_set():
                        self._discover()
                    self.failures = 0
                except Unavailable as exc:
                    # Blocked on one event (or scan batch): what came before it is done, so
                    # the watermark up to it may still be saved.
                    self._checkpoint()
                    self._reopen_all_after_outage()
                    self._backoff(exc)
                    continue
                metrics.LISTENER_CHECKPOINT_AGE.set(time.time() - self.last_saved_wall)
                if busy:
                    self.last_activity = time.monotonic()
                else:
                    quiet = time.monotonic() - self.last_activity > QUIET_AFTER_S
                    self.stop.wait(QUIET_SLEEP_S if quiet else IDLE_SLEEP_S)
            self._final_checkpoint()
            return "stopped"
        except (LeaseLost, Fenced) as exc:
            log.warning("leadership lost (epoch %d): %s", self.epoch, exc)
            self.s.lease.drop(str(exc))
            return "lease_lost"
        finally:
            self.scan.close()
            for source in self.sources.values():
                source.close()

    def _reopen_all_after_outage(self) -> None:
        """MongoDB was unavailable: every stream is reopened by us, from its watermark.

        Left alone, pymongo resumes a stream by itself once the server is back; nx-27017
        quirk: a stream resumed that way across a server restart delivered the events from
        before the restart and then nothing more (seen in test_mongodb_restart_loses_nothing
        under load). Reopening ourselves is also right on MongoDB (the same resume from the
        watermark), and on a server that cannot vouch for its history it adds the catch-up
        scan (``_reopen``). The pending event is dropped here and delivered again after the
        watermark.
        """
        for source in self.sources.values():
            if source.stream is not None:
                source.close()
                source.reopen_after = 0.0

    def _backoff(self, exc: Exception) -> None:
        self.failures += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** (self.failures - 1))
        log.warning("waiting %.1f s: %s", delay, exc)
        self.stop.wait(delay)

    # --- start: fence, open streams first, then decide what to scan ---------------------------

    def _start(self) -> None:
        state = self.s.state
        stored = state.max_epoch()
        if stored >= self.epoch:  # Redis lost its counter: continue above MongoDB's memory
            self.epoch = self.s.lease.raise_epoch(stored + 1)
            if self.epoch <= stored:
                raise LeaseLost(f"cannot raise the epoch above {stored}")
        state.fence(self.epoch)
        self.caps = detect_capabilities(self.s.mongo.admin.command("hello"))
        tokens = state.load_tokens()
        self.collections = watched_collections(self.s.mongo, self.settings)
        no_token: set[tuple[str, str]] = set()
        unusable: set[tuple[str, str]] = set()
        for key, (database, collection) in stream_keys(self.settings, self.caps,
                                                       self.collections).items():
            source = Source(key, database, collection, token=tokens.get(key))
            source.saved_token = source.token
            self.sources[key] = source
            try:
                usable = self._open(source)
            except PyMongoError as exc:  # this one stream: retried with backoff, then scanned
                self._broken(source, exc)
                continue
            if not usable:
                unusable |= self._covered(source)
            elif source.saved_token is None:
                no_token |= self._covered(source)
        prior = state.load_scan()
        if not self.caps.vouches_for_history:
            # nx-27017: stale or invalid tokens are accepted silently, history is truncated
            # and writes before the first watch() are never captured: scan on every start.
            # (That scan covers everything an interrupted one would have: it starts over.)
            self.scan.add(self.collections, "start")
        elif prior:  # an interrupted scan: resume it from its last _id
            self.scan = CatchUpScan(prior)
            log.warning("resuming the interrupted catch-up scan (%d collections left)",
                        len(self.scan.items))
        self.scan.add(no_token, "no_checkpoint")
        self.scan.add(unusable, "invalid_token")
        if state.take_rescan_request():
            self.scan.add(self.collections, "requested")
        self.scan_dirty = True
        self._save_scan()
        log.info("leading with epoch %d: %d stream(s) over %d collection(s), %s streams; "
                 "listening", self.epoch, len(self.sources), len(self.collections),
                 "database" if self.caps.database_streams else "collection")

    def _covered(self, source: Source) -> set[tuple[str, str]]:
        if source.collection is not None:
            return {(source.database, source.collection)}
        return {ns for ns in self.collections if ns[0] == source.database}

    def _open(self, source: Source) -> bool:
        """Open (or reopen) ``source``; False when its token could not be used."""
        try:
            return source.open(self.s.mongo, self.settings, self.caps)
        except OperationFailure as exc:
            if exc.code not in HISTORY_LOST_CODES and \
                    not exc.has_error_label("NonResumableChangeStreamError"):
                raise
            # Never jump to "now" silently: say so, and the caller scans what it covers.
            log.error("stream %s cannot resume from its checkpoint (%s): reopening from now",
                      source.key, exc)
            source.token = None
            source.open(self.s.mongo, self.settings, self.caps)
            return False

    # --- streams ------------------------------------------------------------------------------

    def _poll_sources(self) -> bool:
        busy = False
        for source in list(self.sources.values()):
            if self.stop.is_set():
                break
            if source.stream is None:
                self._reopen(source)
                continue
            for _ in range(EVENTS_PER_TURN):
                fresh = source.pending is None
                try:
                    event = source.next_event()
                except PyMongoError as exc:
                    self._broken(source, exc)
                    break
                if event is None:
                    break
                if fresh:
                    metrics.LISTENER_EVENTS.labels(event.get("operationType", "unknown")).inc()
                self._handle(source, event)
                busy = True
        return busy

    def _handle(self, source: Source, event: dict[str, Any]) -> None:
        operation = event.get("operationType")
        if operation in STREAM_END_OPERATIONS:
            self._stream_end(source, event)
            return
        ns = event.get("ns") or {}
        database = ns.get("db") or source.database
        collection = ns.get("coll") or source.collection
        if not collection or not is_watched(self.settings, database, collection):
            source.handled(event)
            return
        # nx-27017 quirk: fullDocument is a mangled snapshot and updateDescription is None, and
        # documentKey._id of a non-ObjectId id is its string form (the server matches it):
        # re-read the document and take its real _id from what was read.
        key = event["documentKey"]["_id"]
        if operation == "delete":
            self._deleted(event, database, collection, key)
            source.handled(event)
            return
        try:
            doc = self.s.mongo[database][collection].find_one({"_id": key})
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        decision = self.s.decider.event(doc, operation, database, collection)
        if decision is None:
            metrics.LISTENER_DECISIONS.labels("ignored").inc()
        else:
            outcome = self.s.submitter.submit(database, collection, doc["_id"], decision,
                                              self.s.decider.redecide(database, collection))
            metrics.LISTENER_DECISIONS.labels("matched").inc()
            with log_context(job_id=decision.job_id, database=database, collection=collection,
                             document_id=str(doc["_id"])):
                log.info("%s event: %s trigger, job %s %s", operation, decision.trigger,
                         decision.job_id, outcome)
        lag = event_lag_s(event)
        if lag is not None:
            metrics.LISTENER_LAG.set(lag)
        source.handled(event)

    def _deleted(self, event: dict[str, Any], database: str, collection: str, key: Any) -> None:
        """A document was deleted (§15): a later insert of its ``_id`` is a new document, and
        with ``WATCH_DELETES`` its folders go to the trash (a worker message, within seconds).

        nx-27017 quirk: a delete event gives a non-ObjectId ``_id`` as a string and the
        document cannot be re-read, so there ``"5"`` may have been ``5``: every ``_id`` the
        string may be is considered, and the folders are matched by name only.
        """
        typed = self.caps.vouches_for_history or not isinstance(key, str)
        candidates = [key] if typed else document_id_candidates(key)
        try:
            document_id = layout.document_id_str(key)
        except UnsafePathError:  # an _id that names no folder (e.g. a subdocument) has none
            document_id = None
        with log_context(database=database, collection=collection, document_id=document_id):
            # The event's resume token names it: a replay records the same delete once.
            event_id = json_util.dumps(event["_id"], sort_keys=True)
            self.s.submitter.record_delete(database, collection, candidates, event_id)
            if self.settings.watch_deletes and document_id is not None:
                self.s.submitter.request_trash(database, collection, json_util.dumps(key), typed)
                log.info("delete event: trash requested for document %s", document_id)
            else:
                metrics.LISTENER_DECISIONS.labels("ignored").inc()

    def _stream_end(self, source: Source, event: dict[str, Any]) -> None:
        operation = event["operationType"]
        if operation == "rename" and source.collection is None:
            target = event.get("to") or {}
            ns = (target.get("db"), target.get("coll"))
            if ns[0] and ns[1] and is_watched(self.settings, ns[0], ns[1]):
                self.scan.add({ns}, "rename")  # its documents were never seen under that name
        if operation != "invalidate":
            source.handled(event)
            return
        # MongoDB: the stream is over (drop, rename, dropDatabase). Its token cannot resume;
        # the collection is picked up again, and scanned, if it reappears.
        log.warning("stream %s invalidated: closed", source.key)
        source.close()
        self.sources.pop(source.key, None)
        try:
            self.s.state.forget_token(source.key, self.epoch)
        except PyMongoError as exc:  # the stale token is refused by MongoDB anyway
            log.warning("could not forget the token of %s: %s", source.key, exc)
        for ns in self._covered(source):
            self.collections.discard(ns)
            self.scan.drop(*ns)

    def _broken(self, source: Source, exc: PyMongoError) -> None:
        if isinstance(exc, OperationFailure) and (
                exc.code in HISTORY_LOST_CODES or
                exc.has_error_label("NonResumableChangeStreamError")):
            log.error("stream %s lost its history (%s): reopening from now and scanning",
                      source.key, exc)
            source.token = None
            source.extra["lost"] = True
        else:
            log.warning("stream %s failed (%s): reopening", source.key, exc)
        source.close()
        source.failures += 1
        source.reopen_after = time.monotonic() + min(
            BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** (source.failures - 1))

    def _reopen(self, source: Source) -> None:
        if time.monotonic() < source.reopen_after:
            return
        try:
            usable = self._open(source)
        except PyMongoError as exc:
            self._broken(source, exc)
            return
        metrics.LISTENER_RECONNECTS.inc()
        source.failures = 0
        lost = source.extra.pop("lost", False) or not usable
        if lost or not self.caps.vouches_for_history:
            # nx-27017 cannot say whether the resume skipped anything: scan what it covers.
            self.scan.add(self._covered(source), "history_lost" if lost else "reopen")
        log.info("stream %s reopened", source.key)

    # --- discovery, scan, checkpoints -----------------------------------------------------------

    def _discover(self) -> None:
        self.last_discovery = time.monotonic()
        try:
            found = watched_collections(self.s.mongo, self.settings)
            requested = self.s.state.take_rescan_request()
        except PyMongoError as exc:
            log.warning("listing collections failed: %s", exc)
            return
        appeared, gone = found - self.collections, self.collections - found
        self.collections = found
        wanted = stream_keys(self.settings, self.caps, found)
        for key in set(self.sources) - set(wanted):
            source = self.sources.pop(key)
            source.close()
            log.warning("collection of stream %s is gone: stream closed", key)
            try:
                self.s.state.forget_token(key, self.epoch)
            except PyMongoError:
                pass
        for ns in gone:
            self.scan.drop(*ns)
        uncovered: set[tuple[str, str]] = set()
        for key, (database, collection) in wanted.items():
            if key not in self.sources:
                source = Source(key, database, collection)
                self.sources[key] = source
                log.info("new stream %s", key)
                try:
                    self._open(source)
                except PyMongoError as exc:
                    self._broken(source, exc)
                # Documents written before this watch() (a new collection, or one recreated
                # after its stream was invalidated) are in no stream: scan them.
                uncovered |= self._covered(source)
        if uncovered:
            self.scan.add(uncovered, "new_collection")
        if appeared:
            log.info("new collection(s): %s", ", ".join(f"{d}.{c}" for d, c in sorted(appeared)))
        if requested:
            self.scan.add(found, "requested")

    def _scan_step(self) -> None:
        try:
            self.scan.step(self.s.mongo, self.settings, self.s.submitter, self.s.decider)
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable during the scan: {exc}") from None
        finally:
            self.scan_dirty = True
        self._save_scan()

    def _save_scan(self) -> None:
        if not self.scan_dirty:
            return
        if not self.s.lease.valid():
            raise LeaseLost("lease lost before saving the scan progress")
        try:
            self.s.state.save_scan(self.scan.state(), self.epoch)
            self.scan_dirty = False
        except PyMongoError as exc:
            log.warning("saving the scan progress failed: %s", exc)

    def _checkpoint(self, force: bool = False) -> None:
        now = time.monotonic()
        due = force or now - self.last_checkpoint >= CHECKPOINT_INTERVAL_S or any(
            s.unsaved_events >= CHECKPOINT_EVENTS for s in self.sources.values())
        if not due:
            return
        self.last_checkpoint = now
        if not self.s.submitter.flush_marks():
            return  # MongoDB is away: the tokens would not be saved either; next time
        dirty = [s for s in self.sources.values() if s.dirty]
        if not dirty:
            self.last_saved_wall = time.time()  # nothing to save: the checkpoint is current
            return
        if not self.s.lease.valid():
            raise LeaseLost("lease lost before the checkpoint")
        self.s.crash.hit("before_checkpoint")
        try:
            for source in dirty:
                token = source.token
                self.s.state.save_token(source.key, token, self.epoch)
                source.saved_token, source.unsaved_events = token, 0
        except PyMongoError as exc:
            log.warning("checkpoint failed (kept in memory, retried): %s", exc)
            return
        self.last_saved_wall = time.time()

    def _final_checkpoint(self) -> None:
        try:
            if self.s.lease.valid():
                self._checkpoint(force=True)
                self._save_scan()
                log.info("checkpoint saved on stop")
        except (LeaseLost, Fenced) as exc:
            log.warning("no checkpoint on stop: %s", exc)
