"""The download engine: plan a document, download its images, record them (contract §3–§6, §8).

This is the API the actors, the listener and the CLI build on; it knows nothing of queues.

* :func:`plan_document` — names, folder and the numbered image URLs of one document.
* :func:`prepare_folder` — create the layout (and move the folder of a renamed document).
* :func:`download_image` — **one** attempt for one image (the actors own retries and
  backoff): skip it when already on disk and unchanged, else fetch, validate and move it
  atomically into ``original/img_NNN.ext``. Returns the image's metadata record; failures
  raise :class:`~images_service.errors.DownloadError` (see :func:`failed_record`).
* :func:`record_images` — merge records into ``metadata.json`` under a lock.
* :func:`download_document` — all of the above with a small thread pool (tests, bench, CLI).

Skipping (idempotency). Without ``force`` an image is skipped — no request sent — when the
previous record for its index says ``downloaded`` or ``skipped`` for the *same URL*, and the
file it names exists with the recorded size and sha256. Hashing costs one sequential read of
the file (about 0.3 ms per 100 KB), far below a download, and catches files damaged or
replaced on disk; a mismatch means the image is fetched again.

When the URL list changes. Records are kept by index and only while they still match the
document: when a document is planned and recorded again, a record whose index is beyond the
current list, or whose URL is no longer the one at that index, is dropped from
``metadata.json``, and ``original/img_NNN.*`` files of indexes beyond the list are deleted
(a file of a changed index is replaced by the new download, or deleted if that download
fails). A failed record never names a file: when the latest attempt for an index fails (e.g.
a forced re-fetch answered 404), the older file of that index is deleted, so metadata.json
always describes exactly the files present. When the search value changes, the folder name
changes with it; :func:`prepare_folder` renames the old folder (known from the write-back
field's ``path``) so already downloaded images are kept and skipped.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from images_service.errors import DownloadError, UnsafePathError
from images_service.fetching.fetcher import Fetcher
from images_service.settings import Settings
from images_service.storage import files, layout, metadata
from images_service.storage.metadata import DOWNLOADED, FAILED, SKIPPED
from images_service.urls import extract_image_urls, get_path
from images_service.validation import file_sha256, validate_image

logger = logging.getLogger(__name__)

_MISSING = object()


@dataclass(frozen=True)
class ImageTask:
    """One image of a document: its 1-based index and its URL."""

    index: int
    url: str


@dataclass(frozen=True)
class DocumentPlan:
    """Everything needed to download and store the images of one document."""

    database: str
    collection: str
    document_id: str
    search_field: str
    search_value: Any  #: a JSON scalar, None when the field is missing
    folder: Path  #: STORAGE_PATH / relative_folder
    relative_folder: str  #: POSIX, relative to STORAGE_PATH (the write-back ``path``)
    images: tuple[ImageTask, ...]
    #: The folder of an earlier download under another search value (from the write-back
    #: field), checked to belong to this document; None when there is none.
    previous_relative_folder: str | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(task.url for task in self.images)

    @property
    def header(self) -> metadata.DocumentHeader:
        return metadata.DocumentHeader(
            self.database, self.collection, self.document_id, self.search_field, self.search_value
        )


def plan_document(
    doc: Mapping[str, Any],
    database: str,
    collection: str,
    settings: Settings,
    image_fields: Sequence[str] | None = None,
) -> DocumentPlan:
    """Plan one document: validated names, its folder and its numbered image URLs.

    Raises UnsafePathError when the database, collection or ``_id`` cannot name a folder.
    """
    layout.check_database(database)
    layout.check_collection(collection)
    if "_id" not in doc:
        raise UnsafePathError("document has no _id")
    document_id = layout.check_segment(layout.document_id_str(doc["_id"]), "document id")
    raw_value = get_path(doc, settings.search_field, _MISSING)
    search_value = None if raw_value is _MISSING else _json_scalar(raw_value)
    slug = layout.slugify(search_value)
    relative = layout.relative_folder(database, collection, document_id, slug)
    urls = extract_image_urls(doc, image_fields or settings.image_fields)
    previous = _previous_folder(doc, settings, database, collection, document_id, relative)
    return DocumentPlan(
        database=database,
        collection=collection,
        document_id=document_id,
        search_field=settings.search_field,
        search_value=search_value,
        folder=layout.document_folder(settings.storage_path, relative),
        relative_folder=relative,
        images=tuple(ImageTask(i, url) for i, url in enumerate(urls, start=1)),
        previous_relative_folder=previous,
    )


def prepare_folder(plan: DocumentPlan, settings: Settings) -> None:
    """Create the document's layout; first move its folder from an old search value, if any.

    Call once per document before its images are downloaded (the document-level step).
    """
    folder = plan.folder
    if os.path.isdir(folder):
        files.ensure_document_dirs(folder)
        # Only a folder that existed can hold leftovers of a writer killed mid-write.
        files.sweep_stale_temp_files(folder)
        return
    if plan.previous_relative_folder:
        old = layout.document_folder(settings.storage_path, plan.previous_relative_folder)
        old_meta = metadata.read_metadata(old)
        if old_meta is not None and old_meta.get("document_id") == plan.document_id:
            try:
                os.rename(old, folder)
                logger.info("moved %s to %s", plan.previous_relative_folder, plan.relative_folder)
            except OSError as e:  # a concurrent move, or the target appeared meanwhile
                logger.warning("could not move %s: %s", plan.previous_relative_folder, e)
    files.ensure_document_dirs(folder)


def claim_folder(
    plan: DocumentPlan, *, job_id: str, lock: AbstractContextManager[Any] | None = None
) -> dict[str, Any]:
    """Claim the document's folder (after :func:`prepare_folder`); returns its metadata.

    Raises FolderConflict when the folder's metadata.json names another document.
    """
    return metadata.claim(plan.folder, plan.header, job_id=job_id, urls=plan.urls, lock=lock)


def download_image(
    plan: DocumentPlan,
    task: ImageTask,
    fetcher: Fetcher,
    settings: Settings,
    *,
    previous: Mapping[str, Any] | None = None,
    force: bool = False,
    attempt: int = 1,
) -> dict[str, Any]:
    """One attempt at one image; returns its record (``downloaded`` or ``skipped``).

    ``previous`` is the image's record from metadata.json, if any. ``attempt`` is the
    1-based attempt number, recorded as ``attempts``. Raises DownloadError on failure.
    """
    if not force and previous is not None:
        skipped = skip_record(plan, task, previous)
        if skipped is not None:
            return skipped
    original = plan.folder / layout.ORIGINAL_DIR
    if not os.path.isdir(original):
        files.ensure_document_dirs(plan.folder)
    body = fetcher.fetch(task.url, original)
    try:
        info = validate_image(body.path, settings, sha256=body.sha256, size=body.bytes)
        extension = layout.extension_for(info.format)
        name = layout.image_filename(task.index, extension)
        # Not fsynced: after a power loss an image may be empty or short, but its recorded
        # size and sha256 no longer match and the next run fetches it again (skip_record).
        files.move_into_place(body.path, original / name, durable=False)
    except BaseException:
        body.discard()
        raise
    if previous is not None and isinstance(previous.get("file"), str):
        old_name = PurePosixPath(previous["file"]).name
        if old_name != name and layout.parse_image_filename(old_name) is not None:
            files.remove_quietly(original / old_name)  # e.g. img_001.png now img_001.jpg
    return {
        "index": task.index,
        "url": task.url,
        "status": DOWNLOADED,
        "file": layout.image_relpath(task.index, extension),
        "sha256": info.sha256,
        "bytes": info.bytes,
        "format": info.format,
        "width": info.width,
        "height": info.height,
        "content_type": body.content_type,
        "http_status": body.http_status,
        "attempts": attempt,
        "downloaded_at": metadata.utc_now_iso(),
    }


def skip_record(
    plan: DocumentPlan, task: ImageTask, previous: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The ``skipped`` record when ``previous`` still describes an intact file, else None."""
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
    path = plan.folder / layout.ORIGINAL_DIR / parts[1]
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if size != previous.get("bytes") or file_sha256(path) != previous.get("sha256"):
        logger.info("file %s of %s changed on disk: fetching again", relpath, plan.relative_folder)
        return None
    record = dict(previous)
    record["status"] = SKIPPED
    return record


def failed_record(task: ImageTask, error: DownloadError, attempts: int) -> dict[str, Any]:
    """The metadata record of an image whose last attempt failed with ``error``."""
    return {
        "index": task.index,
        "url": task.url,
        "status": FAILED,
        "attempts": attempts,
        "error": {"code": error.code, "message": error.message},
    }


def record_images(
    plan: DocumentPlan,
    records: Sequence[Mapping[str, Any]],
    *,
    job_id: str,
    lock: AbstractContextManager[Any] | None = None,
) -> dict[str, Any]:
    """Merge ``records`` into metadata.json (by index) under ``lock``; return the metadata.

    ``lock`` must exclude every other writer of this document's metadata.json: the actors
    pass a Redis lock; the default, an flock on the folder, covers one host. Files that no
    longer belong to a record are removed under the same lock (see the module docstring).
    """
    original = plan.folder / layout.ORIGINAL_DIR
    if not os.path.isdir(original):
        files.ensure_document_dirs(plan.folder)
    total = len(plan.images)
    recorded = {r["index"]: r for r in records}

    def prune(merged: dict[int, dict[str, Any]]) -> None:
        for name in os.listdir(original):
            parsed = layout.parse_image_filename(name)
            if parsed is None:
                continue
            index = parsed[0]
            stale = index > total
            if index in recorded and index in merged:
                # The record just written for this index names the only file it may have.
                named = merged[index].get("file") if merged[index].get("status") != FAILED else None
                stale = stale or name != PurePosixPath(named or "").name
            if stale:
                files.remove_quietly(original / name)

    return metadata.merge(
        plan.folder,
        plan.header,
        records,
        job_id=job_id,
        urls=plan.urls,
        lock=lock,
        under_lock=prune,
    )


def read_metadata(plan: DocumentPlan) -> dict[str, Any] | None:
    """The document's metadata.json, or None when it has none yet."""
    return metadata.read_metadata(plan.folder)


def previous_records(
    plan: DocumentPlan, current: Mapping[str, Any] | None = None
) -> dict[int, dict[str, Any]]:
    """The records of the existing metadata.json by index (for ``previous=``).

    ``current`` is the metadata already read by the caller; it is read here otherwise.
    """
    if current is None:
        current = read_metadata(plan) or {}
    return {
        r["index"]: r
        for r in current.get("images", [])
        if isinstance(r, dict) and isinstance(r.get("index"), int)
    }


def download_document(
    doc: Mapping[str, Any],
    database: str,
    collection: str,
    settings: Settings,
    *,
    job_id: str,
    force: bool = False,
    image_fields: Sequence[str] | None = None,
    fetcher: Fetcher | None = None,
    max_workers: int = 8,
) -> dict[str, Any]:
    """Download every image of ``doc`` (one attempt each) and write its metadata.json.

    Failed images are recorded as failed; nothing is retried here. Returns the metadata.
    Raises FolderConflict when the folder belongs to another document.
    """
    plan = plan_document(doc, database, collection, settings, image_fields)
    prepare_folder(plan, settings)
    previous = previous_records(plan, claim_folder(plan, job_id=job_id))
    own_fetcher = fetcher is None
    active = fetcher if fetcher is not None else Fetcher(settings)

    def one(task: ImageTask) -> dict[str, Any]:
        try:
            return download_image(
                plan, task, active, settings, previous=previous.get(task.index), force=force
            )
        except DownloadError as e:
            logger.info(
                "job %s: image %d of %s failed: %s %s",
                job_id, task.index, plan.relative_folder, e.code, e.message,
            )
            return failed_record(task, e, 1)

    try:
        if len(plan.images) <= 1 or max_workers <= 1:
            records = [one(task) for task in plan.images]
        else:
            with ThreadPoolExecutor(min(max_workers, len(plan.images))) as pool:
                records = list(pool.map(one, plan.images))
    finally:
        if own_fetcher:
            active.close()
    return record_images(plan, records, job_id=job_id)


def _json_scalar(value: Any) -> Any:
    """A search value as stored in metadata.json: JSON scalars as they are, others as str."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def _previous_folder(
    doc: Mapping[str, Any],
    settings: Settings,
    database: str,
    collection: str,
    document_id: str,
    relative: str,
) -> str | None:
    """The ``path`` of the write-back field when it names another folder of this document."""
    if not settings.status_field:
        return None
    path = get_path(doc, f"{settings.status_field}.path")
    if not isinstance(path, str) or path == relative:
        return None
    parts = PurePosixPath(path).parts
    if len(parts) != 3 or parts[:2] != (database, collection):
        return None
    name = parts[2]
    if name != document_id and not name.startswith(document_id + "-"):
        return None
    try:
        layout.check_segment(name, "previous folder")
    except UnsafePathError:
        return None
    return path
