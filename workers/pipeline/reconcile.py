"""A reconcile job (contract §15): the tree made to follow its collection again.

What the listener missed while it was down (a delete, an update), a storage switch and
interrupted writes leave the tree out of step with the collection. A ``reconcile`` job, one
step on the scan queue, makes it good in two streamed passes over bounded batches:

1. **Tree → collection.** The collection's folders are streamed with their files
   (:meth:`Storage.folder_files`: one directory walk per folder on the filesystem; one flat
   ``ListObjectsV2`` listing of the collection's prefix on S3, whose keys come sorted so each
   folder's files arrive together). For a batch of :data:`BATCH` folders, each metadata.json
   is read and the documents they name are fetched in one indexed ``{_id: {$in: […]}}``
   query (the typed ``document_key`` of §14; matched again in Python by its identity, since
   nx-27017 takes ``5`` and ``"5"`` for one ``_id``). Then, per folder:

   - its document no longer exists (or the folder's metadata.json names another document
     than the one that exists under that ``_id``) → the folder goes to the trash, under the
     folder lock, as the listener's delete does (workers/trash.py);
   - its document's URL list (§3) or folder name differs from the metadata.json
     (:meth:`~workers.listener.decide.LastDownload.differs`, the listener's update rule) →
     the document is downloaded, its old folder named as the one to move (a rename);
   - every file that the metadata.json does not name (a failed image's leftover, an index
     beyond the list, a ``.tmp-`` leftover of an interrupted write, everything in a folder
     without metadata.json) and that is older than :data:`ORPHAN_AGE_S` is removed; a
     younger one may be a write in flight.

2. **Collection → tree.** The collection is streamed in ``_id`` order
   (images_service/jobs/id_order.py: mixed ``_id`` types). A document with image URLs
   whose folder (the one it names now, or its write-back's ``path``) holds no metadata.json
   was never downloaded, or was lost with a storage switch → it is downloaded. A document
   that has one was judged in pass 1. One existence check per document (a ``stat``; a HEAD
   on S3, several at once).

Why two joins and not one sorted merge of ``_id``s with folder names: neither order lines up
with the other. MongoDB sorts ``_id`` by type and value (numbers numerically: ``10`` after
``9``, but folder ``10`` before ``9``), and a folder ``{id}-{slug}`` sorts apart from its id
whenever ids hold characters below ``-`` (``a-b`` and ``a`` named "z": folders ``a-b`` <
``a-z``, ids ``a`` < ``a-b``); the filesystem lists a directory in no order at all, and
sorting ten million names would take a gigabyte or temporary files on one host. Each pass
streams one side and joins each batch with the other side by key (an indexed ``$in``, a
``stat``), so memory holds one batch (and one S3 page) whatever the collection's size, and
nothing is kept on the worker's disk: any worker of a two-host S3 setup can run it.

Downloads are made *under the reconcile job itself*, as by an update: each document's plan
(``previous_relative_folder`` set to the folder found, so a rename moves it, images kept) goes
out in ``download_documents`` messages of this job, counted once by the job's progress
(``documents_total``), and the job completes when they are done. Counts are exactly-once: a
document decided for download is marked in the job's Redis state (field ``w:<document>``,
``HSETNX``), so pass 2 does not take again a document pass 1 took, and a redelivered step
(a worker killed mid-run starts it over) counts nothing twice: the trashed folders and
removed files are gone by then, and marked documents are skipped. The counters and the
examples live in the job's progress hash (removed with it, §10) and are copied to the job's
``result`` after every batch. A redelivered step skips pass 1 once it is done and resumes
pass 2 after the last ``_id`` it saved. Pass 1 resumes after the last folder it saved on S3,
whose listing has a stable order; on the filesystem (a directory lists in no stable order) it
runs again from the start, which a real run can (what it did is done) and a dry run does from
zero (its counts and marks are dropped first).

``dry_run`` changes nothing (no trash, no removal, no message) and counts what it would do,
with the same marks, and marks the folders it would trash (``t:<folder>``) so that pass 2
takes them as gone, as a real run finds them: both report the same counts.

Left to the operator: a second folder of a document that has its current folder too (both
hold its metadata.json) is kept, and logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from bson import ObjectId, json_util
from bson.errors import InvalidId

from images_service import metrics
from images_service.download import engine
from images_service.download.planning import document_key as typed_key
from images_service.download.planning import folder_of
from images_service.download.urls import extract_image_urls
from images_service.errors import UnsafePathError
from images_service.jobs.id_order import scan_in_id_order
from images_service.jobs.projection import top_level_projection
from images_service.jobs.store import FINISHED, RESULT_FIELDS
from images_service.jobs.triggers import document_id_candidates
from images_service.logs import log_context
from images_service.storage import layout
from images_service.storage.backend import StoredFile
from images_service.storage.folders import _named
from images_service.storage.metadata import key_identity, metadata_key, parse
from workers.listener.decide import status_of
from workers.listener.tree import Decider, from_metadata
from workers.pipeline.context import PipelineContext
from workers.pipeline.finish import Finisher
from workers.pipeline.plans import plan_to_message
from workers.pipeline.scan import DOCS_PER_MESSAGE, IMAGES_PER_MESSAGE
from workers.pipeline.streams import batches, read_ahead
from workers.trash import move_to_trash

log = logging.getLogger(__name__)

#: Folders (pass 1) or documents (pass 2) handled per batch: one ``$in`` query or one round
#: of existence checks, one update of the job's result.
BATCH = 500
#: A file no metadata.json names is removed once older than this (seconds, contract §15).
ORPHAN_AGE_S = 3600.0
#: The job's result lists at most this many example paths.
MAX_EXAMPLES = 100
#: Storage reads at once on S3 (metadata.json, HEAD); the filesystem reads in sequence.
S3_READS = 16
#: Counter fields in the job's progress hash, one per action of the result.
COUNTER = {"trashed": "rc:trashed", "downloaded": "rc:downloaded",
           "removed_files": "rc:removed_files"}
EXAMPLES_FIELD = "rc:examples"
#: Where a redelivered step resumes: pass 1 started, pass 1 done; pass 2 resumes after the
#: last ``_id`` of its checkpoint (the scan's fields of the progress hash).
TREE_STARTED, TREE_DONE = "rc:tree_started", "rc:tree_done"
#: The last folder pass 1 finished (resumed after it where the storage's order is stable).
TREE_AFTER = "rc:tree_after"

# HSETNX of each document's mark while the job's hash exists; each new mark counts one
# download. Returns the list of 1/0, or false when the job's state is gone (it ended).
_MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local out = {}
for i = 1, #ARGV do
  out[i] = redis.call('HSETNX', KEYS[1], 'w:' .. ARGV[i], 1)
  if out[i] == 1 then redis.call('HINCRBY', KEYS[1], 'rc:downloaded', 1) end
end
return out
"""
# A dry run's trash marks (``t:<folder>``): the folders pass 2 must take as gone.
_TRASH_MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
for i = 1, #ARGV do redis.call('HSET', KEYS[1], 't:' .. ARGV[i], 1) end
return 1
"""
# HINCRBY of counters and HSET of the examples, only while the job's hash exists.
_COUNT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
for i = 1, #ARGV - 1, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1])) end
return 1
"""


class _Ended(Exception):
    """The job was cancelled or ended while reconciling: stop where it is."""


class Tally:
    """The job's result as it grows: counters in Redis, examples kept here and saved."""

    def __init__(self, examples: list[str]) -> None:
        self.examples = examples[:MAX_EXAMPLES]
        self.pending: dict[str, int] = {}

    def add(self, action: str, paths: list[str]) -> None:
        if action != "downloaded":  # downloads are counted by their marks (_MARK)
            self.pending[action] = self.pending.get(action, 0) + len(paths)
        room = MAX_EXAMPLES - len(self.examples)
        if room > 0:
            self.examples += paths[:room]


class Reconciler:
    """The reconcile step over one :class:`PipelineContext` (module docstring)."""

    def __init__(self, ctx: PipelineContext, finisher: Finisher, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.finisher = finisher
        #: Epoch seconds "now" for the age of unnamed files (tests move it, never sleep).
        self.clock = clock
        self._mark = ctx.redis.register_script(_MARK)
        self._count = ctx.redis.register_script(_COUNT)
        self._trash_mark = ctx.redis.register_script(_TRASH_MARK)

    # -- the step --------------------------------------------------------------------------------

    def reconcile(self, job_id: str, job: dict[str, Any] | None) -> None:
        """The whole step; ``job`` as the caller just read it, already moved pending ->
        running by that read (PipelineContext.start_job), or None when it is gone."""
        ctx = self.ctx
        if job is None or job["status"] in FINISHED:
            ctx.progress.forget(job_id)  # a replayed step of an ended job
            return
        database, collection = job["database"], job["collection"]
        with log_context(job_id=job_id, database=database, collection=collection):
            if collection not in ctx.mongo[database].list_collection_names():
                self.finisher.finish_job(job, "failed",
                                         message=f"collection {database}.{collection} not found")
                return
            ctx.progress.start(job_id)
            key = ctx.progress.key(job_id)
            started, tree_done = ctx.redis.hmget(key, [TREE_STARTED, TREE_DONE])
            if started and not tree_done and not ctx.storage.folders_sorted:
                # A redelivered step whose worker died in pass 1 lists the tree again from its
                # start (a directory lists in no stable order). A real run finds done what it
                # did; a dry run changed nothing, so it counts again from nothing.
                ctx.redis.hdel(key, TREE_AFTER)
                if job.get("dry_run"):
                    self._forget_counts(key)
            raw = ctx.redis.hget(key, EXAMPLES_FIELD)
            tally = Tally(json.loads(raw) if raw else [])
            try:
                if not tree_done:
                    ctx.redis.hset(key, TREE_STARTED, 1)
                    self._tree_pass(job, tally)
                    ctx.redis.hset(key, TREE_DONE, 1)
                raw_last, _ = ctx.progress.checkpoint(job_id)
                self._documents_pass(job, tally, json_util.loads(raw_last) if raw_last else None)
                if not job.get("dry_run") and ctx.storage.folders_sorted:
                    # Multipart uploads never completed (S3) are no files: not counted. On
                    # the filesystem pass 1 removed the .tmp- leftovers already, and the
                    # sweep would walk the whole collection again.
                    ctx.storage.sweep_leftovers(f"{database}/{collection}",
                                                older_than_s=ORPHAN_AGE_S)
            except _Ended:
                log.info("job %s ended while reconciling", job_id)
                return
            result = self._save(job_id, tally)
            progress = ctx.progress.mark_scan_done(job_id)
            if progress is None:
                return
            ctx.jobs.record_progress(job_id, progress.as_job_progress())
            log.info("job %s: reconciled, %s", job_id,
                     {k: v for k, v in result.items() if k != "examples"})
            if progress.complete():
                self.finisher.finish_job(job, "completed", progress=progress.as_job_progress())

    def _forget_counts(self, key: str) -> None:
        """Counters, examples and marks of this job's earlier (interrupted) dry run, removed
        a thousand at a time as they are scanned (HSCAN returns every field present
        throughout, deletions meanwhile allowed)."""
        self.ctx.redis.hdel(key, COUNTER["trashed"], COUNTER["removed_files"],
                            COUNTER["downloaded"], EXAMPLES_FIELD, TREE_STARTED)
        for pattern in ("w:*", "t:*"):
            chunk: list[Any] = []
            for name, _ in self.ctx.redis.hscan_iter(key, match=pattern, count=1000):
                chunk.append(name)
                if len(chunk) >= 1000:
                    self.ctx.redis.hdel(key, *chunk)
                    chunk = []
            if chunk:
                self.ctx.redis.hdel(key, *chunk)

    def _save(self, job_id: str, tally: Tally) -> dict[str, Any]:
        """Add the batch's counts to the job's Redis state, then copy the result to the job."""
        ctx = self.ctx
        key = ctx.progress.key(job_id)
        args: list[Any] = []
        for action, n in tally.pending.items():
            args += [COUNTER[action], n]
        if self._count(keys=[key], args=args) is None:
            raise _Ended()
        tally.pending.clear()
        ctx.redis.hset(key, EXAMPLES_FIELD, json.dumps(tally.examples))
        counted = RESULT_FIELDS[:3]  # the examples follow the counts
        values = ctx.redis.hmget(key, [COUNTER[name] for name in counted])
        result: dict[str, Any] = {name: int(v or 0)
                                  for name, v in zip(counted, values, strict=True)}
        result["examples"] = list(tally.examples)
        ctx.jobs.record_result(job_id, result)
        return result

    def _check_live(self, job_id: str) -> None:
        if self.ctx.stopped(job_id):
            raise _Ended()

    # -- pass 1: the tree's folders ----------------------------------------------------------

    def _tree_pass(self, job: dict[str, Any], tally: Tally) -> None:
        """Resumes after the last folder it saved where the storage lists in a stable order
        (S3)."""
        key = self.ctx.progress.key(job["_id"])
        raw_after = self.ctx.redis.hget(key, TREE_AFTER)
        after = raw_after.decode() if raw_after else None
        # Reading batch k+1 (listing, metadata.json, the $in query) overlaps judging batch k.
        for folders, metas, owners in read_ahead(self._read_folders(job, after)):
            self._check_live(job["_id"])
            self._judge_folders(job, folders, metas, owners, tally)
            self._save(job["_id"], tally)
            self.ctx.redis.hset(key, TREE_AFTER, folders[-1][0].rsplit("/", 1)[1])

    def _read_folders(self, job: dict[str, Any],
                      after: str | None) -> Iterator[tuple[Any, Any, Any]]:
        """Batches of (folders with their files, their metadata.json, their owners)."""
        database, collection = job["database"], job["collection"]
        parent = f"{database}/{collection}"
        for batch in batches(self.ctx.storage.folder_files(parent, after), BATCH):
            folders = [(f"{parent}/{name}", files) for name, files in batch]
            with_meta = [folder for folder, files in folders
                         if metadata_key(folder) in {f.key for f in files}]
            metas = dict(zip(with_meta, self._map(self._read_metadata, with_meta), strict=True))
            yield folders, metas, self._owners(database, collection, metas.values())

    def _judge_folders(self, job: dict[str, Any], folders: list[tuple[str, list[StoredFile]]],
                       metas: dict[str, Any], owners: dict[Any, dict[str, Any]],
                       tally: Tally) -> None:
        ctx = self.ctx
        database, collection = job["database"], job["collection"]
        dry_run = bool(job.get("dry_run"))
        now_s = self.clock()
        orphans: list[str] = []
        to_trash: list[str] = []
        to_download: list[tuple[dict[str, Any], str | None]] = []
        for folder, files in folders:
            meta = metas.get(folder)
            if folder in metas and (meta is None or not isinstance(meta.get("document_id"), str)):
                # Edited by hand, or not ours: whose it is cannot be told, so nothing is done.
                log.warning("%s: unreadable metadata.json, folder left alone", folder)
                continue
            if meta is not None:
                doc = owners.get(_identity(meta))
                if doc is None:
                    to_trash.append(folder)
                    continue  # its files go to the trash with it
                wanted = self._download_for(doc, folder, meta, database, collection)
                if wanted is not None:
                    to_download.append(wanted)
            named = _named_files(folder, meta)
            orphans += [f.key for f in files
                        if f.key not in named and now_s - f.modified_s > ORPHAN_AGE_S]
        if to_trash:
            self._trash(job, to_trash, tally, dry_run)
        if orphans:
            if not dry_run:
                ctx.storage.delete_files(orphans)
                metrics.RECONCILE.labels("removed_files").inc(len(orphans))
                log.info("removed %d file(s) no metadata.json names", len(orphans))
            tally.add("removed_files", orphans)
        if to_download:
            self._download(job, to_download, tally)

    def _read_metadata(self, folder: str) -> dict[str, Any] | None:
        return parse(self.ctx.storage.read_bytes(metadata_key(folder)), folder)

    def _owners(self, database: str, collection: str,
                metas: Any) -> dict[Any, dict[str, Any]]:
        """The existing documents the metadata.json name, by the identity of their key."""
        ids: list[Any] = []
        for meta in metas:
            if meta is None:
                continue
            key = meta.get("document_key")
            if key is not None:
                try:
                    ids.append(_typed_id(key))
                except (TypeError, ValueError, InvalidId):
                    continue
            elif isinstance(meta.get("document_id"), str):
                ids += document_id_candidates(meta["document_id"])
        if not ids:
            return {}
        cursor = self.ctx.mongo[database][collection].find(
            {"_id": {"$in": ids}}, self._projection())
        found: dict[Any, dict[str, Any]] = {}
        for doc in cursor:
            found[_id_identity(doc["_id"])] = doc
            # metadata.json written before document_key was recorded names the id's text
            found.setdefault(("text", layout.document_id_str(doc["_id"])), doc)
        return found

    def _projection(self) -> dict[str, int]:
        settings = self.ctx.settings
        # Whole top-level fields (nx-27017 returns a dotted projection as a flat key).
        return top_level_projection([*settings.image_fields, settings.search_field,
                                     settings.status_field])

    def _download_for(self, doc: dict[str, Any], folder: str, meta: dict[str, Any],
                      database: str, collection: str) -> tuple[dict[str, Any], str | None] | None:
        """(document, folder to move from) when the folder is out of step with its document."""
        settings = self.ctx.settings
        try:
            expected = folder_of(doc, database, collection, settings)
        except UnsafePathError:
            return None
        urls = extract_image_urls(doc, settings.image_fields)
        if not from_metadata(folder, meta).differs(urls, expected):
            return None
        if expected != folder:
            current = parse(self.ctx.storage.read_bytes(metadata_key(expected)), expected)
            if current is not None:  # its current folder exists: judged on its own
                log.info("%s: a second folder of document %s (its folder is %s): kept",
                         folder, meta.get("document_id"), expected)
                return None
        # A download by a request's own image_fields (REST) compares by those fields, as
        # the listener's update rule does: an unrelated field is not downloaded.
        if Decider(settings, None, self.ctx.jobs)._same_for_its_request(doc, database,
                                                                        collection):
            return None
        return doc, (folder if expected != folder else None)

    def _trash(self, job: dict[str, Any], folders: list[str], tally: Tally,
               dry_run: bool) -> None:
        if dry_run:
            # Pass 2 takes these folders as gone, as it would find them after a real run.
            if self._trash_mark(keys=[self.ctx.progress.key(job["_id"])], args=folders) is None:
                raise _Ended()
            tally.add("trashed", folders)
            return
        # Checked again just before (one query for the batch): a document inserted again
        # since the batch's query owns its folder now (its insert job downloads into it).
        metas = [(folder, self._read_metadata(folder)) for folder in folders]
        owners = self._owners(job["database"], job["collection"], [m for _, m in metas])
        moved = move_to_trash(self.ctx, [folder for folder, meta in metas
                                         if meta is not None and _identity(meta) not in owners])
        if moved:
            metrics.RECONCILE.labels("trashed").inc(len(moved))
            log.info("moved %d folder(s) of deleted documents to the trash", len(moved))
        tally.add("trashed", moved)

    # -- pass 2: the collection's documents ---------------------------------------------------

    def _documents_pass(self, job: dict[str, Any], tally: Tally, last_id: Any) -> None:
        """Resumes after ``last_id`` (saved after each batch): a redelivered step starts here
        again once pass 1 is done."""
        coll = self.ctx.mongo[job["database"]][job["collection"]]
        docs = scan_in_id_order(coll, None, self._projection(), last_id, batch_size=BATCH)
        scanned = 0
        for batch in read_ahead(batches(docs, BATCH)):  # the next batch read meanwhile
            self._check_live(job["_id"])
            self._judge_documents(job, batch, tally)
            self._save(job["_id"], tally)
            scanned += len(batch)
            if not self.ctx.progress.save_checkpoint(job["_id"],
                                                     json_util.dumps(batch[-1]["_id"]), scanned):
                raise _Ended()

    def _judge_documents(self, job: dict[str, Any], batch: list[dict[str, Any]],
                         tally: Tally) -> None:
        ctx, settings = self.ctx, self.ctx.settings
        database, collection = job["database"], job["collection"]
        # A stat costs less than reading a document's URLs; a HEAD (S3) costs more.
        urls_first = ctx.storage.folders_sorted
        candidates: list[tuple[dict[str, Any], list[str]]] = []
        for doc in batch:
            if urls_first and not extract_image_urls(doc, settings.image_fields):
                continue
            try:
                expected = folder_of(doc, database, collection, settings)
            except UnsafePathError:
                continue
            places = [expected]
            written = (status_of(doc, settings) or {}).get("path")
            if isinstance(written, str) and written != expected and \
                    written.startswith(f"{database}/{collection}/"):
                places.append(written)
            candidates.append((doc, places))
        if not candidates:
            return
        marks = ctx.redis.hmget(ctx.progress.key(job["_id"]),
                                [f"w:{_doc_key(database, collection, d)}" for d, _ in candidates])
        candidates = [c for c, mark in zip(candidates, marks, strict=True) if mark is None]
        keys = [metadata_key(place) for _, places in candidates for place in places]
        present = dict(zip(keys, self._map(ctx.storage.exists, keys), strict=True))
        if job.get("dry_run"):  # what the dry run's pass 1 would have trashed is gone
            found = [k for k in keys if present[k]]
            marks = [f"t:{k.rsplit('/', 1)[0]}" for k in found]
            trashed = ctx.redis.hmget(ctx.progress.key(job["_id"]), marks) if found else []
            present.update({k: False for k, mark in zip(found, trashed, strict=True) if mark})
        missing = [(doc, None) for doc, places in candidates
                   if not any(present[metadata_key(place)] for place in places)
                   and (urls_first or extract_image_urls(doc, settings.image_fields))]
        if missing:
            self._download(job, missing, tally)

    # -- downloads -------------------------------------------------------------------------------

    def _download(self, job: dict[str, Any], wanted: list[tuple[dict[str, Any], str | None]],
                  tally: Tally) -> None:
        """Plan and send the documents not taken yet by this job (marks: module docstring)."""
        ctx = self.ctx
        job_id, database, collection = job["_id"], job["database"], job["collection"]
        key = ctx.progress.key(job_id)
        names = [_doc_key(database, collection, doc) for doc, _ in wanted]
        taken = ctx.redis.hmget(key, [f"w:{name}" for name in names])
        fresh = [(pair, name) for pair, name, mark in zip(wanted, names, taken, strict=True)
                 if mark is None]
        if not fresh:
            return
        if not job.get("dry_run"):
            messages: list[list[dict[str, Any]]] = [[]]
            images = 0
            planned = []
            for (doc, previous), name in fresh:
                plan = engine.plan_document(doc, database, collection, ctx.settings)
                if previous is not None:  # the folder found in the tree moves (a rename)
                    plan = replace(plan, previous_relative_folder=previous)
                planned.append((name, len(plan.images)))
                if len(messages[-1]) >= DOCS_PER_MESSAGE or images >= IMAGES_PER_MESSAGE:
                    messages.append([])
                    images = 0
                messages[-1].append(plan_to_message(plan, doc["_id"]))
                images += len(plan.images)
            if ctx.progress.plan(job_id, planned) is None:
                raise _Ended()
            for message in messages:
                ctx.enqueuer.documents(job_id, message)
        marks = self._mark(keys=[key], args=[name for _, name in fresh])
        if marks is None:
            raise _Ended()
        new = [pair for (pair, _), mark in zip(fresh, marks, strict=True) if int(mark) == 1]
        if not job.get("dry_run"):
            metrics.RECONCILE.labels("downloaded").inc(len(new))
        tally.add("downloaded", [folder_of(doc, database, collection, ctx.settings)
                                 for doc, _ in new])

    # -- helpers -----------------------------------------------------------------------------

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``fn`` over ``items``: in sequence on the filesystem (a read is microseconds),
        several at once on S3 (a read is a round trip)."""
        if self.ctx.storage.name != "s3" or len(items) < 2:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(min(S3_READS, len(items)),
                                thread_name_prefix="reconcile") as pool:
            return list(pool.map(fn, items))


def _doc_key(database: str, collection: str, doc: dict[str, Any]) -> str:
    """The document's key in the job's progress state (workers/pipeline/plans.document_key)."""
    return f"{database}/{collection}/{layout.document_id_str(doc['_id'])}"


def _typed_id(key: Any) -> Any:
    """The ``_id`` a metadata.json's ``document_key`` (canonical Extended JSON) stands for;
    the common kinds directly, the others through bson's parser (a JSON round trip)."""
    if isinstance(key, str):
        return key
    if isinstance(key, dict) and len(key) == 1:
        (kind, value), = key.items()
        if kind == "$oid":
            return ObjectId(value)
        if kind in ("$numberInt", "$numberLong"):
            return int(value)
    return json_util.loads(json.dumps(key))


def _id_identity(value: Any) -> Any:
    """:func:`key_identity` of the ``document_key`` of ``_id`` ``value``, the common kinds
    without a JSON round trip (equal to ``key_identity(document_key(value))``)."""
    if isinstance(value, ObjectId):
        return json.dumps({"$oid": str(value)})
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return ("number", value)
    return key_identity(typed_key(value))


def _identity(meta: dict[str, Any]) -> Any:
    """How :meth:`Reconciler._owners` files the document a metadata.json names."""
    key = meta.get("document_key")
    if key is not None:
        return key_identity(key)
    return ("text", meta.get("document_id"))


def _named_files(folder: str, meta: dict[str, Any] | None) -> set[str]:
    """The keys metadata.json names in ``folder``: itself, each record's file and variants."""
    if meta is None:
        return set()
    named = {metadata_key(folder)}
    for record in meta.get("images") or []:
        if isinstance(record, dict):
            named.update(f"{folder}/{relpath}" for relpath in _named(record))
    return named
