"""The download engine: one image of a document, and whole documents without a queue (§3–§8).

It knows nothing of queues: the actors, the bench and the tests build on it. Everything it
stores goes through a :class:`~images_service.download.folder.DocumentFolder` (the document's
folder on whichever storage backend, contract §11).

* :func:`plan_document` — names, folder key and the numbered image URLs of one document
  (:mod:`images_service.download.planning`, re-exported here).
* :func:`download_image` — **one** attempt for one image (the actors own retries and
  backoff): skip it when already stored and unchanged, else fetch into the folder's local
  temporary directory, validate, and store it atomically as ``original/img_NNN.ext`` (with
  ``PROCESSED_VARIANTS`` its variants too, :mod:`images_service.download.variants`; a skipped
  image gets the missing ones from its stored original). Returns the image's metadata
  record; failures raise :class:`~images_service.errors.DownloadError` (a storage failure is
  its subclass ``StorageUnavailable``, code ``connection_error``, retried like one). *Any*
  other exception while validating or storing becomes a DownloadError too (§14: one bad file
  fails one image): ``corrupt_image`` from the decode, ``connection_error`` from the store.
* :func:`download_document` — a whole document with a small thread pool (tests, bench, CLI).

Skipping (idempotency). Without ``force`` an image is skipped — no request sent — when the
previous record for its index says ``downloaded`` or ``skipped`` for the *same URL*, and the
object it names is stored with the recorded size and sha256 (:meth:`DocumentFolder.
skip_record`). When the URL list changes, records are kept by index and only while they still
match the document; files no record names any more are removed by the folder's merge.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any

from images_service.config.settings import Settings
from images_service.content.document import ContentRules
from images_service.download import variants
from images_service.download.folder import DocumentFolder

# Planning lives in its own module; its names stay importable from here, the engine's API.
from images_service.download.planning import DocumentPlan, ImageTask, plan_document
from images_service.errors import DownloadError, StorageUnavailable
from images_service.fetching.fetcher import Fetcher
from images_service.storage import layout
from images_service.storage.backend import Storage
from images_service.storage.factory import create_storage
from images_service.storage.metadata import DOWNLOADED, FAILED, utc_now_iso

__all__ = [
    "DocumentFolder", "DocumentPlan", "ImageTask", "plan_document", "download_image",
    "failed_record", "download_document",
]

logger = logging.getLogger(__name__)


def download_image(
    folder: DocumentFolder,
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
    1-based attempt number, recorded as ``attempts``. Raises DownloadError on failure
    (StorageUnavailable when the storage failed: nothing stored is lost then).
    """
    if not force and previous is not None:
        skipped = folder.skip_record(task, previous)
        if skipped is not None:  # stored and unchanged: bring its variants up to date (§12)
            return folder.backfill(skipped, settings)
    try:
        body = fetcher.fetch(task.url, folder.temp_dir())
    except DownloadError:
        raise
    except (ValueError, UnicodeError) as exc:  # a URL no parser along the way accepts
        raise DownloadError("invalid_url", unexpected(exc)) from exc
    except Exception as exc:  # noqa: BLE001 -- §14: whatever a server sends fails one image
        raise DownloadError("connection_error", unexpected(exc)) from exc
    try:
        # With PROCESSED_VARIANTS, the validation decode also renders the variants (§12).
        try:
            info, rendered = variants.validate(body.path, settings, sha256=body.sha256,
                                               size=body.bytes)
        except DownloadError:
            raise
        except MemoryError as exc:  # a lying header that no pixel limit caught
            raise DownloadError("decompression_bomb", "the image does not fit in memory") from exc
        except Exception as exc:  # noqa: BLE001 -- §14: a hostile file fails its image only
            raise DownloadError("corrupt_image", unexpected(exc)) from exc
        try:
            file = folder.store_original(task, body.path, image_format=info.format,
                                         sha256=info.sha256)
        except DownloadError:
            raise
        except Exception as exc:  # noqa: BLE001 -- retried like a storage outage
            raise StorageUnavailable(f"storing image {task.index}: {unexpected(exc)}") from exc
    except BaseException:
        body.discard()  # a no-op once the original has been stored
        raise
    if previous is not None and isinstance(previous.get("file"), str):
        old_name = PurePosixPath(previous["file"]).name
        if old_name != PurePosixPath(file).name and layout.parse_image_filename(old_name):
            folder.remove([previous["file"]])  # e.g. img_001.png now img_001.jpg
    now = utc_now_iso()
    record = {
        "index": task.index,
        "url": task.url,
        "status": DOWNLOADED,
        "file": file,
        "sha256": info.sha256,
        "bytes": info.bytes,
        "format": info.format,
        "width": info.width,
        "height": info.height,
        "content_type": body.content_type,
        "http_status": body.http_status,
        "attempts": attempt,
        "downloaded_at": now,
    }
    # What the image shows (contract §18), from the validation's (or variants') decode: no
    # key when nothing was decoded or it is no placeholder. The document's merge decides
    # the placeholder again with the others' (DocumentFolder.merge) and adds duplicate_of.
    if info.phash is not None:
        record["phash"] = info.phash
    if info.placeholder is not None:
        record["placeholder"] = info.placeholder
    # Validators of the response, when the server sent them, and when the source was last
    # checked: what a conditional re-check needs (contract §16).
    if body.etag is not None:
        record["etag"] = body.etag
    if body.last_modified is not None:
        record["last_modified"] = body.last_modified
    record["checked_at"] = now
    return folder.store_variants(record, rendered)


def unexpected(exc: BaseException) -> str:
    """A short description of an unexpected exception (type and first line, bounded)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def failed_record(task: ImageTask, error: DownloadError, attempts: int) -> dict[str, Any]:
    """The metadata record of an image whose last attempt failed with ``error``."""
    return {
        "index": task.index,
        "url": task.url,
        "status": FAILED,
        "attempts": attempts,
        "error": {"code": error.code, "message": error.message},
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

    ``storage`` defaults to one built from ``settings`` for this call; the folder's lock is
    the process-local one (no Redis here). Failed images are recorded as failed; nothing is
    retried here. Returns the metadata. Raises FolderConflict when the folder belongs to
    another document.
    """
    plan = plan_document(doc, database, collection, settings, image_fields)
    own_storage = storage is None
    store = storage if storage is not None else create_storage(settings,
                                                               max_pool_connections=max_workers)
    own_fetcher = fetcher is None
    active = fetcher if fetcher is not None else Fetcher(settings)
    folder = DocumentFolder(store, plan, job_id=job_id, rules=ContentRules.from_settings(settings))

    def one(task: ImageTask) -> dict[str, Any]:
        try:
            return download_image(folder, task, active, settings,
                                  previous=previous.get(task.index), force=force)
        except DownloadError as e:
            logger.info(
                "job %s: image %d of %s failed: %s %s",
                job_id, task.index, plan.relative_folder, e.code, e.message,
            )
            return failed_record(task, e, 1)

    try:
        folder.open()
        previous = folder.previous
        if len(plan.images) <= 1 or max_workers <= 1:
            records = [one(task) for task in plan.images]
        else:
            with ThreadPoolExecutor(min(max_workers, len(plan.images))) as pool:
                records = list(pool.map(one, plan.images))
        return folder.merge(records)
    finally:
        if own_fetcher:
            active.close()
        if own_storage:
            store.close()
