"""The download engine: plan a document, download its images, record them (contract §3–§6, §8).

This is the API the actors, the listener and the CLI build on; it knows nothing of queues.
Everything it reads or writes goes through a :class:`~images_service.storage.backend.Storage`
passed in (filesystem or S3, contract §11); a plan names its folder by key.

* :func:`plan_document` — names, folder key and the numbered image URLs of one document
  (:mod:`images_service.download.planning`, re-exported here).
* :func:`prepare_folder` — create the layout (and move the folder of a renamed document).
* :func:`download_image` — **one** attempt for one image (the actors own retries and
  backoff): skip it when already stored and unchanged, else fetch into the storage's local
  temporary directory, validate, and ``put_file`` it atomically as ``original/img_NNN.ext``
  (with ``PROCESSED_VARIANTS`` its variants too, :mod:`images_service.download.variants`; a skipped
  image gets the missing ones from its stored original). Returns the image's metadata
  record; failures raise :class:`~images_service.errors.DownloadError` (a storage failure
  is its subclass ``StorageUnavailable``, code ``connection_error``, retried like one).
* :func:`record_images` — merge records into ``metadata.json`` under a lock.
* :func:`download_document` — all of the above with a small thread pool (tests, bench, CLI).

Skipping (idempotency). Without ``force`` an image is skipped — no request sent — when the
previous record for its index says ``downloaded`` or ``skipped`` for the *same URL*, and the
object it names is stored with the recorded size and sha256. On S3 that is one HEAD: the
sha256 given at upload is kept in the object's metadata. On the filesystem the file is hashed
(one sequential read, about 0.3 ms per 100 KB, far below a download), which catches files
damaged or replaced on disk; a mismatch means the image is fetched again.

When the URL list changes. Records are kept by index and only while they still match the
document: when a document is planned and recorded again, a record whose index is beyond the
current list, or whose URL is no longer the one at that index, is dropped from
``metadata.json``, and ``original/img_NNN.*`` files of indexes beyond the list are deleted
(a file of a changed index is replaced by the new download, or deleted if that download
fails). A failed record never names a file: when the latest attempt for an index fails (e.g.
a forced re-fetch answered 404), the older file of that index is deleted, so metadata.json
always describes exactly the files present. When the search value changes, the folder name
changes with it; :func:`prepare_folder` moves the old folder (known from the write-back
field's ``path``) so already downloaded images are kept and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import PurePosixPath
from typing import Any

from images_service.config.settings import Settings
from images_service.download import variants

# Planning lives in its own module; its names stay importable from here, the engine's API.
from images_service.download.planning import DocumentPlan, ImageTask, plan_document
from images_service.errors import DownloadError
from images_service.fetching.fetcher import FetchedBody, Fetcher
from images_service.storage import folders, layout, metadata
from images_service.storage.backend import Storage
from images_service.storage.factory import create_storage
from images_service.storage.metadata import DOWNLOADED, FAILED, SKIPPED
from images_service.validation import ImageInfo

__all__ = [
    "DocumentPlan", "ImageTask", "plan_document", "prepare_folder", "claim_folder",
    "download_image", "store_original", "skip_record", "failed_record", "record_images",
    "read_metadata", "previous_records", "download_document",
]

logger = logging.getLogger(__name__)


def prepare_folder(plan: DocumentPlan, storage: Storage) -> None:
    """Create the document's layout; first move its folder from an old search value, if any.

    Call once per document before its images are downloaded (the document-level step).
    """
    folders.prepare(storage, plan.relative_folder, plan.header,
                    previous_folder=plan.previous_relative_folder)


def claim_folder(
    plan: DocumentPlan,
    storage: Storage,
    *,
    job_id: str,
    lock: AbstractContextManager[Any] | None = None,
) -> dict[str, Any]:
    """Claim the document's folder (after :func:`prepare_folder`); returns its metadata.

    Raises FolderConflict when the folder's metadata.json names another document.
    """
    return metadata.claim(storage, plan.relative_folder, plan.header, job_id=job_id,
                          urls=plan.urls, lock=lock)


def download_image(
    plan: DocumentPlan,
    task: ImageTask,
    fetcher: Fetcher,
    storage: Storage,
    settings: Settings,
    *,
    previous: Mapping[str, Any] | None = None,
    force: bool = False,
    attempt: int = 1,
) -> dict[str, Any]:
    """One attempt at one image; returns its record (``downloaded`` or ``skipped``).

    ``previous`` is the image's record from metadata.json, if any. ``attempt`` is the
    1-based attempt number, recorded as ``attempts``. Raises DownloadError on failure
    (StorageUnavailable when the storage failed: nothing stored is lost then).
    """
    if not force and previous is not None:
        skipped = skip_record(plan, task, previous, storage)
        if skipped is not None:  # stored and unchanged: bring its variants up to date (§12)
            return variants.backfill(storage, plan.relative_folder, skipped, settings)
    body = fetcher.fetch(task.url, storage.local_temp_dir(plan.relative_folder))
    try:
        # With PROCESSED_VARIANTS, the validation decode also renders the variants (§12).
        info, rendered = variants.validate(body.path, settings, sha256=body.sha256,
                                           size=body.bytes)
        key = store_original(storage, plan, task, body, info)
    except BaseException:
        body.discard()  # a no-op once put_file has taken it
        raise
    name = PurePosixPath(key).name
    if previous is not None and isinstance(previous.get("file"), str):
        old_name = PurePosixPath(previous["file"]).name
        if old_name != name and layout.parse_image_filename(old_name) is not None:
            # e.g. img_001.png now img_001.jpg
            storage.delete([f"{plan.relative_folder}/{layout.ORIGINAL_DIR}/{old_name}"])
    return variants.store_rendered(storage, plan.relative_folder, {
        "index": task.index,
        "url": task.url,
        "status": DOWNLOADED,
        "file": layout.image_relpath(task.index, layout.extension_for(info.format)),
        "sha256": info.sha256,
        "bytes": info.bytes,
        "format": info.format,
        "width": info.width,
        "height": info.height,
        "content_type": body.content_type,
        "http_status": body.http_status,
        "attempts": attempt,
        "downloaded_at": metadata.utc_now_iso(),
    }, rendered)


def store_original(
    storage: Storage, plan: DocumentPlan, task: ImageTask, body: FetchedBody, info: ImageInfo
) -> str:
    """Store a validated body as ``original/img_NNN.ext`` atomically; returns its key.

    The object's Content-Type comes from the detected format; its sha256 is kept with it
    (S3 object metadata) so a later run can skip it with one HEAD.
    """
    key = layout.image_key(plan.relative_folder, task.index, layout.extension_for(info.format))
    storage.put_file(key, body.path, content_type=layout.CONTENT_TYPES[info.format],
                     sha256=info.sha256)
    return key


def skip_record(
    plan: DocumentPlan, task: ImageTask, previous: Mapping[str, Any], storage: Storage
) -> dict[str, Any] | None:
    """The ``skipped`` record when ``previous`` still describes an intact object, else None.

    Raises StorageUnavailable when the storage cannot tell.
    """
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
    key = f"{plan.relative_folder}/{relpath}"
    stat = storage.stat(key)
    if stat is None:
        return None
    # The stored sha256 (S3: object metadata, one HEAD) when the backend keeps one; else the
    # object is hashed (the filesystem: one local read), so a changed file is fetched again.
    sha256 = stat.sha256 if stat.sha256 is not None else storage.sha256_of(key)
    if stat.size_bytes != previous.get("bytes") or sha256 != previous.get("sha256"):
        logger.info("file %s of %s changed in storage: fetching again", relpath,
                    plan.relative_folder)
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
    storage: Storage,
    records: Sequence[Mapping[str, Any]],
    *,
    job_id: str,
    lock: AbstractContextManager[Any] | None = None,
) -> dict[str, Any]:
    """Merge ``records`` into metadata.json (by index) under ``lock``; return the metadata.

    ``lock`` must exclude every other writer of this document's metadata.json: the actors
    pass a Redis lock; the default (:mod:`images_service.storage.locks`) covers one host on
    the filesystem and one process otherwise. Files that no longer belong to a record are
    removed under the same lock (see the module docstring). Idempotent: merging the same
    records again writes the same images.
    """
    recorded = {r["index"] for r in records}

    def prune(merged: dict[int, dict[str, Any]]) -> None:
        variants.count_removed(folders.prune(storage, plan.relative_folder, merged,
                                             recorded=recorded, total=len(plan.images)))

    return metadata.merge(storage, plan.relative_folder, plan.header, records, job_id=job_id,
                          urls=plan.urls, lock=lock, under_lock=prune)


def read_metadata(plan: DocumentPlan, storage: Storage) -> dict[str, Any] | None:
    """The document's metadata.json, or None when it has none yet."""
    return metadata.read_metadata(storage, plan.relative_folder)


def previous_records(current: Mapping[str, Any] | None) -> dict[int, dict[str, Any]]:
    """The records of a metadata.json by index (for ``previous=``)."""
    return {
        r["index"]: r
        for r in (current or {}).get("images", [])
        if isinstance(r, dict) and isinstance(r.get("index"), int)
    }


def download_document(
    doc: Mapping[str, Any],
    database: str,
    collection: str,
    settings: Settings,
    *,
    job_id: str,
    storage: Storage | None = None,
    force: bool = False,
    image_fields: Sequence[str] | None = None,
    fetcher: Fetcher | None = None,
    max_workers: int = 8,
) -> dict[str, Any]:
    """Download every image of ``doc`` (one attempt each) and write its metadata.json.

    ``storage`` defaults to one built from ``settings`` for this call. Without Redis the
    metadata lock is the default one (:mod:`images_service.storage.locks`). Failed images
    are recorded as failed; nothing is retried here. Returns the metadata. Raises
    FolderConflict when the folder belongs to another document.
    """
    plan = plan_document(doc, database, collection, settings, image_fields)
    own_storage = storage is None
    store = storage if storage is not None else create_storage(settings,
                                                               max_pool_connections=max_workers)
    own_fetcher = fetcher is None
    active = fetcher if fetcher is not None else Fetcher(settings)

    def one(task: ImageTask) -> dict[str, Any]:
        try:
            return download_image(plan, task, active, store, settings,
                                  previous=previous.get(task.index), force=force)
        except DownloadError as e:
            logger.info(
                "job %s: image %d of %s failed: %s %s",
                job_id, task.index, plan.relative_folder, e.code, e.message,
            )
            return failed_record(task, e, 1)

    try:
        prepare_folder(plan, store)
        previous = previous_records(claim_folder(plan, store, job_id=job_id))
        if len(plan.images) <= 1 or max_workers <= 1:
            records = [one(task) for task in plan.images]
        else:
            with ThreadPoolExecutor(min(max_workers, len(plan.images))) as pool:
                records = list(pool.map(one, plan.images))
        return record_images(plan, store, records, job_id=job_id)
    finally:
        if own_fetcher:
            active.close()
        if own_storage:
            store.close()
