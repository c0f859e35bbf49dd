"""A document's folder as one unit of work: open, claim, store images, merge, close (§5, §14).

Every message that works on a document goes through one :class:`DocumentFolder`, and the
folder alone talks to the storage about that document: the pipeline hands it a plan, the folder
reads and writes the backend, and the message's results come back through it once.

1. :meth:`DocumentFolder.open` — the document-level step: move the folder of an older search
   value, make the layout exist, then *claim* the folder under its lock: the metadata.json must
   name this document (else :class:`~images_service.errors.FolderConflict`) and must not have
   been written from a newer plan (else :class:`~images_service.errors.StaleMessage`); a folder
   without one gets a first metadata.json, and a folder last written by another plan records
   this one's, so that from now on an *older* message can no longer change it. **Moved URLs
   are not fetched again** (§15): a URL of the plan already stored in the folder at another
   index is copied to its new index with its variants (server-side: a hard link, a CopyObject)
   and recorded ``skipped`` in the claim, so a reordered list costs no request.
2. :meth:`skip_record`, :meth:`store_original`, :meth:`store_variants`, :meth:`backfill`,
   :meth:`remove` — what one image's download stores (or finds already stored).
3. :meth:`merge` — the image records of this message into metadata.json, under the lock, with a
   version check: the file is read with its version and replaced only if it still has it
   (``Storage.put_bytes_if``), otherwise the merge is made again from the newer file. A merge
   that outlived its lock, or raced another writer, is therefore redone, never lost (§14).
   A merge starts from the folder's own last write (claim or merge) with the version that write
   returned, not from a read: on S3 that is one GET fewer per document, and a copy that is
   behind only costs a refused write and the read it saved.
   Files the new records no longer name are removed after the write, so metadata.json never
   names a missing file. A merge of a stale message — its job ended, or its plan older than the
   file's — writes nothing and removes nothing.

What the images show (contract §18): a folder built with the settings' content rules marks
every metadata.json it writes (``placeholder``, ``duplicate_of``, the summary's counts), counts
each image once when it is first marked (``images_placeholders_total{reason}``,
``images_duplicates_total``), and decides a skipped or copied image's ``placeholder`` again
before its variants are brought up to date (:meth:`backfill`), since a placeholder has none.
Without rules (tests, tools) records are written as they come.

Locks (:mod:`images_service.download.folder_locks`) keep writers of one folder from racing for
nothing: the pipeline's is in Redis and refuses at once when the message's job has ended; the
default is private to the process. Correctness does not rest on the lock (it can expire): the
version check and the plan order do that.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Any

from images_service import metrics
from images_service.config.settings import Settings
from images_service.content.document import ContentRules, newly_marked, with_placeholder
from images_service.download import variants
from images_service.download.folder_locks import default_lock
from images_service.download.planning import DocumentPlan, ImageTask
from images_service.errors import StaleMessage, StorageUnavailable
from images_service.storage import folders, layout
from images_service.storage.backend import Storage, Versioned
from images_service.storage.metadata import (
    DOWNLOADED,
    SKIPPED,
    build_metadata,
    check_owner,
    encode,
    matches,
    metadata_key,
    parse,
    planned_at_ms,
    records_by_index,
)

logger = logging.getLogger(__name__)

#: A merge that keeps losing the version race is given up (retryable) after this many rounds.
MAX_MERGE_ROUNDS = 10
#: Before round n+1 a loser waits a random 0..min(2**n * this, cap) ms: writers outside one
#: lock (several processes without the fleet-wide Redis lock) otherwise retry in step, and the
#: same one can lose every round while the file grows (seen: 8 lost rounds of 4 processes).
MERGE_BACKOFF_MS = 4.0
MERGE_BACKOFF_CAP_MS = 100.0

LockFactory = Callable[[str], AbstractContextManager[Any]]


class DocumentFolder:
    """One document's folder, for the work of one message (see the module docstring)."""

    def __init__(self, storage: Storage, plan: DocumentPlan, *, job_id: str,
                 lock: LockFactory | None = None, rules: ContentRules | None = None) -> None:
        self.storage = storage
        self.plan = plan
        self.job_id = job_id
        #: The settings of §18 (``ContentRules.from_settings``); None marks nothing.
        self.rules = rules
        self._lock = lock or (lambda folder: default_lock(storage, folder))
        #: metadata.json as the claim found (or wrote) it; None before :meth:`open`.
        self.current: dict[str, Any] | None = None
        #: metadata.json as this folder last wrote it, with its version (see :meth:`_update`).
        self._written: Versioned | None = None
        self._claimed_from_own_job = False

    @property
    def key(self) -> str:
        """The folder's key (the write-back ``path``)."""
        return self.plan.relative_folder

    @property
    def previous(self) -> dict[int, dict[str, Any]]:
        """The records of the claimed metadata.json by index."""
        return records_by_index(self.current)

    @property
    def claimed_by_this_job(self) -> bool:
        """Whether the folder's metadata.json was last written by this message's job before
        this message claimed it (a replay, or another message of the same job)."""
        return self._claimed_from_own_job

    # -- 1. open and claim ----------------------------------------------------------------------

    def open(self) -> dict[str, Any]:
        """Prepare and claim the folder; returns its metadata.json.

        Raises FolderConflict (another document's folder), StaleMessage (a newer plan, or the
        job ended) or StorageUnavailable.
        """
        folders.prepare(self.storage, self.key, self.plan.header,
                        previous_folder=self.plan.previous_relative_folder)
        self._claimed_from_own_job = False
        moved: list[dict[str, Any]] | None = None

        def claim(current: dict[str, Any] | None) -> dict[str, Any] | None:
            nonlocal moved
            self._claimed_from_own_job = (current is not None
                                          and current.get("job_id") == self.job_id)
            if moved is None:  # files are copied once, whatever round of the write this is
                moved = self._relocate(current)
            if current is not None and self._same_plan(current) and not moved and current.get(
                    "document_key") is not None:
                return None  # already this plan's: nothing to write
            records = records_by_index(current)
            records.update((r["index"], r) for r in moved)
            return build_metadata(self.plan.header, records.values(), job_id=self.job_id,
                                  total=len(self.plan.images),
                                  planned_at_ms=self.plan.planned_at_ms, rules=self.rules)

        self.current = self._update(claim)
        return self.current

    def _relocate(self, current: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Copy the stored images whose URL moved to another index (with their variants) to
        that index; returns their new records (``skipped``: nothing was requested)."""
        records = records_by_index(current)
        stored = {r["url"]: r for r in records.values()
                  if r.get("status") in (DOWNLOADED, SKIPPED) and isinstance(r.get("file"), str)
                  and isinstance(r.get("url"), str)}
        pairs: list[tuple[str, str]] = []
        moved = []
        for task in self.plan.images:
            here = records.get(task.index)
            source = stored.get(task.url)
            if source is None or source["index"] == task.index or (
                    here is not None and here.get("url") == task.url):
                continue
            record, files = _moved_record(source, task.index)
            pairs += [(f"{self.key}/{old}", f"{self.key}/{new}") for old, new in files]
            moved.append(record)
        if pairs:
            try:
                self.storage.copy_many(pairs)
            except FileNotFoundError:  # a recorded file is gone: those images are fetched
                logger.warning("%s: a stored image vanished: moved URLs are fetched again",
                               self.key)
                return []
            metrics.IMAGES_MOVED.inc(len(moved))
            logger.info("%s: %d stored image(s) moved to their new index", self.key, len(moved))
        return moved

    def read(self) -> dict[str, Any] | None:
        """The folder's metadata.json as stored now (None when it has none)."""
        return parse(self.storage.read_bytes(metadata_key(self.key)), self.key)

    def check_current(self) -> None:
        """Raise StaleMessage when a newer plan wrote the folder since this message was made
        (a retry's first step: nothing is requested for a superseded plan)."""
        current = self.read()
        check_owner(current, self.plan.header)
        self._check_plan(current)
        self.current = current

    # -- 2. one image ---------------------------------------------------------------------------

    def skip_record(self, task: ImageTask, previous: Mapping[str, Any]) -> dict[str, Any] | None:
        """The ``skipped`` record when ``previous`` still describes an intact stored original,
        else None (the image must be fetched). Raises StorageUnavailable when the storage
        cannot tell."""
        if previous.get("status") not in (DOWNLOADED, SKIPPED):
            return None
        if previous.get("index") != task.index or previous.get("url") != task.url:
            return None
        relpath = previous.get("file")
        if not isinstance(relpath, str):
            return None
        parts = PurePosixPath(relpath).parts
        if len(parts) != 2 or parts[0] != layout.ORIGINAL_DIR:
            return None
        parsed = layout.parse_image_filename(parts[1])
        if parsed is None or parsed[0] != task.index:
            return None
        key = f"{self.key}/{relpath}"
        stat = self.storage.stat(key)
        if stat is None:
            return None
        # The stored sha256 (S3: object metadata, one HEAD) when the backend keeps one; else
        # the object is hashed (the filesystem: one local read), so a changed file is fetched
        # again.
        sha256 = stat.sha256 if stat.sha256 is not None else self.storage.sha256_of(key)
        if stat.size_bytes != previous.get("bytes") or sha256 != previous.get("sha256"):
            logger.info("file %s of %s changed in storage: fetching again", relpath, self.key)
            return None
        return {**previous, "status": SKIPPED}

    def temp_dir(self) -> Path:
        """Where a download streams its body before validation (see Storage.local_temp_dir)."""
        return self.storage.local_temp_dir(self.key)

    def store_original(self, task: ImageTask, body_path: Path, *, image_format: str,
                       sha256: str) -> str:
        """Store a validated body as ``original/img_NNN.ext`` atomically; returns its file
        (relative to the folder). The object keeps its Content-Type and sha256."""
        extension = layout.extension_for(image_format)
        key = layout.image_key(self.key, task.index, extension)
        self.storage.put_file(key, body_path, content_type=layout.CONTENT_TYPES[image_format],
                              sha256=sha256)
        return layout.image_relpath(task.index, extension)

    def store_variants(self, record: dict[str, Any],
                       rendered: Iterable[variants.VariantResult]) -> dict[str, Any]:
        """A fresh download's variants stored; ``record`` with its ``processed`` entry."""
        return variants.store_rendered(self.storage, self.key, record, rendered)

    def backfill(self, record: dict[str, Any], settings: Settings) -> dict[str, Any]:
        """A skipped (or copied) image's variants brought up to date from its stored
        original, once its ``placeholder`` is decided again under the folder's rules (a
        placeholder has none; one that no longer is gets them)."""
        if self.rules is not None:
            record = with_placeholder(record, self.rules)
        return variants.backfill(self.storage, self.key, record, settings)

    def remove(self, files: Iterable[str]) -> None:
        """Remove files of the folder (relative names), e.g. an original whose extension
        changed (``img_001.png`` now ``img_001.jpg``)."""
        self.storage.delete([f"{self.key}/{name}" for name in files])

    # -- 3. merge -------------------------------------------------------------------------------

    def merge(self, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Merge image records (by index) into metadata.json; returns the file as written.

        Records that no longer match the document's URL list are dropped; then the files that
        no record names any more are removed (§10). Raises FolderConflict, StaleMessage (and
        then writes and removes nothing) or StorageUnavailable.
        """
        records = [dict(r) for r in records]
        recorded = {r["index"] for r in records}
        urls = self.plan.urls

        def merged(current: dict[str, Any] | None) -> dict[str, Any]:
            by_index = {i: r for i, r in records_by_index(current).items()
                        if matches(r, urls)}
            for record in records:
                if matches(record, urls):
                    by_index[record["index"]] = record
                else:
                    logger.warning("dropping record of image %s of %s: the document's URL list "
                                   "changed", record.get("index"), self.key)
            return build_metadata(self.plan.header, by_index.values(), job_id=self.job_id,
                                  total=len(urls), planned_at_ms=self.plan.planned_at_ms,
                                  rules=self.rules)

        written = self._update(merged, reuse_own_write=True)
        removed = folders.prune(self.storage, self.key, records_by_index(written),
                                recorded=recorded, total=len(urls))
        variants.count_removed(removed)
        self.current = written
        return written

    # -- the one read-modify-write ----------------------------------------------------------------

    def _update(self, change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
                *, reuse_own_write: bool = False) -> dict[str, Any]:
        """Apply ``change`` to metadata.json under the lock, with the version check; redone
        from the newer file when another writer got there first. ``change`` returns the new
        content, or None to leave the file as it is."""
        key = metadata_key(self.key)
        # A merge may start from this folder's own last write instead of reading the file:
        # under the lock nobody else wrote it as a rule, and if somebody did, the version check
        # refuses the write and the file is read (S3: one GET saved per merge after the
        # claim). Not for a ``change`` that may write nothing (the claim): its answer would
        # rest on an unchecked copy.
        reuse, lost = reuse_own_write, 0
        while True:
            with self._lock(self.key):
                own = self._written if reuse else None  # under the lock: the latest of ours
                read = own if own is not None else self.storage.read_versioned(key)
                self._written = None
                current = parse(read.data, self.key)
                check_owner(current, self.plan.header)
                self._check_plan(current)
                new = change(current)
                if new is None:
                    return current or {}
                written = self.storage.put_bytes_if(key, encode(new), version=read.version)
                if written is not None:
                    if written.version is not None:
                        self._written = written
                    _count_marks(current, new)
                    return new
            if own is not None:
                reuse = False  # our copy was behind: read the file (no round lost to a race)
                continue
            lost += 1
            metrics.METADATA_CONFLICTS.inc()
            logger.warning("metadata.json of %s changed during a write (round %d): merging again",
                           self.key, lost)
            if lost == MAX_MERGE_ROUNDS:
                raise StorageUnavailable(
                    f"metadata.json of {self.key} kept changing under the merge")
            time.sleep(merge_backoff_ms(lost) / 1000)

    def _same_plan(self, current: Mapping[str, Any]) -> bool:
        return (current.get("job_id") == self.job_id
                and planned_at_ms(current) == self.plan.planned_at_ms)

    def _check_plan(self, current: Mapping[str, Any] | None) -> None:
        """Raise StaleMessage when ``current`` was written from a newer plan than this one."""
        if planned_at_ms(current) > self.plan.planned_at_ms:
            raise StaleMessage(
                f"{self.key} was written from a newer plan (job {current.get('job_id')}) than "
                f"this message's (job {self.job_id})")


def merge_backoff_ms(lost_rounds: int) -> float:
    """The random wait after ``lost_rounds`` lost version races (full jitter)."""
    return random.uniform(0, min(MERGE_BACKOFF_MS * 2 ** lost_rounds, MERGE_BACKOFF_CAP_MS))


def _count_marks(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> None:
    """Count the images this write marked first (contract §18 metrics)."""
    reasons, duplicates = newly_marked(records_by_index(before).values(),
                                       records_by_index(after).values())
    for reason, count in reasons.items():
        metrics.PLACEHOLDERS.labels(reason).inc(count)
    if duplicates:
        metrics.DUPLICATES.inc(duplicates)


def _moved_record(source: Mapping[str, Any], index: int
                  ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The record of ``source``'s image at ``index``, and the (old, new) files to copy."""
    old_file = source["file"]
    extension = PurePosixPath(old_file).suffix
    new_file = layout.image_relpath(index, extension)
    files = [(old_file, new_file)]
    record = {**source, "index": index, "file": new_file, "status": SKIPPED}
    processed = source.get("processed")
    if isinstance(processed, Mapping):
        entries = {}
        for name, entry in processed.items():
            if isinstance(entry, Mapping) and isinstance(entry.get("file"), str):
                old = entry["file"]
                new = str(PurePosixPath(old).with_name(
                    layout.image_filename(index, PurePosixPath(old).suffix)))
                files.append((old, new))
                entries[name] = {**entry, "file": new}
            else:
                entries[name] = entry
        record["processed"] = entries
    return record, files
